//===- VectorExp2.cpp - exp2 of f32 vectors without libm ------------------===//
#include "rbfc/Conversion/Host/VectorExp2.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "llvm/ADT/STLExtras.h"

#include <cmath>
#include <iterator>

using namespace mlir;

/// 2^f on [-1/2, 1/2], lowest degree first: the Chebyshev interpolant at 7
/// nodes (mpmath.chebyfit, error 2e-9), its coefficients rounded to f32.
/// Evaluated by f32 FMAs it is within 8e-8 of 2^f (the degree-7 Taylor
/// polynomial it replaces: 7e-8, one FMA more).
static constexpr float kExp2Coefficients[] = {
    1.0f,           0.693147182f,   0.240226507f,   0.0555032715f,
    0.00961805694f, 0.00134004280f, 0.000154614449f};

Value rbfc::host::createExp2(OpBuilder &builder, Location loc, Value x,
                             Exp2Argument argument) {
  Type type = x.getType();
  auto vectorType = dyn_cast<VectorType>(type);
  Type intType = builder.getI32Type();
  if (vectorType)
    intType = vectorType.clone(intType);
  auto constant = [&](Type of, Attribute scalar) -> Value {
    if (auto shaped = dyn_cast<VectorType>(of))
      return arith::ConstantOp::create(
          builder, loc, DenseElementsAttr::get(shaped, scalar));
    return arith::ConstantOp::create(builder, loc, cast<TypedAttr>(scalar));
  };
  auto f32 = [&](double value) {
    return constant(type, builder.getF32FloatAttr(value));
  };
  auto i32 = [&](int32_t value) {
    return constant(intType, builder.getI32IntegerAttr(value));
  };

  // n is taken from x clamped so that it is always a small integer (fptosi
  // of NaN or inf would be poison); NaN and +-inf still reach the result
  // through f. The clamps are compare-and-selects that give the bound for
  // NaN, each one maxps/minps on x86 (arith.maxnumf adds a NaN test and a
  // blend there).
  auto clamp = [&](Value value, arith::CmpFPredicate inside, double bound) {
    Value limit = f32(bound);
    Value keep = arith::CmpFOp::create(builder, loc, inside, value, limit);
    return arith::SelectOp::create(builder, loc, keep, value, limit);
  };
  Value clamped = clamp(x, arith::CmpFPredicate::OGT, -127);
  if (argument == Exp2Argument::Any)
    clamped = clamp(clamped, arith::CmpFPredicate::OLT, 127);
  Value n = math::RoundEvenOp::create(builder, loc, clamped);
  Value f = arith::SubFOp::create(builder, loc, x, n);

  // Horner with FMAs.
  Value poly = f32(std::end(kExp2Coefficients)[-1]);
  for (float coefficient :
       llvm::reverse(llvm::ArrayRef(kExp2Coefficients).drop_back()))
    poly = math::FmaOp::create(builder, loc, poly, f, f32(coefficient));

  // 2^n as an f32: n + 127 in the exponent field. n >= -126 wherever the
  // result is not flushed to zero below, so the field is never 0 there.
  Value exponent = arith::ShLIOp::create(
      builder, loc,
      arith::AddIOp::create(
          builder, loc, arith::FPToSIOp::create(builder, loc, intType, n),
          i32(127)),
      i32(23));
  Value scale = arith::BitcastOp::create(builder, loc, type, exponent);
  Value result = arith::MulFOp::create(builder, loc, poly, scale);
  // Below 2^-126 the weights are negligible next to the row's largest (which
  // is 1 under softmax); flushing also makes exp2(-inf) exactly 0.
  Value underflows = arith::CmpFOp::create(
      builder, loc, arith::CmpFPredicate::OLT, x, f32(-126));
  return arith::SelectOp::create(builder, loc, underflows, f32(0), result);
}
