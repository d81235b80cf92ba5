//===- RegionInlining.cpp - inline attn element regions into a schedule ---===//
#include "rbfc/Conversion/RegionInlining.h"

#include "rbfc/Dialect/Attn/AttnOps.h"

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

unsigned rbfc::getCaptureIndex(Value tensor, unsigned numLeadingArgs,
                               unsigned numParams) {
  auto argument = cast<BlockArgument>(tensor);
  return argument.getArgNumber() - numLeadingArgs - numParams;
}
