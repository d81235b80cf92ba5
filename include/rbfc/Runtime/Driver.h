//===- Driver.h - the CUDA driver, opened at run time ----------*- C++ -*-===//
//
// The runtime links no CUDA library: it opens libcuda.so.1 with dlopen the
// first time a module is loaded, so it builds and links on machines without
// a driver (CI) and says so clearly when it is used there. cuda.h supplies
// the types only.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_RUNTIME_DRIVER_H
#define RBFC_RUNTIME_DRIVER_H

#include <cuda.h>

#include <string>

namespace rbfc::runtime {

struct Driver {
  CUresult (*init)(unsigned int);
  CUresult (*getErrorName)(CUresult, const char **);
  CUresult (*getErrorString)(CUresult, const char **);
  CUresult (*ctxGetCurrent)(CUcontext *);
  CUresult (*ctxSetCurrent)(CUcontext);
  CUresult (*ctxPushCurrent)(CUcontext);
  CUresult (*ctxPopCurrent)(CUcontext *);
  CUresult (*ctxGetDevice)(CUdevice *);
  CUresult (*deviceGet)(CUdevice *, int);
  CUresult (*deviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
  CUresult (*devicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*moduleLoadDataEx)(CUmodule *, const void *, unsigned int,
                               CUjit_option *, void **);
  CUresult (*moduleUnload)(CUmodule);
  CUresult (*moduleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*funcSetAttribute)(CUfunction, CUfunction_attribute, int);
  CUresult (*launchKernel)(CUfunction, unsigned int, unsigned int,
                           unsigned int, unsigned int, unsigned int,
                           unsigned int, unsigned int, CUstream, void **,
                           void **);
  // Stream-ordered allocation (CUDA 11.2) is needed only by rbfc_launch for
  // a kernel with a workspace, so an older driver still runs everything
  // else: these are null when the driver lacks them.
  CUresult (*memAllocAsync)(CUdeviceptr *, size_t, CUstream);
  CUresult (*memFreeAsync)(CUdeviceptr, CUstream);
  // CUDA 12: launch attributes (programmatic dependent launch); without it
  // kernels launch in plain stream order.
  CUresult (*launchKernelEx)(const CUlaunchConfig *, CUfunction, void **,
                             void **);
  // CUDA 12: tensor maps, which the TMA kernels (sm_90) take; null before.
  CUresult (*tensorMapEncodeTiled)(CUtensorMap *, CUtensorMapDataType,
                                   cuuint32_t, void *, const cuuint64_t *,
                                   const cuuint64_t *, const cuuint32_t *,
                                   const cuuint32_t *, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion,
                                   CUtensorMapFloatOOBfill);
};

/// Opens `library` and resolves every entry point. On failure returns false
/// with a message that names the library or the missing symbol; the
/// optional entry points are left null when missing.
bool openDriver(const char *library, Driver &driver, std::string &error);

/// The process-wide driver (libcuda.so.1), opened and initialised (cuInit)
/// once; null with `error` set when that failed.
const Driver *getDriver(std::string &error);

/// The calling thread's current context; when none is current, the
/// primary context of device 0, as the CUDA runtime (and PyTorch) would
/// use, made current. On failure returns false with a message that names
/// the failed call.
bool currentContext(const Driver &driver, CUcontext &context,
                    std::string &error);

/// "cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE (1): invalid argument".
std::string describeCudaError(const Driver &driver, const char *call,
                              CUresult result);

} // namespace rbfc::runtime

#endif // RBFC_RUNTIME_DRIVER_H
