//===- AttnDialect.cpp - the attn dialect ---------------------------------===//
#include "rbfc/Dialect/Attn/AttnDialect.h"
#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace rbfc::attn;

#include "rbfc/Dialect/Attn/AttnDialect.cpp.inc"
#include "rbfc/Dialect/Attn/AttnEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "rbfc/Dialect/Attn/AttnAttrs.cpp.inc"

void AttnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "rbfc/Dialect/Attn/AttnOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "rbfc/Dialect/Attn/AttnAttrs.cpp.inc"
      >();
}

Operation *AttnDialect::materializeConstant(OpBuilder &builder, Attribute value,
                                            Type type, Location loc) {
  return arith::ConstantOp::materialize(builder, value, type, loc);
}

LogicalResult PlanAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               StringRef arch, StringRef kernel, int64_t tileM,
                               int64_t tileN, int64_t warps, int64_t stages,
                               StringRef keyTerms, int64_t blocksPerSM,
                               StringRef copy, bool overlap) {
  if (!arch.starts_with("sm_") && arch != "host")
    return emitError() << "plan arch must be 'host' or 'sm_NN', got '" << arch
                       << "'";
  if (!llvm::is_contained({"mma_sync", "wgmma", "wgmma_cooperative", "loops"},
                          kernel))
    return emitError() << "plan kernel must be one of mma_sync, wgmma, "
                          "wgmma_cooperative, loops, got '"
                       << kernel << "'";
  if (tileM <= 0 || tileM % 16 != 0 || tileN <= 0 || tileN % 16 != 0)
    return emitError() << "plan tile sizes must be positive multiples of 16, "
                          "got tile_m = "
                       << tileM << ", tile_n = " << tileN;
  // 12 warps, three warpgroups of 64 query rows (FlashAttention-3's tiles
  // at head_dim 64), are built by the wgmma kernels only; the others keep
  // powers of two.
  bool wgmma = kernel == "wgmma" || kernel == "wgmma_cooperative";
  if (warps == 12 && !wgmma)
    return emitError() << "plan warps 12 (three warpgroups) needs kernel "
                          "'wgmma' or 'wgmma_cooperative', got kernel '"
                       << kernel << "'";
  if (!llvm::is_contained({1, 2, 4, 8, 12, 16}, warps))
    return emitError() << "plan warps must be 1, 2, 4, 8 or 16 (or 12 for "
                          "the wgmma kernels), got "
                       << warps;
  if (stages < 1 || stages > 8)
    return emitError() << "plan stages must be between 1 and 8, got " << stages;
  if (blocksPerSM < 0 || blocksPerSM > 32)
    return emitError() << "plan blocks_per_sm must be between 0 (no hint) and "
                          "32, got "
                       << blocksPerSM;
  if (!llvm::is_contained({"threads", "bulk", "global", "product", "producer"},
                          keyTerms))
    return emitError() << "plan key_terms must be 'threads', 'bulk', "
                          "'global', 'product' or 'producer', got '"
                       << keyTerms << "'";
  if (copy != "cp_async" && copy != "tma")
    return emitError() << "plan copy must be 'cp_async' or 'tma', got '" << copy
                       << "'";
  if (overlap && kernel != "wgmma")
    return emitError() << "plan overlap needs kernel 'wgmma' (its consumer "
                          "warpgroups overlap the softmax with the products), "
                          "got kernel '"
                       << kernel << "'";
  if (keyTerms == "producer" && (kernel != "wgmma" || copy != "tma"))
    return emitError() << "plan key_terms 'producer' needs kernel 'wgmma' and "
                          "copy 'tma' (the producer warpgroup's warps that "
                          "issue no copy compute the terms), got kernel '"
                       << kernel << "' and copy '" << copy << "'";
  if (copy == "tma" && kernel != "wgmma")
    return emitError() << "plan copy 'tma' needs kernel 'wgmma' (its producer "
                          "warpgroup issues the copies), got kernel '"
                       << kernel << "'";
  return success();
}
