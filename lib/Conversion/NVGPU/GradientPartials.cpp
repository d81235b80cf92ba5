//===- GradientPartials.cpp - deterministic sums of gradients -------------===//
#include "rbfc/Conversion/NVGPU/GradientPartials.h"
#include "rbfc/Conversion/RegionInlining.h"

#include "rbfc/Dialect/Attn/DiagonalIndex.h"
#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-gradient-partials"

using namespace mlir;
using namespace rbfc;

GradientSlots::GradientSlots(attn::AttentionOp op)
    : numParams(op.getParams().size()) {
  captureHasGradient.assign(op.getCaptures().size(), false);
  for (auto [c, capture] : llvm::enumerate(op.getCaptures()))
    captureHasGradient[c] =
        cast<RankedTensorType>(capture.getType()).getElementType().isF32();
  attn::ScoreDependence dependence;
  attn::DiagonalIndex diagonals;
  for (Region *region : {&op.getScoreGrad(), &op.getKeyBiasGrad(),
                         &op.getQScaleGrad(), &op.getRowBiasGrad()}) {
    if (region->empty())
      continue;
    for (auto sink : region->front().getOps<attn::GradCaptureOp>()) {
      unsigned capture = captureIndex(op, sink.getCapture());
      if (llvm::all_of(sink.getIndices(),
                       [&](Value idx) { return dependence.isUniform(idx); })) {
        uniformSinks.push_back(sink);
        continue;
      }
      std::optional<int> direction = diagonals.direction(sink.getIndices());
      if (region == &op.getScoreGrad() && !diagonalSink && direction &&
          *direction != 0) {
        diagonalSink = sink;
        diagonalDirection = *direction;
        continue;
      }
      captureHasGradient[capture] = false;
    }
  }
  // A table with another read the GPU cannot differentiate has no GPU
  // gradient: its diagonal sums would go unused.
  if (diagonalSink &&
      !captureHasGradient[captureIndex(op, diagonalSink->getCapture())])
    diagonalSink.reset();
  LLVM_DEBUG(llvm::dbgs() << "gradient slots: " << numParams << " parameters, "
                          << uniformSinks.size() << " uniform capture reads, "
                          << (diagonalSink ? "a" : "no")
                          << " relative-position table\n");
}

std::optional<int64_t>
GradientSlots::captureSlot(attn::GradCaptureOp sink) const {
  auto found = llvm::find(uniformSinks, sink);
  if (found == uniformSinks.end())
    return std::nullopt;
  return numParams + (found - uniformSinks.begin());
}

SmallVector<Value> GradientPartials::zeros() {
  return SmallVector<Value>(slots.size(), f32(0.0));
}

void GradientPartials::storeBlockSums(ArrayRef<Value> partials, Value lane,
                                      Value warp, Value threadId, int64_t warps,
                                      Value scratch, Value memref, Value row) {
  int64_t count = slots.size();
  if (count == 0)
    return;
  // A fixed butterfly within the warp, then the warps' sums in warp order:
  // the order of every addition is fixed, whatever the timing.
  SmallVector<Value> warpSums;
  for (Value partial : partials)
    warpSums.push_back(laneSum(partial, kThreadsPerWarp));
  {
    auto writer = scf::IfOp::create(
        b, TypeRange{}, cmp(arith::CmpIPredicate::eq, lane, index(0)), false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(writer.thenBlock());
    for (auto [slot, sum] : llvm::enumerate(warpSums))
      memref::StoreOp::create(b, sum, scratch,
                              ValueRange{add(mul(warp, count), slot)});
  }
  gpu::BarrierOp::create(b);
  {
    auto summer = scf::IfOp::create(
        b, TypeRange{}, cmp(arith::CmpIPredicate::ult, threadId, index(count)),
        false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(summer.thenBlock());
    Value sum = f32(0.0);
    for (int64_t w = 0; w < warps; ++w)
      sum = fadd(sum, memref::LoadOp::create(
                          b, scratch, ValueRange{add(threadId, w * count)}));
    memref::StoreOp::create(b, sum, memref, ValueRange{add(row, threadId)});
  }
  // The scratch is reused by the next call.
  gpu::BarrierOp::create(b);
}
