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

/// The keys of a forward kernel's descriptor that differ between the
/// default kernel and the small-problem ones (docs/abi.md, "Small
/// problems"); the spec's keys (params, captures, dtype, ...) are shared.
constexpr llvm::StringLiteral kKernelKeys[] = {"entry",
                                               "plan",
                                               "tile_m",
                                               "tile_n",
                                               "warps",
                                               "stages",
                                               "shared_memory_bytes",
                                               "tensor_map_rows",
                                               "key_terms"};

/// Builds the forward kernel `name` of `op` with `plan`, a small-problem
/// alternative to the default one, and returns its descriptor object: its
/// kernel keys and its blocks a multiprocessor, with which the runtime
/// sees whether a problem fits in one wave of it.
FailureOr<DictionaryAttr> buildSmallProblemKernel(attn::AttentionOp op,
                                                  attn::PlanAttr plan,
                                                  gpu::GPUModuleOp module,
                                                  StringRef name) {
  FailureOr<gpu::GPUFuncOp> kernel = buildFlashKernel(op, plan, module, name);
  if (failed(kernel))
    return failure();
  auto descriptor =
      (*kernel)->getAttrOfType<DictionaryAttr>(kDescriptorAttrName);
  (*kernel)->removeAttr(kDescriptorAttrName);
  NamedAttrList fields;
  for (StringRef key : kKernelKeys)
    if (Attribute value = descriptor.get(key))
      fields.set(key, value);
  // The blocks a multiprocessor it was compiled for (.minnctapersm), one
  // when it asked ptxas for none.
  auto minBlocks = (*kernel)->getAttrOfType<IntegerAttr>(
      NVVM::NVVMDialect::getMinctasmAttrName());
  fields.set("blocks_per_sm",
             Builder(op.getContext())
                 .getI64IntegerAttr(minBlocks ? minBlocks.getInt() : 1));
  return fields.getDictionary(op.getContext());
}

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
      attn::AttentionOp op = ops.front();
      std::string name = (func.getName() + "_fwd").str();
      if (!op.getPlanAttr()) {
        op.emitOpError() << "has no plan; run attn-select-plan first";
        return signalPassFailure();
      }
      FailureOr<gpu::GPUFuncOp> forward =
          buildFlashKernel(op, op.getPlanAttr(), kernels, name);
      if (failed(forward))
        return signalPassFailure();
      NamedAttrList fields(
          (*forward)->getAttrOfType<DictionaryAttr>(kDescriptorAttrName));
      if (ArrayAttr smallPlans = op.getSmallPlansAttr()) {
        // The first is `<name>_small`, the later ones are named after their
        // rows a block.
        SmallVector<DictionaryAttr> smallKernels;
        for (auto [index, smallPlan] :
             llvm::enumerate(smallPlans.getAsRange<attn::PlanAttr>())) {
          std::string suffix =
              index == 0 ? "_small"
                         : "_small_m" + std::to_string(smallPlan.getTileM());
          FailureOr<DictionaryAttr> small =
              buildSmallProblemKernel(op, smallPlan, kernels, name + suffix);
          if (failed(small))
            return signalPassFailure();
          smallKernels.push_back(*small);
        }
        // Each small kernel's object holds the next one's as its own
        // "small": a launcher looks at a kernel only where the one before
        // it runs in one wave.
        DictionaryAttr next;
        for (DictionaryAttr small : llvm::reverse(smallKernels)) {
          NamedAttrList withNext(small);
          if (next)
            withNext.set("small", next);
          next = withNext.getDictionary(&getContext());
        }
        fields.set("small", next);
      }
      if (op.hasBackward()) {
        // The backward's kernels join the forward's module, and what the
        // runtime needs to launch them its descriptor.
        FailureOr<DictionaryAttr> backward =
            buildBackwardKernels(op, kernels, name);
        if (failed(backward))
          return signalPassFailure();
        fields.set("backward", *backward);
      }
      (*forward)->setAttr(kDescriptorAttrName,
                          fields.getDictionary(&getContext()));
      func.erase();
    }
    if (!functions.empty())
      module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                      builder.getUnitAttr());
  }
};

} // namespace
