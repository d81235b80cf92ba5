//===- DiagonalIndex.cpp - indices that follow q_idx - kv_idx -------------===//
#include "rbfc/Dialect/Attn/DiagonalIndex.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace rbfc::attn;

std::optional<int> DiagonalIndex::Form::diagonalDirection() const {
  if (kind == Monotone)
    return direction;
  if (kind == Affine && queryCoefficient == -keyCoefficient)
    return queryCoefficient > 0 ? 1 : queryCoefficient < 0 ? -1 : 0;
  return std::nullopt;
}

DiagonalIndex::Form DiagonalIndex::combine(Form a, Form c, int sign) {
  if (a.kind == Form::Affine && c.kind == Form::Affine)
    return Form::affine(a.queryCoefficient + sign * c.queryCoefficient,
                        a.keyCoefficient + sign * c.keyCoefficient);
  std::optional<int> first = a.diagonalDirection();
  std::optional<int> second = c.diagonalDirection();
  if (!first || !second)
    return Form::unknown();
  int scaled = sign * *second;
  if (*first != 0 && scaled != 0 && *first != scaled)
    return Form::unknown();
  return Form::monotone(*first != 0 ? *first : scaled);
}

DiagonalIndex::Form DiagonalIndex::get(Value value) {
  auto it = cache.find(value);
  if (it != cache.end())
    return it->second;
  Form form = compute(value);
  cache[value] = form;
  return form;
}

DiagonalIndex::Form DiagonalIndex::compute(Value value) {
  if (dependence.isUniform(value))
    return Form::affine(0, 0);
  if (isa<BlockArgument>(value)) {
    unsigned bits = dependence.get(value);
    if (bits == kDependsOnQueryIndex)
      return Form::affine(1, 0);
    if (bits == kDependsOnKeyIndex)
      return Form::affine(0, 1);
    return Form::unknown();
  }
  Operation *op = value.getDefiningOp();
  auto constantOperand = [&](Value operand) -> std::optional<int64_t> {
    APInt constant;
    if (!matchPattern(operand, m_ConstantInt(&constant)))
      return std::nullopt;
    return constant.getSExtValue();
  };
  // A monotone function of one operand: its direction in the diagonal.
  auto monotoneOf = [&](Value operand, int sign) {
    std::optional<int> direction = get(operand).diagonalDirection();
    if (!direction)
      return Form::unknown();
    return *direction == 0 ? Form::affine(0, 0)
                           : Form::monotone(sign * *direction);
  };
  auto dividedByPositive = [&](Operation *division) {
    std::optional<int64_t> divisor = constantOperand(division->getOperand(1));
    if (!divisor || *divisor <= 0)
      return Form::unknown();
    return monotoneOf(division->getOperand(0), 1);
  };
  return TypeSwitch<Operation *, Form>(op)
      .Case([&](arith::AddIOp add) {
        return combine(get(add.getLhs()), get(add.getRhs()), 1);
      })
      .Case([&](arith::SubIOp sub) {
        return combine(get(sub.getLhs()), get(sub.getRhs()), -1);
      })
      .Case([&](arith::MulIOp mul) {
        std::optional<int64_t> factor = constantOperand(mul.getRhs());
        Value other = mul.getLhs();
        if (!factor) {
          factor = constantOperand(mul.getLhs());
          other = mul.getRhs();
        }
        if (!factor)
          return Form::unknown();
        Form form = get(other);
        if (form.kind == Form::Affine)
          return Form::affine(form.queryCoefficient * *factor,
                              form.keyCoefficient * *factor);
        if (*factor == 0)
          return Form::affine(0, 0);
        return monotoneOf(other, *factor > 0 ? 1 : -1);
      })
      .Case<arith::DivSIOp, arith::FloorDivSIOp, arith::CeilDivSIOp>(
          [&](Operation *division) { return dividedByPositive(division); })
      .Case<arith::MinSIOp, arith::MaxSIOp>([&](Operation *extremum) {
        return combine(monotoneOf(extremum->getOperand(0), 1),
                       monotoneOf(extremum->getOperand(1), 1), 1);
      })
      .Case<arith::IndexCastOp, arith::ExtSIOp>(
          [&](Operation *cast) { return get(cast->getOperand(0)); })
      .Default([](Operation *) { return Form::unknown(); });
}

std::optional<int> DiagonalIndex::direction(ValueRange indices) {
  // Each index is clamped to its dimension (monotone) and the row-major
  // element is their sum with positive strides: monotone when every index
  // that moves moves the same way.
  int result = 0;
  for (Value index : indices) {
    std::optional<int> direction = get(index).diagonalDirection();
    if (!direction)
      return std::nullopt;
    if (*direction == 0)
      continue;
    if (result != 0 && result != *direction)
      return std::nullopt;
    result = *direction;
  }
  return result;
}
