//===- StagePipeline.cpp - producer/consumer hand-off of ring stages ------===//
#include "rbfc/Conversion/NVGPU/StagePipeline.h"

#include "rbfc/Conversion/NVGPU/CopyEngine.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

using namespace mlir;
using namespace rbfc;

void StagePipeline::initialize(Value threadId, bool asyncCopies) {
  auto leader = scf::IfOp::create(
      b, TypeRange{}, cmp(arith::CmpIPredicate::eq, threadId, index(0)),
      /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(leader.thenBlock());
  for (int64_t s = 0; s < stages; ++s) {
    NVVM::MBarrierInitOp::create(b, barrier(index(s)), i32(producers), Value());
    NVVM::MBarrierInitOp::create(b, barrier(index(stages + s)), i32(consumers),
                                 Value());
  }
  if (asyncCopies)
    fenceSharedForAsyncProxy();
}

Value StagePipeline::fullBarrier(Value iteration) {
  return barrier(stage(iteration));
}

Value StagePipeline::emptyBarrier(Value iteration) {
  return barrier(add(stage(iteration), stages));
}

void StagePipeline::waitPhase(Value barrier, Value phase) {
  Value parity = arith::IndexCastUIOp::create(b, b.getI32Type(), rem(phase, 2));
  NVVM::MBarrierTryWaitParityOp::create(b, barrier, parity,
                                        i32(kBarrierSuspendHint));
}

void StagePipeline::waitEmpty(Value iteration) {
  // The k-th refill of a stage (k >= 1) waits for the consumers' k-th
  // release, phase k - 1 of its empty barrier.
  auto refill = scf::IfOp::create(
      b, TypeRange{}, cmp(arith::CmpIPredicate::uge, iteration, index(stages)),
      /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(refill.thenBlock());
  waitPhase(emptyBarrier(iteration), sub(div(iteration, stages), index(1)));
}

void StagePipeline::arriveFull(Value iteration) {
  NVVM::MBarrierArriveOp::create(b, Type(), fullBarrier(iteration), Value());
}

void StagePipeline::arriveFullExpecting(Value iteration, int64_t bytes) {
  NVVM::MBarrierArriveExpectTxOp::create(b, Type(), fullBarrier(iteration),
                                         i32(bytes), NVVM::MemScopeKind::CTA,
                                         /*relaxed=*/false, Value());
}

void StagePipeline::waitFull(Value iteration) {
  waitPhase(fullBarrier(iteration), div(iteration, stages));
}

void StagePipeline::arriveEmpty(Value iteration, Value arrives) {
  auto arriving = scf::IfOp::create(b, TypeRange{}, arrives,
                                    /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(arriving.thenBlock());
  NVVM::MBarrierArriveOp::create(b, Type(), emptyBarrier(iteration), Value());
}
