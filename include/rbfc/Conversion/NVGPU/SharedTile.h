//===- SharedTile.h - tiles in shared memory --------------------*- C++ -*-===//
//
// How the kernels lay out shared memory: the block's dynamic shared memory
// carved into views in order, and tiles of 16-bit elements whose 16-byte
// chunks are swizzled so that ldmatrix reads them without bank conflicts
// while cp.async writes stay 16-byte aligned. Tiles are row-major, or, for
// wgmma, split into 64-column blocks in the canonical 128-byte-swizzle
// layout that a wgmma shared-memory descriptor names.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_SHAREDTILE_H
#define RBFC_CONVERSION_NVGPU_SHAREDTILE_H

#include "rbfc/Conversion/NVGPU/KernelEmitter.h"

#include "llvm/Support/MathExtras.h"

namespace rbfc {

/// 16-bit elements in the 16-byte chunk that cp.async and ldmatrix move.
inline constexpr int64_t kChunk = 8;
/// Bytes of a tile's 16-bit element.
inline constexpr int64_t kElementBytes = 2;

/// The layout of [rows][rowElements] tiles of 16-bit elements, rowElements
/// a multiple of 16: the 16-byte chunks of a row are swizzled within
/// aligned groups of swizzleChunks() chunks, chunk g G + p of row r stored
/// at g G + (p ^ ((r / swizzleStep()) % G)), so the 8 row addresses of one
/// ldmatrix (consecutive rows, one chunk column) hit 8 different bank
/// groups and a group never crosses the row's end (FlashAttention-2 cuts
/// head_dim 96 rows into 32-element blocks for the same reason).
///
/// With `blockRows` the tile is instead [rowElements / 64][blockRows][64]:
/// each 64-element (128-byte) column block of the rows is one run of
/// blockRows 128-byte rows, chunk p of a block's row r at p ^ (r % 8). That
/// is the canonical layout of wgmma's 128-byte swizzle (PTX ISA, "Shared
/// Memory Matrix Layout"), both K-major (Q and K for S = Q K^T: 8-row
/// groups 1024 bytes apart) and MN-major (V for O += P V: 64-column blocks
/// blockRows x 128 bytes apart), with the block's base 1024-byte aligned.
class SwizzledTile : public KernelEmitter {
public:
  SwizzledTile(mlir::ImplicitLocOpBuilder &b, int64_t rowElements,
               int64_t blockRows = 0)
      : KernelEmitter(b), rowElements(rowElements), blockRows(blockRows) {
    assert((!blockRows || rowElements % kBlockElements == 0) &&
           "column blocks need rows of a multiple of 64 elements");
  }

  /// Elements of a column block's row: one 128-byte swizzle line.
  static constexpr int64_t kBlockElements = 64;

  bool isBlocked() const { return blockRows != 0; }
  int64_t chunksPerRow() const { return rowElements / kChunk; }
  /// The largest power of two that divides a row's chunks, at most the 8
  /// chunks of a 128-byte bank line: the chunks one swizzle permutes.
  int64_t swizzleChunks() const {
    return std::min<int64_t>(8, chunksPerRow() & -chunksPerRow());
  }
  /// Elements from row r to row r + 1 of the same column.
  int64_t rowStride() const {
    return isBlocked() ? kBlockElements : rowElements;
  }
  /// Elements from a chunk to the chunk `chunks` further along its row,
  /// `chunks` a multiple of swizzleChunks().
  int64_t chunkShift(int64_t chunks) const {
    assert(chunks % swizzleChunks() == 0 && "shift changes the swizzle");
    return isBlocked() ? chunks / swizzleChunks() * blockRows * kBlockElements
                       : chunks * kChunk;
  }
  /// Elements from a row to the row `rows` further down, `rows` a multiple
  /// of swizzlePeriod().
  int64_t rowShift(int64_t rows) const { return rows * rowStride(); }
  /// Elements from row 0's first element to its column `column` before the
  /// swizzle (a multiple of 8): where a wgmma descriptor of the columns
  /// from `column` on starts, the hardware applying the swizzle.
  int64_t columnStart(int64_t column) const {
    assert(column % kChunk == 0 && "descriptors start at whole chunks");
    return isBlocked() ? column / kBlockElements * blockRows * kBlockElements +
                             column % kBlockElements
                       : column;
  }
  /// Rows that share one swizzle. Row r starts at bank group (C r) % 8 for
  /// C chunks a row. When C is a multiple of 8 every row starts at group 0
  /// and the swizzle alone separates 8 rows: step 1. When C = G m, G < 8,
  /// m odd, rows r and r + 8 / G start at the same group and the swizzle
  /// must separate them: step 8 / G. A power-of-two row of 4 chunks
  /// (head_dim 32) keeps step 1, the layout its kernels were measured with,
  /// although rows r and r + 4 of an ldmatrix then share a bank group.
  /// A column block's rows are 128 bytes: step 1.
  int64_t swizzleStep() const {
    if (isBlocked())
      return 1;
    return llvm::isPowerOf2_64(chunksPerRow()) ? 1 : 8 / swizzleChunks();
  }
  /// Rows after which the swizzle repeats: a row shift by a multiple of it
  /// moves an offset by a constant.
  int64_t swizzlePeriod() const { return swizzleStep() * swizzleChunks(); }
  /// Elements of a tile of `rows` rows (blockRows when blocked).
  int64_t elements(int64_t rows) const {
    assert((!isBlocked() || rows == blockRows) &&
           "blocked tiles have fixed rows");
    return rows * rowElements;
  }

  /// Element offset of chunk `chunk` of row `row`.
  mlir::Value offset(mlir::Value row, mlir::Value chunk);
  /// A lane's ldmatrix offsets: chunk 2 s + `half` of rows `row` + 16 k.
  /// The swizzle of chunk 2 s + half depends only on s % (G / 2), G =
  /// swizzleChunks, so the lane keeps one offset per residue and every
  /// address it reads is one of them plus a constant that the backend
  /// folds into the instruction (laneChunkOffset).
  llvm::SmallVector<mlir::Value> laneChunkOffsets(mlir::Value row,
                                                  mlir::Value half);
  /// The offset of chunk pair `slice` (16 elements) of row `rowDelta` below
  /// the lane's row, from its laneChunkOffsets.
  mlir::Value laneChunkOffset(llvm::ArrayRef<mlir::Value> offsets,
                              int64_t rowDelta, int64_t slice);

private:
  int64_t rowElements;
  /// Rows of a column-blocked tile; 0 for a row-major one.
  int64_t blockRows;
};

/// The block's dynamic shared memory, carved into views one after the
/// other, each 16-byte aligned, or `alignment`-byte aligned in the shared
/// address space when one is given: the arena then starts at the first
/// such address of the dynamic shared memory, found at run time (nothing
/// promises more than 16 bytes of alignment there), and reserves the
/// bytes that may cost.
class SharedMemoryArena : public KernelEmitter {
public:
  explicit SharedMemoryArena(mlir::ImplicitLocOpBuilder &b,
                             int64_t alignment = 16);

  /// The next `elements` elements of `elementType`, as a 1-D view.
  mlir::Value carve(int64_t elements, mlir::Type elementType);
  /// Bytes carved so far: the kernel's dynamic shared memory.
  int64_t size() const { return bytes + alignment - 16; }

private:
  mlir::Value base;
  /// Bytes from `base` to the arena's first aligned byte (null without
  /// alignment: none).
  mlir::Value start;
  int64_t alignment;
  int64_t bytes = 0;
};

/// The shared-space byte address of element `offset` of the shared view
/// `shared`: what a wgmma descriptor or a bulk copy names.
mlir::Value sharedAddress(mlir::ImplicitLocOpBuilder &b, mlir::Value shared,
                          mlir::Value offset);

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_SHAREDTILE_H
