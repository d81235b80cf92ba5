//===- ScoreDependence.cpp - what a region value depends on ---------------===//
#include "rbfc/Dialect/Attn/ScoreDependence.h"
#include "rbfc/Dialect/Attn/AttnOps.h"

using namespace mlir;
using namespace rbfc::attn;

/// Dependence of a leading index argument of an attn.attention region.
static unsigned argumentDependence(BlockArgument arg) {
  Region *region = arg.getOwner()->getParent();
  auto op = dyn_cast_or_null<AttentionOp>(region->getParentOp());
  if (!op)
    return kDependsOnNothing;
  unsigned number = arg.getArgNumber();
  bool isTile = region == &op.getTileClass();
  unsigned numIndices =
      isTile ? AttentionOp::kNumTileArgs : AttentionOp::kNumIndexArgs;
  if (number >= numIndices)
    return kDependsOnNothing; // parameters and captures
  if (number == 0)
    return kDependsOnBatch;
  if (number == 1)
    return kDependsOnHead;
  unsigned perSide = isTile ? 2 : 1;
  return number < 2 + perSide ? kDependsOnQueryIndex : kDependsOnKeyIndex;
}

unsigned ScoreDependence::get(Value value) {
  auto it = cache.find(value);
  if (it != cache.end())
    return it->second;
  unsigned result = kDependsOnNothing;
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    result = argumentDependence(arg);
  } else {
    Operation *op = value.getDefiningOp();
    if (isa<DotOp, Dist2Op>(op))
      result = kDependsOnQueryVector | kDependsOnKeyVector;
    else if (isa<ScaledDotOp>(op))
      result = kDependsOnScaledDot;
    else if (isa<KeyBiasOp>(op))
      result = kDependsOnKeyBias;
    else if (auto norm = dyn_cast<Norm2Op>(op))
      result = norm.getVector() == Vector::q ? kDependsOnQueryVector
                                             : kDependsOnKeyVector;
    else
      for (Value operand : op->getOperands())
        result |= get(operand);
  }
  cache[value] = result;
  return result;
}
