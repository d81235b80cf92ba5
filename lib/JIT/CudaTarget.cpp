//===- CudaTarget.cpp - rbfc.h's CUDA target over the runtime ------------===//
//
// The compiler half lowers the canonical module to PTX and the descriptor
// of docs/abi.md; the run-time half is the CUDA runtime of runtime.h. A
// kernel checks its arguments against the descriptor before it touches the
// driver, so bad tensors are reported the same on machines without a GPU,
// and loads its image into each CUDA context the first time it runs there.
//
//===----------------------------------------------------------------------===//
#include "rbfc/JIT/Kernel.h"

#include "rbfc/Conversion/NVGPU/TargetEmission.h"
#include "rbfc/Runtime/Driver.h"
#include "rbfc/Runtime/Launch.h"
#include "rbfc/Runtime/Status.h"

#include <mutex>
#include <vector>

using namespace rbfc;
using namespace rbfc::jit;
using runtime::setLastError;

namespace {

class CudaTargetKernel : public Kernel {
public:
  CudaTargetKernel(KernelArtifact artifact, runtime::Descriptor descriptor)
      : Kernel(RBFC_TARGET_CUDA, std::move(descriptor)),
        artifact(std::move(artifact)) {}

  ~CudaTargetKernel() override {
    for (auto &loaded : modules)
      rbfc_module_destroy(loaded.second);
  }

  bool hasBackward() const override {
    return descriptor().backward.has_value();
  }

  rbfc_status forward(const rbfc_forward_args &a,
                      void *stream) const override {
    const rbfc_tensor *lse = a.lse.data ? &a.lse : nullptr;
    runtime::LaunchArgs args{&a.q,         &a.k,       &a.v,
                             &a.o,         lse,        a.params,
                             a.num_params, a.captures, a.num_captures,
                             {a.q_offset, a.kv_offset, a.q_seq_len,
                              a.kv_seq_len}};
    runtime::ParamBuffer buffer;
    runtime::LaunchConfig config;
    std::string error;
    if (!runtime::prepareLaunch(descriptor(), args, buffer, config, error))
      return fail(RBFC_ERROR_INVALID_ARGUMENT, error);
    rbfc_module *module;
    if (rbfc_status status = moduleForCurrentContext(module))
      return status;
    return runtime::launchForward(module, args, a.workspace,
                                  a.workspace_bytes, stream);
  }

  rbfc_status backward(const rbfc_backward_args &a,
                       void *stream) const override {
    if (!hasBackward())
      return fail(RBFC_ERROR_UNSUPPORTED,
                  "the kernel was compiled without a backward (set "
                  "rbfc_compile_options.backward)");
    // The same checks the runtime makes, here before the driver is needed.
    runtime::BackwardLaunchArgs args{
        &a.q,        &a.k,          &a.v,
        &a.o,        &a.lse,        &a.grad_o,
        a.grad_lse.data ? &a.grad_lse : nullptr,
        &a.grad_q,   &a.grad_k,     &a.grad_v,
        a.params,    a.num_params,  a.captures,
        a.num_captures, a.grad_params, a.grad_captures,
        {a.q_offset, a.kv_offset, a.q_seq_len, a.kv_seq_len}};
    runtime::ParamBuffer buffer;
    runtime::BackwardLaunchConfig config;
    std::string error;
    if (!runtime::prepareBackward(descriptor(), args, buffer, config, error))
      return fail(RBFC_ERROR_INVALID_ARGUMENT, error);
    rbfc_module *module;
    if (rbfc_status status = moduleForCurrentContext(module))
      return status;
    return rbfc_launch_backward(module, &a, stream);
  }

  rbfc_status workspaceBytes(const rbfc_tensor *q, const rbfc_tensor *k,
                             size_t &bytes) const override {
    std::string error;
    if (!runtime::workspaceBytes(descriptor(), q, k, bytes, error))
      return fail(RBFC_ERROR_INVALID_ARGUMENT, error);
    return RBFC_OK;
  }

  rbfc_status backwardWorkspaceBytes(const rbfc_tensor *q,
                                     const rbfc_tensor *k,
                                     size_t &bytes) const override {
    std::string error;
    if (!runtime::backwardWorkspaceBytes(descriptor(), q, k, bytes, error))
      return fail(RBFC_ERROR_INVALID_ARGUMENT, error);
    return RBFC_OK;
  }

private:
  /// The image loaded into the calling thread's CUDA context (device 0's
  /// primary context when none is current), loading it there first.
  rbfc_status moduleForCurrentContext(rbfc_module *&module) const {
    std::string error;
    const runtime::Driver *driver = runtime::getDriver(error);
    if (!driver)
      return fail(RBFC_ERROR_NO_DRIVER, error);
    CUcontext context;
    if (!runtime::currentContext(*driver, context, error))
      return fail(RBFC_ERROR_CUDA, error);
    std::lock_guard<std::mutex> lock(mutex);
    for (auto &[loadedContext, loaded] : modules)
      if (loadedContext == context) {
        module = loaded;
        return RBFC_OK;
      }
    if (rbfc_status status = rbfc_module_load_data(
            artifact.image.data(), artifact.image.size(),
            artifact.descriptor.data(), artifact.descriptor.size(), &module))
      return status;
    modules.emplace_back(context, module);
    return RBFC_OK;
  }

  KernelArtifact artifact;
  mutable std::mutex mutex;
  mutable std::vector<std::pair<CUcontext, rbfc_module *>> modules;
};

} // namespace

rbfc_status rbfc::jit::currentCudaArch(std::string &arch) {
  std::string error;
  const runtime::Driver *driver = runtime::getDriver(error);
  if (!driver)
    return setLastError(RBFC_ERROR_NO_DRIVER,
                        "rbfc: no arch given and no device to take it from: " +
                            error);
  CUcontext context;
  CUdevice device;
  CUresult result;
  int major = 0, minor = 0;
  if (!runtime::currentContext(*driver, context, error))
    return setLastError(RBFC_ERROR_CUDA, "rbfc: " + error);
  if ((result = driver->ctxGetDevice(&device)) != CUDA_SUCCESS ||
      (result = driver->deviceGetAttribute(
           &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)) !=
          CUDA_SUCCESS ||
      (result = driver->deviceGetAttribute(
           &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)) !=
          CUDA_SUCCESS)
    return setLastError(RBFC_ERROR_CUDA,
                        "rbfc: " + runtime::describeCudaError(
                                       *driver, "the device's arch", result));
  int capability = major * 10 + minor;
  if (capability < 80)
    return setLastError(RBFC_ERROR_UNSUPPORTED,
                        "rbfc: the device is sm_" + std::to_string(capability) +
                            "; rbfc's CUDA kernels need sm_80 or newer");
  // sm_90a code runs on sm_90 only; newer devices JIT-compile sm_90 PTX.
  if (capability == 90)
    arch = "sm_90a";
  else if (capability > 90)
    arch = "sm_90";
  else if (capability >= 89)
    arch = "sm_89";
  else if (capability >= 86)
    arch = "sm_86";
  else
    arch = "sm_80";
  return RBFC_OK;
}

mlir::LogicalResult rbfc::jit::buildCudaArtifact(mlir::ModuleOp module,
                                                 const CompileOptions &options,
                                                 KernelArtifact &artifact) {
  if (mlir::failed(lowerToGPUKernels(module, options.arch)))
    return mlir::failure();
  mlir::FailureOr<std::string> descriptor = kernelDescriptorJSON(module);
  if (mlir::failed(descriptor))
    return mlir::failure();
  mlir::FailureOr<std::string> ptx =
      serializeKernels(module, options.arch, KernelFormat::PTX);
  if (mlir::failed(ptx))
    return mlir::failure();
  artifact = {std::move(*descriptor), std::move(*ptx)};
  return mlir::success();
}

rbfc_status rbfc::jit::loadCudaKernel(KernelArtifact artifact,
                                      std::shared_ptr<const Kernel> &kernel) {
  runtime::Descriptor descriptor;
  std::string error;
  if (!runtime::parseDescriptor(artifact.descriptor, descriptor, error))
    return setLastError(RBFC_ERROR_COMPILE,
                        "rbfc: the compiler wrote a descriptor the runtime "
                        "cannot read: " +
                            error);
  kernel = std::make_shared<CudaTargetKernel>(std::move(artifact),
                                              std::move(descriptor));
  return RBFC_OK;
}
