//===- Status.cpp - the calling thread's last error ----------------------===//
#include "rbfc/Runtime/Status.h"

namespace {
thread_local std::string lastError;
} // namespace

rbfc_status rbfc::runtime::setLastError(rbfc_status status,
                                        std::string message) {
  lastError = std::move(message);
  return status;
}

extern "C" const char *rbfc_last_error(void) { return lastError.c_str(); }
