//===- Driver.cpp - the CUDA driver, opened at run time ------------------===//
#include "rbfc/Runtime/Driver.h"

#include <dlfcn.h>
#include <mutex>

namespace rbfc::runtime {

namespace {

template <typename Fn>
bool resolve(void *handle, const char *library, const char *symbol, Fn &out,
             std::string &error) {
  void *address = dlsym(handle, symbol);
  if (!address) {
    error = std::string("the CUDA driver ") + library + " has no " + symbol +
            "; the driver is too old for this runtime";
    return false;
  }
  out = reinterpret_cast<Fn>(address);
  return true;
}

} // namespace

bool openDriver(const char *library, Driver &driver, std::string &error) {
  void *handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    error = std::string("cannot load the CUDA driver (") + library +
            "): " + (why ? why : "unknown error") +
            "; an NVIDIA GPU driver must be installed to launch kernels";
    return false;
  }
  // The unversioned names of cuda.h's functions; those that cuda.h maps to
  // a _v2 symbol are looked up by that name.
  bool ok = resolve(handle, library, "cuInit", driver.init, error) &&
            resolve(handle, library, "cuGetErrorName", driver.getErrorName,
                    error) &&
            resolve(handle, library, "cuGetErrorString",
                    driver.getErrorString, error) &&
            resolve(handle, library, "cuCtxGetCurrent", driver.ctxGetCurrent,
                    error) &&
            resolve(handle, library, "cuCtxSetCurrent", driver.ctxSetCurrent,
                    error) &&
            resolve(handle, library, "cuCtxPushCurrent_v2",
                    driver.ctxPushCurrent, error) &&
            resolve(handle, library, "cuCtxPopCurrent_v2",
                    driver.ctxPopCurrent, error) &&
            resolve(handle, library, "cuCtxGetDevice", driver.ctxGetDevice,
                    error) &&
            resolve(handle, library, "cuDeviceGet", driver.deviceGet, error) &&
            resolve(handle, library, "cuDeviceGetAttribute",
                    driver.deviceGetAttribute, error) &&
            resolve(handle, library, "cuDevicePrimaryCtxRetain",
                    driver.devicePrimaryCtxRetain, error) &&
            resolve(handle, library, "cuModuleLoadDataEx",
                    driver.moduleLoadDataEx, error) &&
            resolve(handle, library, "cuModuleUnload", driver.moduleUnload,
                    error) &&
            resolve(handle, library, "cuModuleGetFunction",
                    driver.moduleGetFunction, error) &&
            resolve(handle, library, "cuFuncSetAttribute",
                    driver.funcSetAttribute, error) &&
            resolve(handle, library, "cuLaunchKernel", driver.launchKernel,
                    error);
  if (!ok) {
    dlclose(handle);
    return false;
  }
  driver.memAllocAsync = reinterpret_cast<decltype(driver.memAllocAsync)>(
      dlsym(handle, "cuMemAllocAsync"));
  driver.memFreeAsync = reinterpret_cast<decltype(driver.memFreeAsync)>(
      dlsym(handle, "cuMemFreeAsync"));
  driver.launchKernelEx = reinterpret_cast<decltype(driver.launchKernelEx)>(
      dlsym(handle, "cuLaunchKernelEx"));
  driver.tensorMapEncodeTiled =
      reinterpret_cast<decltype(driver.tensorMapEncodeTiled)>(
          dlsym(handle, "cuTensorMapEncodeTiled"));
  return true;
}

const Driver *getDriver(std::string &error) {
  static Driver driver;
  static bool opened = false;
  static std::string openError;
  static std::once_flag once;
  std::call_once(once, [] {
    if (!openDriver("libcuda.so.1", driver, openError))
      return;
    CUresult result = driver.init(0);
    if (result != CUDA_SUCCESS) {
      openError = describeCudaError(driver, "cuInit", result);
      return;
    }
    opened = true;
  });
  if (!opened) {
    error = openError;
    return nullptr;
  }
  return &driver;
}

bool currentContext(const Driver &driver, CUcontext &context,
                    std::string &error) {
  CUresult result = driver.ctxGetCurrent(&context);
  if (result != CUDA_SUCCESS) {
    error = describeCudaError(driver, "cuCtxGetCurrent", result);
    return false;
  }
  if (context)
    return true;
  CUdevice device;
  if ((result = driver.deviceGet(&device, 0)) != CUDA_SUCCESS) {
    error = describeCudaError(driver, "cuDeviceGet", result);
    return false;
  }
  if ((result = driver.devicePrimaryCtxRetain(&context, device)) !=
      CUDA_SUCCESS) {
    error = describeCudaError(driver, "cuDevicePrimaryCtxRetain", result);
    return false;
  }
  if ((result = driver.ctxSetCurrent(context)) != CUDA_SUCCESS) {
    error = describeCudaError(driver, "cuCtxSetCurrent", result);
    return false;
  }
  return true;
}

std::string describeCudaError(const Driver &driver, const char *call,
                              CUresult result) {
  const char *name = nullptr, *text = nullptr;
  if (driver.getErrorName(result, &name) != CUDA_SUCCESS || !name)
    name = "unknown CUresult";
  if (driver.getErrorString(result, &text) != CUDA_SUCCESS || !text)
    text = "no description";
  return std::string(call) + " failed: " + name + " (" +
         std::to_string(int(result)) + "): " + text;
}

} // namespace rbfc::runtime
