//===- HostKernel.cpp - a JIT-compiled CPU attention kernel ---------------===//
#include "rbfc/Host/HostKernel.h"

#include "rbfc/Runtime/SequenceBlock.h"

#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/Bytecode/BytecodeWriter.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ThreadPool.h"
#include "llvm/Target/TargetMachine.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <tuple>
#include <unistd.h>

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

/// The backward's functions: NAME + suffix (attn-lower-to-host).
static constexpr llvm::StringLiteral kRowsPass = "_bwd_rows";
static constexpr llvm::StringLiteral kSplitPasses[] = {"_bwd_dkdv", "_bwd_dq"};
static constexpr llvm::StringLiteral kFusedPasses[] = {"_bwd_fused"};

struct HostKernel::GradientPasses {
  std::unique_ptr<ExecutionEngine> engine;
  /// The functions of kSplitPasses or kFusedPasses, in that order.
  llvm::SmallVector<void (*)(void **), 2> entries;
};

HostKernel::~HostKernel() = default;

/// Erases the functions NAME + suffix of a lowered module and their C
/// interface wrappers.
static void eraseFunctions(ModuleOp module, StringRef name,
                           llvm::ArrayRef<llvm::StringLiteral> suffixes) {
  for (StringRef suffix : suffixes)
    for (const std::string &symbol :
         {(name + suffix).str(), ("_mlir_ciface_" + name + suffix).str()})
      if (auto function = module.lookupSymbol<LLVM::LLVMFuncOp>(symbol))
        function.erase();
}

/// The tile size attn-lower-to-host recorded on function `name` + `suffix`
/// as `attribute` (rbfc.tile_m or rbfc.tile_n): what its work items count.
static llvm::Expected<int64_t> recordedTile(ModuleOp module, StringRef name,
                                            StringRef suffix,
                                            StringRef attribute) {
  auto function = module.lookupSymbol<LLVM::LLVMFuncOp>((name + suffix).str());
  auto tile = function ? function->getAttrOfType<IntegerAttr>(attribute)
                       : IntegerAttr();
  if (!tile || tile.getInt() < 1)
    return llvm::createStringError("the host lowering recorded no " +
                                   attribute + " on @" + name + suffix);
  return tile.getInt();
}

/// JIT-compiles a lowered module (LLVM dialect) for `targetMachine`.
static llvm::Expected<std::unique_ptr<ExecutionEngine>>
jitCompile(ModuleOp module,
           std::unique_ptr<llvm::TargetMachine> targetMachine) {
  ExecutionEngineOptions engineOptions;
  llvm::TargetMachine *target = targetMachine.get();
  auto optimize = [target](llvm::Module *llvmModule) {
    return optimizeHostModule(*llvmModule, *target);
  };
  engineOptions.transformer = optimize;
  engineOptions.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  return ExecutionEngine::create(module, engineOptions,
                                 std::move(targetMachine));
}

/// The packed C interface wrapper of NAME + suffix, which takes one pointer
/// per argument whatever the spec's signature.
static llvm::Error lookupEntry(ExecutionEngine &engine, StringRef name,
                               StringRef suffix, void (*&function)(void **)) {
  auto found = engine.lookupPacked(("_mlir_ciface_" + name + suffix).str());
  if (!found)
    return found.takeError();
  function = *found;
  return llvm::Error::success();
}

llvm::Expected<std::unique_ptr<HostKernel>>
HostKernel::compile(StringRef source, StringRef bufferName,
                    const HostKernelOptions &options) {
  MLIRContext context;
  context.printOpOnDiagnostic(false);
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
  frontend.withLse = options.withLse || options.withBackward;
  OwningOpRef<ModuleOp> module =
      rbfc::buildAttnModule(context, source, bufferName, frontend);
  if (!module)
    return failure("cannot compile the spec");
  PassManager canonicalize(&context);
  rbfc::buildAttnCanonicalizePipeline(canonicalize);
  if (options.withBackward)
    rbfc::buildAttnBackwardPipeline(canonicalize);
  if (mlir::failed(canonicalize.run(*module)))
    return failure(options.withBackward
                       ? "the canonical pipeline or the backward's "
                         "derivation failed"
                       : "the canonical pipeline failed");

  std::unique_ptr<HostKernel> kernel(new HostKernel());
  kernel->compileOptions = options;
  kernel->compileOptions.withLse = frontend.withLse;
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

  auto targetMachine = createHostTargetMachine();
  if (!targetMachine)
    return targetMachine.takeError();
  PassManager lower(&context);
  buildHostLoweringPipeline(lower, options.tiling, **targetMachine);
  if (mlir::failed(lower.run(*module)))
    return failure("the host lowering failed");
  auto forwardTileM =
      recordedTile(*module, kernel->entryName, "", "rbfc.tile_m");
  if (!forwardTileM)
    return forwardTileM.takeError();
  kernel->forwardTileM = *forwardTileM;
  if (options.withBackward) {
    auto backwardTileM =
        recordedTile(*module, kernel->entryName, kRowsPass, "rbfc.tile_m");
    if (!backwardTileM)
      return backwardTileM.takeError();
    auto backwardTileN =
        recordedTile(*module, kernel->entryName, kRowsPass, "rbfc.tile_n");
    if (!backwardTileN)
      return backwardTileN.takeError();
    kernel->backwardTileM = *backwardTileM;
    kernel->backwardTileN = *backwardTileN;
    llvm::raw_string_ostream bytecode(kernel->loweredBytecode);
    if (mlir::failed(writeBytecodeToFile(*module, bytecode)))
      return failure("cannot keep the lowered backward");
    eraseFunctions(*module, kernel->entryName, kSplitPasses);
    eraseFunctions(*module, kernel->entryName, kFusedPasses);
  }
  auto engine = jitCompile(*module, std::move(*targetMachine));
  if (!engine)
    return engine.takeError();
  kernel->engine = std::move(*engine);
  if (auto error =
          lookupEntry(*kernel->engine, kernel->entryName, "", kernel->entry))
    return std::move(error);
  if (options.withBackward)
    if (auto error = lookupEntry(*kernel->engine, kernel->entryName, kRowsPass,
                                 kernel->rowsEntry))
      return std::move(error);
  LLVM_DEBUG(llvm::dbgs() << "compiled host kernel @" << kernel->entryName
                          << "\n");
  return kernel;
}

llvm::Expected<const HostKernel::GradientPasses *>
HostKernel::gradientPasses(bool fused) const {
  std::lock_guard<std::mutex> lock(gradientPassesMutex);
  std::unique_ptr<GradientPasses> &passes = fused ? fusedPasses : splitPasses;
  if (passes)
    return passes.get();
  MLIRContext context;
  registerHostDialects(context);
  OwningOpRef<ModuleOp> module =
      parseSourceString<ModuleOp>(loweredBytecode, ParserConfig(&context));
  if (!module)
    return llvm::createStringError("cannot read back the lowered backward");
  eraseFunctions(*module, entryName, {"", kRowsPass});
  eraseFunctions(*module, entryName,
                 fused ? llvm::ArrayRef(kSplitPasses)
                       : llvm::ArrayRef(kFusedPasses));
  auto targetMachine = createHostTargetMachine();
  if (!targetMachine)
    return targetMachine.takeError();
  auto engine = jitCompile(*module, std::move(*targetMachine));
  if (!engine)
    return engine.takeError();
  auto compiled = std::make_unique<GradientPasses>();
  compiled->engine = std::move(*engine);
  for (StringRef suffix :
       fused ? llvm::ArrayRef(kFusedPasses) : llvm::ArrayRef(kSplitPasses))
    if (auto error = lookupEntry(*compiled->engine, entryName, suffix,
                                 compiled->entries.emplace_back()))
      return std::move(error);
  LLVM_DEBUG(llvm::dbgs() << "compiled the " << (fused ? "fused" : "split")
                          << " backward of @" << entryName << "\n");
  passes = std::move(compiled);
  return passes.get();
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

/// A tensor of `sizes` that must match `reference`'s sizes and type.
llvm::Error checkLike(const TensorRef &tensor, StringRef what,
                      const TensorRef &reference, StringRef referenceName,
                      bool unitMinorStride) {
  if (auto error = checkTensor(tensor, what, reference.type,
                               reference.sizes.size(), unitMinorStride))
    return error;
  if (tensor.sizes != reference.sizes)
    return argumentError(what + " must have the shape of " + referenceName);
  return llvm::Error::success();
}

llvm::Error checkRowValues(const TensorRef &tensor, StringRef what,
                           const std::vector<int64_t> &sizes) {
  if (auto error = checkTensor(tensor, what, ElementType::f32, 3, false))
    return error;
  if (tensor.sizes != sizes)
    return argumentError(what + " must be [batch, heads, q_len]");
  return llvm::Error::success();
}

union ParamValue {
  float f;
  int32_t i;
};

/// The process's worker threads, one per hardware thread but the caller's,
/// started at the first parallel call and kept: starting threads for each
/// call cost more than a small problem's whole run (two threads were
/// slower than one below a few hundred microseconds of work). A child of
/// fork() (a DataLoader worker) inherits the pool's object but none of its
/// threads, so each process starts its own; the inherited one is left
/// alone, since destroying it would join threads that do not exist.
llvm::StdThreadPool &workerPool() {
  static std::atomic<llvm::StdThreadPool *> pool{nullptr};
  static std::atomic<pid_t> owner{0};
  static std::mutex creation;
  pid_t self = getpid();
  if (owner.load(std::memory_order_acquire) == self)
    return *pool.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(creation);
  if (owner.load(std::memory_order_acquire) != self) {
    pool.store(new llvm::StdThreadPool(llvm::hardware_concurrency(
                   std::max(1u, std::thread::hardware_concurrency() - 1))),
               std::memory_order_relaxed);
    owner.store(self, std::memory_order_release);
  }
  return *pool.load(std::memory_order_relaxed);
}

/// Runs `body(item)` for items [0, count) on the calling thread and up to
/// `numThreads - 1` pool threads (0: every hardware thread), which take
/// items one at a time: masked tiles make items uneven. Calls from several
/// threads at once share the pool; each waits only for its own tasks.
void runParallel(int64_t count, unsigned numThreads,
                 llvm::function_ref<void(int64_t)> body) {
  if (count <= 0)
    return;
  unsigned threads =
      numThreads ? numThreads : std::thread::hardware_concurrency();
  threads = std::max<unsigned>(1, std::min<int64_t>(threads, count));
  std::atomic<int64_t> next{0};
  auto worker = [&]() {
    for (int64_t item = next++; item < count; item = next++)
      body(item);
  };
  if (threads == 1)
    return worker();
  llvm::StdThreadPool &pool = workerPool();
  llvm::ThreadPoolTaskGroup helpers(pool);
  for (unsigned t = 1; t < std::min(threads, pool.getMaxConcurrency() + 1); ++t)
    helpers.async(worker);
  worker();
  helpers.wait();
}

/// Packs kernel arguments: a pointer to each argument, memref descriptors
/// passed by pointer.
class PackedCall {
public:
  void tensor(const TensorRef &tensor) {
    descriptors.push_back(std::make_unique<Descriptor>(tensor));
    pointers.push_back(
        std::make_unique<int64_t *>(descriptors.back()->words.data()));
    packed.push_back(pointers.back().get());
  }
  void scalar(void *value) { packed.push_back(value); }
  void call(void (*function)(void **), int64_t first, int64_t second) const {
    std::vector<void *> arguments = packed;
    arguments.push_back(&first);
    arguments.push_back(&second);
    function(arguments.data());
  }

private:
  std::vector<std::unique_ptr<Descriptor>> descriptors;
  std::vector<std::unique_ptr<int64_t *>> pointers;
  std::vector<void *> packed;
};

/// Partial sums per chunk: a backward pass splits its work items into at
/// most this many chunks, independent of the thread count, so that the
/// parameters' and captures' gradients add up in the same order on every
/// run.
constexpr int64_t kMaxChunks = 64;

int64_t numElements(const std::vector<int64_t> &sizes) {
  int64_t count = 1;
  for (int64_t size : sizes)
    count *= size;
  return count;
}

} // namespace

struct HostKernel::ResolvedCall {
  ElementType dtype;
  int64_t batch, heads, qLen;
  std::vector<ParamValue> params;
  /// The spec's captures in declaration order.
  std::vector<const TensorRef *> captures;
  /// q_offset, kv_offset, q_seq_len, kv_seq_len.
  std::array<int64_t, 4> block;

  /// Adds the arguments every function ends with before its work range:
  /// params, captures, the sequence block (appendTrailingArgumentTypes).
  void packTrailing(PackedCall &packed) {
    for (ParamValue &value : params)
      packed.scalar(&value);
    for (const TensorRef *capture : captures)
      packed.tensor(*capture);
    for (int64_t &field : block)
      packed.scalar(&field);
  }
};

llvm::Expected<HostKernel::ResolvedCall>
HostKernel::resolve(const HostKernelArgs &args) const {
  const TensorRef &query = args.query, &key = args.key, &value = args.value,
                  &output = args.output;
  const std::map<std::string, double> &params = args.params;
  const std::map<std::string, TensorRef> &captures = args.captures;
  std::array<int64_t, 4> block{args.qOffset, args.kvOffset, args.qSeqLen,
                               args.kvSeqLen};
  ResolvedCall call;
  call.dtype = compileOptions.dtype == "bf16"  ? ElementType::bf16
               : compileOptions.dtype == "f16" ? ElementType::f16
                                               : ElementType::f32;
  if (auto error = checkTensor(query, "query", call.dtype, 4, true))
    return std::move(error);
  if (auto error = checkTensor(key, "key", call.dtype, 4, true))
    return std::move(error);
  if (auto error = checkTensor(value, "value", call.dtype, 4, true))
    return std::move(error);
  if (auto error = checkTensor(output, "output", call.dtype, 4, true))
    return std::move(error);
  const auto &q = query.sizes;
  const auto &k = key.sizes;
  call.batch = q[0];
  call.heads = q[1];
  call.qLen = q[2];
  const int64_t headDim = compileOptions.headDim;
  if (q[3] != headDim || k[3] != headDim || value.sizes[3] != headDim)
    return argumentError("the kernel is compiled for head_dim " +
                         llvm::Twine(headDim));
  if (k[0] != call.batch || value.sizes != k)
    return argumentError("key and value must be [batch, kv_heads, kv_len, "
                         "head_dim] with the query's batch");
  if (k[1] < 1 || call.heads % k[1] != 0)
    return argumentError("the query heads (" + llvm::Twine(call.heads) +
                         ") must be a multiple of the key/value heads (" +
                         llvm::Twine(k[1]) + ")");
  if (output.sizes != q)
    return argumentError("output must have the query's shape");
  runtime::SequenceBlock sequence{block[0], block[1], block[2], block[3]};
  std::string blockError;
  if (!runtime::resolveSequenceBlock(sequence, call.qLen, k[2], blockError))
    return argumentError(blockError);
  block = {sequence.qOffset, sequence.kvOffset, sequence.qSeqLen,
           sequence.kvSeqLen};
  call.block = block;

  for (const auto &given : params)
    if (llvm::none_of(paramInfo,
                      [&](const Param &p) { return p.name == given.first; }))
      return argumentError("the spec has no parameter '" + given.first + "'");
  call.params.resize(paramInfo.size());
  for (auto [param, slot] : llvm::zip(paramInfo, call.params)) {
    auto given = params.find(param.name);
    std::optional<double> fallback = param.defaultValue;
    if (given != params.end())
      fallback = given->second;
    if (!fallback)
      return argumentError("parameter '" + param.name +
                           "' has no default and was not given");
    if (param.isInteger)
      slot.i = static_cast<int32_t>(*fallback);
    else
      slot.f = static_cast<float>(*fallback);
  }

  for (const auto &given : captures)
    if (llvm::none_of(captureInfo,
                      [&](const Capture &c) { return c.name == given.first; }))
      return argumentError("the spec has no capture '" + given.first + "'");
  for (const Capture &capture : captureInfo) {
    auto given = captures.find(capture.name);
    if (given == captures.end())
      return argumentError("capture '" + capture.name + "' was not given");
    if (auto error =
            checkTensor(given->second, "capture '" + capture.name + "'",
                        capture.type, capture.rank, false))
      return std::move(error);
    // Loads clamp their indices into [0, dim - 1]: an empty dimension would
    // leave nothing to clamp to.
    for (int64_t size : given->second.sizes)
      if (size < 1)
        return argumentError("capture '" + capture.name +
                             "' needs every dimension >= 1");
    call.captures.push_back(&given->second);
  }
  return call;
}

llvm::Error HostKernel::run(const HostKernelArgs &args) const {
  auto call = resolve(args);
  if (!call)
    return call.takeError();
  if (compileOptions.withLse) {
    if (auto error = checkRowValues(args.lse, "lse",
                                    {call->batch, call->heads, call->qLen}))
      return error;
  } else if (args.lse.data) {
    return argumentError("the kernel was compiled without an lse output");
  }

  // In the order of attn-lower-to-host: q, k, v, o, [lse], params,
  // captures, index offsets, work range.
  PackedCall packed;
  for (const TensorRef *tensor :
       {&args.query, &args.key, &args.value, &args.output})
    packed.tensor(*tensor);
  if (compileOptions.withLse)
    packed.tensor(args.lse);
  call->packTrailing(packed);

  const int64_t tileM = forwardTileM;
  const int64_t numWork =
      call->batch * call->heads * ((call->qLen + tileM - 1) / tileM);
  runParallel(numWork, args.numThreads,
              [&](int64_t work) { packed.call(entry, work, work + 1); });
  return llvm::Error::success();
}

llvm::Error HostKernel::backward(const HostBackwardArgs &args) const {
  if (!rowsEntry)
    return argumentError("the kernel was compiled without the backward "
                         "(withBackward)");
  auto call = resolve(args);
  if (!call)
    return call.takeError();
  std::vector<int64_t> rowSizes{call->batch, call->heads, call->qLen};
  if (auto error = checkRowValues(args.lse, "lse", rowSizes))
    return error;
  if (args.lseGrad.data)
    if (auto error = checkRowValues(args.lseGrad, "lse gradient", rowSizes))
      return error;
  if (auto error = checkLike(args.outputGrad, "output gradient", args.output,
                             "the output", true))
    return error;
  if (auto error = checkLike(args.queryGrad, "query gradient", args.query,
                             "the query", true))
    return error;
  if (auto error =
          checkLike(args.keyGrad, "key gradient", args.key, "the key", true))
    return error;
  if (auto error = checkLike(args.valueGrad, "value gradient", args.value,
                             "the value", true))
    return error;

  // Which gradients of parameters and captures to compute: bit p for
  // parameter p, bit (params + c) for capture c.
  if (paramInfo.size() + captureInfo.size() > 64)
    return argumentError("the backward takes at most 64 parameters and "
                         "captures together");
  uint64_t gradMask = 0;
  for (const auto &[name, target] : args.paramGrads) {
    auto found = llvm::find_if(paramInfo, [&, &name = name](const Param &p) {
      return p.name == name;
    });
    if (found == paramInfo.end())
      return argumentError("a gradient is asked for parameter '" + name +
                           "', which the spec does not have");
    if (found->isInteger)
      return argumentError("parameter '" + name +
                           "' is an int: it has no gradient");
    if (!target)
      return argumentError("the gradient of parameter '" + name +
                           "' has no place to go (null)");
    gradMask |= uint64_t(1) << (found - paramInfo.begin());
  }
  for (const auto &[name, target] : args.captureGrads) {
    auto found =
        llvm::find_if(captureInfo, [&, &name = name](const Capture &c) {
          return c.name == name;
        });
    if (found == captureInfo.end())
      return argumentError("a gradient is asked for capture '" + name +
                           "', which the spec does not have");
    if (found->type != ElementType::f32)
      return argumentError("capture '" + name + "' holds " +
                           elementTypeName(found->type) +
                           ": only f32 captures have a gradient");
    size_t position = found - captureInfo.begin();
    if (auto error = checkLike(target, "the gradient of capture '" + name + "'",
                               *call->captures[position],
                               "capture '" + name + "'", false))
      return error;
    gradMask |= uint64_t(1) << (paramInfo.size() + position);
  }

  const int64_t rows = numElements(rowSizes);
  std::vector<float> delta(rows), lse2(rows), zeroLseGrad;
  TensorRef lseGrad = args.lseGrad;
  if (!lseGrad.data) {
    zeroLseGrad.assign(rows, 0.0f);
    lseGrad = {zeroLseGrad.data(), ElementType::f32, rowSizes,
               contiguousStrides(rowSizes)};
  }
  TensorRef deltaRef{delta.data(), ElementType::f32, rowSizes,
                     contiguousStrides(rowSizes)};
  TensorRef lse2Ref{lse2.data(), ElementType::f32, rowSizes,
                    contiguousStrides(rowSizes)};

  // Partial-sum slots: one per parameter, then every f32 capture's
  // elements (attn-lower-to-host lays them out the same way).
  int64_t slots = paramInfo.size();
  std::vector<int64_t> captureSlot;
  for (auto [capture, tensor] : llvm::zip(captureInfo, call->captures)) {
    captureSlot.push_back(slots);
    if (capture.type == ElementType::f32)
      slots += numElements(tensor->sizes);
  }
  std::vector<float> partials(kMaxChunks * std::max<int64_t>(slots, 1), 0.0f);
  std::vector<int64_t> partialSizes{kMaxChunks, std::max<int64_t>(slots, 1)};
  TensorRef partialsRef{partials.data(), ElementType::f32, partialSizes,
                        contiguousStrides(partialSizes)};

  // The schedule depends on the problem only, never on the thread count:
  // the partial sums' order, and so the parameters' bits, follow it.
  const int64_t kvHeads = args.key.sizes[1], kvLen = args.key.sizes[2];
  const int64_t items = call->batch * kvHeads;
  bool fused = args.schedule == BackwardSchedule::fused ||
               (args.schedule == BackwardSchedule::automatic &&
                items >= kFusedBackwardItems);
  auto passes = gradientPasses(fused);
  if (!passes)
    return passes.takeError();

  PackedCall rowsCall;
  for (const TensorRef *tensor : std::initializer_list<const TensorRef *>{
           &args.query, &args.key, &args.output, &args.outputGrad, &args.lse,
           &lseGrad, &deltaRef, &lse2Ref})
    rowsCall.tensor(*tensor);
  call->packTrailing(rowsCall);
  const int64_t tileM = backwardTileM;
  const int64_t tileN = backwardTileN;
  const int64_t queryTiles = (call->qLen + tileM - 1) / tileM;
  runParallel(call->batch * call->heads * queryTiles, args.numThreads,
              [&](int64_t work) { rowsCall.call(rowsEntry, work, work + 1); });
  // Chunk c runs items c, c + chunks, ... (interleaved, so that masked
  // tiles spread over the chunks).
  auto runChunks = [&](int64_t items, const PackedCall &packed,
                       void (*function)(void **)) {
    int64_t chunks = std::min(items, kMaxChunks);
    runParallel(chunks, args.numThreads,
                [&](int64_t chunk) { packed.call(function, chunk, chunks); });
  };
  // A gradient pass's arguments: its tensors, the gradient mask, then the
  // params, captures and sequence block.
  auto gradientCall = [&](std::initializer_list<const TensorRef *> tensors) {
    PackedCall packed;
    for (const TensorRef *tensor : tensors)
      packed.tensor(*tensor);
    packed.scalar(&gradMask);
    call->packTrailing(packed);
    return packed;
  };
  if (fused) {
    // f32 sums of dQ~ and of the rows' ||q||^2 gradients and dS, which
    // each item owns for its heads' rows.
    const std::vector<int64_t> &sumSizes = args.query.sizes;
    std::vector<float> queryGradSums(numElements(sumSizes)),
        queryNormSums(rows), rowAdjointSums(rows);
    TensorRef queryGradSumsRef{queryGradSums.data(), ElementType::f32,
                               sumSizes, contiguousStrides(sumSizes)};
    TensorRef queryNormSumsRef{queryNormSums.data(), ElementType::f32,
                               rowSizes, contiguousStrides(rowSizes)};
    TensorRef rowAdjointSumsRef{rowAdjointSums.data(), ElementType::f32,
                                rowSizes, contiguousStrides(rowSizes)};
    runChunks(
        items,
        gradientCall({&args.query, &args.key, &args.value, &args.outputGrad,
                      &deltaRef, &lse2Ref, &args.keyGrad, &args.valueGrad,
                      &args.queryGrad, &queryGradSumsRef, &queryNormSumsRef,
                      &rowAdjointSumsRef, &partialsRef}),
        (*passes)->entries[0]);
  } else {
    runChunks(items * ((kvLen + tileN - 1) / tileN),
              gradientCall({&args.query, &args.key, &args.value,
                            &args.outputGrad, &deltaRef, &lse2Ref,
                            &args.keyGrad, &args.valueGrad, &partialsRef}),
              (*passes)->entries[0]);
    runChunks(
        call->batch * call->heads * queryTiles,
        gradientCall({&args.query, &args.key, &args.value, &args.outputGrad,
                      &deltaRef, &lse2Ref, &args.queryGrad, &partialsRef}),
        (*passes)->entries[1]);
  }

  auto reduce = [&](int64_t slot) {
    double sum = 0;
    for (int64_t chunk = 0; chunk < kMaxChunks; ++chunk)
      sum += partials[chunk * partialSizes[1] + slot];
    return static_cast<float>(sum);
  };
  for (const auto &[name, target] : args.paramGrads) {
    auto found = llvm::find_if(paramInfo, [&, &name = name](const Param &p) {
      return p.name == name;
    });
    *target = reduce(found - paramInfo.begin());
  }
  for (const auto &[name, target] : args.captureGrads) {
    size_t position = llvm::find_if(captureInfo,
                                    [&, &name = name](const Capture &c) {
                                      return c.name == name;
                                    }) -
                      captureInfo.begin();
    // Row-major slot order to the target's strides.
    int64_t count = numElements(target.sizes);
    auto *data = static_cast<float *>(target.data);
    for (int64_t flat = 0; flat < count; ++flat) {
      int64_t rest = flat, offset = 0;
      for (size_t d = target.sizes.size(); d-- > 0;) {
        offset += (rest % target.sizes[d]) * target.strides[d];
        rest /= target.sizes[d];
      }
      data[offset] = reduce(captureSlot[position] + flat);
    }
  }
  return llvm::Error::success();
}
