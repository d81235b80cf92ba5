//===- VectorExp2.h - exp2 of f32 vectors without libm ----------*- C++ -*-===//
//
// The host schedules take one exp2 per attention weight. math.exp2 on a
// vector becomes one libm call per element on x86 (LLVM has no vector exp2
// instruction there), so the schedules build it from arithmetic instead.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_HOST_VECTOREXP2_H
#define RBFC_CONVERSION_HOST_VECTOREXP2_H

#include "mlir/IR/Builders.h"

namespace rbfc::host {

/// What the caller knows of exp2's argument.
enum class Exp2Argument {
  Any,
  /// x <= 0, -inf or NaN: a softmax weight's s - max and its rescale. The
  /// upper clamp of n goes (one op a vector).
  NonPositive,
};

/// 2^x for an f32 or vector-of-f32 `x`, with straight-line arithmetic (no
/// call): 2^x = 2^n * 2^f with n = round(x), f = x - n in [-1/2, 1/2], 2^f
/// from a degree-6 polynomial (relative error below 8e-8 in f32) and 2^n
/// built in the exponent bits. x < -126 (including -inf) gives 0, x >= 128
/// and +inf give +inf (with Exp2Argument::Any), NaN gives NaN.
mlir::Value createExp2(mlir::OpBuilder &builder, mlir::Location loc,
                       mlir::Value x,
                       Exp2Argument argument = Exp2Argument::Any);

} // namespace rbfc::host

#endif // RBFC_CONVERSION_HOST_VECTOREXP2_H
