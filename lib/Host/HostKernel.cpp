//===- HostKernel.cpp - a JIT-compiled CPU attention kernel ---------------===//
#include "rbfc/Host/HostKernel.h"

#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Target/TargetMachine.h"

#include <algorithm>
#include <atomic>
#include <thread>

#define DEBUG_TYPE "rbfc-host-kernel"

using namespace mlir;
using namespace rbfc::host;

std::vector<int64_t>
rbfc::host::contiguousStrides(const std::vector<int64_t> &sizes) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (size_t d = sizes.size(); d > 1; --d)
    strides[d - 2] = strides[d - 1] * sizes[d - 1];
  return strides;
}

static const char *elementTypeName(ElementType type) {
  switch (type) {
  case ElementType::f32: return "f32";
  case ElementType::f16: return "f16";
  case ElementType::bf16: return "bf16";
  case ElementType::i32: return "i32";
  case ElementType::i64: return "i64";
  }
  return "?";
}

static ElementType elementTypeOf(Type type) {
  if (type.isF16())
    return ElementType::f16;
  if (type.isBF16())
    return ElementType::bf16;
  if (type.isInteger(32))
    return ElementType::i32;
  if (type.isInteger(64))
    return ElementType::i64;
  return ElementType::f32;
}

HostKernel::~HostKernel() = default;

llvm::Expected<std::unique_ptr<HostKernel>>
HostKernel::compile(StringRef source, StringRef bufferName,
                    const HostKernelOptions &options) {
  MLIRContext context;
  registerHostDialects(context);
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(source, bufferName), llvm::SMLoc());
  std::string diagnostics;
  llvm::raw_string_ostream diagnosticStream(diagnostics);
  SourceMgrDiagnosticHandler handler(sourceMgr, &context, diagnosticStream);
  auto failure = [&](StringRef what) {
    return llvm::createStringError(what + ":\n" + diagnostics);
  };

  rbfc::FrontendOptions frontend;
  frontend.headDim = options.headDim;
  frontend.dtype = options.dtype;
  frontend.withLse = options.withLse;
  OwningOpRef<ModuleOp> module =
      rbfc::buildAttnModule(context, source, bufferName, frontend);
  if (!module)
    return failure("cannot compile the spec");
  PassManager canonicalize(&context);
  rbfc::buildAttnCanonicalizePipeline(canonicalize);
  if (mlir::failed(canonicalize.run(*module)))
    return failure("the canonical pipeline failed");

  std::unique_ptr<HostKernel> kernel(new HostKernel());
  kernel->compileOptions = options;
  unsigned numAttentions = 0;
  module->walk([&](attn::AttentionOp attention) {
    ++numAttentions;
    kernel->entryName =
        attention->getParentOfType<func::FuncOp>().getName().str();
    kernel->softmax = attention.isSoftmax();
    for (auto [name, param, fallback] :
         llvm::zip(attention.getParamNames(), attention.getParams(),
                   attention.getParamDefaults())) {
      Param info{cast<StringAttr>(name).str(), param.getType().isInteger(32),
                 std::nullopt};
      if (auto f = dyn_cast<FloatAttr>(fallback))
        info.defaultValue = f.getValueAsDouble();
      else if (auto i = dyn_cast<IntegerAttr>(fallback))
        info.defaultValue = static_cast<double>(i.getInt());
      kernel->paramInfo.push_back(info);
    }
    for (auto [name, capture] :
         llvm::zip(attention.getCaptureNames(), attention.getCaptures())) {
      auto type = cast<ShapedType>(capture.getType());
      kernel->captureInfo.push_back({cast<StringAttr>(name).str(),
                                     elementTypeOf(type.getElementType()),
                                     type.getRank()});
    }
  });
  if (numAttentions != 1)
    return llvm::createStringError("expected one attention in the spec");

  PassManager lower(&context);
  buildHostLoweringPipeline(lower, options.tiling);
  if (mlir::failed(lower.run(*module)))
    return failure("the host lowering failed");

  auto targetMachine = createHostTargetMachine();
  if (!targetMachine)
    return targetMachine.takeError();
  ExecutionEngineOptions engineOptions;
  auto optimize = makeOptimizingTransformer(/*optLevel=*/3, /*sizeLevel=*/0,
                                            targetMachine->get());
  engineOptions.transformer = optimize;
  engineOptions.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  auto engine = ExecutionEngine::create(*module, engineOptions,
                                        std::move(*targetMachine));
  if (!engine)
    return engine.takeError();
  kernel->engine = std::move(*engine);
  // The C interface wrapper takes memref descriptors by pointer; its packed
  // form takes one pointer per argument, whatever the spec's signature.
  auto entry =
      kernel->engine->lookupPacked("_mlir_ciface_" + kernel->entryName);
  if (!entry)
    return entry.takeError();
  kernel->entry = *entry;
  LLVM_DEBUG(llvm::dbgs() << "compiled host kernel @" << kernel->entryName
                          << "\n");
  return kernel;
}

namespace {

/// A memref descriptor as the C interface reads it: allocated and aligned
/// pointer, offset, sizes, strides (all 64-bit words).
struct Descriptor {
  std::vector<int64_t> words;
  explicit Descriptor(const TensorRef &tensor) {
    auto pointer = reinterpret_cast<intptr_t>(tensor.data);
    words = {pointer, pointer, 0};
    llvm::append_range(words, tensor.sizes);
    llvm::append_range(words, tensor.strides);
  }
};

llvm::Error argumentError(const llvm::Twine &message) {
  return llvm::createStringError("host kernel: " + message);
}

llvm::Error checkTensor(const TensorRef &tensor, StringRef what,
                        ElementType type, size_t rank, bool unitMinorStride) {
  if (!tensor.data)
    return argumentError(what + " is missing (null data)");
  if (tensor.type != type)
    return argumentError(what + " has element type " +
                         elementTypeName(tensor.type) + ", the kernel takes " +
                         elementTypeName(type));
  if (tensor.sizes.size() != rank || tensor.strides.size() != rank)
    return argumentError(what + " needs " + llvm::Twine(rank) +
                         " sizes and strides");
  for (int64_t size : tensor.sizes)
    if (size < 0)
      return argumentError(what + " has a negative size");
  if (unitMinorStride && tensor.strides.back() != 1)
    return argumentError(what + " needs a head_dim stride of 1");
  return llvm::Error::success();
}

} // namespace

llvm::Error HostKernel::run(const HostKernelArgs &args) const {
  ElementType dtype = compileOptions.dtype == "bf16"  ? ElementType::bf16
                      : compileOptions.dtype == "f16" ? ElementType::f16
                                                      : ElementType::f32;
  if (auto error = checkTensor(args.query, "query", dtype, 4, true))
    return error;
  if (auto error = checkTensor(args.key, "key", dtype, 4, true))
    return error;
  if (auto error = checkTensor(args.value, "value", dtype, 4, true))
    return error;
  if (auto error = checkTensor(args.output, "output", dtype, 4, true))
    return error;
  const auto &q = args.query.sizes;
  const auto &k = args.key.sizes;
  const int64_t batch = q[0], heads = q[1], qLen = q[2];
  const int64_t headDim = compileOptions.headDim;
  if (q[3] != headDim || k[3] != headDim || args.value.sizes[3] != headDim)
    return argumentError("the kernel is compiled for head_dim " +
                         llvm::Twine(headDim));
  if (k[0] != batch || args.value.sizes != k)
    return argumentError("key and value must be [batch, kv_heads, kv_len, "
                         "head_dim] with the query's batch");
  if (k[1] < 1 || heads % k[1] != 0)
    return argumentError("the query heads (" + llvm::Twine(heads) +
                         ") must be a multiple of the key/value heads (" +
                         llvm::Twine(k[1]) + ")");
  if (args.output.sizes != q)
    return argumentError("output must have the query's shape");
  if (compileOptions.withLse) {
    if (auto error = checkTensor(args.lse, "lse", ElementType::f32, 3, false))
      return error;
    if (args.lse.sizes != std::vector<int64_t>{batch, heads, qLen})
      return argumentError("lse must be [batch, heads, q_len]");
  } else if (args.lse.data) {
    return argumentError("the kernel was compiled without an lse output");
  }

  // Packed arguments: one pointer per kernel argument, in the order of
  // attn-lower-to-host: q, k, v, o, [lse], params, captures, work range.
  std::vector<Descriptor> descriptors;
  descriptors.reserve(5 + captureInfo.size());
  for (const TensorRef *tensor :
       {&args.query, &args.key, &args.value, &args.output})
    descriptors.emplace_back(*tensor);
  if (compileOptions.withLse)
    descriptors.emplace_back(args.lse);

  for (const auto &given : args.params)
    if (llvm::none_of(paramInfo,
                      [&](const Param &p) { return p.name == given.first; }))
      return argumentError("the spec has no parameter '" + given.first + "'");
  union ParamValue {
    float f;
    int32_t i;
  };
  std::vector<ParamValue> paramValues(paramInfo.size());
  for (auto [param, slot] : llvm::zip(paramInfo, paramValues)) {
    auto given = args.params.find(param.name);
    std::optional<double> value = param.defaultValue;
    if (given != args.params.end())
      value = given->second;
    if (!value)
      return argumentError("parameter '" + param.name +
                           "' has no default and was not given");
    if (param.isInteger)
      slot.i = static_cast<int32_t>(*value);
    else
      slot.f = static_cast<float>(*value);
  }

  for (const auto &given : args.captures)
    if (llvm::none_of(captureInfo,
                      [&](const Capture &c) { return c.name == given.first; }))
      return argumentError("the spec has no capture '" + given.first + "'");
  for (const Capture &capture : captureInfo) {
    auto given = args.captures.find(capture.name);
    if (given == args.captures.end())
      return argumentError("capture '" + capture.name + "' was not given");
    if (auto error = checkTensor(given->second, "capture '" + capture.name + "'",
                                 capture.type, capture.rank, false))
      return error;
    // Loads clamp their indices into [0, dim - 1]: an empty dimension would
    // leave nothing to clamp to.
    for (int64_t size : given->second.sizes)
      if (size < 1)
        return argumentError("capture '" + capture.name +
                             "' needs every dimension >= 1");
    descriptors.emplace_back(given->second);
  }

  const int64_t tileM = compileOptions.tiling.tileM;
  const int64_t numWork = batch * heads * ((qLen + tileM - 1) / tileM);
  if (numWork == 0)
    return llvm::Error::success();

  std::vector<int64_t *> descriptorPointers;
  for (Descriptor &descriptor : descriptors)
    descriptorPointers.push_back(descriptor.words.data());
  const bool withLse = compileOptions.withLse;
  auto runRange = [&](int64_t begin, int64_t end) {
    std::vector<void *> packed;
    size_t next = 0;
    for (size_t i = 0; i < 4u + withLse; ++i)
      packed.push_back(&descriptorPointers[next++]);
    for (ParamValue &value : paramValues)
      packed.push_back(&value);
    while (next < descriptorPointers.size())
      packed.push_back(&descriptorPointers[next++]);
    packed.push_back(&begin);
    packed.push_back(&end);
    entry(packed.data());
  };

  unsigned numThreads = args.numThreads ? args.numThreads
                                        : std::thread::hardware_concurrency();
  numThreads = std::max<unsigned>(
      1, std::min<int64_t>(numThreads, numWork));
  if (numThreads == 1) {
    runRange(0, numWork);
    return llvm::Error::success();
  }
  // Work items differ in cost (masks skip tiles), so threads take them one
  // at a time from a shared counter instead of fixed slices.
  std::atomic<int64_t> nextWork{0};
  auto worker = [&]() {
    for (int64_t work = nextWork++; work < numWork; work = nextWork++)
      runRange(work, work + 1);
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < numThreads; ++t)
    pool.emplace_back(worker);
  worker();
  for (std::thread &thread : pool)
    thread.join();
  return llvm::Error::success();
}
