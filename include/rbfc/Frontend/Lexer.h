//===- Lexer.h - tokens of the .attn score language -------------*- C++ -*-===//
#ifndef RBFC_FRONTEND_LEXER_H
#define RBFC_FRONTEND_LEXER_H

#include "llvm/ADT/StringRef.h"
#include <string>

namespace rbfc {

/// A 1-based position in a spec file.
struct SourceLoc {
  unsigned line = 1;
  unsigned column = 1;
};

enum class TokenKind {
  EndOfFile,
  Error,
  Identifier,
  Integer,
  Float,
  LBrace,
  RBrace,
  LParen,
  RParen,
  LBracket,
  RBracket,
  Comma,
  Semicolon,
  Colon,
  Question,
  Assign,
  Plus,
  Minus,
  Star,
  Slash,
  SlashSlash,
  Percent,
  Less,
  LessEqual,
  Greater,
  GreaterEqual,
  EqualEqual,
  NotEqual,
  AndAnd,
  OrOr,
  Bang,
};

/// How a token kind reads in a diagnostic, e.g. "';'".
llvm::StringRef spellingOf(TokenKind kind);

struct Token {
  TokenKind kind = TokenKind::EndOfFile;
  llvm::StringRef text;
  SourceLoc loc;
};

/// Splits a spec into tokens. `#` starts a comment that runs to the end of
/// the line. An unknown character or a malformed number gives an Error token
/// whose text says what is wrong.
class Lexer {
public:
  explicit Lexer(llvm::StringRef buffer) : buffer(buffer) {}

  Token next();

private:
  char peek(size_t ahead = 0) const {
    return position + ahead < buffer.size() ? buffer[position + ahead] : '\0';
  }
  void advance();
  void skipSpaceAndComments();
  Token make(TokenKind kind, size_t start, SourceLoc loc) const;
  Token lexNumber(size_t start, SourceLoc loc);

  llvm::StringRef buffer;
  size_t position = 0;
  SourceLoc current;
  std::string errorText;
};

} // namespace rbfc

#endif // RBFC_FRONTEND_LEXER_H
