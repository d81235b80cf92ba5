//===- AttnOps.h - attn dialect operations ----------------------*- C++ -*-===//
#ifndef RBFC_DIALECT_ATTN_ATTNOPS_H
#define RBFC_DIALECT_ATTN_ATTNOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "rbfc/Dialect/Attn/AttnDialect.h"

namespace rbfc::attn {
class YieldOp;
} // namespace rbfc::attn

#define GET_OP_CLASSES
#include "rbfc/Dialect/Attn/AttnOps.h.inc"

#endif // RBFC_DIALECT_ATTN_ATTNOPS_H
