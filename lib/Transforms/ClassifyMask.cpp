//===- ClassifyMask.cpp - the mask over whole tiles -----------------------===//
//
// The mask is re-evaluated over intervals: q_idx ranges over [q_lo, q_hi],
// kv_idx over [kv_lo, kv_hi], and every integer value gets a lower and an
// upper bound, every boolean the two facts "true everywhere" and "false
// everywhere". A causal mask `kv_idx <= q_idx` becomes
// (kv_hi <= q_lo, kv_lo > q_hi); a document mask compares per-tile bounds of
// the captured ids. What the rules cannot bound leaves both facts false: the
// tile is then partial, which is always safe.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/IR/Matchers.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-classify-mask"

namespace rbfc {
#define GEN_PASS_DEF_ATTNCLASSIFYMASK
#include "rbfc/Transforms/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

/// Bounds of an integer (lo, hi) or the facts of a boolean (always, never).
struct Bounds {
  Value first;
  Value second;
};

class MaskClassifier {
public:
  MaskClassifier(attn::AttentionOp op, Block &tile)
      : op(op), tile(tile), builder(OpBuilder::atBlockEnd(&tile)),
        loc(op.getLoc()) {}

  /// Emits the classification of the mask region into the tile block.
  void run();

private:
  std::optional<Bounds> boundsOf(Value value) {
    auto it = bounds.find(value);
    if (it == bounds.end())
      return std::nullopt;
    return it->second;
  }
  Value boolConstant(bool value) {
    return arith::ConstantOp::create(builder, loc, builder.getBoolAttr(value));
  }
  Value andI(Value a, Value b) { return arith::AndIOp::create(builder, loc, a, b); }
  Value orI(Value a, Value b) { return arith::OrIOp::create(builder, loc, a, b); }
  Value cmp(arith::CmpIPredicate predicate, Value a, Value b) {
    return arith::CmpIOp::create(builder, loc, predicate, a, b);
  }
  Value minI(Value a, Value b) { return arith::MinSIOp::create(builder, loc, a, b); }
  Value maxI(Value a, Value b) { return arith::MaxSIOp::create(builder, loc, a, b); }
  Value select(Value c, Value a, Value b) {
    return arith::SelectOp::create(builder, loc, c, a, b);
  }

  void seedArguments(Block &mask);
  std::optional<Bounds> classify(Operation &op);
  std::optional<Bounds> compare(arith::CmpIOp cmpOp);
  std::optional<Bounds> selectBounds(arith::SelectOp selectOp);

  attn::AttentionOp op;
  Block &tile;
  OpBuilder builder;
  Location loc;
  llvm::DenseMap<Value, Bounds> bounds;
};

void MaskClassifier::seedArguments(Block &mask) {
  // (b, h) are exact, q_idx and kv_idx span the tile, parameters and
  // captures are the same everywhere.
  bounds[mask.getArgument(0)] = {tile.getArgument(0), tile.getArgument(0)};
  bounds[mask.getArgument(1)] = {tile.getArgument(1), tile.getArgument(1)};
  bounds[mask.getArgument(2)] = {tile.getArgument(2), tile.getArgument(3)};
  bounds[mask.getArgument(3)] = {tile.getArgument(4), tile.getArgument(5)};
  for (unsigned i = attn::AttentionOp::kNumIndexArgs; i < mask.getNumArguments();
       ++i) {
    Value outer = tile.getArgument(i - attn::AttentionOp::kNumIndexArgs +
                                   attn::AttentionOp::kNumTileArgs);
    bounds[mask.getArgument(i)] = {outer, outer};
  }
}

std::optional<Bounds> MaskClassifier::compare(arith::CmpIOp cmpOp) {
  std::optional<Bounds> lhs = boundsOf(cmpOp.getLhs());
  std::optional<Bounds> rhs = boundsOf(cmpOp.getRhs());
  if (!lhs || !rhs)
    return std::nullopt;
  if (cmpOp.getLhs().getType().isInteger(1))
    return std::nullopt; // comparisons of booleans: no interval meaning
  using P = arith::CmpIPredicate;
  auto [aLo, aHi] = *lhs;
  auto [bLo, bHi] = *rhs;
  switch (cmpOp.getPredicate()) {
  case P::slt: return Bounds{cmp(P::slt, aHi, bLo), cmp(P::sge, aLo, bHi)};
  case P::sle: return Bounds{cmp(P::sle, aHi, bLo), cmp(P::sgt, aLo, bHi)};
  case P::sgt: return Bounds{cmp(P::sgt, aLo, bHi), cmp(P::sle, aHi, bLo)};
  case P::sge: return Bounds{cmp(P::sge, aLo, bHi), cmp(P::slt, aHi, bLo)};
  case P::eq:
  case P::ne: {
    Value allEqual = andI(andI(cmp(P::eq, aLo, aHi), cmp(P::eq, bLo, bHi)),
                          cmp(P::eq, aLo, bLo));
    Value disjoint = orI(cmp(P::slt, aHi, bLo), cmp(P::slt, bHi, aLo));
    if (cmpOp.getPredicate() == P::eq)
      return Bounds{allEqual, disjoint};
    return Bounds{disjoint, allEqual};
  }
  default:
    return std::nullopt;
  }
}

std::optional<Bounds> MaskClassifier::selectBounds(arith::SelectOp selectOp) {
  std::optional<Bounds> c = boundsOf(selectOp.getCondition());
  std::optional<Bounds> x = boundsOf(selectOp.getTrueValue());
  std::optional<Bounds> y = boundsOf(selectOp.getFalseValue());
  if (!c || !x || !y)
    return std::nullopt;
  if (selectOp.getType().isInteger(1)) {
    // A fact holds everywhere if the chosen arm has it wherever it is chosen.
    auto fact = [&](Value xFact, Value yFact) {
      return orI(orI(andI(c->first, xFact), andI(c->second, yFact)),
                 andI(xFact, yFact));
    };
    return Bounds{fact(x->first, y->first), fact(x->second, y->second)};
  }
  if (!selectOp.getType().isIntOrIndex())
    return std::nullopt;
  auto pick = [&](Value xBound, Value yBound, Value hull) {
    return select(c->first, xBound, select(c->second, yBound, hull));
  };
  return Bounds{pick(x->first, y->first, minI(x->first, y->first)),
                pick(x->second, y->second, maxI(x->second, y->second))};
}

std::optional<Bounds> MaskClassifier::classify(Operation &maskOp) {
  auto operandBounds = [&](unsigned i) { return boundsOf(maskOp.getOperand(i)); };
  return TypeSwitch<Operation *, std::optional<Bounds>>(&maskOp)
      .Case<arith::ConstantOp, attn::SizeOp>(
          [&](Operation *constant) -> std::optional<Bounds> {
            Value copy = builder.clone(*constant)->getResult(0);
            BoolAttr flag;
            if (matchPattern(copy, m_Constant(&flag)))
              return Bounds{boolConstant(flag.getValue()),
                            boolConstant(!flag.getValue())};
            return Bounds{copy, copy};
          })
      .Case<arith::AddIOp, arith::SubIOp>(
          [&](Operation *arith) -> std::optional<Bounds> {
            auto a = operandBounds(0), b = operandBounds(1);
            if (!a || !b)
              return std::nullopt;
            if (isa<arith::AddIOp>(arith))
              return Bounds{arith::AddIOp::create(builder, loc, a->first, b->first),
                            arith::AddIOp::create(builder, loc, a->second, b->second)};
            return Bounds{arith::SubIOp::create(builder, loc, a->first, b->second),
                          arith::SubIOp::create(builder, loc, a->second, b->first)};
          })
      .Case<arith::MulIOp>([&](arith::MulIOp) -> std::optional<Bounds> {
        auto a = operandBounds(0), b = operandBounds(1);
        if (!a || !b)
          return std::nullopt;
        SmallVector<Value> products;
        for (Value x : {a->first, a->second})
          for (Value y : {b->first, b->second})
            products.push_back(arith::MulIOp::create(builder, loc, x, y));
        return Bounds{minI(minI(products[0], products[1]),
                           minI(products[2], products[3])),
                      maxI(maxI(products[0], products[1]),
                           maxI(products[2], products[3]))};
      })
      .Case<arith::MinSIOp, arith::MaxSIOp>(
          [&](Operation *extremum) -> std::optional<Bounds> {
            auto a = operandBounds(0), b = operandBounds(1);
            if (!a || !b)
              return std::nullopt;
            if (isa<arith::MinSIOp>(extremum))
              return Bounds{minI(a->first, b->first), minI(a->second, b->second)};
            return Bounds{maxI(a->first, b->first), maxI(a->second, b->second)};
          })
      .Case<arith::FloorDivSIOp>(
          [&](arith::FloorDivSIOp div) -> std::optional<Bounds> {
            // Monotone in the dividend for a positive constant divisor.
            IntegerAttr divisor;
            auto a = operandBounds(0);
            if (!a || !matchPattern(div.getRhs(), m_Constant(&divisor)) ||
                divisor.getValue().isNonPositive())
              return std::nullopt;
            Value d = builder.clone(*div.getRhs().getDefiningOp())->getResult(0);
            return Bounds{arith::FloorDivSIOp::create(builder, loc, a->first, d),
                          arith::FloorDivSIOp::create(builder, loc, a->second, d)};
          })
      .Case<arith::IndexCastOp>(
          [&](arith::IndexCastOp cast) -> std::optional<Bounds> {
            auto a = operandBounds(0);
            if (!a)
              return std::nullopt;
            Type type = cast.getType();
            return Bounds{arith::IndexCastOp::create(builder, loc, type, a->first),
                          arith::IndexCastOp::create(builder, loc, type, a->second)};
          })
      .Case<math::AbsIOp>([&](math::AbsIOp) -> std::optional<Bounds> {
        auto a = operandBounds(0);
        if (!a)
          return std::nullopt;
        Value zero = arith::ConstantOp::create(
            builder, loc, builder.getZeroAttr(maskOp.getResult(0).getType()));
        Value negLo = arith::SubIOp::create(builder, loc, zero, a->first);
        Value negHi = arith::SubIOp::create(builder, loc, zero, a->second);
        Value lo = select(cmp(arith::CmpIPredicate::sge, a->first, zero),
                          a->first,
                          select(cmp(arith::CmpIPredicate::sle, a->second, zero),
                                 negHi, zero));
        return Bounds{lo, maxI(negLo, a->second)};
      })
      .Case<arith::CmpIOp>([&](arith::CmpIOp cmpOp) { return compare(cmpOp); })
      .Case<arith::AndIOp, arith::OrIOp>(
          [&](Operation *logic) -> std::optional<Bounds> {
            if (!maskOp.getResult(0).getType().isInteger(1))
              return std::nullopt;
            auto a = operandBounds(0), b = operandBounds(1);
            if (!a || !b)
              return std::nullopt;
            if (isa<arith::AndIOp>(logic))
              return Bounds{andI(a->first, b->first), orI(a->second, b->second)};
            return Bounds{orI(a->first, b->first), andI(a->second, b->second)};
          })
      .Case<arith::XOrIOp>([&](arith::XOrIOp xorOp) -> std::optional<Bounds> {
        // Only negation (xor with true) keeps its meaning over a tile.
        auto a = operandBounds(0);
        if (!a || !xorOp.getType().isInteger(1) ||
            !matchPattern(xorOp.getRhs(), m_One()))
          return std::nullopt;
        return Bounds{a->second, a->first};
      })
      .Case<arith::SelectOp>(
          [&](arith::SelectOp selectOp) { return selectBounds(selectOp); })
      .Case<attn::LoadOp>([&](attn::LoadOp load) -> std::optional<Bounds> {
        SmallVector<Value> lows, highs;
        for (unsigned i = 0; i < load.getIndices().size(); ++i) {
          auto index = operandBounds(i + 1);
          if (!index)
            return std::nullopt;
          lows.push_back(index->first);
          highs.push_back(index->second);
        }
        Value capture = boundsOf(load.getCapture())->first;
        return Bounds{attn::LoadBoundOp::create(builder, loc, attn::Bound::min,
                                                capture, lows, highs),
                      attn::LoadBoundOp::create(builder, loc, attn::Bound::max,
                                                capture, lows, highs)};
      })
      .Default([](Operation *) { return std::nullopt; });
}

void MaskClassifier::run() {
  Block &mask = op.getMask().front();
  seedArguments(mask);
  for (Operation &maskOp : mask.without_terminator()) {
    std::optional<Bounds> result = classify(maskOp);
    LLVM_DEBUG(llvm::dbgs() << (result ? "bounded: " : "unbounded: ")
                            << maskOp.getName() << "\n");
    if (result)
      bounds[maskOp.getResult(0)] = *result;
  }
  std::optional<Bounds> facts =
      boundsOf(attn::AttentionOp::getYielded(op.getMask())[0]);
  if (!facts)
    facts = Bounds{boolConstant(false), boolConstant(false)};
  attn::YieldOp::create(builder, loc, ValueRange{facts->first, facts->second});
}

struct AttnClassifyMaskPass
    : rbfc::impl::AttnClassifyMaskBase<AttnClassifyMaskPass> {
  void runOnOperation() override {
    getOperation()->walk([](attn::AttentionOp op) {
      if (op.getMask().empty() || !op.getTileClass().empty())
        return;
      Block &tile = op.createRegionBlock(op.getTileClass());
      MaskClassifier(op, tile).run();
    });
  }
};

} // namespace
