//===- TensorMapParams.cpp - grid-constant tensor-map kernel parameters ---===//
#include "rbfc/Conversion/NVGPU/KernelArguments.h"
#include "rbfc/Conversion/Passes.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-tensor-map-params"

namespace rbfc {
#define GEN_PASS_DEF_ATTNTENSORMAPPARAMS
#include "rbfc/Conversion/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

/// Bytes of a CUtensorMap and the alignment cuda.h gives it.
static constexpr int64_t kTensorMapBytes = 128;
static constexpr int64_t kTensorMapAlignment = 64;

namespace {

struct AttnTensorMapParams
    : rbfc::impl::AttnTensorMapParamsBase<AttnTensorMapParams> {
  void runOnOperation() override {
    MLIRContext *context = &getContext();
    Builder b(context);
    auto tensorMap =
        LLVM::LLVMArrayType::get(IntegerType::get(context, 8), kTensorMapBytes);
    WalkResult result = getOperation()->walk([&](LLVM::LLVMFuncOp func) {
      auto indices =
          func->getAttrOfType<DenseI64ArrayAttr>(kTensorMapArgsAttrName);
      if (!indices)
        return WalkResult::advance();
      if (!func->hasAttr(NVVM::NVVMDialect::getKernelFuncAttrName())) {
        func.emitError() << kTensorMapArgsAttrName
                         << " on a function that is not a kernel";
        return WalkResult::interrupt();
      }
      for (int64_t index : indices.asArrayRef()) {
        if (index < 0 || index >= func.getNumArguments() ||
            !isa<LLVM::LLVMPointerType>(func.getArgumentTypes()[index])) {
          func.emitError() << "tensor-map parameter " << index
                           << " is not a pointer parameter of the kernel";
          return WalkResult::interrupt();
        }
        func.setArgAttr(index, LLVM::LLVMDialect::getByValAttrName(),
                        TypeAttr::get(tensorMap));
        func.setArgAttr(index, LLVM::LLVMDialect::getAlignAttrName(),
                        b.getI64IntegerAttr(kTensorMapAlignment));
        func.setArgAttr(index, NVVM::NVVMDialect::getGridConstantAttrName(),
                        b.getUnitAttr());
        LLVM_DEBUG(llvm::dbgs() << func.getName() << ": parameter " << index
                                << " is a grid-constant tensor map\n");
      }
      func->removeAttr(kTensorMapArgsAttrName);
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
