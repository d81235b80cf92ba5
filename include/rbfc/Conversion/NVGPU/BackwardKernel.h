//===- BackwardKernel.h - what the backward kernels share -------*- C++ -*-===//
//
// The backward kernels' common ground: their tiles, their parameter list,
// the layout of their workspace, and the per-element step both gradient
// kernels take -- the weight recomputed from the saved log-sum-exp and the
// score's adjoint dS, handed to the score_grad region.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_BACKWARDKERNEL_H
#define RBFC_CONVERSION_NVGPU_BACKWARDKERNEL_H

#include "rbfc/Conversion/NVGPU/CopyEngine.h"
#include "rbfc/Conversion/NVGPU/DiagonalStaging.h"
#include "rbfc/Conversion/NVGPU/GradientPartials.h"
#include "rbfc/Conversion/NVGPU/KernelArguments.h"
#include "rbfc/Conversion/NVGPU/MatrixAtoms.h"
#include "rbfc/Conversion/NVGPU/RegionApplication.h"

#include <array>
#include <optional>

namespace rbfc {

/// The backward's tiles and static facts. Both gradient kernels give each
/// warp one m16 atom of rows: 128 keys per dK/dV block (8 warps) against
/// 64-query tiles, 64 queries per dQ block (4 warps) against 64-key tiles.
/// With `wgmma` (sm_90a, head dims 64 and 128) every four warps are a
/// warpgroup whose 64 rows take their products from wgmma, the tiles in
/// shared memory in its column blocks; the schedule is the same.
struct BackwardConfig {
  int64_t headDim;
  mlir::Type elementType;
  bool softmax, log2Domain;
  bool wgmma = false;
  int64_t stages = 2;
  int64_t keyValueWarps = 8, keyValueQueryTile = 64;
  int64_t queryWarps = 4, queryKeyTile = 64;

  /// Keys of one dK/dV block, queries of one dQ block.
  int64_t keyTile() const { return kAtomRows * keyValueWarps; }
  int64_t queryTile() const { return kAtomRows * queryWarps; }
  /// Rows of delta, lse2 and the key terms are padded to a multiple of
  /// this, so that every tile's run of them exists.
  static constexpr int64_t kRowMultiple = 128;
  int64_t dimSlices() const { return headDim / 16; }
  int64_t chunksPerRow() const { return headDim / kChunk; }
};

/// Where each part of the f32 workspace is (docs/abi.md, "Backward"):
///   delta, lse2   [batch, heads, Lq]               Lq = round_up(q_len, 128)
///   key terms     planes x [batch, R, Lk]          Lk = round_up(kv_len, 128)
///   partials      [2, batch, heads, tiles, slots]  dK/dV's, then dQ's
///   sums          [2, batch, heads, slots]
///   diagonals     [batch, heads, key tiles, Ld]     only with a relative-
///                 position table: Ld = round_up(q_len, Tq) + key tile,
///                 Tq the dK/dV kernel's query tile
/// R is kv_heads when the key terms do not read h, else heads.
struct BackwardWorkspace : KernelEmitter {
  BackwardWorkspace(mlir::ImplicitLocOpBuilder &b, const BackwardConfig &config,
                    const ProblemSizes &sizes, int64_t keyTermPlanes,
                    bool keyTermsPerKvHead, int64_t slots, bool diagonalSums);

  /// The first float of row (batch, head) of delta (plane 0) or lse2 (1).
  mlir::Value rowTerms(int64_t plane, mlir::Value batch, mlir::Value head);
  /// The first float of key-term plane `plane`'s row (batch, head), where
  /// `head` is the kv head or the query head as the terms' rows are.
  mlir::Value keyTerms(int64_t plane, mlir::Value batch, mlir::Value head);
  /// The first float of the partial sums of (kernel, batch, head, tile).
  mlir::Value partials(int64_t kernel, mlir::Value batch, mlir::Value head,
                       mlir::Value tile);
  /// The first float of the sums of (kernel, batch, head).
  mlir::Value sums(mlir::Value kernel, mlir::Value batch, mlir::Value head);
  /// The first float of the diagonal sums' rows of (batch, head), one row
  /// of diagonalLength floats per key tile (DiagonalSums.h).
  mlir::Value diagonals(mlir::Value batch, mlir::Value head);

  const ProblemSizes &sizes;
  int64_t slots;
  mlir::Value rowLength, keyLength, keyTiles, queryTiles, maxTiles;
  mlir::Value keyTermRows, keyTermBase, partialsBase, sumsBase;
  mlir::Value diagonalBase, diagonalLength;
};

/// A backward kernel being built: its arguments, thread ids and the
/// components every backward kernel uses. A gradient kernel keeps a tile of
/// `blockRows` rows (its own keys or queries) in shared memory and streams
/// tiles of `streamRows` rows (the others) through a ring; both are
/// [rows][head_dim], row-major for mma.sync, column-blocked for wgmma.
class BackwardKernelBuilder : public KernelEmitter {
public:
  BackwardKernelBuilder(attn::AttentionOp op, const BackwardConfig &config,
                        const GradientSlots &slots,
                        mlir::ImplicitLocOpBuilder &b, int64_t blockRows = 0,
                        int64_t streamRows = 0)
      : KernelEmitter(b), op(op), config(config), slots(slots),
        blockRows(blockRows), streamRows(streamRows),
        atoms(b, config.elementType), warpgroupAtoms(b, config.elementType),
        blockTile(b, config.headDim, config.wgmma ? blockRows : 0),
        streamTile(b, config.headDim, config.wgmma ? streamRows : 0) {}

protected:
  /// Adds the kernel `name` with the backward's parameter list, `warps`
  /// warps per block, and binds the arguments and thread ids.
  mlir::gpu::GPUFuncOp declare(mlir::gpu::GPUModuleOp module,
                               llvm::StringRef name, int64_t warps);
  /// The planes of key terms: the key bias, then ||k||^2 when the score
  /// reads it; -1 for a plane the spec does not need.
  int64_t keyBiasPlane() { return op.getKeyBias().empty() ? -1 : 0; }
  int64_t keyNormPlane();
  int64_t keyTermPlanes();
  /// Whether the key terms' rows are per kv head (the key_bias region does
  /// not read h).
  bool keyTermsPerKvHead();
  /// The workspace's layout for this launch.
  BackwardWorkspace workspace() {
    return BackwardWorkspace(b, config, args.sizes, keyTermPlanes(),
                             keyTermsPerKvHead(), slots.size(),
                             slots.getDiagonalSink().has_value());
  }
  /// Element offset of (batch, head) in a [batch, heads, ...] tensor.
  mlir::Value headBase(const TensorArgs &tensor, mlir::Value batch,
                       mlir::Value head) {
    return add(mul(batch, tensor.strides[0]), mul(head, tensor.strides[1]));
  }
  /// Whether bit `bit` of the gradient mask is set.
  mlir::Value wants(int64_t bit);
  /// Whether the gradient of the relative-position table that the dK/dV
  /// kernel sums per diagonal is asked for; false when there is none.
  mlir::Value wantsDiagonalSums();

  /// A tile of the ring in the tile loop: where its rows and their terms
  /// are, its first row's index (q_idx or kv_idx), whether it holds a kept
  /// element (`live`), and whether the mask or the bounds must be tested
  /// per element (`partial`).
  struct StreamStep {
    mlir::Value tileBase, termBase, lo, live, partial;
  };
  /// Waits for ring tile `tileIndex` and classifies it against the
  /// block's rows from `blockLo`. `streamIsQueries`: the ring's tiles are
  /// the queries and the block's the keys (the dK/dV kernel).
  mlir::FailureOr<StreamStep> enterStreamTile(RegionApplication &regions,
                                              TileRing &ring,
                                              mlir::Value tileIndex,
                                              mlir::Value blockLo,
                                              bool streamIsQueries);

  /// What the backward does at one element of S (or S^T): the weight
  /// P = 2^(s - lse2) (`none`: w = 2^s) and the score's adjoint dS in the
  /// score's units, both 0 where `kept` is false.
  struct ElementGradient {
    mlir::Value weight, adjoint;
  };
  ElementGradient elementGradient(mlir::Value score, mlir::Value kept,
                                  mlir::Value dP, mlir::Value delta,
                                  mlir::Value lse2);
  /// The score's reads of a relative-position table go through each
  /// warp's diagonal windows (DiagonalStaging.h), `warps` warps of
  /// kAtomRows rows on stream tiles of `columns` columns: the windows
  /// from `shared`, once a kernel.
  void carveDiagonalWindows(SharedMemoryArena &shared, int64_t warps,
                            int64_t columns);
  /// ... staged by `regions`'s evaluation (a kernel's, or a head's), the
  /// fragment's rows indexing `rows`; none without staged reads.
  void stageDiagonalsWith(RegionApplication &regions,
                          DiagonalStaging::Rows rows, int64_t columns);
  /// The score at an element in log2 units, -inf where masked (when
  /// `masked`; kv_idx and q_idx beyond their lengths are masked too); a
  /// staged read from the element's diagonalSlot.
  mlir::FailureOr<std::pair<mlir::Value, mlir::Value>>
  scoreAndKept(RegionApplication &regions, const ElementValues &element,
               bool masked);

  /// Adds a gradient region's parameter and capture gradients at
  /// `element` to `partials`, each only when asked for and `active` (none
  /// when `partials` is empty: another kernel owns them); `onOther` takes
  /// the region's other gradient ops with their adjoint (the score's read
  /// of a relative-position table too: DiagonalSums.h), and must account
  /// for each kind: the ones its kernel adds up, and, by name, the ones
  /// another kernel owns. An op it does not know fails, so a new kind of
  /// gradient op cannot be dropped silently.
  mlir::LogicalResult evaluateGradients(
      RegionApplication &regions, mlir::Region &region,
      const ElementValues &element, llvm::MutableArrayRef<mlir::Value> partials,
      mlir::Value active,
      llvm::function_ref<mlir::LogicalResult(mlir::Operation *, mlir::Value)>
          onOther);

  /// What evaluateGradients' `onOther` answers for a gradient op it has no
  /// case for.
  static mlir::LogicalResult unownedGradient(mlir::Operation *gradOp,
                                             llvm::StringRef where);

  /// A 16-byte chunk of 16-bit elements at element `offset` of `memref`
  /// (global or shared), widened to eight f32.
  mlir::Value loadChunk(mlir::Value memref, mlir::Value offset);
  /// The lane's two elements of slice `slice` of row `row` of a swizzled
  /// shared tile laid out as `tile`, as f32.
  std::array<mlir::Value, 2> loadTilePair(SwizzledTile &tile,
                                          mlir::Value shared,
                                          mlir::Value tileBase, mlir::Value row,
                                          int64_t slice);
  /// Binds the operands of the products over a stream tile: the block's
  /// rows as A, the stream tile's rows as B and, transposed, as the B of
  /// the accumulations -- the lanes' ldmatrix offsets, or for wgmma the
  /// descriptors of the warpgroup's rows of the block's tiles `first` and
  /// `second`.
  void addressOperands(mlir::Value first, mlir::Value second);
  /// Starts the copies of rows [lo, lo + blockRows) of each source into
  /// its block tile (rows at or past `length` are zeros), one commit group.
  void copyBlockTiles(llvm::ArrayRef<std::pair<mlir::Value, GlobalRows>> tiles,
                      mlir::Value lo, mlir::Value length);
  /// Waits until at most `pending` copy groups are in flight and makes the
  /// tiles visible to the block (and to wgmma).
  void waitForCopies(int64_t pending);
  /// Per lane row of `layout`, the sum of squares of its row of the block
  /// tile `shared`; the four lanes of a row share it.
  llvm::SmallVector<mlir::Value>
  blockRowSquareSums(const FragmentLayout &layout, mlir::Value shared);
  /// The A registers of the warp's rows of the block tile `shared`, head
  /// dims [16 slice, 16 slice + 16) (mma.sync).
  OperandRegisters loadBlockFragment(mlir::Value shared, int64_t slice) {
    return atoms.ldmatrix(
        shared, blockTile.laneChunkOffset(blockOffsets, 0, slice), false);
  }
  /// mma.sync: acc = A B^T, laid out as `layout`, with A the warp's rows of
  /// the block tile `block` (or `resident`, their fragments, four registers
  /// a head-dim slice) and B the rows of the stream tile at `tileBase` of
  /// `stream`; k runs over head_dim.
  llvm::SmallVector<Accumulator>
  multiplyByStream(const FragmentLayout &layout,
                   llvm::ArrayRef<mlir::Value> resident, mlir::Value block,
                   mlir::Value stream, mlir::Value tileBase);
  /// mma.sync: acc += A B, laid out as `layout`, with A from the
  /// accumulators `operand` (block rows x stream rows, laid out as
  /// `operandLayout`, packed to 16 bits) and B the stream tile at
  /// `tileBase` of `stream`; k runs over the stream's rows.
  void accumulateStream(llvm::ArrayRef<Accumulator> operand,
                        const FragmentLayout &operandLayout, mlir::Value stream,
                        mlir::Value tileBase, const FragmentLayout &layout,
                        llvm::SmallVectorImpl<Accumulator> &acc);
  /// The shared memory of a kernel: 1024-byte aligned for wgmma's
  /// swizzled column blocks.
  SharedMemoryArena sharedMemory() {
    return SharedMemoryArena(b, config.wgmma ? 1024 : 16);
  }
  /// wgmma: one product A_i B_i^T per pair of K-major operand descriptors
  /// (A_i the warpgroup's rows of an `aTile`, B_i the rows of a `bTile`,
  /// k over head_dim), each `accumulators` accumulators from 0, issued
  /// together and waited for.
  llvm::SmallVector<llvm::SmallVector<Accumulator>>
  multiplyByWgmma(llvm::ArrayRef<std::pair<mlir::Value, mlir::Value>> operands,
                  const SwizzledTile &aTile, const SwizzledTile &bTile,
                  int64_t accumulators);
  /// wgmma: run i of `acc` += A_i B_i, A_i from registers (`a[i]`, one set
  /// per 16 k) and B_i the MN-major operand of `bTile` at descriptor
  /// `bDescriptors[i]`, issued together and waited for.
  void accumulateByWgmma(llvm::ArrayRef<llvm::SmallVector<OperandRegisters>> a,
                         llvm::ArrayRef<mlir::Value> bDescriptors,
                         const SwizzledTile &bTile,
                         llvm::MutableArrayRef<Accumulator> acc);
  /// The wgmma A operands of 16 k-columns each from the accumulators
  /// `operand`, laid out as `layout` (its columns are the k).
  llvm::SmallVector<OperandRegisters>
  operandsFromAccumulators(llvm::ArrayRef<Accumulator> operand,
                           const FragmentLayout &layout);
  /// The first element of the warp's warpgroup's 64 rows in a blocked tile.
  mlir::Value warpgroupRows() {
    return mul(div(warp, kWarpsPerWarpgroup),
               kWarpgroupRows * SwizzledTile::kBlockElements);
  }

  attn::AttentionOp op;
  const BackwardConfig &config;
  const GradientSlots &slots;
  /// Rows of the block's own tiles and of the ring's.
  int64_t blockRows, streamRows;
  MmaSyncAtom atoms;
  WarpgroupMmaAtom warpgroupAtoms;
  /// The block's own rows, and the ring's tiles.
  SwizzledTile blockTile, streamTile;
  BackwardArgs args;
  mlir::Value threadId, lane, warp, batchIdx;
  std::optional<FragmentLane> fragment;
  llvm::SmallVector<attn::LoadOp> stagedLoads;
  llvm::SmallVector<mlir::Value> diagonalWindows;
  std::optional<DiagonalStaging> diagonals;
  std::optional<CopyEngine> blockCopies, streamCopies;
  /// mma.sync: the lanes' ldmatrix offsets (addressOperands) of the block's
  /// rows as A, and of the stream tile's rows as B and transposed as B.
  llvm::SmallVector<mlir::Value> blockOffsets, streamOffsets,
      streamTransposedOffsets;
  /// wgmma: the descriptors of the warpgroup's rows of the block's tiles.
  std::array<mlir::Value, 2> blockDescriptors;
};

/// The dK/dV kernel and the dQ kernel (KeyValueGradKernel.cpp,
/// QueryGradKernel.cpp); the shared memory they use, in bytes.
mlir::FailureOr<int64_t> buildKeyValueGradKernel(attn::AttentionOp op,
                                                 const BackwardConfig &config,
                                                 const GradientSlots &slots,
                                                 mlir::gpu::GPUModuleOp module,
                                                 llvm::StringRef name);
mlir::FailureOr<int64_t> buildQueryGradKernel(attn::AttentionOp op,
                                              const BackwardConfig &config,
                                              const GradientSlots &slots,
                                              mlir::gpu::GPUModuleOp module,
                                              llvm::StringRef name);

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_BACKWARDKERNEL_H
