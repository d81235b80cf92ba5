//===- Lexer.cpp - tokens of the .attn score language ---------------------===//
#include "rbfc/Frontend/Lexer.h"

#include "llvm/ADT/StringExtras.h"

using namespace rbfc;

llvm::StringRef rbfc::spellingOf(TokenKind kind) {
  switch (kind) {
  case TokenKind::EndOfFile: return "end of file";
  case TokenKind::Error: return "invalid token";
  case TokenKind::Identifier: return "identifier";
  case TokenKind::Integer: return "integer";
  case TokenKind::Float: return "number";
  case TokenKind::LBrace: return "'{'";
  case TokenKind::RBrace: return "'}'";
  case TokenKind::LParen: return "'('";
  case TokenKind::RParen: return "')'";
  case TokenKind::LBracket: return "'['";
  case TokenKind::RBracket: return "']'";
  case TokenKind::Comma: return "','";
  case TokenKind::Semicolon: return "';'";
  case TokenKind::Colon: return "':'";
  case TokenKind::Question: return "'?'";
  case TokenKind::Assign: return "'='";
  case TokenKind::Plus: return "'+'";
  case TokenKind::Minus: return "'-'";
  case TokenKind::Star: return "'*'";
  case TokenKind::Slash: return "'/'";
  case TokenKind::SlashSlash: return "'//'";
  case TokenKind::Percent: return "'%'";
  case TokenKind::Less: return "'<'";
  case TokenKind::LessEqual: return "'<='";
  case TokenKind::Greater: return "'>'";
  case TokenKind::GreaterEqual: return "'>='";
  case TokenKind::EqualEqual: return "'=='";
  case TokenKind::NotEqual: return "'!='";
  case TokenKind::AndAnd: return "'&&'";
  case TokenKind::OrOr: return "'||'";
  case TokenKind::Bang: return "'!'";
  }
  return "token";
}

void Lexer::advance() {
  if (position >= buffer.size())
    return;
  if (buffer[position] == '\n') {
    ++current.line;
    current.column = 1;
  } else {
    ++current.column;
  }
  ++position;
}

void Lexer::skipSpaceAndComments() {
  while (position < buffer.size()) {
    char c = peek();
    if (c == '#') {
      while (position < buffer.size() && peek() != '\n')
        advance();
    } else if (llvm::isSpace(c)) {
      advance();
    } else {
      return;
    }
  }
}

Token Lexer::make(TokenKind kind, size_t start, SourceLoc loc) const {
  return Token{kind, buffer.slice(start, position), loc};
}

Token Lexer::lexNumber(size_t start, SourceLoc loc) {
  bool isFloat = false;
  while (llvm::isDigit(peek()))
    advance();
  if (peek() == '.' && llvm::isDigit(peek(1))) {
    isFloat = true;
    advance();
    while (llvm::isDigit(peek()))
      advance();
  } else if (peek() == '.') {
    // "1." reads as 1.0, as in C and Python.
    isFloat = true;
    advance();
  }
  if (peek() == 'e' || peek() == 'E') {
    size_t sign = (peek(1) == '+' || peek(1) == '-') ? 1 : 0;
    if (!llvm::isDigit(peek(1 + sign))) {
      advance();
      errorText = "malformed number: expected digits after the exponent 'e'";
      return Token{TokenKind::Error, errorText, loc};
    }
    isFloat = true;
    advance();
    if (sign)
      advance();
    while (llvm::isDigit(peek()))
      advance();
  }
  if (llvm::isAlpha(peek()) || peek() == '_') {
    errorText = "malformed number: a letter follows the digits";
    return Token{TokenKind::Error, errorText, loc};
  }
  return make(isFloat ? TokenKind::Float : TokenKind::Integer, start, loc);
}

Token Lexer::next() {
  skipSpaceAndComments();
  SourceLoc loc = current;
  size_t start = position;
  if (position >= buffer.size())
    return Token{TokenKind::EndOfFile, "", loc};

  char c = peek();
  if (llvm::isAlpha(c) || c == '_') {
    while (llvm::isAlnum(peek()) || peek() == '_')
      advance();
    return make(TokenKind::Identifier, start, loc);
  }
  if (llvm::isDigit(c) || (c == '.' && llvm::isDigit(peek(1))))
    return lexNumber(start, loc);

  auto single = [&](TokenKind kind) {
    advance();
    return make(kind, start, loc);
  };
  auto pair = [&](char second, TokenKind two, TokenKind one) {
    advance();
    if (peek() == second) {
      advance();
      return make(two, start, loc);
    }
    return make(one, start, loc);
  };
  switch (c) {
  case '{': return single(TokenKind::LBrace);
  case '}': return single(TokenKind::RBrace);
  case '(': return single(TokenKind::LParen);
  case ')': return single(TokenKind::RParen);
  case '[': return single(TokenKind::LBracket);
  case ']': return single(TokenKind::RBracket);
  case ',': return single(TokenKind::Comma);
  case ';': return single(TokenKind::Semicolon);
  case ':': return single(TokenKind::Colon);
  case '?': return single(TokenKind::Question);
  case '+': return single(TokenKind::Plus);
  case '-': return single(TokenKind::Minus);
  case '*': return single(TokenKind::Star);
  case '%': return single(TokenKind::Percent);
  case '/': return pair('/', TokenKind::SlashSlash, TokenKind::Slash);
  case '<': return pair('=', TokenKind::LessEqual, TokenKind::Less);
  case '>': return pair('=', TokenKind::GreaterEqual, TokenKind::Greater);
  case '=': return pair('=', TokenKind::EqualEqual, TokenKind::Assign);
  case '!': return pair('=', TokenKind::NotEqual, TokenKind::Bang);
  case '&':
    if (peek(1) == '&') {
      advance();
      advance();
      return make(TokenKind::AndAnd, start, loc);
    }
    break;
  case '|':
    if (peek(1) == '|') {
      advance();
      advance();
      return make(TokenKind::OrOr, start, loc);
    }
    break;
  default:
    break;
  }
  advance();
  if (llvm::isPrint(c))
    errorText = (llvm::Twine("unexpected character '") + llvm::Twine(c) + "'")
                    .str();
  else
    errorText = "unexpected byte 0x" + llvm::utohexstr(
                                           static_cast<unsigned char>(c));
  if (c == '&' || c == '|')
    errorText += (llvm::Twine("; did you mean '") + llvm::Twine(c) +
                  llvm::Twine(c) + "'?")
                     .str();
  return Token{TokenKind::Error, errorText, loc};
}
