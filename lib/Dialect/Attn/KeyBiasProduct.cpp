//===- KeyBiasProduct.cpp - a key bias carried by S = Q K^T ---------------===//
#include "rbfc/Dialect/Attn/KeyBiasProduct.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Matchers.h"
#include "llvm/Support/Debug.h"

#include <cmath>

#define DEBUG_TYPE "attn-key-bias-product"

using namespace mlir;
using namespace rbfc::attn;

namespace {

/// A region value as coefficient x parameters x other factors.
struct Factors {
  double coefficient = 1.0;
  SmallVector<unsigned> params;
  SmallVector<Value> others;
};

/// The parameter position of `value` when it is a parameter argument of
/// `region`.
std::optional<unsigned> paramPosition(AttentionOp op, Region &region,
                                      Value value) {
  auto arg = dyn_cast<BlockArgument>(value);
  if (!arg || arg.getOwner()->getParent() != &region)
    return std::nullopt;
  unsigned leading = op.getNumLeadingArgs(region);
  if (arg.getArgNumber() < leading ||
      arg.getArgNumber() >= leading + op.getParams().size())
    return std::nullopt;
  return arg.getArgNumber() - leading;
}

void factorize(AttentionOp op, Region &region, Value value, Factors &factors) {
  if (auto product = value.getDefiningOp<arith::MulFOp>()) {
    factorize(op, region, product.getLhs(), factors);
    factorize(op, region, product.getRhs(), factors);
    return;
  }
  if (auto negation = value.getDefiningOp<arith::NegFOp>()) {
    factors.coefficient = -factors.coefficient;
    factorize(op, region, negation.getOperand(), factors);
    return;
  }
  FloatAttr constant;
  if (auto quotient = value.getDefiningOp<arith::DivFOp>();
      quotient && matchPattern(quotient.getRhs(), m_Constant(&constant))) {
    factors.coefficient /= constant.getValueAsDouble();
    factorize(op, region, quotient.getLhs(), factors);
    return;
  }
  if (matchPattern(value, m_Constant(&constant))) {
    factors.coefficient *= constant.getValueAsDouble();
    return;
  }
  if (std::optional<unsigned> param = paramPosition(op, region, value)) {
    factors.params.push_back(*param);
    return;
  }
  factors.others.push_back(value);
}

/// The factors of what `region` yields; an empty region yields 1.
Factors factorsOf(AttentionOp op, Region &region) {
  Factors factors;
  if (!region.empty())
    factorize(op, region, region.front().getTerminator()->getOperand(0),
              factors);
  return factors;
}

/// Whether `value` is computed from parameter `param` of `region`.
bool readsParam(AttentionOp op, Region &region, Value value, unsigned param) {
  auto isParam = [&](Value operand) {
    return paramPosition(op, region, operand) == param;
  };
  if (isParam(value))
    return true;
  Operation *def = value.getDefiningOp();
  if (!def)
    return false;
  SetVector<Operation *> slice;
  (void)getBackwardSlice(def, &slice);
  slice.insert(def);
  return llvm::any_of(slice, [&](Operation *computed) {
    return llvm::any_of(computed->getOperands(), isParam);
  });
}

/// Why the score does not read scaled_dot and key_bias as their sum alone,
/// or an empty string.
std::string scoreShapeProblem(AttentionOp op) {
  constexpr llvm::StringLiteral kNotTheSum =
      "the score reads the dot product or the key bias other than as "
      "scaled_dot + key_bias";
  SmallVector<Operation *> scaledDots, keyBiases;
  bool readsDot = false, readsKeyNorm = false;
  op.getScore().walk([&](Operation *element) {
    if (isa<ScaledDotOp>(element))
      scaledDots.push_back(element);
    else if (isa<KeyBiasOp>(element))
      keyBiases.push_back(element);
    else if (isa<DotOp, Dist2Op>(element))
      readsDot = true;
    else if (auto norm = dyn_cast<Norm2Op>(element))
      readsKeyNorm |= norm.getVector() == Vector::k;
  });
  if (keyBiases.size() != 1 || scaledDots.size() != 1 || readsDot)
    return kNotTheSum.str();
  if (readsKeyNorm)
    return "the score reads ||k||^2 itself";
  Value bias = keyBiases.front()->getResult(0);
  Value scaled = scaledDots.front()->getResult(0);
  if (!bias.hasOneUse() || !scaled.hasOneUse())
    return kNotTheSum.str();
  auto sum = dyn_cast<arith::AddFOp>(*bias.getUsers().begin());
  if (!sum || *scaled.getUsers().begin() != sum.getOperation())
    return kNotTheSum.str();
  bool maskReadsBias = false;
  op.getMask().walk([&](KeyBiasOp) { maskReadsBias = true; });
  if (maskReadsBias)
    return "the mask reads the key bias";
  return "";
}

} // namespace

std::optional<KeyBiasProduct> KeyBiasProduct::analyze(AttentionOp op,
                                                      std::string *whyNot) {
  auto fail = [&](std::string reason) -> std::optional<KeyBiasProduct> {
    LLVM_DEBUG(llvm::dbgs() << "key bias stays apart: " << reason << "\n");
    if (whyNot)
      *whyNot = std::move(reason);
    return std::nullopt;
  };
  if (op.getKeyBias().empty())
    return fail("the score has no key bias");
  if (std::string problem = scoreShapeProblem(op); !problem.empty())
    return fail(problem);
  Factors scale = factorsOf(op, op.getQScale());
  if (!scale.others.empty() || scale.coefficient == 0.0 ||
      !std::isfinite(scale.coefficient))
    return fail("q_scale is not a nonzero constant times parameters");
  Factors bias = factorsOf(op, op.getKeyBias());
  KeyBiasProduct result;
  for (unsigned param : scale.params) {
    if (llvm::is_contained(result.cancelledParams, param))
      continue;
    // key_bias / q_scale must not depend on the parameter: key_bias has it
    // as a factor exactly as often as q_scale, and reads it nowhere else.
    if (llvm::count(scale.params, param) != llvm::count(bias.params, param) ||
        llvm::any_of(bias.others, [&](Value other) {
          return readsParam(op, op.getKeyBias(), other, param);
        }))
      return fail("key_bias / q_scale depends on parameter '" +
                  cast<StringAttr>(op.getParamNames()[param]).getValue().str() +
                  "'");
    result.cancelledParams.push_back(param);
  }
  return result;
}
