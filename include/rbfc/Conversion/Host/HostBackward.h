//===- HostBackward.h - the host backend's backward schedule ----*- C++ -*-===//
#ifndef RBFC_CONVERSION_HOST_HOSTBACKWARD_H
#define RBFC_CONVERSION_HOST_HOSTBACKWARD_H

#include "rbfc/Conversion/Host/HostEmitter.h"
#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/IR/Builders.h"

namespace rbfc::host {

/// Adds, at the builder's insertion point, the backward functions of the
/// derived op `attention` whose forward function is `name`: NAME_bwd_rows,
/// NAME_bwd_dkdv and NAME_bwd_dq (docs/host-backend.md, "Backward"),
/// blocked as the forward.
mlir::LogicalResult buildHostBackward(rbfc::attn::AttentionOp attention,
                                      mlir::OpBuilder &moduleBuilder,
                                      llvm::StringRef name,
                                      const HostBlocking &blocking);

} // namespace rbfc::host

#endif // RBFC_CONVERSION_HOST_HOSTBACKWARD_H
