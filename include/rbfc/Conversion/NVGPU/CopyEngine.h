//===- CopyEngine.h - moving tiles and terms into place ---------*- C++ -*-===//
//
// How data reaches the tensor cores: cp.async copies of row-major global
// tiles into swizzled shared tiles (rows past the tensor's end zero-filled),
// a ring of shared buffers that tiles stream through ahead of their use,
// with per-row f32 terms (the key terms of docs/abi.md's workspace) copied
// alongside by threads or by one bulk copy on an mbarrier, loads that
// bypass L1 under an evict-first L2 policy for data read once, and the
// lane's loads of per-column terms of a fragment.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_COPYENGINE_H
#define RBFC_CONVERSION_NVGPU_COPYENGINE_H

#include "rbfc/Conversion/NVGPU/FragmentLayout.h"
#include "rbfc/Conversion/NVGPU/KeyTermOperand.h"
#include "rbfc/Conversion/NVGPU/SharedTile.h"

namespace rbfc {

/// How long (ns) an mbarrier wait may suspend the thread before it retries.
inline constexpr int64_t kBarrierSuspendHint = 10000000;

/// Rows of a row-major tensor in global memory: row i starts at element
/// base + i * rowStride of the flat buffer `tensor`.
struct GlobalRows {
  mlir::Value tensor, base, rowStride;
};

/// A per-column term of the lane's two columns of an 8-column slice.
using ColumnTermPair = std::array<mlir::Value, 2>;

class CopyEngine : public KernelEmitter {
public:
  /// The block's `threads` threads copy into tiles laid out as `tile`;
  /// `elementType` (bf16 or f16) is what the 16-bit tensors hold.
  CopyEngine(mlir::ImplicitLocOpBuilder &b, SwizzledTile &tile,
             mlir::Type elementType, int64_t threads, mlir::Value threadId)
      : KernelEmitter(b), tile(tile), elementType(elementType),
        threads(threads), threadId(threadId) {}

  SwizzledTile &getTile() const { return tile; }
  mlir::Value getThreadId() const { return threadId; }
  int64_t getThreads() const { return threads; }

  /// Adjacent chunks of a row that adjacent threads copy in one pass: the
  /// largest power of two dividing the row's chunks, at most `threads`.
  static int64_t copyChunks(int64_t chunksPerRow, int64_t threads);
  /// Rows one pass of `threads` threads copies of a tile of `rows` rows; a
  /// tile is copied in rows / rowsPerPass passes, so it must divide `rows`.
  static int64_t rowsPerPass(int64_t chunksPerRow, int64_t threads,
                             int64_t rows);

  /// Starts the cp.async of rows [firstRow, firstRow + rows) of `source`
  /// into the tile at element `sharedBase` of `shared`, 16-byte chunks,
  /// rowsPerPass rows per pass. `bounded`: rows at or past `length` are
  /// zero-filled instead of read.
  void copyTile(mlir::Value shared, mlir::Value sharedBase,
                const GlobalRows &source, mlir::Value firstRow,
                mlir::Value length, int64_t rows, bool bounded);

  /// An L2 cache policy (createpolicy) under which the lines a load brings
  /// in are the first to be evicted: for data read once.
  mlir::Value createEvictFirstPolicy();
  /// Sum of squares, in f32, of `count` 16-byte chunks of a row; chunk c is
  /// read from `memref` at element offset `offset(c)`, under the L2 cache
  /// policy `readOncePolicy` when one is given (global memory only).
  mlir::Value squareSum(mlir::Value memref, int64_t count,
                        llvm::function_ref<mlir::Value(int64_t)> offset,
                        mlir::Value readOncePolicy = {});

  /// The sum of squares, in f32, of row `row` of the tile at element
  /// `base` (none: 0) of `shared`, split over the `parts` adjacent lanes
  /// that share the row, `part` the lane's index among them: every lane of
  /// the group gets the whole sum. When the row's chunks do not split
  /// `parts` ways (head_dim 80 over 4 lanes) they split over the largest
  /// power of two of lanes they do, and the other lanes repeat those sums.
  mlir::Value rowSquareSum(mlir::Value shared, mlir::Value base,
                           mlir::Value row, mlir::Value part, int64_t parts);

  /// The f32 terms of the lane's columns of `slices` 8-column slices, one
  /// pair per slice (one 8-byte load), from `source` where the fragment's
  /// first column's term is at `firstColumn`.
  llvm::SmallVector<ColumnTermPair> loadColumnTerms(FragmentLane &lane,
                                                    int64_t slices,
                                                    mlir::Value source,
                                                    mlir::Value firstColumn);

private:
  /// The 16-byte chunk of the global `memref` at element `offset`, loaded
  /// without allocating in L1 and under the L2 cache policy `policy`.
  mlir::Value loadChunkWithPolicy(mlir::Value memref, mlir::Value offset,
                                  mlir::Value policy);

  SwizzledTile &tile;
  mlir::Type elementType;
  int64_t threads;
  mlir::Value threadId;
};

/// A ring of `stages` shared buffers that the tiles [first, end) of a loop
/// stream through, `rows` rows each: tile t goes to buffer
/// (t - first) % stages. A loop issues tile t + stages - 1 while it
/// computes on tile t, one cp.async commit group per tile.
class TileRing : public KernelEmitter {
public:
  /// One tensor streamed through the ring: `shared` holds `stages` tiles.
  struct Stream {
    mlir::Value shared;
    GlobalRows source;
  };
  /// A plane of f32 terms, one per row, that travels with the tiles
  /// (docs/abi.md, "Workspace"): `shared` holds `stages` runs of `rows`
  /// floats; the run of the tile from row lo starts at `workspaceRow` + lo.
  struct TermPlane {
    mlir::Value shared, workspaceRow;
  };
  /// How term planes reach their stage: by cp.async of the first threads,
  /// 16 bytes each, in the tile's commit group; or by thread 0, one
  /// cp.async.bulk per plane completing on the stage's mbarrier; or, one
  /// entry of KeyTermOperand a key, into the rows of that operand of
  /// S = Q K^T: by cp.async in the tile's commit group, or with barriers by
  /// one cp.async.bulk a tile, as the planes.
  enum class TermCopy { Threads, Bulk, Product };

  TileRing(CopyEngine &engine, int64_t stages, int64_t rows, mlir::Value length,
           mlir::Value first, mlir::Value end,
           llvm::SmallVector<Stream> streams);

  /// Term planes to copy with every tile from `workspace`; with bulk
  /// copies `barriers` holds one i64 mbarrier per stage (Product copies are
  /// bulk where it is set); with Product copies `operand` lays them out
  /// (one plane of entries).
  void setTerms(mlir::Value workspace, llvm::SmallVector<TermPlane> planes,
                TermCopy copy, mlir::Value barriers,
                KeyTermOperand *operand = nullptr);

  /// Whether the stages hold term planes, which their readers load with
  /// ordinary loads (a KeyTermOperand's entries are a wgmma's operand).
  bool carriesTermPlanes() const {
    return !planes.empty() && termCopy != TermCopy::Product;
  }

  mlir::Value buffer(mlir::Value tile) { return rem(sub(tile, first), stages); }
  /// The element offset of a buffer's tile in each stream's ring.
  mlir::Value tileBase(mlir::Value buffer) {
    return mul(buffer, engine.getTile().elements(rows));
  }
  /// The float offset of a buffer's terms in each plane's ring.
  mlir::Value termBase(mlir::Value buffer) { return mul(buffer, rows); }

  /// What issue() copies: the streams' tiles, the term planes' runs.
  enum Part { kTiles = 1, kTerms = 2, kAll = kTiles | kTerms };
  /// Starts the copies of tile `tile` when it is before the end.
  /// `termOffsets`, when given, are the workspace offsets of the tile's
  /// first term per plane (else workspaceRow + the tile's first row).
  void issue(mlir::Value tile, llvm::ArrayRef<mlir::Value> termOffsets = {},
             Part parts = kAll);

  /// One step of a pipeline of cp.async commit groups, at tile `tile`:
  /// waits until only the newest stages - 2 groups are in flight (tile's
  /// copies have landed), makes them visible to the async proxy when
  /// `readByAsyncProxy` (wgmma reads its operands through it), then a
  /// block barrier (every thread's copies of the tile landed, and every
  /// thread is done with the buffer the next copy overwrites); then issues
  /// tile + stages - 1 and commits it as one group. `termOffsets`, when
  /// given, are the workspace offsets of `tile`'s first term per plane
  /// (the issued tile's follow stages - 1 tiles of rows on).
  void advance(mlir::Value tile, bool readByAsyncProxy,
               llvm::ArrayRef<mlir::Value> termOffsets = {});

  /// Bulk copies: thread 0 initialises the stages' barriers; a block
  /// barrier must follow before any thread waits on them.
  void createTermBarriers();
  /// Bulk copies: waits until tile `tile`'s terms are in shared memory.
  void waitForTerms(mlir::Value tile);

private:
  void issueTerms(mlir::Value tile, mlir::Value firstRow,
                  llvm::ArrayRef<mlir::Value> termOffsets);

  CopyEngine &engine;
  int64_t stages, rows;
  mlir::Value length, first, end;
  llvm::SmallVector<Stream> streams;
  mlir::Value workspace;
  llvm::SmallVector<TermPlane> planes;
  TermCopy termCopy = TermCopy::Threads;
  mlir::Value barriers;
  KeyTermOperand *operand = nullptr;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_COPYENGINE_H
