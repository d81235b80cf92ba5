//===- ForwardBlock.h - where the forward kernels' blocks start -*- C++ -*-===//
//
// The flash kernel and its key-terms prologue are specialised on the same
// facts of the op and its plan (ForwardConfig), share the workspace of
// per-key terms (KeyTermWorkspace, docs/abi.md "Workspace"), take the same
// parameters and start their blocks the same way (ForwardBlock): thread,
// lane and warp, the (batch, query head, kv head) the block computes, the
// bases of its rows in Q, K, V and O, and its rows of the workspace.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_FORWARDBLOCK_H
#define RBFC_CONVERSION_NVGPU_FORWARDBLOCK_H

#include "rbfc/Conversion/NVGPU/CopyEngine.h"
#include "rbfc/Conversion/NVGPU/KernelArguments.h"

namespace rbfc {

class RegionApplication;

/// The plan's key_terms: staged in shared memory by per-thread cp.async
/// (`threads`) or by one cp.async.bulk (`bulk`), or loaded by each lane
/// from the workspace (`global`), or carried by S = Q K^T as one more k
/// (`product`, KeyTermOperand), or computed into shared memory from each K
/// tile there by the producer warpgroup's idle warps (`producer`).
enum class KeyTermSource { Threads, Bulk, Global, Product, Producer };

/// The canonical op's static facts the forward kernels are specialised on.
struct ForwardConfig {
  int64_t headDim, tileM, tileN, warps, stages;
  mlir::Type elementType; // bf16 or f16
  bool softmax, log2Domain, hasLse;
  /// How per-key terms reach the tile's scores (the plan's key_terms).
  KeyTermSource keyTerms;
  /// Resident blocks per multiprocessor to compile for (0: no hint).
  int64_t blocksPerSM;
  /// sm_90 and later: the key-terms prologue lets the flash kernel launch
  /// before it ends (programmatic dependent launch), and the flash kernel
  /// waits for it only before its first read of the workspace.
  bool programmaticLaunch;
  /// The plan's kernel is wgmma or wgmma_cooperative (sm_90a): each
  /// warpgroup computes S = Q K^T and O += P V for its 64 rows with wgmma,
  /// one atom a warp.
  bool wgmma;
  /// wgmma, not wgmma_cooperative: a producer warpgroup copies, the
  /// warpgroups of `warps` compute.
  bool warpSpecialized;
  /// wgmma: the producer brings K and V by TMA (one thread, tensor maps as
  /// kernel parameters), not by cp.async.
  bool tensorMapCopies;
  /// wgmma: the consumers overlap a tile's softmax with the previous
  /// tile's O += P V (the plan's `overlap`).
  bool overlap;

  /// The threads that compute (the plan's warps).
  int64_t threads() const { return warps * kThreadsPerWarp; }
  /// The threads that copy K and V: warp-specialised, a producer warpgroup
  /// of its own, else every thread.
  int64_t copyThreads() const {
    return warpSpecialized ? kWarpgroupThreads : threads();
  }
  /// The block's threads.
  int64_t blockThreads() const {
    return warpSpecialized ? threads() + copyThreads() : threads();
  }
  /// m16 atoms per warp: every K/V fragment a warp loads feeds this many
  /// mma, which is what keeps ldmatrix below shared memory's bandwidth.
  int64_t atoms() const { return tileM / (kAtomRows * warps); }
  int64_t rowsPerWarp() const { return tileM / warps; }
  int64_t dimSlices() const { return headDim / 16; }
  int64_t chunksPerRow() const { return headDim / kChunk; }
};

/// The per-key terms the score needs, as the workspace holds them.
struct KeyTermWorkspace {
  /// The planes of the key_bias region's value and of ||k||^2 where the
  /// score itself reads it; -1 where the score needs no such term.
  int64_t keyBiasPlane = -1, keyNormPlane = -1;
  /// The prologue computes ||k||^2 (the key_bias region or the score
  /// reads it).
  bool needsKeyNorm = false;
  /// key_terms = "product": the workspace holds the key bias over q_scale
  /// as KeyTermOperand's entries, two words a key, in place of the planes
  /// (planes() counts their words).
  bool inProduct = false;
  /// The key terms depend on the key/value head only (the key_bias region
  /// does not read h): the workspace holds a row per (batch, kv head),
  /// which every query head of the group reads, and the prologue computes
  /// each once, not once per query head.
  bool perKvHead = true;
  /// key_terms = "producer": the flash kernel computes the planes into
  /// shared memory itself; no prologue writes them to a workspace.
  bool computedInKernel = false;
  /// The wgmma kernels' term planes where the key bias rides in S = Q K^T
  /// (attn::KeyBiasProduct): the key bias plane holds key_bias / q_scale,
  /// which the consumers load into S's accumulators before S = Q K^T adds
  /// q.k, and the scores are then scaled_dot's alone.
  bool biasStartsScores = false;
  /// Where the key bias is stored over q_scale (the product's entries, or
  /// biasStartsScores), the parameters that cancel between the two
  /// (attn::KeyBiasProduct), which its writers set to 1.
  llvm::SmallVector<unsigned> cancelledParams;

  /// The terms `op` needs from `source`; `scoresByWgmma`: for a wgmma
  /// kernel.
  static KeyTermWorkspace forOp(attn::AttentionOp op,
                                KeyTermSource source = KeyTermSource::Threads,
                                bool scoresByWgmma = false);
  /// The key bias is stored over q_scale.
  bool biasOverQueryScale() const { return inProduct || biasStartsScores; }
  /// `params` as the writers of the terms evaluate the regions with them:
  /// the cancelled parameters at 1.
  llvm::SmallVector<mlir::Value>
  writerParams(mlir::ImplicitLocOpBuilder &b,
               llvm::ArrayRef<mlir::Value> params) const;
  int64_t planes() const {
    return inProduct ? KeyTermOperand::kWorkspaceWords
                     : (keyBiasPlane >= 0) + (keyNormPlane >= 0);
  }
  /// A prologue writes the terms to a workspace, which the kernels take.
  bool inWorkspace() const { return planes() > 0 && !computedInKernel; }

  /// The terms of key `kvIdx`, whose squared norm is `keyNorm` (null where
  /// no term reads it), as the prologue and the producer's warps write
  /// them: below `kvLen` the norm to its plane through `storePlane` and the
  /// key_bias region's value to `storeBias`; past it zeros to every plane
  /// (a key_bias region may read captures at kv_idx, which must stay in
  /// bounds). Where the bias is stored over q_scale, `regions` takes
  /// writerParams and storeBias gets key_bias / q_scale.
  mlir::LogicalResult
  emitKeyTerms(mlir::ImplicitLocOpBuilder &b, RegionApplication &regions,
               mlir::Value kvIdx, mlir::Value kvLen, mlir::Value keyNorm,
               llvm::function_ref<void(mlir::Value, int64_t)> storePlane,
               llvm::function_ref<void(mlir::Value)> storeBias) const;
};

/// A block of the flash kernel or of its key-terms prologue.
class ForwardBlock : public KernelEmitter {
public:
  ForwardBlock(mlir::ImplicitLocOpBuilder &b, attn::AttentionOp op,
               const ForwardConfig &config, const KeyTermWorkspace &workspace)
      : KernelEmitter(b), op(op), config(config), workspace(workspace) {}

  /// Adds the kernel `name` of `threads` threads a block with the
  /// parameters of docs/abi.md to `module`, sets the insertion point to its
  /// entry and binds `args`, the thread, its lane and its warp there.
  mlir::gpu::GPUFuncOp declare(mlir::gpu::GPUModuleOp module,
                               llvm::StringRef name, int64_t threads);
  /// Binds the block's (batch, query head, kv head), the bases of its rows
  /// and its workspace rows. Block y is the kv head with `byKvHead` (the
  /// prologue, where the key terms are per kv head; the first query head
  /// of the group stands for all), else the query head.
  void locate(bool byKvHead);
  /// The flash kernel's locate: the block's query tile, (batch, query
  /// head) and kv head, heaviest query tiles first. Without a mask (equal
  /// work per tile) block x counts the query tiles down within block
  /// (y, z)'s head and batch; under a mask in BlockOrder's longest-first
  /// order over the heads.
  void locateQueryTile();

  /// Rows of (batch, head) of `tensor`, whose base is `base`.
  static GlobalRows rows(const TensorArgs &tensor, mlir::Value base) {
    return {tensor.data, base, tensor.strides[2]};
  }

  ForwardArgs args;
  mlir::Value threadId, lane, warp;
  mlir::Value batch, head, kvHead;
  /// The flash kernel's query tile (locateQueryTile).
  mlir::Value queryTile;
  /// Element offsets of the block's (batch, head) in Q, K, V and O.
  mlir::Value qBase, kBase, vBase, oBase;
  /// round_up(kv_len, tile_n): the length of a workspace row, so a K tile's
  /// terms are one aligned run that exists whatever kv_len is.
  mlir::Value keyTermRowLength;
  /// Per plane, the workspace offset of the block's row (product entries:
  /// the one row of entries, KeyTermOperand::kWorkspaceWords a key).
  llvm::SmallVector<mlir::Value> keyTermRows;

private:
  /// The bases of the block's rows and its workspace rows, once batch,
  /// head and kvHead are bound.
  void bindRows();

  attn::AttentionOp op;
  const ForwardConfig &config;
  const KeyTermWorkspace &workspace;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_FORWARDBLOCK_H
