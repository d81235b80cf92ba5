//===- VectorExp2.cpp - exp2 of f32 vectors without libm ------------------===//
#include "rbfc/Conversion/Host/VectorExp2.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>

using namespace mlir;

Value rbfc::host::createExp2(OpBuilder &builder, Location loc, Value x) {
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
  Value clamped = clamp(clamp(x, arith::CmpFPredicate::OGT, -127),
                        arith::CmpFPredicate::OLT, 127);
  Value n = math::RoundEvenOp::create(builder, loc, clamped);
  Value f = arith::SubFOp::create(builder, loc, x, n);

  // 2^f = e^(f ln 2) = sum_k (ln 2)^k / k! f^k; at |f| <= 1/2 the first
  // term left out, (ln 2 / 2)^8 / 8!, is 5e-9 relative. Horner with FMAs.
  Value poly = f32(std::pow(M_LN2, 7) / 5040.0);
  double factorial = 720.0;
  for (int k = 6; k >= 0; --k) {
    poly = math::FmaOp::create(builder, loc, poly, f,
                               f32(std::pow(M_LN2, k) / factorial));
    factorial = k > 0 ? factorial / k : factorial;
  }

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
