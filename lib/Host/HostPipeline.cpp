//===- HostPipeline.cpp - from canonical attn IR to host code -------------===//
#include "rbfc/Host/HostPipeline.h"

#include "rbfc/Conversion/Passes.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MathToLibm/MathToLibm.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/UBToLLVM/UBToLLVM.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVMPass.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/PassManager.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"

#define DEBUG_TYPE "rbfc-host-pipeline"

using namespace mlir;

void rbfc::host::registerHostDialects(MLIRContext &context) {
  DialectRegistry registry;
  registry.insert<arith::ArithDialect, cf::ControlFlowDialect,
                  func::FuncDialect, LLVM::LLVMDialect, math::MathDialect,
                  memref::MemRefDialect, scf::SCFDialect,
                  vector::VectorDialect>();
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  context.appendDialectRegistry(registry);
}

namespace {

/// attn -> the scf/vector schedule (what --emit=kernel prints).
void addScheduleLowering(OpPassManager &pm,
                         const rbfc::host::HostTiling &tiling,
                         const llvm::TargetMachine &target) {
  rbfc::AttnLowerToHostOptions lowering;
  lowering.tileM = tiling.tileM;
  lowering.tileN = tiling.tileN;
  lowering.keyLanes =
      tiling.keyLanes ? tiling.keyLanes : rbfc::host::f32VectorLanes(target);
  lowering.rowsPerStep = tiling.rowsPerStep;
  lowering.keyVectorsPerStep = tiling.keyVectorsPerStep;
  lowering.headDimVectorsPerStep = tiling.headDimVectorsPerStep;
  pm.addPass(createAttnLowerToHost(lowering));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

} // namespace

int64_t rbfc::host::f32VectorLanes(const llvm::TargetMachine &target) {
  const llvm::MCSubtargetInfo *info = target.getMCSubtargetInfo();
  if (info->checkFeatures("+avx512f"))
    return 16;
  if (info->checkFeatures("+avx"))
    return 8;
  return 4;
}

void rbfc::host::buildHostLoweringPipeline(OpPassManager &pm,
                                           const HostTiling &tiling,
                                           const llvm::TargetMachine &target) {
  addScheduleLowering(pm, tiling, target);
  // ceildivsi and min/max need expanding for LLVM; bf16 <-> f32 becomes
  // integer shifts, which every x86 CPU runs (no avx512_bf16 needed).
  arith::ArithExpandOpsPassOptions expand;
  expand.includeBf16 = true;
  pm.addPass(arith::createArithExpandOpsPass(expand));
  pm.addPass(createSCFToControlFlowPass());
  // exp2/log2/sqrt become LLVM intrinsics; what has none (tanh) calls libm.
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createConvertMathToLibmPass());
  ConvertVectorToLLVMPassOptions vectorOptions;
  vectorOptions.reassociateFPReductions = true;
  pm.addPass(createConvertVectorToLLVMPass(vectorOptions));
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createUBToLLVMConversionPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}

/// Checks `cpu` against what the target of `triple` knows, before LLVM
/// would warn and go on without it.
static llvm::Error checkHostCpu(const llvm::Triple &triple,
                                const rbfc::host::HostCpu &cpu) {
  std::string error;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return llvm::createStringError(error);
  std::unique_ptr<llvm::MCSubtargetInfo> info(
      target->createMCSubtargetInfo(triple, "", ""));
  if (!info)
    return llvm::createStringError("no subtarget information for " +
                                   triple.str());
  if (!cpu.name.empty() && !info->isCPUStringValid(cpu.name))
    return llvm::createStringError(
        "unknown CPU '" + cpu.name + "' for " + triple.getArchName().str() +
        " (e.g. x86-64-v2, x86-64-v3, x86-64-v4, skylake-avx512, znver4; "
        "`llc -mcpu=help` lists them)");
  llvm::SmallVector<llvm::StringRef> features;
  llvm::StringRef(cpu.features).split(features, ',', -1, false);
  for (llvm::StringRef feature : features) {
    llvm::StringRef name = feature.trim();
    if (!name.consume_front("+") && !name.consume_front("-"))
      return llvm::createStringError(
          "CPU feature '" + feature.str() +
          "' needs a sign: '+name' adds it, '-name' removes it");
    if (llvm::none_of(info->getAllProcessorFeatures(),
                      [&](const llvm::SubtargetFeatureKV &known) {
                        return name == known.Key;
                      }))
      return llvm::createStringError("unknown CPU feature '" + name.str() +
                                     "' for " + triple.getArchName().str() +
                                     " (e.g. avx2, avx512f, fma, f16c)");
  }
  return llvm::Error::success();
}

llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
rbfc::host::createHostTargetMachine(HostCodeUse use, const HostCpu &cpu) {
  static const bool initialized = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)initialized;
  // detectHost() takes the CPU name and its features (AVX-512, F16C, ...),
  // so vector<head_dim x f32> code uses the widest registers available.
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder)
    return builder.takeError();
  if (llvm::Error error = checkHostCpu(builder->getTargetTriple(), cpu))
    return std::move(error);
  if (!cpu.name.empty()) {
    // Another CPU: its own features, not this machine's.
    builder->setCPU(cpu.name);
    builder->getFeatures() = llvm::SubtargetFeatures();
  }
  llvm::SmallVector<llvm::StringRef> features;
  llvm::StringRef(cpu.features).split(features, ',', -1, false);
  for (llvm::StringRef feature : features)
    builder->getFeatures().AddFeature(feature.trim());
  builder->setCodeGenOptLevel(llvm::CodeGenOptLevel::Aggressive);
  if (use == HostCodeUse::ObjectFile) {
    builder->setRelocationModel(llvm::Reloc::PIC_);
    builder->setCodeModel(llvm::CodeModel::Small);
  }
  LLVM_DEBUG(llvm::dbgs() << "host target: " << builder->getCPU() << "\n");
  return builder->createTargetMachine();
}

llvm::Error rbfc::host::optimizeHostModule(llvm::Module &module,
                                           llvm::TargetMachine &targetMachine) {
  llvm::PipelineTuningOptions tuning;
  tuning.LoopUnrolling = false;
  llvm::PassBuilder passBuilder(&targetMachine, tuning);
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager sccs;
  llvm::ModuleAnalysisManager modules;
  passBuilder.registerModuleAnalyses(modules);
  passBuilder.registerCGSCCAnalyses(sccs);
  passBuilder.registerFunctionAnalyses(functions);
  passBuilder.registerLoopAnalyses(loops);
  passBuilder.crossRegisterProxies(loops, functions, sccs, modules);
  llvm::ModulePassManager pipeline =
      passBuilder.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3);
  pipeline.run(module, modules);
  return llvm::Error::success();
}

llvm::Expected<std::unique_ptr<llvm::Module>>
rbfc::host::translateAndOptimize(ModuleOp module,
                                 llvm::LLVMContext &llvmContext,
                                 llvm::TargetMachine &targetMachine) {
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, llvmContext);
  if (!llvmModule)
    return llvm::createStringError("cannot translate the host kernel to "
                                   "LLVM IR");
  ExecutionEngine::setupTargetTripleAndDataLayout(llvmModule.get(),
                                                  &targetMachine);
  if (llvm::Error error = optimizeHostModule(*llvmModule, targetMachine))
    return std::move(error);
  return llvmModule;
}

LogicalResult rbfc::host::emitHostArtifact(ModuleOp module, StringRef emit,
                                           const HostTiling &tiling,
                                           const HostCpu &cpu,
                                           llvm::raw_pwrite_stream &os) {
  MLIRContext &context = *module.getContext();
  registerHostDialects(context);
  auto reportError = [&](llvm::Error error) -> LogicalResult {
    emitError(module.getLoc())
        << "host backend: " << llvm::toString(std::move(error));
    return failure();
  };
  // What --emit=llvm prints is what --emit=obj assembles; the schedule's
  // vector width is that CPU's.
  auto targetMachine = createHostTargetMachine(HostCodeUse::ObjectFile, cpu);
  if (!targetMachine)
    return reportError(targetMachine.takeError());
  PassManager pm(&context);
  if (emit == "kernel") {
    addScheduleLowering(pm, tiling, **targetMachine);
    if (failed(pm.run(module)))
      return failure();
    module.print(os);
    return success();
  }
  buildHostLoweringPipeline(pm, tiling, **targetMachine);
  if (failed(pm.run(module)))
    return failure();
  llvm::LLVMContext llvmContext;
  auto llvmModule = translateAndOptimize(module, llvmContext, **targetMachine);
  if (!llvmModule)
    return reportError(llvmModule.takeError());
  if (emit == "llvm") {
    (*llvmModule)->print(os, nullptr);
    return success();
  }
  if (emit != "obj")
    return reportError(llvm::createStringError(
        "--target=host emits kernel, llvm or obj, not " + emit));
  // Object emission needs a seekable stream; standard output is not one.
  llvm::SmallVector<char, 0> object;
  llvm::raw_svector_ostream objectStream(object);
  llvm::legacy::PassManager codegen;
  if ((*targetMachine)
          ->addPassesToEmitFile(codegen, objectStream, nullptr,
                                llvm::CodeGenFileType::ObjectFile))
    return reportError(llvm::createStringError(
        "the host target cannot emit object files"));
  codegen.run(**llvmModule);
  os.write(object.data(), object.size());
  return success();
}
