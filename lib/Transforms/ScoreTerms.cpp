//===- ScoreTerms.cpp - scores as sums of products ------------------------===//
#include "rbfc/Transforms/ScoreTerms.h"
#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

using namespace mlir;
using namespace rbfc;

/// Past this many terms a product of sums stays one factor: expanding it
/// would only grow the kernel.
static constexpr size_t kMaxExpandedTerms = 32;

static SmallVector<Term> scaled(SmallVector<Term> terms, double factor) {
  for (Term &term : terms)
    term.coefficient *= factor;
  return terms;
}

static SmallVector<Term> opaque(Value value) {
  Term term;
  term.factors.push_back({value, false});
  return {term};
}

/// Decomposes with a memo: lets make the score a DAG, and a value reached
/// twice must not be expanded twice (2^n work for n nested `a + a`).
static SmallVector<Term> decompose(Value value,
                                   DenseMap<Value, SmallVector<Term>> &memo);

SmallVector<Term> rbfc::decomposeSum(Value value) {
  DenseMap<Value, SmallVector<Term>> memo;
  return decompose(value, memo);
}

static SmallVector<Term> decomposeUncached(
    Value value, DenseMap<Value, SmallVector<Term>> &memo) {
  auto decomposeSum = [&](Value operand) { return decompose(operand, memo); };
  FloatAttr constant;
  if (matchPattern(value, m_Constant(&constant)))
    return {Term{constant.getValueAsDouble(), {}}};
  Operation *op = value.getDefiningOp();
  if (!op)
    return opaque(value);
  if (auto add = dyn_cast<arith::AddFOp>(op)) {
    SmallVector<Term> terms = decomposeSum(add.getLhs());
    llvm::append_range(terms, decomposeSum(add.getRhs()));
    return terms.size() > kMaxExpandedTerms ? opaque(value) : terms;
  }
  if (auto sub = dyn_cast<arith::SubFOp>(op)) {
    SmallVector<Term> terms = decomposeSum(sub.getLhs());
    llvm::append_range(terms, scaled(decomposeSum(sub.getRhs()), -1.0));
    return terms.size() > kMaxExpandedTerms ? opaque(value) : terms;
  }
  if (auto neg = dyn_cast<arith::NegFOp>(op))
    return scaled(decomposeSum(neg.getOperand()), -1.0);
  if (auto mul = dyn_cast<arith::MulFOp>(op)) {
    SmallVector<Term> lhs = decomposeSum(mul.getLhs());
    SmallVector<Term> rhs = decomposeSum(mul.getRhs());
    if (lhs.size() * rhs.size() > kMaxExpandedTerms)
      return opaque(value);
    SmallVector<Term> terms;
    for (const Term &left : lhs)
      for (const Term &right : rhs) {
        Term product = left;
        product.coefficient *= right.coefficient;
        llvm::append_range(product.factors, right.factors);
        terms.push_back(product);
      }
    return terms;
  }
  if (auto div = dyn_cast<arith::DivFOp>(op)) {
    SmallVector<Term> terms = decomposeSum(div.getLhs());
    FloatAttr divisor;
    if (matchPattern(div.getRhs(), m_Constant(&divisor)) &&
        divisor.getValueAsDouble() != 0.0)
      return scaled(terms, 1.0 / divisor.getValueAsDouble());
    for (Term &term : terms)
      term.factors.push_back({div.getRhs(), true});
    return terms;
  }
  return opaque(value);
}

static SmallVector<Term> decompose(Value value,
                                   DenseMap<Value, SmallVector<Term>> &memo) {
  auto it = memo.find(value);
  if (it != memo.end())
    return it->second;
  SmallVector<Term> terms = decomposeUncached(value, memo);
  memo[value] = terms;
  return terms;
}

unsigned rbfc::dependenceOf(attn::ScoreDependence &dependence,
                            const Term &term) {
  unsigned result = attn::kDependsOnNothing;
  for (const Factor &factor : term.factors)
    result |= dependence.get(factor.value);
  return result;
}

bool rbfc::isBareFactor(const Term &term, Value factor) {
  return term.coefficient == 1.0 && term.factors.size() == 1 &&
         term.factors[0].value == factor && !term.factors[0].reciprocal;
}

static Value constantF32(OpBuilder &builder, Location loc, double value) {
  return arith::ConstantOp::create(
      builder, loc, builder.getF32FloatAttr(static_cast<float>(value)));
}

Value rbfc::buildSum(OpBuilder &builder, Location loc, ArrayRef<Term> terms,
                     IRMapping &mapping) {
  Value sum;
  for (const Term &term : terms) {
    if (term.coefficient == 0.0)
      continue;
    // A negative coefficient becomes a subtraction from the running sum, or
    // a negation of the first term.
    bool negate = term.coefficient < 0;
    double magnitude = negate ? -term.coefficient : term.coefficient;
    Value product;
    if (magnitude != 1.0 || term.factors.empty())
      product = constantF32(builder, loc, magnitude);
    for (const Factor &factor : term.factors) {
      Value value = mapping.lookupOrDefault(factor.value);
      if (factor.reciprocal) {
        Value numerator = product ? product : constantF32(builder, loc, 1.0);
        product = arith::DivFOp::create(builder, loc, numerator, value);
      } else {
        product = product ? arith::MulFOp::create(builder, loc, product, value)
                                .getResult()
                          : value;
      }
    }
    if (!sum)
      sum = negate ? arith::NegFOp::create(builder, loc, product).getResult()
                   : product;
    else if (negate)
      sum = arith::SubFOp::create(builder, loc, sum, product);
    else
      sum = arith::AddFOp::create(builder, loc, sum, product);
  }
  return sum ? sum : constantF32(builder, loc, 0.0);
}

Value rbfc::cloneExpression(Value value, OpBuilder &builder, Block &target,
                            IRMapping &mapping) {
  if (Value mapped = mapping.lookupOrNull(value))
    return mapped;
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    Value result = target.getArgument(arg.getArgNumber());
    mapping.map(value, result);
    return result;
  }
  Operation *op = value.getDefiningOp();
  for (Value operand : op->getOperands())
    cloneExpression(operand, builder, target, mapping);
  Operation *clone = builder.clone(*op, mapping);
  return clone->getResult(cast<OpResult>(value).getResultNumber());
}

void rbfc::eraseDeadOps(Block &block) {
  for (Operation &op : llvm::make_early_inc_range(llvm::reverse(block)))
    if (isOpTriviallyDead(&op))
      op.erase();
}

void rbfc::addTermsToRegion(attn::AttentionOp op, Region &region,
                            ArrayRef<Term> terms) {
  bool created = region.empty();
  Block &block = created ? op.createRegionBlock(region) : region.front();
  OpBuilder builder = created ? OpBuilder::atBlockEnd(&block)
                              : OpBuilder(block.getTerminator());
  IRMapping mapping;
  for (const Term &term : terms)
    for (const Factor &factor : term.factors)
      cloneExpression(factor.value, builder, block, mapping);
  Value sum = buildSum(builder, op.getLoc(), terms, mapping);
  if (created) {
    attn::YieldOp::create(builder, op.getLoc(), sum);
    return;
  }
  Operation *yield = block.getTerminator();
  Value total =
      arith::AddFOp::create(builder, op.getLoc(), yield->getOperand(0), sum);
  yield->setOperand(0, total);
}

void rbfc::replaceRegionYield(Region &region, ArrayRef<Term> terms) {
  Block &block = region.front();
  Operation *yield = block.getTerminator();
  OpBuilder builder(yield);
  IRMapping identity;
  yield->setOperand(0, buildSum(builder, yield->getLoc(), terms, identity));
  eraseDeadOps(block);
}
