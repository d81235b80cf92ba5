//===- ApproximateTanh.h - kernels whose tanh stays libdevice's -*- C++ -*-===//
//
// attn-approximate-tanh evaluates a kernel's f32 tanh as tanh.approx.f32
// (relative error up to 2^-11). A kernel that differentiates the score
// keeps libdevice's: a param's gradient can difference values near the
// tanh (softcap's d(cap tanh(s/cap))/dcap = tanh(u) - u (1 - tanh(u)^2),
// about (2/3) u^3 for small u), where the approximation's error would be
// larger than the gradient.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_APPROXIMATETANH_H
#define RBFC_CONVERSION_NVGPU_APPROXIMATETANH_H

#include "llvm/ADT/StringRef.h"

namespace rbfc {

/// A unit attribute on a gpu.func whose math keeps full precision; the pass
/// removes it.
inline constexpr llvm::StringLiteral kExactFunctionsAttrName =
    "rbfc.exact_functions";

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_APPROXIMATETANH_H
