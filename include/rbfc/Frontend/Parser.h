//===- Parser.h - recursive-descent parser for .attn specs ------*- C++ -*-===//
#ifndef RBFC_FRONTEND_PARSER_H
#define RBFC_FRONTEND_PARSER_H

#include "rbfc/Frontend/AST.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include <functional>
#include <optional>

namespace rbfc {

/// Receives a located diagnostic. `isNote` marks a note attached to the
/// error before it.
using DiagnosticCallback =
    std::function<void(SourceLoc loc, const llvm::Twine &message, bool isNote)>;

/// Parses one spec. Reports the first syntax error through `report` and
/// returns nothing then.
std::optional<ast::Spec> parseSpec(llvm::StringRef buffer,
                                   const DiagnosticCallback &report);

} // namespace rbfc

#endif // RBFC_FRONTEND_PARSER_H
