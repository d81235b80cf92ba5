//===- SharedTile.h - tiles in shared memory --------------------*- C++ -*-===//
//
// How the kernels lay out shared memory: the block's dynamic shared memory
// carved into views in order, and row-major tiles of 16-bit elements whose
// 16-byte chunks are swizzled so that ldmatrix reads them without bank
// conflicts while cp.async writes stay 16-byte aligned.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_SHAREDTILE_H
#define RBFC_CONVERSION_NVGPU_SHAREDTILE_H

#include "rbfc/Conversion/NVGPU/KernelEmitter.h"

#include "llvm/Support/MathExtras.h"

namespace rbfc {

/// 16-bit elements in the 16-byte chunk that cp.async and ldmatrix move.
inline constexpr int64_t kChunk = 8;

/// The layout of [rows][rowElements] tiles of 16-bit elements, rowElements
/// a multiple of 16: the 16-byte chunks of a row are swizzled within
/// aligned groups of swizzleChunks() chunks, chunk g G + p of row r stored
/// at g G + (p ^ ((r / swizzleStep()) % G)), so the 8 row addresses of one
/// ldmatrix (consecutive rows, one chunk column) hit 8 different bank
/// groups and a group never crosses the row's end (FlashAttention-2 cuts
/// head_dim 96 rows into 32-element blocks for the same reason).
class SwizzledTile : public KernelEmitter {
public:
  SwizzledTile(mlir::ImplicitLocOpBuilder &b, int64_t rowElements)
      : KernelEmitter(b), rowElements(rowElements) {}

  int64_t chunksPerRow() const { return rowElements / kChunk; }
  /// The largest power of two that divides a row's chunks, at most the 8
  /// chunks of a 128-byte bank line: the chunks one swizzle permutes.
  int64_t swizzleChunks() const {
    return std::min<int64_t>(8, chunksPerRow() & -chunksPerRow());
  }
  /// Rows that share one swizzle. Row r starts at bank group (C r) % 8 for
  /// C chunks a row. When C is a multiple of 8 every row starts at group 0
  /// and the swizzle alone separates 8 rows: step 1. When C = G m, G < 8,
  /// m odd, rows r and r + 8 / G start at the same group and the swizzle
  /// must separate them: step 8 / G. A power-of-two row of 4 chunks
  /// (head_dim 32) keeps step 1, the layout its kernels were measured with,
  /// although rows r and r + 4 of an ldmatrix then share a bank group.
  int64_t swizzleStep() const {
    return llvm::isPowerOf2_64(chunksPerRow()) ? 1 : 8 / swizzleChunks();
  }
  /// Rows after which the swizzle repeats: a row shift by a multiple of it
  /// moves an offset by a constant.
  int64_t swizzlePeriod() const { return swizzleStep() * swizzleChunks(); }
  int64_t elements(int64_t rows) const { return rows * rowElements; }

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
};

/// The block's dynamic shared memory, carved into views one after the
/// other, each 16-byte aligned.
class SharedMemoryArena : public KernelEmitter {
public:
  explicit SharedMemoryArena(mlir::ImplicitLocOpBuilder &b);

  /// The next `elements` elements of `elementType`, as a 1-D view.
  mlir::Value carve(int64_t elements, mlir::Type elementType);
  /// Bytes carved so far: the kernel's dynamic shared memory.
  int64_t size() const { return bytes; }

private:
  mlir::Value base;
  int64_t bytes = 0;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_SHAREDTILE_H
