//===- SelectPlan.cpp - the default kernel plan per target ----------------===//
//
// The mma.sync kernel gives each warp 16, 32 or 64 query rows (1, 2 or 4
// m16 atoms), so the query tile is 16 x atoms x warps. Two atoms per warp
// is the default: every K/V fragment a warp loads with ldmatrix then feeds
// two mma, which keeps shared-memory traffic below its bandwidth, while the
// O and S accumulators of 32 rows still fit in 255 registers at head_dim
// 128 with 64-key tiles. Four warps and 128-row tiles are what
// FlashAttention-2 uses too. On the H100 (bench/results, 2026-11-24) this
// beat one atom x 8 warps by 5-20% at head_dim 64 and 128; 256-row tiles
// won without a mask but lost under causal masks.
//
// On sm_90a the wgmma kernels take head dims 64 (cooperative) and 128
// (warp-specialised), their plans below; the other head dims, and
// sm_80-sm_90, keep the mma.sync kernel.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/DiagonalStaging.h"
#include "rbfc/Conversion/NVGPU/FlashKernel.h"
#include "rbfc/Conversion/Passes.h"
#include "rbfc/Dialect/Attn/KeyBiasProduct.h"
#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-select-plan"

namespace rbfc {
#define GEN_PASS_DEF_ATTNSELECTPLAN
#include "rbfc/Conversion/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

/// Architectures the mma.sync kernel targets (PTX 8.0, m16n8k16 bf16).
bool isSupportedArch(StringRef arch) {
  return llvm::is_contained({"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"},
                            arch);
}

/// Whether the H100 measurements (docs/benchmarks.md) chose the plan of
/// this target and head dim; the others are chosen so that ptxas spills
/// nothing (scripts/ptxas-spills.sh), and not timed.
bool isMeasured(StringRef arch, int64_t headDim) {
  return archVersion(arch) >= 90 &&
         llvm::is_contained({32, 64, 128, 256}, headDim);
}

/// Whether the score or the mask reads a captured tensor at an index that
/// changes from element to element (document ids), other than the reads
/// DiagonalStaging brings through shared memory once a diagonal (a
/// relative-position table): those gathers need registers that the
/// cooperative wgmma kernel at two blocks a multiprocessor does not have
/// (document_mask spilled 224 bytes there, relative_bias 856 before its
/// table was staged; 0 since).
bool gathersPerElement(attn::AttentionOp op) {
  attn::ScoreDependence dependence;
  SmallVector<attn::LoadOp> staged = DiagonalStaging::stagedLoads(op);
  auto gathers = [&](Region &region) {
    return region
        .walk([&](attn::LoadOp load) {
          if (llvm::is_contained(staged, load))
            return WalkResult::advance();
          for (Value index : load.getIndices())
            if (dependence.get(index) &
                (attn::kDependsOnQueryIndex | attn::kDependsOnKeyIndex))
              return WalkResult::interrupt();
          return WalkResult::advance();
        })
        .wasInterrupted();
  };
  return gathers(op.getScore()) || gathers(op.getMask());
}

/// The score is the dot product alone, scaled or not (dot-product
/// attention, a mask aside): no per-score term holds registers beside S.
bool scoresAreDot(attn::AttentionOp op) {
  Operation *yield = op.getScore().front().getTerminator();
  if (yield->getNumOperands() != 1)
    return false;
  Operation *score = yield->getOperand(0).getDefiningOp();
  return isa_and_nonnull<attn::ScaledDotOp, attn::DotOp>(score);
}

/// sm_90a at head_dim 128: the warp-specialised wgmma kernel, two consumer
/// warpgroups of 64 query rows and a producer warpgroup, 128- or 160-key
/// tiles, two stages, K and V brought by TMA and the key terms by bulk
/// copies of the same producer thread (a key bias that rides in S = Q K^T
/// starting S's accumulators). On the H200 (bench/NOTES.md, 2026-12-04) the
/// warp-specialised kernel ran 10-14% ahead of the cooperative wgmma kernel
/// and 25-48% ahead of mma.sync with a cp.async producer, and TMA took
/// 3-5% more (step 10), 160-key tiles without a mask 3-6% more again
/// (step 11). At head_dim 64 its producer cannot keep up
/// (dot 289 against mma.sync's 332 TFLOP/s); the cooperative kernel
/// (every warp copies and computes) takes 64 instead, compiled for two
/// blocks per multiprocessor (causal dot 330 against 254 with one) with
/// 128-key tiles, or 64-key tiles under a key bias, whose terms the threads
/// copy (RBF 357 against 249 with 128-key tiles and workspace loads): the
/// plans its sweep chose (plan-sweep-cooperative.json). In one run with
/// mma.sync (fwd-coop64.json) dot ran 1.19-1.22x and RBF 1.07-1.09x it;
/// the masked specs spill 8-56 bytes at two blocks' 128 registers and
/// still ran ahead (causal dot 328 against 276). A spec that gathers per
/// element keeps mma.sync there; a relative-position table, staged a
/// diagonal at a time, no longer counts as a gather (bench/NOTES.md step
/// 50, H100, 4x16x4096x64: relative_bias 346 TFLOP/s against mma.sync's
/// 285).
attn::PlanAttr wgmmaPlan(attn::AttentionOp op, StringRef arch,
                         int64_t headDim) {
  if (headDim == 64) {
    // A key bias that rides in S = Q K^T (RBF's, ALiBi's) leaves the
    // scores as dot's, and dot's 128-key tiles: RBF 402 / 317 causal at
    // 4x16x4096x64 against 374 / 300 for the terms copied by the threads on
    // 64-key tiles and 370 / 297 for the product on 64-key tiles, dot 415 /
    // 353 (H200, bench/NOTES.md step 16). Its terms starting S's
    // accumulators instead (key_terms "bulk") ran 5-7% slower here: RBF 406
    // / 357 against 419 / 365 (H100, paired 1.067 / 1.048, step 41).
    // Three consumer warpgroups on 192-row tiles, overlapped, with the
    // bias starting S ran 4-5% faster where their waves fill (4x16x4096,
    // 6x16x2048) but 2-14% slower at 1024-4096 queries otherwise: one
    // block of 192 rows a multiprocessor quantises coarsely and pads 1024
    // queries by 12.5% (H100, paired, step 52).
    bool product = attn::KeyBiasProduct::analyze(op).has_value();
    bool keyTermsApart = !op.getKeyBias().empty() && !product;
    return attn::PlanAttr::get(op.getContext(), arch, "wgmma_cooperative",
                               /*tile_m=*/128,
                               /*tile_n=*/keyTermsApart ? 64 : 128,
                               /*warps=*/8, /*stages=*/2,
                               product ? "product" : "threads",
                               /*blocks_per_sm=*/2, "cp_async",
                               /*overlap=*/false);
  }
  // Without a mask 160-key tiles ran 3-6% ahead of 128 where the scores
  // are dot's (fewer tiles to pay the softmax's fixed costs on); under a
  // causal mask they ran 0-6% behind, their diagonal tiles straddling the
  // 128-row query tiles. The consumers overlap the softmax with the
  // products: at 4x16x4096x128 on the H200 dot 606-612 TFLOP/s against
  // 555-558 serial at 160-key tiles, RBF with its key bias in the product
  // 573-574 against 533-543 with bulk terms (bench/NOTES.md step 20); under
  // the mask RBF's product ran 918-923 against 880-885 with bulk terms
  // (rbf_causal). A key bias that rides in S = Q K^T comes by bulk copies
  // and starts S's accumulators (steps 38 and 41): 1.2-1.5% faster than the
  // product's entries at 4x16x4096x128 and 1x16x16384x128, causal and not
  // (H100, paired). Other scores take 128-key tiles, overlapped where they
  // gather nothing per element (step 47, H100, 4x16x4096x128: rbf_none 650
  // against 560 serial at 160 keys, softcap 363 against 317,
  // rbf_head_gamma 555 against 518). A relative-position gather ran
  // serial faster before its table was staged (361 against 341 overlapped
  // at 128 keys); staged, it counts as no gather and is overlapped like
  // softcap: 491 against 487 serial (step 50, H100, level).
  bool startsScores = attn::KeyBiasProduct::analyze(op).has_value();
  bool masked = !op.getMask().empty();
  bool dotTiles = !masked && (startsScores || scoresAreDot(op));
  bool overlap = masked || !gathersPerElement(op);
  return attn::PlanAttr::get(op.getContext(), arch, "wgmma", /*tile_m=*/128,
                             /*tile_n=*/dotTiles ? 160 : 128, /*warps=*/8,
                             /*stages=*/2, "bulk", /*blocks_per_sm=*/0, "tma",
                             overlap);
}

/// The kernels for problems that the cooperative default at head_dim 64
/// leaves short of work, each taken where its grid fits in one wave and
/// the next one's does not. First the warp-specialised kernel with TMA copies
/// and four stages, whose producer keeps its blocks fed, and the key terms
/// computed by the producer's idle warps from the K tile in shared memory:
/// no prologue, whose fixed cost a small call cannot hide (bench/NOTES.md
/// step 31, H100: RBF 37 TFLOP/s against bulk terms' 35 at 1x8x512x64, 191
/// against 189 at 1x16x1024x64). The runtime launches it where its grid
/// fits in one wave, one block a multiprocessor. On the H100 (2026-12-06,
/// bench/NOTES.md step 27) it ran dot 221 and RBF 188 TFLOP/s at 1x16x1024x64
/// (128 blocks) against the cooperative kernel's 197 and 156, 106 / 90 causal
/// against 90 / 84, and 42 / 35 against 39 / 31 at 1x8x512x64; at 2x16x1024x64
/// (256 blocks, two waves of it) it ran 13-16% behind, and at 4x16x4096x64
/// 16-18% (dot 366-375 against 444-450 in two earlier runs).
///
/// Then the same kernel with 64-row tiles and one consumer warpgroup, for
/// problems that leave the first one's wave half empty: twice the blocks.
/// At 1x8x512x64 (32 blocks of 128 rows) it ran 15-23% faster, RBF 46
/// TFLOP/s against 38 and dot 51 against 43 (cuDNN 44), and 64 x 64 tiles
/// 7-20%; at 1x16x1024x64, where 128-row tiles fill the H100 and 64-row
/// ones take two waves, 1-40% slower (bench/NOTES.md step 41). At two
/// blocks a multiprocessor (three stages, so that two fit) that grid is
/// one wave: dot 238 against 221 TFLOP/s, 124 against 103 causal, RBF
/// causal 105 against 95, level with cuDNN's 241 / 121 (step 43). A key
/// bias without a mask stays at one block: each block's producer computes
/// the same K tiles' key terms, and RBF ran 199 against 211.
SmallVector<attn::PlanAttr> smallProblemPlans(attn::AttentionOp op,
                                              attn::PlanAttr plan) {
  if (plan.getKernel() != "wgmma_cooperative")
    return {};
  auto producerPlan = [&](int64_t tileM, int64_t warps, int64_t stages,
                          int64_t blocksPerSM) {
    return attn::PlanAttr::get(op.getContext(), plan.getArch(), "wgmma", tileM,
                               /*tile_n=*/128, warps, stages, "producer",
                               blocksPerSM, "tma", /*overlap=*/false);
  };
  bool unmaskedKeyTerms = !op.getKeyBias().empty() && op.getMask().empty();
  return {producerPlan(/*tileM=*/128, /*warps=*/8, /*stages=*/4,
                       /*blocksPerSM=*/0),
          unmaskedKeyTerms
              ? producerPlan(/*tileM=*/64, /*warps=*/4, /*stages=*/4,
                             /*blocksPerSM=*/0)
              : producerPlan(/*tileM=*/64, /*warps=*/4, /*stages=*/3,
                             /*blocksPerSM=*/2)};
}

attn::PlanAttr defaultPlan(attn::AttentionOp op, StringRef arch) {
  MLIRContext *ctx = op.getContext();
  int64_t headDim =
      cast<RankedTensorType>(op.getQuery().getType()).getDimSize(3);
  if (arch == "sm_90a" &&
      (headDim == 128 || (headDim == 64 && !gathersPerElement(op))))
    return wgmmaPlan(op, arch, headDim);
  bool measured = isMeasured(arch, headDim);
  // Without a hint ptxas aims at more than one block per multiprocessor
  // and spills to get there (the dot kernel at head_dim 32 on sm_80: 168
  // registers and 8 bytes of spills, 195 registers and none with
  // .minnctapersm 1). The unmeasured plans ask for one block, so that it
  // spends registers before it spills.
  int64_t blocksPerSM = measured ? 0 : 1;
  // Past 128 the O accumulators of two atoms would not fit: one atom a
  // warp, 32-key tiles.
  if (headDim > 128)
    return attn::PlanAttr::get(ctx, arch, "mma_sync", /*tile_m=*/64,
                               /*tile_n=*/32, /*warps=*/4, /*stages=*/2,
                               "threads", blocksPerSM, "cp_async",
                               /*overlap=*/false);
  // How a key bias (RBF's -gamma ||k||^2, ...) reaches the scores, as
  // measured on the H100 (docs/kernel.md, "How key_terms was chosen"). At
  // head_dim 64 the lanes load it from the workspace: no copies, no shared
  // memory, within 1% of dot-product. At head_dim 128 the kernel sits at
  // 255 registers: ptxas then issues those loads late and they stall, and
  // per-thread cp.async addresses cost ~8% without a mask; one bulk copy
  // per tile holds no per-thread registers. Under a mask, 32-key tiles
  // with workspace loads fit without spills and run 0.4-3% above the dot
  // kernel (64-key tiles: 5-7%, with any of the three sources); without a
  // mask 32-key tiles cost dot 3-6% and RBF 7%, and are kept despite 28-56
  // bytes of spills.
  //
  // Elsewhere the 64-key tile's S accumulators beside O, 2 atoms x
  // (head_dim + 64) / 8 x 4 registers, spill above head_dim 80 (ptxas -v):
  // 32-key tiles, the key bias from the workspace (no per-thread copy
  // addresses; sm_80 has no bulk copies). Head dims 48 and 80 take the
  // choices of 64 and 128.
  //
  // Before Hopper a score or mask that holds more per element, a gather
  // per element (document ids) or a key bias under a mask, spilled more:
  // on 64-key tiles from head_dim 64 (document_mask 20 bytes at 64, alibi
  // and rbf_causal 4 and 8 with --lse at 80) and on 32-key tiles at 128
  // (rbf_causal and document_mask 8), ptxas 13.0 for sm_80. Those take
  // 32-key tiles from 64 and 64-row tiles (one atom a warp) from 128, on
  // which ptxas spills nothing (scripts/ptxas-spills.sh); not timed, no
  // sm_80 card being lent.
  bool hopper = archVersion(arch) >= 90;
  bool crowded =
      !hopper && (gathersPerElement(op) ||
                  (!op.getKeyBias().empty() && !op.getMask().empty()));
  bool narrowTiles = measured ? headDim == 128 && !op.getKeyBias().empty() &&
                                    !op.getMask().empty()
                              : headDim > 80 || (crowded && headDim >= 64);
  int64_t tileN = narrowTiles ? 32 : 64;
  int64_t tileM = crowded && headDim >= 128 ? 64 : 128;
  StringRef keyTerms = "threads";
  if (!op.getKeyBias().empty() && headDim > 32) {
    if (hopper && headDim <= 64)
      keyTerms = "global";
    else if (hopper && tileN == 64 && op.getMask().empty())
      keyTerms = "bulk";
    else if (headDim > 64)
      keyTerms = "global";
  }
  // At head_dim 32 the dot-product kernel fits in 168 registers, three
  // blocks per multiprocessor; a score with terms took 206-214 and two
  // blocks, 23% slower than dot on the H100. Compiled for three it is
  // within 3% (8 bytes of spills).
  if (measured && headDim == 32)
    blocksPerSM = 3;
  return attn::PlanAttr::get(ctx, arch, "mma_sync", tileM, tileN,
                             /*warps=*/4, /*stages=*/2, keyTerms, blocksPerSM,
                             "cp_async", /*overlap=*/false);
}

struct AttnSelectPlan : rbfc::impl::AttnSelectPlanBase<AttnSelectPlan> {
  using Base::Base;

  void runOnOperation() override {
    if (!isSupportedArch(arch)) {
      getOperation()->emitError()
          << "unsupported target architecture '" << arch
          << "'; expected sm_80, sm_86, sm_89, sm_90 or sm_90a";
      return signalPassFailure();
    }
    WalkResult result = getOperation()->walk([&](attn::AttentionOp op) {
      attn::PlanAttr plan = op.getPlanAttr();
      bool chosen = !plan;
      if (chosen) {
        plan = defaultPlan(op, arch);
        op.setPlanAttr(plan);
        LLVM_DEBUG(llvm::dbgs() << "chose " << plan << "\n");
      } else if (plan.getArch() != arch) {
        op.emitOpError() << "has a plan for " << plan.getArch()
                         << " but the target is " << arch;
        return WalkResult::interrupt();
      }
      if (failed(verifyFlashPlan(op, plan)))
        return WalkResult::interrupt();
      // A plan given by the user is one kernel; a default one may come with
      // more for small problems.
      if (!chosen)
        return WalkResult::advance();
      SmallVector<attn::PlanAttr> smallPlans = smallProblemPlans(op, plan);
      if (smallPlans.empty())
        return WalkResult::advance();
      for (attn::PlanAttr small : smallPlans) {
        if (failed(verifyFlashPlan(op, small)))
          return WalkResult::interrupt();
        LLVM_DEBUG(llvm::dbgs() << "and for small problems " << small << "\n");
      }
      op.setSmallPlansAttr(ArrayAttr::get(
          op.getContext(),
          SmallVector<Attribute>(smallPlans.begin(), smallPlans.end())));
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
