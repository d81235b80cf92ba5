//===- Parser.cpp - recursive-descent parser for .attn specs --------------===//
//
//   spec      := 'attention' IDENT '{' statement* '}'
//   statement := 'param' IDENT [':' scalar-type] ['=' expr] ';'
//              | 'capture' IDENT ':' element-type '[' dim (',' dim)* ']' ';'
//              | 'let' IDENT '=' expr ';'
//              | ('score' | 'mask') '=' expr ';'
//              | 'normalize' '=' ('softmax' | 'none') ';'
//   expr      := or ['?' expr ':' expr]
//   or        := and ('||' and)*          and := compare ('&&' compare)*
//   compare   := sum [('<'|'<='|'>'|'>='|'=='|'!=') sum]
//   sum       := product (('+'|'-') product)*
//   product   := unary (('*'|'/'|'//'|'%') unary)*
//   unary     := ('-'|'!') unary | primary
//   primary   := NUMBER | IDENT | IDENT '(' args ')' | IDENT '[' args ']'
//              | '(' expr ')'
//
//===----------------------------------------------------------------------===//
#include "rbfc/Frontend/Parser.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSwitch.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

using namespace rbfc;
using namespace rbfc::ast;

namespace {

class Parser {
public:
  Parser(llvm::StringRef buffer, const DiagnosticCallback &report)
      : lexer(buffer), report(report) {
    consume();
  }

  std::optional<Spec> parseFile();

private:
  void consume() { token = lexer.next(); }
  bool at(TokenKind kind) const { return token.kind == kind; }
  bool atKeyword(llvm::StringRef word) const {
    return at(TokenKind::Identifier) && token.text == word;
  }

  /// Reports `message` at the current token; a lexer error wins because it
  /// explains the token better than any expectation does.
  void error(const llvm::Twine &message) {
    if (failed)
      return;
    failed = true;
    if (at(TokenKind::Error))
      report(token.loc, token.text, false);
    else
      report(token.loc, message, false);
  }
  void errorAt(SourceLoc loc, const llvm::Twine &message) {
    if (failed)
      return;
    failed = true;
    report(loc, message, false);
  }

  std::string describeToken() const {
    switch (token.kind) {
    case TokenKind::EndOfFile:
      return "end of file";
    case TokenKind::Identifier:
    case TokenKind::Integer:
    case TokenKind::Float:
      return ("'" + token.text + "'").str();
    default:
      return spellingOf(token.kind).str();
    }
  }

  bool expect(TokenKind kind, llvm::StringRef context) {
    if (at(kind)) {
      consume();
      return true;
    }
    error("expected " + spellingOf(kind) + " " + context + ", found " +
          describeToken());
    return false;
  }
  bool expectIdentifier(std::string &name, SourceLoc &loc,
                        llvm::StringRef context) {
    if (!at(TokenKind::Identifier)) {
      error("expected " + context + ", found " + describeToken());
      return false;
    }
    name = token.text.str();
    loc = token.loc;
    consume();
    return true;
  }

  bool parseStatement(Spec &spec);
  bool parseParam(Spec &spec);
  bool parseCapture(Spec &spec);
  bool parseAssignment(Spec &spec, llvm::StringRef keyword);

  ExprPtr parseExpr();
  /// operand (op operand)* for the operators of one precedence level.
  ExprPtr parseLeftAssociative(llvm::ArrayRef<TokenKind> operators,
                               ExprPtr (Parser::*parseOperand)());
  ExprPtr parseOr();
  ExprPtr parseAnd();
  ExprPtr parseCompare();
  ExprPtr parseSum();
  ExprPtr parseProduct();
  ExprPtr parseUnary();
  ExprPtr parsePrimary();
  bool parseArguments(Expr &call, TokenKind close, llvm::StringRef what);

  ExprPtr binary(TokenKind op, SourceLoc loc, ExprPtr lhs, ExprPtr rhs) {
    auto node = std::make_unique<Expr>(Expr::Kind::Binary, loc);
    node->op = op;
    node->operands.push_back(std::move(lhs));
    node->operands.push_back(std::move(rhs));
    return withDepth(std::move(node));
  }

  /// Records the depth of `node` from its operands' depths; rejects a tree
  /// deeper than kMaxDepth. Deeper trees would overflow the stack of the
  /// recursive passes that follow (type checking, emission, destruction).
  ExprPtr withDepth(ExprPtr node) {
    unsigned depth = 1;
    for (const ExprPtr &operand : node->operands)
      depth = std::max(depth, depthOf(operand.get()) + 1);
    if (depth > kMaxDepth) {
      errorAt(node->loc, "expression is nested too deeply (more than " +
                             llvm::Twine(kMaxDepth) +
                             " levels); split it with 'let'");
      return nullptr;
    }
    depths[node.get()] = depth;
    return node;
  }
  unsigned depthOf(const Expr *node) const {
    auto it = depths.find(node);
    return it == depths.end() ? 1 : it->second;
  }

  /// Counts the nesting of the recursive parse functions: parentheses do
  /// not deepen the tree but do deepen the parser's recursion.
  struct NestingGuard {
    explicit NestingGuard(Parser &parser) : parser(parser) {
      ++parser.nesting;
    }
    ~NestingGuard() { --parser.nesting; }
    bool tooDeep() const {
      if (parser.nesting <= kMaxDepth)
        return false;
      parser.error("expression is nested too deeply (more than " +
                   llvm::Twine(kMaxDepth) + " levels); split it with 'let'");
      return true;
    }
    Parser &parser;
  };

  static constexpr unsigned kMaxDepth = 256;

  Lexer lexer;
  const DiagnosticCallback &report;
  Token token;
  bool failed = false;
  unsigned nesting = 0;
  llvm::DenseMap<const Expr *, unsigned> depths;
};

} // namespace

std::optional<Spec> Parser::parseFile() {
  Spec spec;
  if (!atKeyword("attention")) {
    error("expected 'attention NAME { ... }' at the start of the spec, found " +
          describeToken());
    return std::nullopt;
  }
  spec.loc = token.loc;
  consume();
  SourceLoc nameLoc;
  if (!expectIdentifier(spec.name, nameLoc, "the attention's name") ||
      !expect(TokenKind::LBrace, "to open the attention body"))
    return std::nullopt;
  while (!at(TokenKind::RBrace)) {
    if (at(TokenKind::EndOfFile)) {
      error("expected '}' to close attention '" + spec.name +
            "', found end of file");
      return std::nullopt;
    }
    if (!parseStatement(spec))
      return std::nullopt;
  }
  consume();
  if (!at(TokenKind::EndOfFile)) {
    error("expected end of file after the attention's closing '}', found " +
          describeToken() + " (one attention per file)");
    return std::nullopt;
  }
  return spec;
}

bool Parser::parseStatement(Spec &spec) {
  if (atKeyword("param"))
    return parseParam(spec);
  if (atKeyword("capture"))
    return parseCapture(spec);
  if (atKeyword("let")) {
    consume();
    LetDecl let;
    if (!expectIdentifier(let.name, let.loc, "a name after 'let'") ||
        !expect(TokenKind::Assign, "after the name of a let"))
      return false;
    let.value = parseExpr();
    if (!let.value || !expect(TokenKind::Semicolon, "after the let's value"))
      return false;
    spec.lets.push_back(std::move(let));
    return true;
  }
  for (llvm::StringRef keyword : {"score", "mask", "normalize"})
    if (atKeyword(keyword))
      return parseAssignment(spec, keyword);
  error("expected a statement (param, capture, let, score, mask or "
        "normalize), found " +
        describeToken());
  return false;
}

bool Parser::parseParam(Spec &spec) {
  consume();
  ParamDecl param;
  if (!expectIdentifier(param.name, param.loc, "a parameter name"))
    return false;
  if (at(TokenKind::Colon)) {
    consume();
    std::optional<ScalarKind> type =
        llvm::StringSwitch<std::optional<ScalarKind>>(token.text)
            .Cases({"f32", "float"}, ScalarKind::Float)
            .Cases({"i32", "int"}, ScalarKind::Int)
            .Default(std::nullopt);
    if (!at(TokenKind::Identifier) || !type) {
      error("expected a parameter type (f32 or int), found " +
            describeToken());
      return false;
    }
    param.type = *type;
    consume();
  }
  if (at(TokenKind::Assign)) {
    consume();
    param.defaultValue = parseExpr();
    if (!param.defaultValue)
      return false;
  }
  if (!expect(TokenKind::Semicolon, "after the parameter"))
    return false;
  spec.params.push_back(std::move(param));
  return true;
}

bool Parser::parseCapture(Spec &spec) {
  consume();
  CaptureDecl capture;
  if (!expectIdentifier(capture.name, capture.loc, "a capture name") ||
      !expect(TokenKind::Colon, "after the capture name"))
    return false;
  std::optional<CaptureElement> element =
      llvm::StringSwitch<std::optional<CaptureElement>>(token.text)
          .Case("f32", CaptureElement::F32)
          .Case("i32", CaptureElement::I32)
          .Case("i64", CaptureElement::I64)
          .Default(std::nullopt);
  if (!at(TokenKind::Identifier) || !element) {
    error("expected a capture element type (f32, i32 or i64), found " +
          describeToken());
    return false;
  }
  capture.element = *element;
  consume();
  if (!expect(TokenKind::LBracket, "to open the capture's shape, e.g. f32[?, ?]"))
    return false;
  do {
    if (at(TokenKind::Question)) {
      capture.dims.push_back(-1);
    } else if (at(TokenKind::Integer)) {
      int64_t dim = 0;
      if (token.text.getAsInteger(10, dim) || dim <= 0) {
        error("expected a positive dimension size, found " + describeToken());
        return false;
      }
      capture.dims.push_back(dim);
    } else {
      error("expected a dimension ('?' or a positive integer), found " +
            describeToken());
      return false;
    }
    consume();
    if (!at(TokenKind::Comma))
      break;
    consume();
  } while (true);
  if (!expect(TokenKind::RBracket, "to close the capture's shape") ||
      !expect(TokenKind::Semicolon, "after the capture"))
    return false;
  spec.captures.push_back(std::move(capture));
  return true;
}

bool Parser::parseAssignment(Spec &spec, llvm::StringRef keyword) {
  SourceLoc loc = token.loc;
  consume();
  if (!expect(TokenKind::Assign, ("after '" + keyword + "'").str()))
    return false;
  if (keyword == "normalize") {
    std::optional<Normalization> kind =
        llvm::StringSwitch<std::optional<Normalization>>(token.text)
            .Case("softmax", Normalization::Softmax)
            .Case("none", Normalization::None)
            .Default(std::nullopt);
    if (!at(TokenKind::Identifier) || !kind) {
      error("expected 'softmax' or 'none' after 'normalize =', found " +
            describeToken());
      return false;
    }
    if (spec.normalizationLoc) {
      errorAt(loc, "the normalization is already set");
      report(*spec.normalizationLoc, "it was set here", true);
      return false;
    }
    spec.normalization = *kind;
    spec.normalizationLoc = loc;
    consume();
    return expect(TokenKind::Semicolon, "after the normalization");
  }
  bool isScore = keyword == "score";
  ExprPtr &slot = isScore ? spec.score : spec.mask;
  SourceLoc &slotLoc = isScore ? spec.scoreLoc : spec.maskLoc;
  if (slot) {
    errorAt(loc, "the " + keyword + " is already defined");
    report(slotLoc, "it was defined here", true);
    return false;
  }
  slotLoc = loc;
  slot = parseExpr();
  return slot && expect(TokenKind::Semicolon,
                        ("after the " + keyword + " expression").str());
}

ExprPtr Parser::parseExpr() {
  NestingGuard guard(*this);
  if (guard.tooDeep())
    return nullptr;
  ExprPtr condition = parseOr();
  if (!condition || !at(TokenKind::Question))
    return condition;
  auto node = std::make_unique<Expr>(Expr::Kind::Conditional, token.loc);
  consume();
  ExprPtr whenTrue = parseExpr();
  if (!whenTrue || !expect(TokenKind::Colon, "in a conditional 'c ? a : b'"))
    return nullptr;
  ExprPtr whenFalse = parseExpr();
  if (!whenFalse)
    return nullptr;
  node->operands.push_back(std::move(condition));
  node->operands.push_back(std::move(whenTrue));
  node->operands.push_back(std::move(whenFalse));
  return withDepth(std::move(node));
}

ExprPtr Parser::parseLeftAssociative(llvm::ArrayRef<TokenKind> operators,
                                     ExprPtr (Parser::*parseOperand)()) {
  ExprPtr lhs = (this->*parseOperand)();
  while (lhs && llvm::is_contained(operators, token.kind)) {
    TokenKind op = token.kind;
    SourceLoc loc = token.loc;
    consume();
    ExprPtr rhs = (this->*parseOperand)();
    if (!rhs)
      return nullptr;
    lhs = binary(op, loc, std::move(lhs), std::move(rhs));
  }
  return lhs;
}

ExprPtr Parser::parseOr() {
  return parseLeftAssociative({TokenKind::OrOr}, &Parser::parseAnd);
}

ExprPtr Parser::parseAnd() {
  return parseLeftAssociative({TokenKind::AndAnd}, &Parser::parseCompare);
}

static bool isComparison(TokenKind kind) {
  switch (kind) {
  case TokenKind::Less:
  case TokenKind::LessEqual:
  case TokenKind::Greater:
  case TokenKind::GreaterEqual:
  case TokenKind::EqualEqual:
  case TokenKind::NotEqual:
    return true;
  default:
    return false;
  }
}

ExprPtr Parser::parseCompare() {
  ExprPtr lhs = parseSum();
  if (!lhs || !isComparison(token.kind))
    return lhs;
  TokenKind op = token.kind;
  SourceLoc loc = token.loc;
  consume();
  ExprPtr rhs = parseSum();
  if (!rhs)
    return nullptr;
  if (isComparison(token.kind)) {
    error("comparisons do not chain; write 'a < b && b < c' instead");
    return nullptr;
  }
  return binary(op, loc, std::move(lhs), std::move(rhs));
}

ExprPtr Parser::parseSum() {
  return parseLeftAssociative({TokenKind::Plus, TokenKind::Minus},
                              &Parser::parseProduct);
}

ExprPtr Parser::parseProduct() {
  return parseLeftAssociative({TokenKind::Star, TokenKind::Slash,
                               TokenKind::SlashSlash, TokenKind::Percent},
                              &Parser::parseUnary);
}

ExprPtr Parser::parseUnary() {
  if (at(TokenKind::Minus) || at(TokenKind::Bang)) {
    NestingGuard guard(*this);
    if (guard.tooDeep())
      return nullptr;
    auto node = std::make_unique<Expr>(Expr::Kind::Unary, token.loc);
    node->op = token.kind;
    consume();
    ExprPtr operand = parseUnary();
    if (!operand)
      return nullptr;
    node->operands.push_back(std::move(operand));
    return withDepth(std::move(node));
  }
  return parsePrimary();
}

bool Parser::parseArguments(Expr &call, TokenKind close, llvm::StringRef what) {
  consume();
  if (at(close)) {
    consume();
    return true;
  }
  do {
    ExprPtr argument = parseExpr();
    if (!argument)
      return false;
    call.operands.push_back(std::move(argument));
    if (!at(TokenKind::Comma))
      break;
    consume();
  } while (true);
  return expect(close, ("to close the " + what).str());
}

ExprPtr Parser::parsePrimary() {
  SourceLoc loc = token.loc;
  switch (token.kind) {
  case TokenKind::Integer:
  case TokenKind::Float: {
    auto node = std::make_unique<Expr>(Expr::Kind::Number, loc);
    node->isInteger = at(TokenKind::Integer);
    if (node->isInteger) {
      int64_t value = 0;
      // The AST keeps numbers as doubles: beyond 2^53 an integer would be
      // rounded, and near 2^63 its conversion back to int64 is undefined.
      if (token.text.getAsInteger(10, value) || value > (int64_t(1) << 53)) {
        error("integer literal " + describeToken() + " is too large");
        return nullptr;
      }
      node->value = static_cast<double>(value);
    } else {
      // getAsDouble rejects "1." (strtod reads it) but accepts an
      // overflowing literal as infinity, so check the range either way.
      // Scores are f32: a literal beyond its range would become inf.
      bool parsed = !token.text.getAsDouble(node->value);
      if (!parsed) {
        std::string text = token.text.str();
        char *end = nullptr;
        node->value = std::strtod(text.c_str(), &end);
        parsed = end == text.c_str() + text.size();
      }
      if (!parsed || std::isinf(node->value) ||
          std::fabs(node->value) > std::numeric_limits<float>::max()) {
        error("number " + describeToken() + " is out of range");
        return nullptr;
      }
    }
    consume();
    return node;
  }
  case TokenKind::Identifier: {
    std::string name = token.text.str();
    consume();
    if (name == "true" || name == "false") {
      auto node = std::make_unique<Expr>(Expr::Kind::Boolean, loc);
      node->boolean = name == "true";
      return node;
    }
    if (at(TokenKind::LParen) || at(TokenKind::LBracket)) {
      bool isCall = at(TokenKind::LParen);
      auto node = std::make_unique<Expr>(
          isCall ? Expr::Kind::Call : Expr::Kind::Subscript, loc);
      node->name = name;
      if (!parseArguments(*node,
                          isCall ? TokenKind::RParen : TokenKind::RBracket,
                          isCall ? "argument list of '" + name + "'"
                                 : "subscript of '" + name + "'"))
        return nullptr;
      if (!isCall && node->operands.empty()) {
        errorAt(loc, "'" + name + "[]' needs at least one index");
        return nullptr;
      }
      return withDepth(std::move(node));
    }
    auto node = std::make_unique<Expr>(Expr::Kind::Name, loc);
    node->name = name;
    return node;
  }
  case TokenKind::LParen: {
    consume();
    ExprPtr inner = parseExpr();
    if (!inner || !expect(TokenKind::RParen, "to close '('"))
      return nullptr;
    return inner;
  }
  default:
    error("expected an expression, found " + describeToken());
    return nullptr;
  }
}

std::optional<Spec> rbfc::parseSpec(llvm::StringRef buffer,
                                    const DiagnosticCallback &report) {
  return Parser(buffer, report).parseFile();
}
