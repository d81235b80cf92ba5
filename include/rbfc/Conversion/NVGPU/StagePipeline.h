//===- StagePipeline.h - handing ring stages over on mbarriers -*- C++ -*-===//
//
// When one set of threads fills a TileRing and another computes on it (the
// wgmma kernel's producer warpgroup and its consumer warpgroups), the two
// hand each stage over on mbarriers instead of block barriers: per stage a
// "full" barrier, on which every producer thread arrives once its copies of
// the stage's tile have landed, and an "empty" one, on which every consumer
// warp arrives once it no longer reads the stage (CUTLASS's
// PipelineAsync). Iteration i of the ring's loop uses stage i % stages for
// the (i / stages)-th time: a wait for it is on that phase's parity.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_STAGEPIPELINE_H
#define RBFC_CONVERSION_NVGPU_STAGEPIPELINE_H

#include "rbfc/Conversion/NVGPU/KernelEmitter.h"

namespace rbfc {

class StagePipeline : public KernelEmitter {
public:
  /// `barriers`: a shared memref of i64 whose barrierCount(stages) from
  /// `first` on are this pipeline's; each stage is full after `producers`
  /// arrivals and empty after `consumers`.
  StagePipeline(mlir::ImplicitLocOpBuilder &b, mlir::Value barriers,
                int64_t first, int64_t stages, int64_t producers,
                int64_t consumers)
      : KernelEmitter(b), barriers(barriers), first(first), stages(stages),
        producers(producers), consumers(consumers) {}

  static int64_t barrierCount(int64_t stages) { return 2 * stages; }

  /// Thread `threadId` 0 initialises the barriers; a block barrier must
  /// follow before any thread arrives or waits on them. `asyncCopies`: the
  /// producer's copies complete on the full barriers through the async
  /// proxy (TMA, bulk copies), which must see them initialised.
  void initialize(mlir::Value threadId, bool asyncCopies);

  /// Producer: waits until the consumers released the stage of iteration
  /// `iteration` (free for the first `stages` iterations).
  void waitEmpty(mlir::Value iteration);
  /// Producer: this thread's part of iteration `iteration`'s tile is in
  /// place (and visible to whoever reads it next).
  void arriveFull(mlir::Value iteration);
  /// Producer: the arrival of a thread whose asynchronous copies of
  /// iteration `iteration`'s tile will complete `bytes` bytes on the full
  /// barrier (issued after this, in the same phase).
  void arriveFullExpecting(mlir::Value iteration, int64_t bytes);
  /// The full barrier of iteration `iteration`'s stage, on which
  /// asynchronous copies complete.
  mlir::Value fullBarrier(mlir::Value iteration);
  /// Consumer: waits until iteration `iteration`'s tile is in place.
  void waitFull(mlir::Value iteration);
  /// Consumer: when `arrives`, this thread releases iteration
  /// `iteration`'s stage for its warp (one thread a warp).
  void arriveEmpty(mlir::Value iteration, mlir::Value arrives);

private:
  mlir::Value stage(mlir::Value iteration) { return rem(iteration, stages); }
  /// Barrier `index` of this pipeline's.
  mlir::Value barrier(mlir::Value index) {
    return elementPointer(barriers, add(index, first));
  }
  mlir::Value emptyBarrier(mlir::Value iteration);
  /// Waits for the completion of phase `phase` (index) of `barrier`.
  void waitPhase(mlir::Value barrier, mlir::Value phase);

  mlir::Value barriers;
  int64_t first, stages, producers, consumers;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_STAGEPIPELINE_H
