//===- TargetEmission.cpp - kernels to PTX, LLVM IR and cubin -------------===//
#include "rbfc/Conversion/NVGPU/TargetEmission.h"

#include "rbfc/Conversion/NVGPU/FlashKernel.h"
#include "rbfc/Conversion/Passes.h"
#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/GPUCommon/GPUCommonPass.h"
#include "mlir/Conversion/GPUCommon/GPUToLLVM.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVM.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/NVGPUToNVVM/NVGPUToNVVM.h"
#include "mlir/Conversion/NVVMToLLVM/NVVMToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/UBToLLVM/UBToLLVM.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVM.h"
#include "mlir/Conversion/VectorToSCF/VectorToSCF.h"
#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Pipelines/Passes.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/Index/IR/IndexDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Bitcode/BitcodeReader.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"

#include <mutex>

using namespace mlir;
using namespace rbfc;

void rbfc::registerGPUBackend(DialectRegistry &registry) {
  // What the kernel builders create and gpu-lower-to-nvvm-pipeline passes
  // through, and nothing else: registering every upstream dialect would
  // keep all of them in the static tool.
  registry.insert<affine::AffineDialect, arith::ArithDialect,
                  cf::ControlFlowDialect, func::FuncDialect, gpu::GPUDialect,
                  index::IndexDialect, LLVM::LLVMDialect, math::MathDialect,
                  memref::MemRefDialect, nvgpu::NVGPUDialect, NVVM::NVVMDialect,
                  scf::SCFDialect, ub::UBDialect, vector::VectorDialect>();
  // convert-to-llvm and convert-gpu-to-nvvm find their patterns through
  // these interfaces.
  arith::registerConvertArithToLLVMInterface(registry);
  cf::registerConvertControlFlowToLLVMInterface(registry);
  registerConvertFuncToLLVMInterface(registry);
  index::registerConvertIndexToLLVMInterface(registry);
  registerConvertMathToLLVMInterface(registry);
  registerConvertMemRefToLLVMInterface(registry);
  registerConvertNVVMToLLVMInterface(registry);
  ub::registerConvertUBToLLVMInterface(registry);
  gpu::registerConvertGpuToLLVMInterface(registry);
  NVVM::registerConvertGpuToNVVMInterface(registry);
  vector::registerConvertVectorToLLVMInterface(registry);
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  registerBuiltinDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
}

LogicalResult rbfc::overridePlan(ModuleOp module, StringRef text) {
  auto plan =
      dyn_cast_or_null<attn::PlanAttr>(parseAttribute(text, module.getContext()));
  if (!plan)
    return failure();
  module.walk([&](attn::AttentionOp op) {
    op.setPlanAttr(plan);
    op.removeSmallPlansAttr();
  });
  return success();
}

LogicalResult rbfc::lowerToGPUKernels(ModuleOp module, StringRef arch) {
  PassManager pm(module.getContext());
  AttnSelectPlanOptions options;
  options.arch = arch.str();
  pm.addPass(createAttnSelectPlan(options));
  pm.addPass(createAttnLowerToNVGPU());
  return pm.run(module);
}

namespace {

llvm::json::Value toJSON(Attribute attr) {
  if (auto text = dyn_cast<StringAttr>(attr))
    return text.getValue().str();
  if (auto flag = dyn_cast<BoolAttr>(attr))
    return flag.getValue();
  if (auto integer = dyn_cast<IntegerAttr>(attr))
    return integer.getValue().getSExtValue();
  if (auto real = dyn_cast<FloatAttr>(attr))
    return real.getValueAsDouble();
  if (auto array = dyn_cast<ArrayAttr>(attr)) {
    llvm::json::Array values;
    for (Attribute element : array)
      values.push_back(toJSON(element));
    return values;
  }
  if (auto dict = dyn_cast<DictionaryAttr>(attr)) {
    llvm::json::Object object;
    for (NamedAttribute field : dict)
      object[field.getName().getValue()] = toJSON(field.getValue());
    return object;
  }
  return nullptr;
}

} // namespace

FailureOr<std::string> rbfc::kernelDescriptorJSON(ModuleOp module) {
  SmallVector<DictionaryAttr> descriptors;
  module.walk([&](gpu::GPUFuncOp kernel) {
    if (auto descriptor =
            kernel->getAttrOfType<DictionaryAttr>(kDescriptorAttrName))
      descriptors.push_back(descriptor);
  });
  if (descriptors.size() != 1)
    return module.emitError() << "expected one kernel with a descriptor, found "
                              << descriptors.size();
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", toJSON(descriptors.front())) << "\n";
  return text;
}

namespace {

/// Score functions such as tanh, exp or sqrt lower to libdevice calls, which
/// MLIR's NVVM target links from the CUDA toolkit it finds through
/// CUDA_ROOT, CUDA_HOME or CUDA_PATH. Point it at the default install when
/// none is set, so the PTX never depends on the caller's environment. Once
/// per process: librbfc compiles on several threads at once, and the other
/// compiles wait here instead of reading the environment while it changes.
void locateLibdevice() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char *name : {"CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"})
      if (std::getenv(name))
        return;
    if (llvm::sys::fs::exists(
            "/usr/local/cuda/nvvm/libdevice/libdevice.10.bc"))
      ::setenv("CUDA_HOME", "/usr/local/cuda", /*overwrite=*/0);
  });
}

} // namespace

/// MLIR 22's gpu-lower-to-nvvm-pipeline (GPUToNVVMPipeline.cpp) pass for
/// pass, with attn-tensor-map-params after the kernels become llvm.funcs:
/// the upstream pipeline has no place between that step and the
/// serialisation, which a grid-constant parameter needs.
static void
buildKernelLoweringPipeline(OpPassManager &pm,
                            const gpu::GPUToNVVMPipelineOptions &options) {
  pm.addPass(createConvertNVGPUToNVVMPass());
  pm.addPass(createGpuKernelOutliningPass());
  pm.addPass(createConvertVectorToSCFPass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(createConvertNVVMToLLVMPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  GpuNVVMAttachTargetOptions target;
  target.triple = options.cubinTriple;
  target.chip = options.cubinChip;
  target.features = options.cubinFeatures;
  target.optLevel = options.optLevel;
  pm.addPass(createGpuNVVMAttachTarget(target));
  pm.addPass(createLowerAffinePass());
  pm.addPass(createArithToLLVMConversionPass());
  ConvertIndexToLLVMPassOptions index;
  index.indexBitwidth = options.indexBitWidth;
  pm.addPass(createConvertIndexToLLVMPass(index));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());

  ConvertGpuOpsToNVVMOpsOptions toNVVM;
  toNVVM.useBarePtrCallConv = options.kernelUseBarePtrCallConv;
  toNVVM.indexBitwidth = options.indexBitWidth;
  OpPassManager &kernels = pm.nest<gpu::GPUModuleOp>();
  kernels.addPass(createAttnApproximateTanh());
  kernels.addPass(createConvertGpuOpsToNVVMOps(toNVVM));
  kernels.addPass(createAttnTensorMapParams());
  kernels.addPass(createCanonicalizerPass());
  kernels.addPass(createCSEPass());
  kernels.addPass(createReconcileUnrealizedCastsPass());

  GpuToLLVMConversionPassOptions toLLVM;
  toLLVM.hostBarePtrCallConv = options.hostUseBarePtrCallConv;
  toLLVM.kernelBarePtrCallConv = options.kernelUseBarePtrCallConv;
  pm.addPass(createGpuToLLVMConversionPass(toLLVM));
  GpuModuleToBinaryPassOptions binary;
  binary.compilationTarget = options.cubinFormat;
  pm.addPass(createGpuModuleToBinaryPass(binary));
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}

FailureOr<std::string> rbfc::serializeKernels(ModuleOp module, StringRef arch,
                                              KernelFormat format) {
  locateLibdevice();
  PassManager pm(module.getContext());
  gpu::GPUToNVVMPipelineOptions options;
  options.cubinChip = arch.str();
  // PTX ISA 8.0 (CUDA 12.0) is the first with sm_90a; every driver that
  // runs these kernels reads it.
  options.cubinFeatures = "+ptx80";
  options.cubinFormat = format == KernelFormat::PTX ? "isa" : "llvm";
  options.optLevel = 3;
  // Kernel arguments are plain pointers and integers (docs/abi.md), not
  // memref descriptors.
  options.kernelUseBarePtrCallConv = true;
  buildKernelLoweringPipeline(pm, options);
  if (failed(pm.run(module)))
    return failure();

  SmallVector<gpu::BinaryOp> binaries(module.getOps<gpu::BinaryOp>());
  if (binaries.size() != 1)
    return module.emitError()
           << "expected one kernel binary, found " << binaries.size();
  auto object = cast<gpu::ObjectAttr>(binaries.front().getObjects()[0]);
  std::string payload = object.getObject().getValue().str();
  if (format == KernelFormat::PTX) {
    // An unresolved function means libdevice was not linked: the driver
    // would refuse the PTX at load time, so refuse it here.
    size_t external = payload.find(".extern .func");
    if (external != std::string::npos) {
      StringRef line = StringRef(payload).substr(external).split('\n').first;
      return module.emitError()
             << "the kernel calls a libdevice function that was not linked ("
             << line.trim()
             << "); set CUDA_HOME to a CUDA toolkit with nvvm/libdevice";
    }
    return payload;
  }

  llvm::LLVMContext context;
  auto buffer = llvm::MemoryBuffer::getMemBuffer(payload, "kernel", false);
  auto parsed = llvm::parseBitcodeFile(buffer->getMemBufferRef(), context);
  if (!parsed)
    return module.emitError() << "cannot read the kernel's LLVM bitcode: "
                              << llvm::toString(parsed.takeError());
  std::string text;
  llvm::raw_string_ostream os(text);
  (*parsed)->print(os, nullptr);
  return text;
}

namespace {

std::optional<std::string> findPtxas() {
  if (auto onPath = llvm::sys::findProgramByName("ptxas"))
    return *onPath;
  SmallVector<std::string> roots;
  if (const char *home = std::getenv("CUDA_HOME"))
    roots.push_back(home);
  roots.push_back("/usr/local/cuda");
  for (const std::string &root : roots) {
    std::string candidate = root + "/bin/ptxas";
    if (llvm::sys::fs::can_execute(candidate))
      return candidate;
  }
  return std::nullopt;
}

} // namespace

FailureOr<std::string> rbfc::assemblePTX(StringRef ptx, StringRef arch,
                                         bool verbose, std::string &report,
                                         std::string &error) {
  std::optional<std::string> ptxas = findPtxas();
  if (!ptxas) {
    error = "ptxas not found (looked on PATH, in $CUDA_HOME/bin and "
            "/usr/local/cuda/bin); --emit=ptx needs no CUDA toolkit";
    return failure();
  }
  SmallString<128> input, output, log;
  if (llvm::sys::fs::createTemporaryFile("rbfc", "ptx", input) ||
      llvm::sys::fs::createTemporaryFile("rbfc", "cubin", output) ||
      llvm::sys::fs::createTemporaryFile("rbfc", "log", log)) {
    error = "cannot create temporary files for ptxas";
    return failure();
  }
  llvm::FileRemover removeInput(input), removeOutput(output), removeLog(log);
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(input, ec);
    if (ec) {
      error = "cannot write " + input.str().str() + ": " + ec.message();
      return failure();
    }
    os << ptx;
  }
  std::string archFlag = ("-arch=" + arch).str();
  SmallVector<StringRef> argv{*ptxas, archFlag, "-O3", input, "-o", output};
  if (verbose)
    argv.push_back("-v");
  std::optional<StringRef> redirects[] = {std::nullopt, StringRef(log),
                                          StringRef(log)};
  std::string message;
  int status = llvm::sys::ExecuteAndWait(*ptxas, argv, std::nullopt, redirects,
                                         0, 0, &message);
  auto logText = llvm::MemoryBuffer::getFile(log);
  report = logText ? (*logText)->getBuffer().str() : "";
  if (status != 0) {
    error = "ptxas failed" + (message.empty() ? "" : " (" + message + ")") +
            ":\n" + report;
    return failure();
  }
  auto cubin = llvm::MemoryBuffer::getFile(output);
  if (!cubin) {
    error = "cannot read the cubin ptxas wrote";
    return failure();
  }
  return (*cubin)->getBuffer().str();
}
