//===- CAPI.cpp - the C API of include/rbfc/rbfc.h ------------------------===//
//
// Checks what crosses the C boundary (null pointers, struct sizes, option
// values) and hands the rest to rbfc::jit. Structs are read and written
// only up to the caller's struct_size: the call arguments grew in version
// 2 (the index offsets), and a version 1 caller's arguments read the new
// fields as zero; every other struct must be at least its version 1 size.
//
//===----------------------------------------------------------------------===//
#include "rbfc/rbfc.h"

#include "rbfc/JIT/Kernel.h"
#include "rbfc/Runtime/Launch.h"
#include "rbfc/Runtime/Status.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/Path.h"

#include <cstdlib>
#include <cstring>

using namespace rbfc;
using runtime::setLastError;

struct rbfc_kernel {
  std::shared_ptr<const jit::Kernel> kernel;
};

struct rbfc_spec {
  runtime::Descriptor description;
};

namespace {

rbfc_status invalid(const std::string &message) {
  return setLastError(RBFC_ERROR_INVALID_ARGUMENT, "rbfc: " + message);
}

/// Checks that the caller's struct is at least version 1 of `T`.
template <typename T>
rbfc_status checkStructSize(const T *value, const char *what,
                            const char *init) {
  if (!value)
    return invalid(std::string(what) + " is null");
  if (value->struct_size < sizeof(T))
    return invalid(std::string(what) + "->struct_size is " +
                   std::to_string(value->struct_size) + ", expected " +
                   std::to_string(sizeof(T)) + (init ? "; call " : "") +
                   (init ? init : ""));
  return RBFC_OK;
}

/// The disk cache folder for `requested` (rbfc_compile_options.cache_dir);
/// "" for none.
std::string cacheDirectory(const char *requested) {
  if (requested)
    return requested;
  if (const char *dir = std::getenv("RBFC_CACHE_DIR"); dir && *dir)
    return dir;
  llvm::SmallString<256> path;
  if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    path = xdg;
  else if (const char *home = std::getenv("HOME"); home && *home)
    llvm::sys::path::append(path, home, ".cache");
  else
    return "";
  llvm::sys::path::append(path, "rbfc");
  return path.str().str();
}

rbfc_status checkOptions(const rbfc_compile_options &o,
                         jit::CompileOptions &options) {
  if (o.target != RBFC_TARGET_HOST && o.target != RBFC_TARGET_CUDA)
    return invalid("options->target is " + std::to_string(int(o.target)) +
                   "; expected RBFC_TARGET_HOST or RBFC_TARGET_CUDA");
  options.target = o.target;
  bool cuda = o.target == RBFC_TARGET_CUDA;
  if (o.head_dim < 1 || o.head_dim > 1024)
    return invalid("options->head_dim is " + std::to_string(o.head_dim) +
                   "; expected 1 to 1024");
  options.headDim = o.head_dim;
  bool half = o.dtype == RBFC_DTYPE_BF16 || o.dtype == RBFC_DTYPE_F16;
  if (!half && !(o.dtype == RBFC_DTYPE_F32 && !cuda))
    return invalid(std::string("options->dtype is ") +
                   runtime::dtypeName(o.dtype) + "; the " +
                   (cuda ? "cuda target takes bf16 or f16"
                         : "host target takes bf16, f16 or f32"));
  options.dtype = o.dtype;
  options.lse = o.lse != 0;
  options.backward = o.backward != 0;
  if (options.backward && !options.lse)
    return invalid("options->backward needs options->lse: the backward "
                   "reads the forward's log-sum-exp");
  if (!cuda && (o.arch || o.plan))
    return invalid(std::string("options->") + (o.arch ? "arch" : "plan") +
                   " is for the cuda target; leave it NULL on the host");
  if (!cuda)
    return RBFC_OK;
  if (o.plan)
    options.plan = o.plan;
  if (!o.arch)
    return jit::currentCudaArch(options.arch);
  options.arch = o.arch;
  for (const char *known : {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"})
    if (options.arch == known)
      return RBFC_OK;
  return invalid("options->arch is '" + options.arch +
                 "'; expected sm_80, sm_86, sm_89, sm_90 or sm_90a");
}

rbfc_status checkKernel(const rbfc_kernel *kernel) {
  return kernel ? RBFC_OK : invalid("kernel is null");
}

rbfc_status paramInfo(const runtime::Descriptor &d, int32_t index,
                      rbfc_param_info *info) {
  if (!info)
    return invalid("info is null");
  if (index < 0 || size_t(index) >= d.params.size())
    return invalid("param index " + std::to_string(index) +
                   " out of range [0, " + std::to_string(d.params.size()) +
                   ")");
  const runtime::ParamDesc &p = d.params[index];
  *info = {p.name.c_str(), p.type, p.hasDefault, p.defaultValue};
  return RBFC_OK;
}

rbfc_status captureInfo(const runtime::Descriptor &d, int32_t index,
                        rbfc_capture_info *info) {
  if (!info)
    return invalid("info is null");
  if (index < 0 || size_t(index) >= d.captures.size())
    return invalid("capture index " + std::to_string(index) +
                   " out of range [0, " + std::to_string(d.captures.size()) +
                   ")");
  const runtime::CaptureDesc &c = d.captures[index];
  *info = {c.name.c_str(), c.type, c.rank};
  return RBFC_OK;
}

} // namespace

extern "C" {

int32_t rbfc_api_version(void) { return RBFC_API_VERSION; }

rbfc_status rbfc_spec_parse(const char *spec, const char *spec_name,
                            rbfc_spec **parsed) {
  if (!parsed)
    return invalid("spec out-pointer is null");
  *parsed = nullptr;
  if (!spec)
    return invalid("spec is null");
  auto result = std::make_unique<rbfc_spec>();
  if (rbfc_status status = jit::inspectSpec(
          spec, spec_name ? spec_name : "<spec>", result->description))
    return status;
  *parsed = result.release();
  return RBFC_OK;
}

void rbfc_spec_release(rbfc_spec *spec) { delete spec; }

rbfc_status rbfc_spec_get_info(const rbfc_spec *spec, rbfc_spec_info *info) {
  if (!spec)
    return invalid("spec is null");
  if (rbfc_status status = checkStructSize(info, "info", nullptr))
    return status;
  const runtime::Descriptor &d = spec->description;
  info->name = d.name.c_str();
  info->normalization = d.normalization.c_str();
  info->num_params = int32_t(d.params.size());
  info->num_captures = int32_t(d.captures.size());
  return RBFC_OK;
}

rbfc_status rbfc_spec_param(const rbfc_spec *spec, int32_t index,
                            rbfc_param_info *info) {
  if (!spec)
    return invalid("spec is null");
  return paramInfo(spec->description, index, info);
}

rbfc_status rbfc_spec_capture(const rbfc_spec *spec, int32_t index,
                              rbfc_capture_info *info) {
  if (!spec)
    return invalid("spec is null");
  return captureInfo(spec->description, index, info);
}

void rbfc_compile_options_init(rbfc_compile_options *options) {
  if (!options)
    return;
  *options = {};
  options->struct_size = sizeof *options;
  options->target = RBFC_TARGET_HOST;
  options->head_dim = 64;
  options->dtype = RBFC_DTYPE_BF16;
}

rbfc_status rbfc_compile(const char *spec, const char *spec_name,
                         const rbfc_compile_options *options,
                         rbfc_kernel **kernel) {
  if (!kernel)
    return invalid("kernel out-pointer is null");
  *kernel = nullptr;
  if (!spec)
    return invalid("spec is null");
  if (rbfc_status status =
          checkStructSize(options, "options", "rbfc_compile_options_init"))
    return status;
  jit::CompileOptions checked;
  if (rbfc_status status = checkOptions(*options, checked))
    return status;
  std::shared_ptr<const jit::Kernel> compiled;
  if (rbfc_status status = jit::compileKernel(
          spec, spec_name ? spec_name : "<spec>", checked,
          cacheDirectory(options->cache_dir), compiled))
    return status;
  *kernel = new rbfc_kernel{std::move(compiled)};
  return RBFC_OK;
}

void rbfc_kernel_release(rbfc_kernel *kernel) { delete kernel; }

rbfc_status rbfc_kernel_get_properties(const rbfc_kernel *kernel,
                                       rbfc_kernel_properties *properties) {
  if (rbfc_status status = checkKernel(kernel))
    return status;
  if (rbfc_status status =
          checkStructSize(properties, "properties", nullptr))
    return status;
  const runtime::Descriptor &d = kernel->kernel->descriptor();
  properties->target = kernel->kernel->target();
  properties->has_backward = kernel->kernel->hasBackward();
  rbfc_kernel_info &info = properties->info;
  info.name = d.name.c_str();
  info.entry = d.entry.c_str();
  info.arch = d.arch.c_str();
  info.normalization = d.normalization.c_str();
  info.plan = d.plan.c_str();
  info.dtype = d.dtype;
  info.head_dim = d.headDim;
  info.has_lse = d.hasLse;
  info.tile_m = d.tileM;
  info.tile_n = d.tileN;
  info.warps = d.warps;
  info.stages = d.stages;
  info.shared_memory_bytes = d.sharedMemoryBytes;
  info.num_params = int32_t(d.params.size());
  info.num_captures = int32_t(d.captures.size());
  info.key_terms = d.keyTerms ? d.keyTerms->terms : 0;
  return RBFC_OK;
}

rbfc_status rbfc_kernel_param(const rbfc_kernel *kernel, int32_t index,
                              rbfc_param_info *info) {
  if (rbfc_status status = checkKernel(kernel))
    return status;
  return paramInfo(kernel->kernel->descriptor(), index, info);
}

rbfc_status rbfc_kernel_capture(const rbfc_kernel *kernel, int32_t index,
                                rbfc_capture_info *info) {
  if (rbfc_status status = checkKernel(kernel))
    return status;
  return captureInfo(kernel->kernel->descriptor(), index, info);
}

rbfc_status rbfc_kernel_workspace_bytes(const rbfc_kernel *kernel,
                                        const rbfc_tensor *q,
                                        const rbfc_tensor *k, size_t *bytes) {
  if (rbfc_status status = checkKernel(kernel))
    return status;
  if (!bytes)
    return invalid("bytes is null");
  return kernel->kernel->workspaceBytes(q, k, *bytes);
}

rbfc_status rbfc_kernel_backward_workspace_bytes(const rbfc_kernel *kernel,
                                                 const rbfc_tensor *q,
                                                 const rbfc_tensor *k,
                                                 size_t *bytes) {
  if (rbfc_status status = checkKernel(kernel))
    return status;
  if (!bytes)
    return invalid("bytes is null");
  if (!kernel->kernel->hasBackward())
    return setLastError(RBFC_ERROR_UNSUPPORTED,
                        "rbfc: the kernel was compiled without backward");
  return kernel->kernel->backwardWorkspaceBytes(q, k, *bytes);
}

void rbfc_forward_args_init(rbfc_forward_args *args) {
  if (!args)
    return;
  *args = {};
  args->struct_size = sizeof *args;
}

rbfc_status rbfc_forward(const rbfc_kernel *kernel,
                         const rbfc_forward_args *args, void *stream) {
  if (rbfc_status status = checkKernel(kernel))
    return status;
  if (!args)
    return invalid("args is null");
  rbfc_forward_args current;
  std::string error;
  if (!runtime::readVersionedArgs(*args, RBFC_FORWARD_ARGS_V1_SIZE,
                                  "rbfc_forward_args_init", current, error))
    return invalid(error);
  return kernel->kernel->forward(current, stream);
}

void rbfc_backward_args_init(rbfc_backward_args *args) {
  if (!args)
    return;
  *args = {};
  args->struct_size = sizeof *args;
}

rbfc_status rbfc_backward(const rbfc_kernel *kernel,
                          const rbfc_backward_args *args, void *stream) {
  if (rbfc_status status = checkKernel(kernel))
    return status;
  if (!args)
    return invalid("args is null");
  rbfc_backward_args current;
  std::string error;
  if (!runtime::readVersionedArgs(*args, RBFC_BACKWARD_ARGS_V1_SIZE,
                                  "rbfc_backward_args_init", current, error))
    return invalid(error);
  return kernel->kernel->backward(current, stream);
}

rbfc_status rbfc_cache_get_stats(rbfc_cache_stats *stats) {
  if (rbfc_status status = checkStructSize(stats, "stats", nullptr))
    return status;
  *stats = jit::cacheStats();
  return RBFC_OK;
}

void rbfc_cache_clear_memory(void) { jit::clearMemoryCache(); }

} // extern "C"
