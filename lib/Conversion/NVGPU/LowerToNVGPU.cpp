//===- LowerToNVGPU.cpp - attn.attention to a gpu.module kernel -----------===//
#include "rbfc/Conversion/NVGPU/BackwardKernels.h"
#include "rbfc/Conversion/NVGPU/FlashKernel.h"
#include "rbfc/Conversion/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace rbfc {
#define GEN_PASS_DEF_ATTNLOWERTONVGPU
#include "rbfc/Conversion/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

struct AttnLowerToNVGPU : rbfc::impl::AttnLowerToNVGPUBase<AttnLowerToNVGPU> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> functions;
    module.walk([&](func::FuncOp func) {
      if (!func.getOps<attn::AttentionOp>().empty())
        functions.push_back(func);
    });
    OpBuilder builder(module.getBodyRegion());
    for (func::FuncOp func : functions) {
      auto ops = llvm::to_vector(func.getOps<attn::AttentionOp>());
      if (ops.size() != 1) {
        func.emitError() << "expects one attn.attention per function, found "
                         << ops.size();
        return signalPassFailure();
      }
      builder.setInsertionPoint(func);
      auto kernels = gpu::GPUModuleOp::create(
          builder, func.getLoc(), (func.getName() + "_kernels").str());
      std::string name = (func.getName() + "_fwd").str();
      FailureOr<gpu::GPUFuncOp> forward =
          buildFlashKernel(ops.front(), kernels, name);
      if (failed(forward))
        return signalPassFailure();
      if (ops.front().hasBackward()) {
        // The backward's kernels join the forward's module, and what the
        // runtime needs to launch them its descriptor.
        FailureOr<DictionaryAttr> backward =
            buildBackwardKernels(ops.front(), kernels, name);
        if (failed(backward))
          return signalPassFailure();
        NamedAttrList fields(
            (*forward)->getAttrOfType<DictionaryAttr>(kDescriptorAttrName));
        fields.set("backward", *backward);
        (*forward)->setAttr(kDescriptorAttrName,
                            fields.getDictionary(&getContext()));
      }
      func.erase();
    }
    if (!functions.empty())
      module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                      builder.getUnitAttr());
  }
};

} // namespace
