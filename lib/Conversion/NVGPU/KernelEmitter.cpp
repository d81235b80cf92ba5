//===- KernelEmitter.cpp - what every kernel component emits with ---------===//
#include "rbfc/Conversion/NVGPU/KernelEmitter.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

using namespace mlir;
using namespace rbfc;

/// NVPTX address spaces of global and shared memory, and of the shared
/// memory of a block's cluster.
static constexpr unsigned kGlobalAddressSpace = 1, kSharedAddressSpace = 3,
                          kSharedClusterAddressSpace = 7;

scf::IfOp KernelEmitter::updateIf(Value condition, ValueRange state) {
  auto branch =
      scf::IfOp::create(b, TypeRange(state), condition, /*withElse=*/true);
  b.setInsertionPointToStart(branch.elseBlock());
  scf::YieldOp::create(b, state);
  b.setInsertionPointToStart(branch.thenBlock());
  return branch;
}

FailureOr<ValueRange> KernelEmitter::branchOnPartialTile(
    Value partial, int64_t results,
    function_ref<FailureOr<SmallVector<Value>>(bool masked)> body) {
  auto branches = scf::IfOp::create(
      b, SmallVector<Type>(results, b.getF32Type()), partial, true);
  for (bool masked : {true, false}) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(masked ? branches.thenBlock()
                                      : branches.elseBlock());
    FailureOr<SmallVector<Value>> yielded = body(masked);
    if (failed(yielded))
      return failure();
    scf::YieldOp::create(b, *yielded);
  }
  return ValueRange(branches.getResults());
}

static Value nvvmIntrinsic(ImplicitLocOpBuilder &b, StringRef name, Value x) {
  return LLVM::CallIntrinsicOp::create(b, x.getType(), b.getStringAttr(name),
                                       ValueRange{x})
      .getResult(0);
}

Value KernelEmitter::exp2(Value x) {
  return nvvmIntrinsic(b, "llvm.nvvm.ex2.approx.ftz.f32", x);
}

Value KernelEmitter::log2(Value x) {
  return nvvmIntrinsic(b, "llvm.nvvm.lg2.approx.f", x);
}

Value KernelEmitter::laneReduce(Value value, int64_t width,
                                function_ref<Value(Value, Value)> combine) {
  for (int64_t offset = 1; offset < width; offset *= 2) {
    auto shuffle = gpu::ShuffleOp::create(
        b, value, i32(offset), i32(kThreadsPerWarp), gpu::ShuffleMode::XOR);
    value = combine(value, shuffle.getShuffleResult());
  }
  return value;
}

Value KernelEmitter::uniformFromFirstLane(Value value) {
  return gpu::ShuffleOp::create(b, value, i32(0), i32(kThreadsPerWarp),
                                gpu::ShuffleMode::IDX)
      .getShuffleResult();
}

void rbfc::allowContraction(gpu::GPUFuncOp func) {
  func.walk([&](arith::ArithFastMathInterface op) {
    arith::FastMathFlags flags = arith::FastMathFlags::contract;
    if (arith::FastMathFlagsAttr current = op.getFastMathFlagsAttr())
      flags = flags | current.getValue();
    op->setAttr(op.getFastMathAttrName(),
                arith::FastMathFlagsAttr::get(func.getContext(), flags));
  });
}

Value KernelEmitter::elementPointer(Value memref, Value offset) {
  auto type = cast<MemRefType>(memref.getType());
  Value base =
      memref::ExtractAlignedPointerAsIndexOp::create(b, memref).getResult();
  Value address = add(base, mul(offset, type.getElementTypeBitWidth() / 8));
  unsigned space = gpu::GPUDialect::hasWorkgroupMemoryAddressSpace(type)
                       ? kSharedAddressSpace
                       : kGlobalAddressSpace;
  return LLVM::IntToPtrOp::create(
      b, LLVM::LLVMPointerType::get(b.getContext(), space),
      arith::IndexCastOp::create(b, b.getI64Type(), address).getResult());
}

Value KernelEmitter::clusterPointer(Value shared) {
  return LLVM::AddrSpaceCastOp::create(
      b, LLVM::LLVMPointerType::get(b.getContext(), kSharedClusterAddressSpace),
      shared);
}

void KernelEmitter::fenceSharedForAsyncProxy() {
  NVVM::FenceProxyOp::create(
      b, NVVM::ProxyKind::async_shared,
      NVVM::SharedSpaceAttr::get(b.getContext(),
                                 NVVM::SharedSpace::shared_cta));
}
