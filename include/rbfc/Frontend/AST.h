//===- AST.h - the syntax tree of an .attn spec -----------------*- C++ -*-===//
#ifndef RBFC_FRONTEND_AST_H
#define RBFC_FRONTEND_AST_H

#include "rbfc/Frontend/Lexer.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rbfc::ast {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

/// One node of an expression. `kind` says which fields are meaningful.
struct Expr {
  enum class Kind {
    Number,      // `value`, `isInteger`
    Boolean,     // `boolean`
    Name,        // `name`
    Call,        // `name`(operands...)
    Subscript,   // `name`[operands...]
    Unary,       // `op` operands[0]
    Binary,      // operands[0] `op` operands[1]
    Conditional, // operands[0] ? operands[1] : operands[2]
  };

  Kind kind;
  SourceLoc loc;
  double value = 0;
  bool isInteger = false;
  bool boolean = false;
  std::string name;
  TokenKind op = TokenKind::Error;
  std::vector<ExprPtr> operands;

  Expr(Kind kind, SourceLoc loc) : kind(kind), loc(loc) {}
};

enum class ScalarKind { Float, Int };
enum class CaptureElement { F32, I32, I64 };

struct ParamDecl {
  std::string name;
  SourceLoc loc;
  ScalarKind type = ScalarKind::Float;
  ExprPtr defaultValue; // null when the caller must pass it
};

struct CaptureDecl {
  std::string name;
  SourceLoc loc;
  CaptureElement element = CaptureElement::F32;
  std::vector<int64_t> dims; // -1 for a size known at run time
};

struct LetDecl {
  std::string name;
  SourceLoc loc;
  ExprPtr value;
};

enum class Normalization { Softmax, None };

/// One `attention NAME { ... }` block.
struct Spec {
  std::string name;
  SourceLoc loc;
  std::vector<ParamDecl> params;
  std::vector<CaptureDecl> captures;
  std::vector<LetDecl> lets;
  ExprPtr score;
  SourceLoc scoreLoc;
  ExprPtr mask;
  SourceLoc maskLoc;
  Normalization normalization = Normalization::Softmax;
  std::optional<SourceLoc> normalizationLoc;
};

} // namespace rbfc::ast

#endif // RBFC_FRONTEND_AST_H
