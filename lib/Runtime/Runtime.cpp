//===- Runtime.cpp - the C API of include/rbfc/runtime.h -----------------===//
#include "rbfc/runtime.h"

#include "rbfc/Runtime/Descriptor.h"
#include "rbfc/Runtime/Driver.h"
#include "rbfc/Runtime/Launch.h"
#include "rbfc/Runtime/Status.h"

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

using namespace rbfc::runtime;

/// One forward kernel of a module and its key-terms prologue, when it has
/// one.
struct ForwardFunctions {
  CUfunction function = nullptr;
  CUfunction prologue = nullptr;
};

struct rbfc_module {
  Descriptor descriptor;
  const Driver *driver = nullptr;
  CUcontext context = nullptr;
  CUmodule module = nullptr;
  /// The default forward kernel, then each small-problem kernel of the
  /// descriptor's chain, and the multiprocessors of the context's device,
  /// which choose among them.
  std::vector<ForwardFunctions> forward;
  int multiprocessors = 0;
  /// The backward's kernels, when the descriptor has them: rows, dK/dV,
  /// dQ, tile sums, reduce.
  CUfunction backward[5] = {};
};

namespace {

rbfc_status fail(rbfc_status status, const std::string &message) {
  return setLastError(status, "rbfc runtime: " + message);
}

bool readFile(const char *path, std::string &out, std::string &error) {
  FILE *file = std::fopen(path, "rb");
  if (!file) {
    error = std::string("cannot open '") + path + "': " + std::strerror(errno);
    return false;
  }
  char chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, file)) > 0)
    out.append(chunk, n);
  bool bad = std::ferror(file);
  std::fclose(file);
  if (bad) {
    error = std::string("cannot read '") + path + "'";
    return false;
  }
  return true;
}

/// Looks up `entry`, which the descriptor's `field` names, in `module`.
rbfc_status lookUp(const Driver &driver, CUmodule module, CUfunction &function,
                   const std::string &entry, const char *field) {
  CUresult result = driver.moduleGetFunction(&function, module, entry.c_str());
  if (result == CUDA_SUCCESS)
    return RBFC_OK;
  return fail(RBFC_ERROR_CUDA,
              describeCudaError(driver, "cuModuleGetFunction", result) + " (" +
                  field + " '" + entry +
                  "' from the descriptor is not in the image)");
}

/// Looks up the forward kernel `kernel` describes and its prologue, and
/// sets what they need before a launch.
rbfc_status loadForward(const Driver &driver, CUmodule module,
                        const Descriptor &kernel, ForwardFunctions &out) {
  if (rbfc_status status =
          lookUp(driver, module, out.function, kernel.entry, "entry"))
    return status;
  if (kernel.keyTerms)
    if (rbfc_status status = lookUp(driver, module, out.prologue,
                                    kernel.keyTerms->entry, "key_terms.entry"))
      return status;
  // Above 48 KiB of shared memory in all a kernel must opt in; the kernel's
  // own static shared bytes count towards that limit too, so opt in for any
  // dynamic amount (a no-op below the limit).
  CUresult result;
  if (kernel.sharedMemoryBytes > 0 &&
      (result = driver.funcSetAttribute(
           out.function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
           int(kernel.sharedMemoryBytes))) != CUDA_SUCCESS) {
    std::string message =
        describeCudaError(driver,
                          "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_"
                          "BYTES)",
                          result) +
        " (" + kernel.entry + " asks for " +
        std::to_string(kernel.sharedMemoryBytes) + " bytes of shared memory";
    CUdevice device;
    int optin = 0;
    if (driver.ctxGetDevice(&device) == CUDA_SUCCESS &&
        driver.deviceGetAttribute(
            &optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            device) == CUDA_SUCCESS)
      message += "; this device allows " + std::to_string(optin);
    return fail(RBFC_ERROR_CUDA, message + ")");
  }
  // A main kernel launched while its prologue still runs (programmatic
  // launch) can only share a multiprocessor with prologue blocks when both
  // ask for the same split of L1 and shared memory: the prologue asks for
  // the main kernel's (as much shared memory as it can get).
  if (kernel.keyTerms && kernel.keyTerms->programmaticLaunch)
    for (CUfunction function : {out.function, out.prologue})
      if ((result = driver.funcSetAttribute(
               function, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
               CU_SHAREDMEM_CARVEOUT_MAX_SHARED)) != CUDA_SUCCESS)
        return fail(RBFC_ERROR_CUDA,
                    describeCudaError(
                        driver,
                        "cuFuncSetAttribute(PREFERRED_SHARED_MEMORY_CARVEOUT)",
                        result));
  return RBFC_OK;
}

rbfc_status loadModule(const void *image, size_t imageSize,
                       std::string_view descriptorText, rbfc_module **out) {
  if (!out)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "module out-pointer is null");
  *out = nullptr;
  if (!image || imageSize == 0)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "the kernel image is empty");

  auto module = std::make_unique<rbfc_module>();
  std::string error;
  if (!parseDescriptor(descriptorText, module->descriptor, error))
    return fail(RBFC_ERROR_DESCRIPTOR, "descriptor: " + error);
  const Descriptor &d = module->descriptor;
  if (d.dtype == RBFC_DTYPE_F32)
    return fail(RBFC_ERROR_DESCRIPTOR,
                "descriptor: dtype f32 is the host target's; GPU kernels are "
                "bf16 or f16");

  const Driver *driver = getDriver(error);
  if (!driver)
    return fail(RBFC_ERROR_NO_DRIVER, error);
  module->driver = driver;
  if (!currentContext(*driver, module->context, error))
    return fail(RBFC_ERROR_CUDA, error);

  // PTX must reach the driver NUL-terminated; a cubin is an ELF file.
  std::string ptx;
  const void *data = image;
  bool isCubin = imageSize >= 4 && std::memcmp(image,
                                               "\x7f"
                                               "ELF",
                                               4) == 0;
  if (!isCubin) {
    ptx.assign(static_cast<const char *>(image), imageSize);
    data = ptx.c_str();
  }
  char log[8192] = {0};
  CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER,
                            CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *values[] = {log, reinterpret_cast<void *>(uintptr_t(sizeof log - 1))};
  CUresult result =
      driver->moduleLoadDataEx(&module->module, data, 2, options, values);
  if (result != CUDA_SUCCESS) {
    std::string message =
        describeCudaError(*driver, "cuModuleLoadDataEx", result);
    if (log[0])
      message += "\n" + std::string(log);
    return fail(RBFC_ERROR_CUDA, message);
  }
  // From here on a failure unloads the image too.
  std::unique_ptr<rbfc_module, void (*)(rbfc_module *)> loaded(
      module.release(), rbfc_module_destroy);
  rbfc_module *raw = loaded.get();
  for (const Descriptor *kernel = &d; kernel; kernel = kernel->small.get())
    if (rbfc_status status = loadForward(*driver, raw->module, *kernel,
                                         raw->forward.emplace_back()))
      return status;
  if (d.small) {
    CUdevice device;
    if ((result = driver->ctxGetDevice(&device)) != CUDA_SUCCESS ||
        (result = driver->deviceGetAttribute(
             &raw->multiprocessors, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
             device)) != CUDA_SUCCESS)
      return fail(RBFC_ERROR_CUDA, describeCudaError(*driver,
                                                     "cuDeviceGetAttribute("
                                                     "MULTIPROCESSOR_COUNT)",
                                                     result));
  }
  if (d.backward) {
    const BackwardKernelDesc *kernels[] = {
        &d.backward->rows, &d.backward->keyValue, &d.backward->query,
        &d.backward->tileSums, &d.backward->reduce};
    for (size_t i = 0; i < 5; ++i) {
      const BackwardKernelDesc *kernel = kernels[i];
      if (rbfc_status status = lookUp(*driver, raw->module, raw->backward[i],
                                      kernel->entry, "backward entry"))
        return status;
      if (kernel->sharedMemoryBytes == 0)
        continue;
      if ((result = driver->funcSetAttribute(
               raw->backward[i],
               CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
               int(kernel->sharedMemoryBytes))) != CUDA_SUCCESS)
        return fail(RBFC_ERROR_CUDA,
                    describeCudaError(*driver,
                                      "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_"
                                      "SIZE_BYTES)",
                                      result) +
                        " (" + kernel->entry + " asks for " +
                        std::to_string(kernel->sharedMemoryBytes) +
                        " bytes of shared memory)");
    }
  }
  *out = loaded.release();
  return RBFC_OK;
}

/// Launches `function`; with `programmatic` (and a driver that has
/// cuLaunchKernelEx) it may start before the previous kernel on `stream`
/// ends, which the kernel must wait for itself (griddepcontrol.wait).
rbfc_status launchFunction(const Driver &driver, CUfunction function,
                           const std::string &entry, const uint32_t (&grid)[3],
                           const uint32_t (&block)[3],
                           uint32_t sharedMemoryBytes, CUstream stream,
                           std::vector<void *> &arguments, bool programmatic) {
  CUresult result;
  const char *call = "cuLaunchKernel";
  if (programmatic && driver.launchKernelEx) {
    CUlaunchAttribute attribute{};
    attribute.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attribute.value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig config{};
    config.gridDimX = grid[0];
    config.gridDimY = grid[1];
    config.gridDimZ = grid[2];
    config.blockDimX = block[0];
    config.blockDimY = block[1];
    config.blockDimZ = block[2];
    config.sharedMemBytes = sharedMemoryBytes;
    config.hStream = stream;
    config.attrs = &attribute;
    config.numAttrs = 1;
    call = "cuLaunchKernelEx";
    result =
        driver.launchKernelEx(&config, function, arguments.data(), nullptr);
  } else {
    result = driver.launchKernel(function, grid[0], grid[1], grid[2], block[0],
                                 block[1], block[2], sharedMemoryBytes, stream,
                                 arguments.data(), nullptr);
  }
  if (result == CUDA_SUCCESS)
    return RBFC_OK;
  return fail(RBFC_ERROR_CUDA, describeCudaError(driver, call, result) + " (" +
                                   entry + ", grid " + std::to_string(grid[0]) +
                                   "x" + std::to_string(grid[1]) + "x" +
                                   std::to_string(grid[2]) + ", block " +
                                   std::to_string(block[0]) + ", " +
                                   std::to_string(sharedMemoryBytes) +
                                   " bytes of shared memory)");
}

/// Who provides the workspace of a kernel with key terms.
enum class Workspace { Allocate, Caller };

/// One kernel launch of a call.
struct PlannedLaunch {
  CUfunction function;
  const std::string &entry;
  const KernelLaunch &launch;
  bool programmatic = false;
};

/// Runs `launches` in order on `stream`, with the module's context current
/// and the workspace (`workspaceBytes`, 0 for none) from the caller or
/// allocated on the stream and freed there after the last launch. `bind`
/// stores the workspace pointer in `buffer` after checking it.
rbfc_status
runLaunches(const rbfc_module *module, const std::string &who,
            ParamBuffer &buffer, size_t workspaceBytes,
            const std::function<bool(void *, size_t, ParamBuffer &,
                                     std::string &)> &bind,
            Workspace source, void *workspace, size_t workspaceSize,
            void *stream, const std::vector<PlannedLaunch> &launches) {
  const Driver &driver = *module->driver;
  std::string error;
  bool allocate = source == Workspace::Allocate && workspaceBytes > 0;
  if (allocate && (!driver.memAllocAsync || !driver.memFreeAsync))
    return fail(RBFC_ERROR_NO_DRIVER,
                who + ": the call needs a workspace of " +
                    std::to_string(workspaceBytes) +
                    " bytes and this CUDA driver has no cuMemAllocAsync / "
                    "cuMemFreeAsync (CUDA 11.2) to allocate it; pass one "
                    "the caller allocates");
  if (!allocate && !bind(workspace, workspaceSize, buffer, error))
    return fail(RBFC_ERROR_INVALID_ARGUMENT, who + ": " + error);

  CUcontext current = nullptr;
  CUresult result = driver.ctxGetCurrent(&current);
  if (result != CUDA_SUCCESS)
    return fail(RBFC_ERROR_CUDA,
                describeCudaError(driver, "cuCtxGetCurrent", result));
  bool pushed = current != module->context;
  if (pushed &&
      (result = driver.ctxPushCurrent(module->context)) != CUDA_SUCCESS)
    return fail(RBFC_ERROR_CUDA,
                describeCudaError(driver, "cuCtxPushCurrent", result));

  CUstream cuStream = static_cast<CUstream>(stream);
  rbfc_status status = RBFC_OK;
  CUdeviceptr owned = 0;
  if (allocate) {
    // Stream-ordered: the pool hands the memory back to this stream after
    // the kernels, without a synchronisation.
    result = driver.memAllocAsync(&owned, workspaceBytes, cuStream);
    if (result != CUDA_SUCCESS)
      status = fail(RBFC_ERROR_CUDA,
                    describeCudaError(driver, "cuMemAllocAsync", result) +
                        " (" + who + ": a workspace of " +
                        std::to_string(workspaceBytes) +
                        " bytes; pass one the caller allocates instead)");
    else if (!bind(reinterpret_cast<void *>(owned), workspaceBytes, buffer,
                   error))
      status = fail(RBFC_ERROR_CUDA, who + ": cuMemAllocAsync returned " +
                                         "an unusable workspace: " + error);
  }
  std::vector<void *> arguments = buffer.pointers();
  for (const PlannedLaunch &planned : launches) {
    if (status != RBFC_OK)
      break;
    status = launchFunction(driver, planned.function, planned.entry,
                            planned.launch.grid, planned.launch.block,
                            planned.launch.sharedMemoryBytes, cuStream,
                            arguments, planned.programmatic);
  }
  if (owned) {
    result = driver.memFreeAsync(owned, cuStream);
    if (result != CUDA_SUCCESS && status == RBFC_OK)
      status = fail(RBFC_ERROR_CUDA,
                    describeCudaError(driver, "cuMemFreeAsync", result) + " (" +
                        who + ": the workspace)");
  }
  if (pushed) {
    CUcontext popped;
    driver.ctxPopCurrent(&popped);
  }
  return status;
}

/// Encodes each tensor map `config` asks for into its slot of `buffer`
/// (docs/abi.md, "Tensor maps"), or takes it from the thread's recent
/// ones.
bool encodeTensorMaps(const Driver &driver, const LaunchConfig &config,
                      ParamBuffer &buffer, std::string &error) {
  if (config.tensorMaps.empty())
    return true;
  if (!driver.tensorMapEncodeTiled) {
    error = "the kernel reads k and v by TMA and this CUDA driver has no "
            "cuTensorMapEncodeTiled (CUDA 12)";
    return false;
  }
  thread_local TensorMapCache recent;
  for (const TensorMapRequest &request : config.tensorMaps) {
    if (const TensorMapBytes *known = recent.find(request)) {
      buffer.set(request.arg, *known);
      continue;
    }
    TensorMapBytes map{};
    static const cuuint32_t unitSteps[4] = {1, 1, 1, 1};
    CUresult result = driver.tensorMapEncodeTiled(
        reinterpret_cast<CUtensorMap *>(&map),
        request.dtype == RBFC_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                         : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        4, request.data, request.sizes, request.strideBytes, request.box,
        unitSteps, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (result != CUDA_SUCCESS) {
      error = describeCudaError(driver, "cuTensorMapEncodeTiled", result) +
              " (the tensor map of " + request.tensor + ")";
      return false;
    }
    buffer.set(request.arg, map);
    recent.store(request, map);
  }
  return true;
}

/// The launch of docs/abi.md: the key-terms prologue, when the kernel has
/// one, then the kernel, both on `stream` with the same arguments.
rbfc_status launch(const rbfc_module *module, const LaunchArgs &args,
                   Workspace source, void *workspace, size_t workspaceBytes,
                   void *stream) {
  if (!module)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "module is null");
  const Descriptor &forward = module->descriptor;
  const Descriptor &d =
      forwardKernelFor(forward, args.q, module->multiprocessors);
  size_t index = 0;
  for (const Descriptor *kernel = &forward; kernel != &d;
       kernel = kernel->small.get())
    ++index;
  const ForwardFunctions &functions = module->forward[index];
  ParamBuffer buffer;
  LaunchConfig config;
  std::string error;
  if (!prepareLaunch(d, args, buffer, config, error))
    return fail(RBFC_ERROR_INVALID_ARGUMENT, forward.entry + ": " + error);
  if (!encodeTensorMaps(*module->driver, config, buffer, error))
    return fail(RBFC_ERROR_CUDA, d.entry + ": " + error);
  KernelLaunch prologue, main;
  std::copy(config.prologueGrid, config.prologueGrid + 3, prologue.grid);
  std::copy(config.prologueBlock, config.prologueBlock + 3, prologue.block);
  std::copy(config.grid, config.grid + 3, main.grid);
  std::copy(config.block, config.block + 3, main.block);
  main.sharedMemoryBytes = config.sharedMemoryBytes;
  std::vector<PlannedLaunch> launches;
  if (d.keyTerms)
    launches.push_back({functions.prologue, d.keyTerms->entry, prologue});
  launches.push_back({functions.function, d.entry, main,
                      d.keyTerms && d.keyTerms->programmaticLaunch});
  auto bind = [&](void *pointer, size_t bytes, ParamBuffer &into,
                  std::string &message) {
    return bindWorkspace(config, pointer, bytes, into, message);
  };
  return runLaunches(module, d.entry, buffer, config.workspaceBytes, bind,
                     source, workspace, workspaceBytes, stream, launches);
}

/// The backward of docs/abi.md ("Backward"): the row pre-pass, dK/dV, dQ
/// and, when a parameter's or capture's gradient is asked for, the two
/// reductions, in that order on `stream`.
rbfc_status launchBackward(const rbfc_module *module,
                           const rbfc_backward_args &a, void *stream) {
  const Descriptor &d = module->descriptor;
  std::string who = d.entry + " backward";
  BackwardLaunchArgs args;
  args.q = &a.q;
  args.k = &a.k;
  args.v = &a.v;
  args.o = &a.o;
  args.lse = &a.lse;
  args.outputGrad = &a.grad_o;
  args.lseGrad = a.grad_lse.data ? &a.grad_lse : nullptr;
  args.queryGrad = &a.grad_q;
  args.keyGrad = &a.grad_k;
  args.valueGrad = &a.grad_v;
  args.params = a.params;
  args.numParams = a.num_params;
  args.captures = a.captures;
  args.numCaptures = a.num_captures;
  args.paramGrads = a.grad_params;
  args.captureGrads = a.grad_captures;
  args.block = {a.q_offset, a.kv_offset, a.q_seq_len, a.kv_seq_len};
  ParamBuffer buffer;
  BackwardLaunchConfig config;
  std::string error;
  if (!prepareBackward(d, args, buffer, config, error))
    return fail(RBFC_ERROR_INVALID_ARGUMENT, who + ": " + error);
  const BackwardDesc &bw = *d.backward;
  std::vector<PlannedLaunch> launches{
      {module->backward[0], bw.rows.entry, config.rows},
      {module->backward[1], bw.keyValue.entry, config.keyValue},
      {module->backward[2], bw.query.entry, config.query}};
  if (config.reduces) {
    launches.push_back({module->backward[3], bw.tileSums.entry, config.tileSums});
    launches.push_back({module->backward[4], bw.reduce.entry, config.reduce});
  }
  auto bind = [&](void *pointer, size_t bytes, ParamBuffer &into,
                  std::string &message) {
    return bindBackwardWorkspace(config, pointer, bytes, into, message);
  };
  return runLaunches(module, who, buffer, config.workspaceBytes, bind,
                     a.workspace ? Workspace::Caller : Workspace::Allocate,
                     a.workspace, a.workspace_bytes, stream, launches);
}

} // namespace

rbfc_status rbfc::runtime::launchForward(const rbfc_module *module,
                                        const LaunchArgs &args,
                                        void *workspace,
                                        size_t workspaceBytes, void *stream) {
  return launch(module, args,
                workspace ? Workspace::Caller : Workspace::Allocate, workspace,
                workspaceBytes, stream);
}

extern "C" {

rbfc_status rbfc_module_load(const char *image_path,
                             const char *descriptor_path,
                             rbfc_module **module) {
  if (!image_path || !descriptor_path)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "a file path is null");
  std::string image, descriptor, error;
  if (!readFile(image_path, image, error) ||
      !readFile(descriptor_path, descriptor, error))
    return fail(RBFC_ERROR_IO, error);
  rbfc_status status =
      loadModule(image.data(), image.size(), descriptor, module);
  if (status != RBFC_OK && status != RBFC_ERROR_IO)
    setLastError(status, rbfc_last_error() + std::string(" [image '") +
                             image_path + "', descriptor '" + descriptor_path +
                             "']");
  return status;
}

rbfc_status rbfc_module_load_data(const void *image, size_t image_size,
                                  const char *descriptor,
                                  size_t descriptor_size,
                                  rbfc_module **module) {
  if (!descriptor)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "the descriptor is null");
  return loadModule(image, image_size,
                    std::string_view(descriptor, descriptor_size), module);
}

void rbfc_module_destroy(rbfc_module *module) {
  if (!module)
    return;
  // Unloading is best effort: at process exit the context may be gone.
  if (module->module)
    module->driver->moduleUnload(module->module);
  delete module;
}

rbfc_status rbfc_module_info(const rbfc_module *module,
                             rbfc_kernel_info *info) {
  if (!module || !info)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "module or info is null");
  const Descriptor &d = module->descriptor;
  info->name = d.name.c_str();
  info->entry = d.entry.c_str();
  info->arch = d.arch.c_str();
  info->normalization = d.normalization.c_str();
  info->plan = d.plan.c_str();
  info->dtype = d.dtype;
  info->head_dim = d.headDim;
  info->has_lse = d.hasLse;
  info->tile_m = d.tileM;
  info->tile_n = d.tileN;
  info->warps = d.warps;
  info->stages = d.stages;
  info->shared_memory_bytes = d.sharedMemoryBytes;
  info->num_params = int32_t(d.params.size());
  info->num_captures = int32_t(d.captures.size());
  info->key_terms = d.keyTerms ? d.keyTerms->terms : 0;
  return RBFC_OK;
}

rbfc_status rbfc_module_param(const rbfc_module *module, int32_t index,
                              rbfc_param_info *info) {
  if (!module || !info)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "module or info is null");
  const auto &params = module->descriptor.params;
  if (index < 0 || size_t(index) >= params.size())
    return fail(RBFC_ERROR_INVALID_ARGUMENT,
                "param index " + std::to_string(index) + " out of range [0, " +
                    std::to_string(params.size()) + ")");
  const ParamDesc &p = params[index];
  info->name = p.name.c_str();
  info->type = p.type;
  info->has_default = p.hasDefault;
  info->default_value = p.defaultValue;
  return RBFC_OK;
}

rbfc_status rbfc_module_capture(const rbfc_module *module, int32_t index,
                                rbfc_capture_info *info) {
  if (!module || !info)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "module or info is null");
  const auto &captures = module->descriptor.captures;
  if (index < 0 || size_t(index) >= captures.size())
    return fail(RBFC_ERROR_INVALID_ARGUMENT,
                "capture index " + std::to_string(index) +
                    " out of range [0, " + std::to_string(captures.size()) +
                    ")");
  const CaptureDesc &c = captures[index];
  info->name = c.name.c_str();
  info->type = c.type;
  info->rank = c.rank;
  return RBFC_OK;
}

rbfc_status rbfc_workspace_bytes(const rbfc_module *module,
                                 const rbfc_tensor *q, const rbfc_tensor *k,
                                 size_t *bytes) {
  if (!module || !bytes)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "module or bytes is null");
  std::string error;
  if (!workspaceBytes(module->descriptor, q, k, *bytes, error))
    return fail(RBFC_ERROR_INVALID_ARGUMENT,
                module->descriptor.entry + ": " + error);
  return RBFC_OK;
}

rbfc_status rbfc_launch(const rbfc_module *module, const rbfc_tensor *q,
                        const rbfc_tensor *k, const rbfc_tensor *v,
                        const rbfc_tensor *o, const rbfc_tensor *lse,
                        const double *params, size_t num_params,
                        const rbfc_tensor *captures, size_t num_captures,
                        void *stream) {
  return launch(module,
                {q, k, v, o, lse, params, num_params, captures, num_captures, {}},
                Workspace::Allocate, nullptr, 0, stream);
}

rbfc_status rbfc_launch_with_workspace(
    const rbfc_module *module, const rbfc_tensor *q, const rbfc_tensor *k,
    const rbfc_tensor *v, const rbfc_tensor *o, const rbfc_tensor *lse,
    const double *params, size_t num_params, const rbfc_tensor *captures,
    size_t num_captures, void *workspace, size_t workspace_bytes,
    void *stream) {
  return launch(module,
                {q, k, v, o, lse, params, num_params, captures, num_captures, {}},
                Workspace::Caller, workspace, workspace_bytes, stream);
}

rbfc_status rbfc_backward_workspace_bytes(const rbfc_module *module,
                                          const rbfc_tensor *q,
                                          const rbfc_tensor *k,
                                          size_t *bytes) {
  if (!module || !bytes)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "module or bytes is null");
  std::string error;
  if (!backwardWorkspaceBytes(module->descriptor, q, k, *bytes, error))
    return fail(RBFC_ERROR_INVALID_ARGUMENT,
                module->descriptor.entry + " backward: " + error);
  return RBFC_OK;
}

rbfc_status rbfc_launch_backward(const rbfc_module *module,
                                 const rbfc_backward_args *args,
                                 void *stream) {
  if (!module || !args)
    return fail(RBFC_ERROR_INVALID_ARGUMENT, "module or args is null");
  rbfc_backward_args current;
  std::string error;
  if (!readVersionedArgs(*args, RBFC_BACKWARD_ARGS_V1_SIZE,
                         "rbfc_backward_args_init (or set it to sizeof)",
                         current, error))
    return fail(RBFC_ERROR_INVALID_ARGUMENT, error);
  return launchBackward(module, current, stream);
}

} // extern "C"
