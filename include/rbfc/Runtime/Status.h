//===- Status.h - the calling thread's last error ---------------*- C++ -*-===//
//
// Both C APIs (runtime.h and rbfc.h) report a failure as a status code plus
// a message for the calling thread, which rbfc_last_error() returns. This
// is that message's one home, so librbfc, which holds both APIs, has one.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_RUNTIME_STATUS_H
#define RBFC_RUNTIME_STATUS_H

#include "rbfc/runtime.h"

#include <string>

namespace rbfc::runtime {

/// Makes `message` the calling thread's rbfc_last_error() and returns
/// `status`.
rbfc_status setLastError(rbfc_status status, std::string message);

} // namespace rbfc::runtime

#endif // RBFC_RUNTIME_STATUS_H
