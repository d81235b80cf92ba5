//===- KernelEmitter.h - what every kernel component emits with -*- C++ -*-===//
//
// The components of the GPU kernels (fragment layout, matrix atoms, copy
// engine, region application, online softmax, epilogue) and the schedules
// built from them all emit ops at one ImplicitLocOpBuilder's insertion point,
// most of them index arithmetic. KernelEmitter holds that builder and the
// short forms they share, so that a component reads as the algebra it
// computes: `add(mul(row, stride), column)`.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_KERNELEMITTER_H
#define RBFC_CONVERSION_NVGPU_KERNELEMITTER_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

namespace rbfc {

inline constexpr int64_t kThreadsPerWarp = 32;
/// The four consecutive warps that issue a wgmma together.
inline constexpr int64_t kWarpsPerWarpgroup = 4;
inline constexpr int64_t kWarpgroupThreads =
    kWarpsPerWarpgroup * kThreadsPerWarp;

class KernelEmitter {
public:
  explicit KernelEmitter(mlir::ImplicitLocOpBuilder &b) : b(b) {}

  mlir::ImplicitLocOpBuilder &getBuilder() const { return b; }

protected:
  mlir::Value index(int64_t value) {
    return mlir::arith::ConstantIndexOp::create(b, value);
  }
  mlir::Value f32(double value) {
    return mlir::arith::ConstantOp::create(b, b.getF32FloatAttr(value));
  }
  mlir::Value i32(int64_t value) {
    return mlir::arith::ConstantOp::create(b, b.getI32IntegerAttr(value));
  }
  mlir::Value add(mlir::Value x, mlir::Value y) {
    return mlir::arith::AddIOp::create(b, x, y);
  }
  mlir::Value sub(mlir::Value x, mlir::Value y) {
    return mlir::arith::SubIOp::create(b, x, y);
  }
  mlir::Value mul(mlir::Value x, mlir::Value y) {
    return mlir::arith::MulIOp::create(b, x, y);
  }
  mlir::Value add(mlir::Value x, int64_t y) { return y ? add(x, index(y)) : x; }
  mlir::Value mul(mlir::Value x, int64_t y) {
    return y == 1 ? x : mul(x, index(y));
  }
  mlir::Value div(mlir::Value x, int64_t y) {
    return mlir::arith::DivUIOp::create(b, x, index(y));
  }
  mlir::Value rem(mlir::Value x, int64_t y) {
    return mlir::arith::RemUIOp::create(b, x, index(y));
  }
  mlir::Value cmp(mlir::arith::CmpIPredicate predicate, mlir::Value x,
                  mlir::Value y) {
    return mlir::arith::CmpIOp::create(b, predicate, x, y);
  }
  mlir::Value notI(mlir::Value x) {
    return mlir::arith::XOrIOp::create(
        b, x, mlir::arith::ConstantOp::create(b, b.getBoolAttr(true)));
  }
  mlir::Value select(mlir::Value c, mlir::Value x, mlir::Value y) {
    return mlir::arith::SelectOp::create(b, c, x, y);
  }
  mlir::Value fadd(mlir::Value x, mlir::Value y) {
    return mlir::arith::AddFOp::create(b, x, y);
  }
  mlir::Value fmul(mlir::Value x, mlir::Value y) {
    return mlir::arith::MulFOp::create(b, x, y);
  }

  /// An scf.if on `condition` whose else branch passes `state` through;
  /// leaves the insertion point at the start of the then branch, which the
  /// caller ends with a yield of the updated state.
  mlir::scf::IfOp updateIf(mlir::Value condition, mlir::ValueRange state);
  /// An scf.if on `partial` whose branches `body` builds: the then branch
  /// with masked = true (a tile whose mask or bounds are tested per
  /// element), the else branch with masked = false; each returns the
  /// `results` f32 values its branch yields. Returns the if's results.
  mlir::FailureOr<mlir::ValueRange> branchOnPartialTile(
      mlir::Value partial, int64_t results,
      llvm::function_ref<
          mlir::FailureOr<llvm::SmallVector<mlir::Value>>(bool masked)>
          body);

  /// 2^x and log2(x) by the SFU (ex2/lg2.approx, 2 ulp), as every flash
  /// kernel does; through NVVM intrinsics so no libdevice is needed. exp2
  /// flushes results below 2^-126 to zero (.ftz): without it ptxas wraps
  /// every ex2 in a range check and two multiplies, and a weight that small
  /// is zero next to the row's maximum, which weighs 1.
  mlir::Value exp2(mlir::Value x);
  mlir::Value log2(mlir::Value x);

  /// Butterfly reduction over `width` adjacent lanes (xor 1, 2, ...).
  mlir::Value
  laneReduce(mlir::Value value, int64_t width,
             llvm::function_ref<mlir::Value(mlir::Value, mlir::Value)> combine);
  /// Lane 0's `value`, for a value every lane of the warp already holds
  /// (a whole-warp reduction's): ptxas then knows it is uniform, and a
  /// branch on it around a wgmma does not serialize the kernel's wgmma
  /// (C7520).
  mlir::Value uniformFromFirstLane(mlir::Value value);
  mlir::Value laneSum(mlir::Value v, int64_t width) {
    return laneReduce(v, width,
                      [&](mlir::Value x, mlir::Value y) { return fadd(x, y); });
  }

  /// An LLVM pointer to element `offset` of the 1-D global or workgroup
  /// memref `memref`, for the NVVM ops that take pointers.
  mlir::Value elementPointer(mlir::Value memref, mlir::Value offset);
  /// The shared::cluster pointer of the shared pointer `shared`, which the
  /// bulk and tensor copies write through: their shared::cta forms need PTX
  /// ISA 8.6, and a block outside a cluster is its own cluster.
  mlir::Value clusterPointer(mlir::Value shared);
  /// fence.proxy.async.shared::cta: this thread's shared-memory writes (and
  /// mbarrier initialisations) become visible to the async proxy, through
  /// which wgmma reads and bulk and tensor copies complete.
  void fenceSharedForAsyncProxy();

  mlir::ImplicitLocOpBuilder &b;
};

/// Lets every float multiply-add pair of the kernel `func` fuse into one
/// FMA, as nvcc does by default (-fmad=true): without the flag NVPTX emits
/// mul.rn/add.rn, which ptxas must not contract.
void allowContraction(mlir::gpu::GPUFuncOp func);

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_KERNELEMITTER_H
