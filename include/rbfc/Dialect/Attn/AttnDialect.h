//===- AttnDialect.h - the attn dialect -------------------------*- C++ -*-===//
#ifndef RBFC_DIALECT_ATTN_ATTNDIALECT_H
#define RBFC_DIALECT_ATTN_ATTNDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"

#include "rbfc/Dialect/Attn/AttnDialect.h.inc"
#include "rbfc/Dialect/Attn/AttnEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "rbfc/Dialect/Attn/AttnAttrs.h.inc"

#endif // RBFC_DIALECT_ATTN_ATTNDIALECT_H
