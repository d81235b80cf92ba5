//===- Compile.cpp - compile a spec for rbfc.h, through the caches --------===//
//
// A compile is keyed by the hash of everything its kernel depends on: the
// spec text, the options and the compiler itself (the build ID of the
// library this code is linked into, and the LLVM version). The memory cache
// maps keys to built kernels and lets one thread build a kernel while the
// others that ask for it wait; the disk cache (CUDA kernels) lets a new
// process skip the compiler.
//
//===----------------------------------------------------------------------===//
#include "rbfc/JIT/Kernel.h"

#include "rbfc/Conversion/NVGPU/TargetEmission.h"
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Runtime/Status.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <condition_variable>
#include <link.h>
#include <map>
#include <mutex>

using namespace rbfc;
using namespace rbfc::jit;
using runtime::setLastError;

Kernel::~Kernel() = default;

rbfc_status Kernel::fail(rbfc_status status,
                         const std::string &message) const {
  return setLastError(status, "rbfc: " + desc.name + ": " + message);
}

namespace {

std::atomic<uint64_t> compiles, memoryHits, diskHits, diskRejected,
    diskWriteFailures;

/// The GNU build ID of the loaded object that holds this code, as hex: it
/// changes whenever the compiler does. "" when the linker wrote none.
std::string buildId() {
  struct Search {
    uintptr_t address;
    std::string id;
  } search{reinterpret_cast<uintptr_t>(&buildId), ""};
  dl_iterate_phdr(
      [](dl_phdr_info *info, size_t, void *data) {
        auto &search = *static_cast<Search *>(data);
        bool holds = false;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr) &segment = info->dlpi_phdr[i];
          uintptr_t start = info->dlpi_addr + segment.p_vaddr;
          holds |= segment.p_type == PT_LOAD && search.address >= start &&
                   search.address < start + segment.p_memsz;
        }
        if (!holds)
          return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr) &segment = info->dlpi_phdr[i];
          if (segment.p_type != PT_NOTE)
            continue;
          auto *note = reinterpret_cast<const char *>(info->dlpi_addr +
                                                      segment.p_vaddr);
          const char *end = note + segment.p_memsz;
          while (note + sizeof(ElfW(Nhdr)) <= end) {
            auto *header = reinterpret_cast<const ElfW(Nhdr) *>(note);
            const char *name = note + sizeof(ElfW(Nhdr));
            const char *desc = name + ((header->n_namesz + 3) & ~3u);
            if (header->n_type == NT_GNU_BUILD_ID && header->n_namesz == 4 &&
                std::memcmp(name, "GNU", 4) == 0)
              search.id = llvm::toHex(
                  llvm::StringRef(desc, header->n_descsz), /*LowerCase=*/true);
            note = desc + ((header->n_descsz + 3) & ~3u);
          }
        }
        return 1;
      },
      &search);
  return search.id;
}

const char *targetName(rbfc_target target) {
  return target == RBFC_TARGET_CUDA ? "cuda" : "host";
}

std::string cacheKey(llvm::StringRef spec, const CompileOptions &options) {
  static const std::string compiler = buildId();
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "rbfc-jit 1\ncompiler " << compiler << " llvm " LLVM_VERSION_STRING
     << "\ntarget " << targetName(options.target) << "\narch " << options.arch
     << "\nplan " << options.plan << "\nhead_dim " << options.headDim
     << "\ndtype " << runtime::dtypeName(options.dtype) << "\nlse "
     << options.lse << "\nbackward " << options.backward << "\nspec "
     << spec.size() << "\n"
     << spec;
  return contentHash(text);
}

/// One spec's trip through the front end: the MLIR context, the source
/// buffer its diagnostics point into, and the diagnostics printed so far.
class SpecCompilation {
public:
  SpecCompilation(llvm::StringRef spec, llvm::StringRef specName,
                  const mlir::DialectRegistry &registry)
      : context(registry, mlir::MLIRContext::Threading::DISABLED),
        diagnosticStream(diagnostics),
        handler(sourceMgr, &context, diagnosticStream), spec(spec),
        specName(specName) {
    // Diagnostics point into the spec; the op's generic form is no help to
    // whoever wrote it.
    context.printOpOnDiagnostic(false);
    sourceMgr.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(spec, specName), llvm::SMLoc());
  }

  /// Parses the spec and runs the canonical pipeline; a spec that fails
  /// gives RBFC_ERROR_SPEC with its diagnostics.
  rbfc_status canonicalize(const CompileOptions &options) {
    FrontendOptions frontend;
    frontend.headDim = options.headDim;
    frontend.dtype = runtime::dtypeName(options.dtype);
    // The backward reads the forward's lse: a kernel with one returns it.
    frontend.withLse = options.lse || options.backward;
    module = buildAttnModule(context, spec, specName, frontend);
    if (!module)
      return fail(RBFC_ERROR_SPEC);
    mlir::PassManager pm(&context);
    buildAttnCanonicalizePipeline(pm);
    if (options.backward)
      buildAttnBackwardPipeline(pm);
    if (mlir::failed(pm.run(*module)))
      return fail(RBFC_ERROR_SPEC);
    return RBFC_OK;
  }

  /// The diagnostics as the calling thread's error.
  rbfc_status fail(rbfc_status status) {
    return setLastError(status, llvm::StringRef(diagnostics).rtrim().str());
  }

  mlir::ModuleOp getModule() { return *module; }

  /// The canonical module's attention as `description`: its name,
  /// normalization, params and captures.
  void describe(runtime::Descriptor &description) {
    module->walk([&](attn::AttentionOp attention) {
      description.name = description.entry =
          attention->getParentOfType<mlir::func::FuncOp>().getName().str();
      description.normalization = attention.isSoftmax() ? "softmax" : "none";
      for (auto [name, param, fallback] :
           llvm::zip(attention.getParamNames(), attention.getParams(),
                     attention.getParamDefaults())) {
        runtime::ParamDesc desc{
            mlir::cast<mlir::StringAttr>(name).str(),
            param.getType().isInteger(32) ? RBFC_DTYPE_I32 : RBFC_DTYPE_F32};
        if (auto real = mlir::dyn_cast<mlir::FloatAttr>(fallback)) {
          desc.hasDefault = true;
          desc.defaultValue = real.getValueAsDouble();
        } else if (auto integer = mlir::dyn_cast<mlir::IntegerAttr>(fallback)) {
          desc.hasDefault = true;
          desc.defaultValue = double(integer.getInt());
        }
        description.params.push_back(desc);
      }
      for (auto [name, capture] :
           llvm::zip(attention.getCaptureNames(), attention.getCaptures())) {
        auto type = mlir::cast<mlir::ShapedType>(capture.getType());
        mlir::Type element = type.getElementType();
        description.captures.push_back(
            {mlir::cast<mlir::StringAttr>(name).str(),
             element.isInteger(64)   ? RBFC_DTYPE_I64
             : element.isInteger(32) ? RBFC_DTYPE_I32
                                     : RBFC_DTYPE_F32,
             int(type.getRank())});
      }
    });
  }

private:
  mlir::MLIRContext context;
  llvm::SourceMgr sourceMgr;
  std::string diagnostics;
  llvm::raw_string_ostream diagnosticStream;
  mlir::SourceMgrDiagnosticHandler handler;
  llvm::StringRef spec, specName;
  mlir::OwningOpRef<mlir::ModuleOp> module;
};

rbfc_status buildCudaKernel(llvm::StringRef spec, llvm::StringRef specName,
                            const CompileOptions &options,
                            const std::string &key,
                            const std::string &cacheDirectory,
                            std::shared_ptr<const Kernel> &kernel) {
  std::optional<DiskCache> disk;
  if (!cacheDirectory.empty())
    disk.emplace(cacheDirectory);
  KernelArtifact artifact;
  if (disk) {
    DiskCache::Lookup lookup = disk->load(key, artifact);
    if (lookup == DiskCache::Lookup::Hit &&
        loadCudaKernel(artifact, kernel) == RBFC_OK) {
      ++diskHits;
      return RBFC_OK;
    }
    // An entry whose contents check out but whose descriptor does not
    // parse was written by a broken compiler: it is as bad as a torn one.
    if (lookup != DiskCache::Lookup::Miss)
      ++diskRejected;
  }

  mlir::DialectRegistry registry;
  registerGPUBackend(registry);
  SpecCompilation compilation(spec, specName, registry);
  if (rbfc_status status = compilation.canonicalize(options))
    return status;
  if (!options.plan.empty() &&
      mlir::failed(overridePlan(compilation.getModule(), options.plan)))
    return setLastError(
        RBFC_ERROR_INVALID_ARGUMENT,
        std::string("rbfc: plan: expected an attribute like '") +
            kPlanExample + "', got '" + options.plan + "'");
  if (mlir::failed(buildCudaArtifact(compilation.getModule(), options,
                                     artifact)))
    return compilation.fail(RBFC_ERROR_COMPILE);
  ++compiles;
  if (disk && !disk->store(key, artifact))
    ++diskWriteFailures;
  return loadCudaKernel(std::move(artifact), kernel);
}

rbfc_status buildKernel(llvm::StringRef spec, llvm::StringRef specName,
                        const CompileOptions &options, const std::string &key,
                        const std::string &cacheDirectory,
                        std::shared_ptr<const Kernel> &kernel) {
  if (options.target == RBFC_TARGET_CUDA)
    return buildCudaKernel(spec, specName, options, key, cacheDirectory,
                           kernel);
  // The host kernel compiles the spec again; this pass tells the spec's
  // own errors from the backend's and describes the attention.
  runtime::Descriptor description;
  {
    SpecCompilation compilation(spec, specName, mlir::DialectRegistry());
    if (rbfc_status status = compilation.canonicalize(options))
      return status;
    compilation.describe(description);
  }
  rbfc_status status = buildHostKernel(spec, specName, options,
                                       std::move(description), kernel);
  if (status == RBFC_OK)
    ++compiles;
  return status;
}

/// Built kernels by key. A slot with `building` set has a thread compiling
/// its kernel; others wait for it instead of compiling it again.
class MemoryCache {
public:
  rbfc_status get(const std::string &key,
                  llvm::function_ref<rbfc_status(std::shared_ptr<const Kernel> &)>
                      build,
                  std::shared_ptr<const Kernel> &kernel) {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      auto found = slots.find(key);
      if (found == slots.end())
        break;
      if (found->second.kernel) {
        ++memoryHits;
        kernel = found->second.kernel;
        return RBFC_OK;
      }
      built.wait(lock);
    }
    slots[key].building = true;
    lock.unlock();
    rbfc_status status = build(kernel);
    lock.lock();
    // A failed build leaves no slot: each caller gets its own diagnostics.
    if (status == RBFC_OK)
      slots[key] = {kernel, false};
    else
      slots.erase(key);
    built.notify_all();
    return status;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = slots.begin(); it != slots.end();)
      it = it->second.building ? std::next(it) : slots.erase(it);
  }

private:
  struct Slot {
    std::shared_ptr<const Kernel> kernel;
    bool building = false;
  };
  std::mutex mutex;
  std::condition_variable built;
  std::map<std::string, Slot> slots;
};

/// Lives as long as the process: kernels are not torn down at exit, when
/// the CUDA context they were loaded into may already be gone.
MemoryCache &memoryCache() {
  static MemoryCache *cache = new MemoryCache();
  return *cache;
}

} // namespace

rbfc_status rbfc::jit::compileKernel(llvm::StringRef spec,
                                     llvm::StringRef specName,
                                     const CompileOptions &options,
                                     const std::string &cacheDirectory,
                                     std::shared_ptr<const Kernel> &kernel) {
  std::string key = cacheKey(spec, options);
  return memoryCache().get(
      key,
      [&](std::shared_ptr<const Kernel> &built) {
        return buildKernel(spec, specName, options, key, cacheDirectory,
                           built);
      },
      kernel);
}

rbfc_status rbfc::jit::inspectSpec(llvm::StringRef spec,
                                   llvm::StringRef specName,
                                   runtime::Descriptor &description) {
  SpecCompilation compilation(spec, specName, mlir::DialectRegistry());
  if (rbfc_status status = compilation.canonicalize(CompileOptions()))
    return status;
  compilation.describe(description);
  for (runtime::ParamDesc &param : description.params)
    param.defaultValue = 0;
  return RBFC_OK;
}

rbfc_cache_stats rbfc::jit::cacheStats() {
  rbfc_cache_stats stats{};
  stats.struct_size = sizeof stats;
  stats.compiles = compiles;
  stats.memory_hits = memoryHits;
  stats.disk_hits = diskHits;
  stats.disk_rejected = diskRejected;
  stats.disk_write_failures = diskWriteFailures;
  return stats;
}

void rbfc::jit::clearMemoryCache() { memoryCache().clear(); }
