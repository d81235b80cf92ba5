//===- RegionInlining.cpp - inline attn element regions into a schedule ---===//
#include "rbfc/Conversion/RegionInlining.h"

#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Block.h"

using namespace mlir;

FailureOr<SmallVector<Value>>
rbfc::inlineAttnRegion(OpBuilder &builder, Region &region, ValueRange arguments,
                       AttnOpMaterializer materialize) {
  Block &block = region.front();
  assert(arguments.size() == block.getNumArguments() &&
         "one replacement per block argument");
  IRMapping mapping;
  for (auto [argument, replacement] :
       llvm::zip(block.getArguments(), arguments))
    if (replacement)
      mapping.map(argument, replacement);

  for (Operation &op : block.without_terminator()) {
    if (isa<attn::AttnDialect>(op.getDialect())) {
      FailureOr<Value> value = materialize(builder, &op, mapping);
      if (failed(value))
        return failure();
      // attn.grad_* ops have no result: the materializer did their work.
      if (op.getNumResults())
        mapping.map(op.getResult(0), *value);
      continue;
    }
    builder.clone(op, mapping);
  }
  SmallVector<Value> yielded;
  for (Value value : block.getTerminator()->getOperands())
    yielded.push_back(mapping.lookupOrDefault(value));
  return yielded;
}

unsigned rbfc::captureIndex(attn::AttentionOp op, Value tensor) {
  auto argument = cast<BlockArgument>(tensor);
  return argument.getArgNumber() + op.getCaptures().size() -
         argument.getOwner()->getNumArguments();
}

Value rbfc::clampToDimension(OpBuilder &builder, Location loc, Value index,
                             Value size) {
  Value zero = arith::ConstantIndexOp::create(builder, loc, 0);
  Value one = arith::ConstantIndexOp::create(builder, loc, 1);
  Value last = arith::SubIOp::create(builder, loc, size, one);
  return arith::MaxSIOp::create(
      builder, loc, zero, arith::MinSIOp::create(builder, loc, index, last));
}

Value rbfc::combineBound(OpBuilder &builder, Location loc, attn::Bound bound,
                         Value lhs, Value rhs) {
  bool isMax = bound == attn::Bound::max;
  if (isa<FloatType>(lhs.getType()))
    return isMax ? Value(arith::MaximumFOp::create(builder, loc, lhs, rhs))
                 : Value(arith::MinimumFOp::create(builder, loc, lhs, rhs));
  return isMax ? Value(arith::MaxSIOp::create(builder, loc, lhs, rhs))
               : Value(arith::MinSIOp::create(builder, loc, lhs, rhs));
}
