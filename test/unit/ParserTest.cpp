//===- ParserTest.cpp - statements, expressions and syntax errors ---------===//
#include "rbfc/Frontend/Parser.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace rbfc;
using namespace rbfc::ast;

namespace {

struct Diagnostic {
  unsigned line;
  unsigned column;
  std::string message;
  bool isNote;
};

/// Parses `text`, collecting every diagnostic the parser reports.
struct Parsed {
  std::optional<Spec> spec;
  std::vector<Diagnostic> diagnostics;
};

Parsed parse(llvm::StringRef text) {
  Parsed parsed;
  DiagnosticCallback report = [&](SourceLoc loc, const llvm::Twine &message,
                                  bool isNote) {
    parsed.diagnostics.push_back({loc.line, loc.column, message.str(), isNote});
  };
  parsed.spec = parseSpec(text, report);
  return parsed;
}

/// Prints an expression as an S-expression, so that a test states the shape
/// of the tree: `a + b * c` is `(+ a (* b c))`.
void print(const Expr &expr, llvm::raw_ostream &os) {
  auto operatorText = [](TokenKind op) {
    return spellingOf(op).drop_front().drop_back();
  };
  auto printList = [&](llvm::StringRef open, llvm::StringRef close) {
    os << expr.name << open;
    for (size_t i = 0; i < expr.operands.size(); ++i) {
      if (i)
        os << ", ";
      print(*expr.operands[i], os);
    }
    os << close;
  };
  switch (expr.kind) {
  case Expr::Kind::Number:
    os << (expr.isInteger ? "" : "f") << llvm::format("%.17g", expr.value);
    return;
  case Expr::Kind::Boolean:
    os << (expr.boolean ? "#t" : "#f");
    return;
  case Expr::Kind::Name:
    os << expr.name;
    return;
  case Expr::Kind::Call:
    printList("(", ")");
    return;
  case Expr::Kind::Subscript:
    printList("[", "]");
    return;
  case Expr::Kind::Unary:
    os << "(" << operatorText(expr.op) << " ";
    print(*expr.operands[0], os);
    os << ")";
    return;
  case Expr::Kind::Binary:
    os << "(" << operatorText(expr.op) << " ";
    print(*expr.operands[0], os);
    os << " ";
    print(*expr.operands[1], os);
    os << ")";
    return;
  case Expr::Kind::Conditional:
    os << "(? ";
    print(*expr.operands[0], os);
    os << " ";
    print(*expr.operands[1], os);
    os << " ";
    print(*expr.operands[2], os);
    os << ")";
    return;
  }
}

std::string shapeOf(const Expr &expr) {
  std::string text;
  llvm::raw_string_ostream os(text);
  print(expr, os);
  return text;
}

/// Parses `score = EXPR;` in a spec and returns the printed tree of EXPR,
/// or the first diagnostic prefixed with "error: ".
std::string scoreShape(llvm::StringRef expr) {
  Parsed parsed = parse(("attention t { score = " + expr + "; }").str());
  if (!parsed.spec) {
    if (parsed.diagnostics.empty())
      return "failed without a diagnostic";
    return "error: " + parsed.diagnostics.front().message;
  }
  if (!parsed.spec->score)
    return "no score";
  return shapeOf(*parsed.spec->score);
}

/// Checks that `text` fails with exactly one error, `message`, at
/// line:column, and no other diagnostic but notes.
void expectError(llvm::StringRef text, unsigned line, unsigned column,
                 llvm::StringRef message) {
  SCOPED_TRACE(text.str());
  Parsed parsed = parse(text);
  EXPECT_FALSE(parsed.spec.has_value());
  ASSERT_FALSE(parsed.diagnostics.empty());
  const Diagnostic &first = parsed.diagnostics.front();
  EXPECT_FALSE(first.isNote);
  EXPECT_EQ(first.message, message.str());
  EXPECT_EQ(first.line, line);
  EXPECT_EQ(first.column, column);
  for (size_t i = 1; i < parsed.diagnostics.size(); ++i)
    EXPECT_TRUE(parsed.diagnostics[i].isNote)
        << "second error: " << parsed.diagnostics[i].message;
}

//===----------------------------------------------------------------------===//
// Statements
//===----------------------------------------------------------------------===//

TEST(Parser, MinimalSpec) {
  Parsed parsed = parse("attention causal {\n"
                        "  score = dot(q, k);\n"
                        "  mask = kv_idx <= q_idx;\n"
                        "}\n");
  ASSERT_TRUE(parsed.spec.has_value());
  EXPECT_TRUE(parsed.diagnostics.empty());
  const Spec &spec = *parsed.spec;
  EXPECT_EQ(spec.name, "causal");
  EXPECT_EQ(spec.loc.line, 1u);
  EXPECT_EQ(spec.loc.column, 1u);
  ASSERT_TRUE(spec.score);
  EXPECT_EQ(shapeOf(*spec.score), "dot(q, k)");
  EXPECT_EQ(spec.scoreLoc.line, 2u);
  EXPECT_EQ(spec.scoreLoc.column, 3u);
  ASSERT_TRUE(spec.mask);
  EXPECT_EQ(shapeOf(*spec.mask), "(<= kv_idx q_idx)");
  EXPECT_EQ(spec.maskLoc.line, 3u);
  EXPECT_EQ(spec.normalization, Normalization::Softmax);
  EXPECT_FALSE(spec.normalizationLoc.has_value());
  EXPECT_TRUE(spec.params.empty());
  EXPECT_TRUE(spec.captures.empty());
  EXPECT_TRUE(spec.lets.empty());
}

TEST(Parser, EmptyBodyParses) {
  Parsed parsed = parse("attention empty {}");
  ASSERT_TRUE(parsed.spec.has_value());
  EXPECT_FALSE(parsed.spec->score);
  EXPECT_FALSE(parsed.spec->mask);
}

TEST(Parser, ParamsWithTypesAndDefaults) {
  Parsed parsed = parse("attention p {\n"
                        "  param gamma: f32 = 1.0 / sqrt(head_dim);\n"
                        "  param window: int = 256;\n"
                        "  param n: i32;\n"
                        "  param scale: float;\n"
                        "  param untyped = 2;\n"
                        "}");
  ASSERT_TRUE(parsed.spec.has_value());
  const std::vector<ParamDecl> &params = parsed.spec->params;
  ASSERT_EQ(params.size(), 5u);
  EXPECT_EQ(params[0].name, "gamma");
  EXPECT_EQ(params[0].type, ScalarKind::Float);
  ASSERT_TRUE(params[0].defaultValue);
  EXPECT_EQ(shapeOf(*params[0].defaultValue), "(/ f1 sqrt(head_dim))");
  EXPECT_EQ(params[0].loc.line, 2u);
  EXPECT_EQ(params[0].loc.column, 9u);
  EXPECT_EQ(params[1].name, "window");
  EXPECT_EQ(params[1].type, ScalarKind::Int);
  ASSERT_TRUE(params[1].defaultValue);
  EXPECT_EQ(shapeOf(*params[1].defaultValue), "256");
  EXPECT_EQ(params[2].type, ScalarKind::Int);
  EXPECT_FALSE(params[2].defaultValue);
  EXPECT_EQ(params[3].type, ScalarKind::Float);
  EXPECT_FALSE(params[3].defaultValue);
  // A parameter without a type is a float.
  EXPECT_EQ(params[4].type, ScalarKind::Float);
  ASSERT_TRUE(params[4].defaultValue);
  EXPECT_TRUE(params[4].defaultValue->isInteger);
}

TEST(Parser, CapturesWithShapes) {
  Parsed parsed = parse("attention c {\n"
                        "  capture slopes: f32[?];\n"
                        "  capture doc: i32[?, 4096];\n"
                        "  capture ids: i64[2, ?, 3];\n"
                        "}");
  ASSERT_TRUE(parsed.spec.has_value());
  const std::vector<CaptureDecl> &captures = parsed.spec->captures;
  ASSERT_EQ(captures.size(), 3u);
  EXPECT_EQ(captures[0].name, "slopes");
  EXPECT_EQ(captures[0].element, CaptureElement::F32);
  EXPECT_EQ(captures[0].dims, std::vector<int64_t>{-1});
  EXPECT_EQ(captures[0].loc.line, 2u);
  EXPECT_EQ(captures[0].loc.column, 11u);
  EXPECT_EQ(captures[1].element, CaptureElement::I32);
  EXPECT_EQ(captures[1].dims, (std::vector<int64_t>{-1, 4096}));
  EXPECT_EQ(captures[2].element, CaptureElement::I64);
  EXPECT_EQ(captures[2].dims, (std::vector<int64_t>{2, -1, 3}));
}

TEST(Parser, LetsKeepTheirOrder) {
  Parsed parsed = parse("attention l {\n"
                        "  let offset = q_idx - kv_idx;\n"
                        "  let near = offset < 4;\n"
                        "  score = near ? 1.0 : 0.0;\n"
                        "}");
  ASSERT_TRUE(parsed.spec.has_value());
  const std::vector<LetDecl> &lets = parsed.spec->lets;
  ASSERT_EQ(lets.size(), 2u);
  EXPECT_EQ(lets[0].name, "offset");
  EXPECT_EQ(lets[0].loc.line, 2u);
  EXPECT_EQ(lets[0].loc.column, 7u);
  EXPECT_EQ(shapeOf(*lets[0].value), "(- q_idx kv_idx)");
  EXPECT_EQ(lets[1].name, "near");
  EXPECT_EQ(shapeOf(*lets[1].value), "(< offset 4)");
}

TEST(Parser, NormalizeNoneAndSoftmax) {
  Parsed none = parse("attention n {\n score = 1.0;\n  normalize = none; }");
  ASSERT_TRUE(none.spec.has_value());
  EXPECT_EQ(none.spec->normalization, Normalization::None);
  ASSERT_TRUE(none.spec->normalizationLoc.has_value());
  EXPECT_EQ(none.spec->normalizationLoc->line, 3u);
  EXPECT_EQ(none.spec->normalizationLoc->column, 3u);

  Parsed softmax = parse("attention s { normalize = softmax; }");
  ASSERT_TRUE(softmax.spec.has_value());
  EXPECT_EQ(softmax.spec->normalization, Normalization::Softmax);
  EXPECT_TRUE(softmax.spec->normalizationLoc.has_value());
}

TEST(Parser, CommentsBetweenStatements) {
  Parsed parsed = parse("# header\n"
                        "attention x { # opens\n"
                        "  # inside\n"
                        "  score = 1.0; # trailing\n"
                        "} # done\n");
  ASSERT_TRUE(parsed.spec.has_value());
  ASSERT_TRUE(parsed.spec->score);
  EXPECT_EQ(parsed.spec->scoreLoc.line, 4u);
}

//===----------------------------------------------------------------------===//
// Expressions: precedence and associativity
//===----------------------------------------------------------------------===//

TEST(ParserExpr, ProductBindsTighterThanSum) {
  EXPECT_EQ(scoreShape("a + b * c"), "(+ a (* b c))");
  EXPECT_EQ(scoreShape("a * b + c"), "(+ (* a b) c)");
  EXPECT_EQ(scoreShape("a - b / c % d"), "(- a (% (/ b c) d))");
}

TEST(ParserExpr, SumAndProductAreLeftAssociative) {
  EXPECT_EQ(scoreShape("a - b - c"), "(- (- a b) c)");
  EXPECT_EQ(scoreShape("a + b - c + d"), "(+ (- (+ a b) c) d)");
  EXPECT_EQ(scoreShape("a / b // c % d * e"), "(* (% (// (/ a b) c) d) e)");
}

TEST(ParserExpr, UnaryBindsTighterThanBinary) {
  EXPECT_EQ(scoreShape("-a * b"), "(* (- a) b)");
  EXPECT_EQ(scoreShape("a * -b"), "(* a (- b))");
  EXPECT_EQ(scoreShape("- - a"), "(- (- a))");
  EXPECT_EQ(scoreShape("!a && !!b"), "(&& (! a) (! (! b)))");
}

TEST(ParserExpr, ComparisonBetweenSumsAndLogic) {
  EXPECT_EQ(scoreShape("a + 1 < b * 2"), "(< (+ a 1) (* b 2))");
  EXPECT_EQ(scoreShape("a < b && c >= d"), "(&& (< a b) (>= c d))");
  EXPECT_EQ(scoreShape("a == b || c != d"), "(|| (== a b) (!= c d))");
  EXPECT_EQ(scoreShape("a <= b"), "(<= a b)");
  EXPECT_EQ(scoreShape("a > b"), "(> a b)");
}

TEST(ParserExpr, AndBindsTighterThanOr) {
  EXPECT_EQ(scoreShape("a || b && c"), "(|| a (&& b c))");
  EXPECT_EQ(scoreShape("a && b || c && d"), "(|| (&& a b) (&& c d))");
  EXPECT_EQ(scoreShape("a || b || c"), "(|| (|| a b) c)");
  EXPECT_EQ(scoreShape("a && b && c"), "(&& (&& a b) c)");
}

TEST(ParserExpr, ConditionalIsLowestAndRightAssociative) {
  EXPECT_EQ(scoreShape("a || b ? c + 1 : d"), "(? (|| a b) (+ c 1) d)");
  EXPECT_EQ(scoreShape("a ? b : c ? d : e"), "(? a b (? c d e))");
  EXPECT_EQ(scoreShape("a ? b ? c : d : e"), "(? a (? b c d) e)");
}

TEST(ParserExpr, ParenthesesOverridePrecedence) {
  EXPECT_EQ(scoreShape("(a + b) * c"), "(* (+ a b) c)");
  EXPECT_EQ(scoreShape("a - (b - c)"), "(- a (- b c))");
  EXPECT_EQ(scoreShape("((a))"), "a");
  EXPECT_EQ(scoreShape("(a ? b : c) * 2"), "(* (? a b c) 2)");
}

TEST(ParserExpr, CallsAndSubscripts) {
  EXPECT_EQ(scoreShape("dot(q, k)"), "dot(q, k)");
  EXPECT_EQ(scoreShape("f()"), "f()");
  EXPECT_EQ(scoreShape("max(a + 1, min(b, c))"), "max((+ a 1), min(b, c))");
  EXPECT_EQ(scoreShape("bias[h, q_idx - kv_idx]"),
            "bias[h, (- q_idx kv_idx)]");
  EXPECT_EQ(scoreShape("t[d[b]] * 2"), "(* t[d[b]] 2)");
  EXPECT_EQ(scoreShape("select(a < b, 1, 2)"), "select((< a b), 1, 2)");
}

TEST(ParserExpr, LiteralsAndBooleans) {
  EXPECT_EQ(scoreShape("42"), "42");
  EXPECT_EQ(scoreShape("2.5e-1"), "f0.25");
  EXPECT_EQ(scoreShape("1."), "f1");
  EXPECT_EQ(scoreShape(".5"), "f0.5");
  EXPECT_EQ(scoreShape("true || false"), "(|| #t #f)");
  EXPECT_EQ(scoreShape("1e3"), "f1000");
}

TEST(ParserExpr, NodesAreLocatedAtTheirOperator) {
  Parsed parsed = parse("attention t {\n"
                        "  score = a +\n"
                        "    f(b) * -c ? d : e;\n"
                        "}");
  ASSERT_TRUE(parsed.spec.has_value());
  const Expr &conditional = *parsed.spec->score;
  ASSERT_EQ(conditional.kind, Expr::Kind::Conditional);
  EXPECT_EQ(conditional.loc.line, 3u);
  EXPECT_EQ(conditional.loc.column, 15u);
  const Expr &sum = *conditional.operands[0];
  ASSERT_EQ(sum.kind, Expr::Kind::Binary);
  EXPECT_EQ(sum.op, TokenKind::Plus);
  EXPECT_EQ(sum.loc.line, 2u);
  EXPECT_EQ(sum.loc.column, 13u);
  const Expr &product = *sum.operands[1];
  ASSERT_EQ(product.kind, Expr::Kind::Binary);
  EXPECT_EQ(product.op, TokenKind::Star);
  EXPECT_EQ(product.loc.line, 3u);
  EXPECT_EQ(product.loc.column, 10u);
  const Expr &call = *product.operands[0];
  ASSERT_EQ(call.kind, Expr::Kind::Call);
  EXPECT_EQ(call.loc.column, 5u);
  const Expr &negation = *product.operands[1];
  ASSERT_EQ(negation.kind, Expr::Kind::Unary);
  EXPECT_EQ(negation.op, TokenKind::Minus);
  EXPECT_EQ(negation.loc.column, 12u);
  EXPECT_EQ(negation.operands[0]->loc.column, 13u);
}

//===----------------------------------------------------------------------===//
// Syntax errors: message and location
//===----------------------------------------------------------------------===//

TEST(ParserError, MissingAttentionKeyword) {
  expectError("  attn x {}", 1, 3,
              "expected 'attention NAME { ... }' at the start of the spec, "
              "found 'attn'");
  expectError("", 1, 1,
              "expected 'attention NAME { ... }' at the start of the spec, "
              "found end of file");
  expectError("\n# only a comment\n", 3, 1,
              "expected 'attention NAME { ... }' at the start of the spec, "
              "found end of file");
}

TEST(ParserError, MissingNameOrBrace) {
  expectError("attention {", 1, 11,
              "expected the attention's name, found '{'");
  expectError("attention x score", 1, 13,
              "expected '{' to open the attention body, found 'score'");
  expectError("attention 3 {}", 1, 11,
              "expected the attention's name, found '3'");
}

TEST(ParserError, UnclosedBody) {
  expectError("attention x {\n  score = 1.0;\n", 3, 1,
              "expected '}' to close attention 'x', found end of file");
}

TEST(ParserError, TrailingInputAfterTheBody) {
  expectError("attention a {}\nattention b {}", 2, 1,
              "expected end of file after the attention's closing '}', "
              "found 'attention' (one attention per file)");
  expectError("attention a {} ;", 1, 16,
              "expected end of file after the attention's closing '}', "
              "found ';' (one attention per file)");
}

TEST(ParserError, UnknownStatement) {
  expectError("attention a {\n  scores = 1;\n}", 2, 3,
              "expected a statement (param, capture, let, score, mask or "
              "normalize), found 'scores'");
  expectError("attention a { 1.5; }", 1, 15,
              "expected a statement (param, capture, let, score, mask or "
              "normalize), found '1.5'");
}

TEST(ParserError, LetErrors) {
  expectError("attention a { let = 1; }", 1, 19,
              "expected a name after 'let', found '='");
  expectError("attention a { let x 1; }", 1, 21,
              "expected '=' after the name of a let, found '1'");
  expectError("attention a { let x = 1 }", 1, 25,
              "expected ';' after the let's value, found '}'");
}

TEST(ParserError, ParamErrors) {
  expectError("attention a { param ; }", 1, 21,
              "expected a parameter name, found ';'");
  expectError("attention a { param g: f64; }", 1, 24,
              "expected a parameter type (f32 or int), found 'f64'");
  expectError("attention a { param g: = 1; }", 1, 24,
              "expected a parameter type (f32 or int), found '='");
  expectError("attention a { param g: f32 = 1 param }", 1, 32,
              "expected ';' after the parameter, found 'param'");
  expectError("attention a { param g = ; }", 1, 25,
              "expected an expression, found ';'");
}

TEST(ParserError, CaptureErrors) {
  expectError("attention a { capture : f32[?]; }", 1, 23,
              "expected a capture name, found ':'");
  expectError("attention a { capture t f32[?]; }", 1, 25,
              "expected ':' after the capture name, found 'f32'");
  expectError("attention a { capture t: f16[?]; }", 1, 26,
              "expected a capture element type (f32, i32 or i64), found "
              "'f16'");
  expectError("attention a { capture t: f32; }", 1, 29,
              "expected '[' to open the capture's shape, e.g. f32[?, ?], "
              "found ';'");
  expectError("attention a { capture t: f32[?, 0]; }", 1, 33,
              "expected a positive dimension size, found '0'");
  expectError("attention a { capture t: f32[n]; }", 1, 30,
              "expected a dimension ('?' or a positive integer), found 'n'");
  expectError("attention a { capture t: f32[]; }", 1, 30,
              "expected a dimension ('?' or a positive integer), found ']'");
  expectError("attention a { capture t: f32[?, 2.5]; }", 1, 33,
              "expected a dimension ('?' or a positive integer), found "
              "'2.5'");
  expectError("attention a { capture t: f32[? ?]; }", 1, 32,
              "expected ']' to close the capture's shape, found '?'");
  expectError("attention a { capture t: f32[?] }", 1, 33,
              "expected ';' after the capture, found '}'");
}

TEST(ParserError, AssignmentErrors) {
  expectError("attention a { score 1.0; }", 1, 21,
              "expected '=' after 'score', found '1.0'");
  expectError("attention a { mask; }", 1, 19,
              "expected '=' after 'mask', found ';'");
  expectError("attention a { score = 1.0 }", 1, 27,
              "expected ';' after the score expression, found '}'");
  expectError("attention a { mask = true score = 1.0; }", 1, 27,
              "expected ';' after the mask expression, found 'score'");
}

TEST(ParserError, NormalizeErrors) {
  expectError("attention a { normalize = linear; }", 1, 27,
              "expected 'softmax' or 'none' after 'normalize =', found "
              "'linear'");
  expectError("attention a { normalize = 1; }", 1, 27,
              "expected 'softmax' or 'none' after 'normalize =', found '1'");
  expectError("attention a { normalize = none }", 1, 32,
              "expected ';' after the normalization, found '}'");
}

TEST(ParserError, DuplicateNormalizationPointsAtBoth) {
  Parsed parsed = parse("attention a {\n"
                        "  normalize = none;\n"
                        "  normalize = softmax;\n"
                        "}");
  EXPECT_FALSE(parsed.spec.has_value());
  ASSERT_EQ(parsed.diagnostics.size(), 2u);
  EXPECT_EQ(parsed.diagnostics[0].message, "the normalization is already set");
  EXPECT_FALSE(parsed.diagnostics[0].isNote);
  EXPECT_EQ(parsed.diagnostics[0].line, 3u);
  EXPECT_EQ(parsed.diagnostics[0].column, 3u);
  EXPECT_EQ(parsed.diagnostics[1].message, "it was set here");
  EXPECT_TRUE(parsed.diagnostics[1].isNote);
  EXPECT_EQ(parsed.diagnostics[1].line, 2u);
  EXPECT_EQ(parsed.diagnostics[1].column, 3u);
}

TEST(ParserError, DuplicateScoreAndMaskPointAtBoth) {
  for (const char *keyword : {"score", "mask"}) {
    std::string text = std::string("attention a {\n  ") + keyword +
                       " = 1;\n    " + keyword + " = 2;\n}";
    Parsed parsed = parse(text);
    EXPECT_FALSE(parsed.spec.has_value());
    ASSERT_EQ(parsed.diagnostics.size(), 2u) << keyword;
    EXPECT_EQ(parsed.diagnostics[0].message,
              std::string("the ") + keyword + " is already defined");
    EXPECT_EQ(parsed.diagnostics[0].line, 3u);
    EXPECT_EQ(parsed.diagnostics[0].column, 5u);
    EXPECT_EQ(parsed.diagnostics[1].message, "it was defined here");
    EXPECT_TRUE(parsed.diagnostics[1].isNote);
    EXPECT_EQ(parsed.diagnostics[1].line, 2u);
    EXPECT_EQ(parsed.diagnostics[1].column, 3u);
  }
}

TEST(ParserError, ConditionalNeedsColon) {
  expectError("attention a { score = c ? 1 ; }", 1, 29,
              "expected ':' in a conditional 'c ? a : b', found ';'");
  expectError("attention a { score = c ? : 2; }", 1, 27,
              "expected an expression, found ':'");
}

TEST(ParserError, ComparisonsDoNotChain) {
  // The error points at the second comparison operator.
  expectError("attention a { mask = a < b <= c; }", 1, 28,
              "comparisons do not chain; write 'a < b && b < c' instead");
  expectError("attention a { mask = a == b != c; }", 1, 29,
              "comparisons do not chain; write 'a < b && b < c' instead");
}

TEST(ParserError, UnclosedCallSubscriptAndParenthesis) {
  expectError("attention a { score = max(a, b; }", 1, 31,
              "expected ')' to close the argument list of 'max', found ';'");
  expectError("attention a { score = t[h, 1; }", 1, 29,
              "expected ']' to close the subscript of 't', found ';'");
  expectError("attention a { score = (a + b; }", 1, 29,
              "expected ')' to close '(', found ';'");
  expectError("attention a { score = f(a b); }", 1, 27,
              "expected ')' to close the argument list of 'f', found 'b'");
}

TEST(ParserError, EmptySubscriptPointsAtTheName) {
  expectError("attention a {\n  score = 1 + bias[];\n}", 2, 15,
              "'bias[]' needs at least one index");
}

TEST(ParserError, MissingOperand) {
  expectError("attention a { score = 1 + ; }", 1, 27,
              "expected an expression, found ';'");
  expectError("attention a { score = * 2; }", 1, 23,
              "expected an expression, found '*'");
  expectError("attention a { score = -; }", 1, 24,
              "expected an expression, found ';'");
  expectError("attention a { score = f(1,); }", 1, 27,
              "expected an expression, found ')'");
  expectError("attention a { score =", 1, 22,
              "expected an expression, found end of file");
}

TEST(ParserError, NumbersOutOfRange) {
  expectError("attention a { score = 99999999999999999999; }", 1, 23,
              "integer literal '99999999999999999999' is too large");
  expectError("attention a { score = 1e999; }", 1, 23,
              "number '1e999' is out of range");
  // Integers are exact up to 2^53 in the AST's doubles.
  expectError("attention a { score = 9007199254740993; }", 1, 23,
              "integer literal '9007199254740993' is too large");
  expectError("attention a { score = 9223372036854775807; }", 1, 23,
              "integer literal '9223372036854775807' is too large");
  EXPECT_EQ(scoreShape("9007199254740992"), "9007199254740992");
}

TEST(ParserError, NestingIsBounded) {
  const char *message = "expression is nested too deeply (more than 256 "
                        "levels); split it with 'let'";
  // The 257th '(' opens one level too many; `score = ` ends at column 22.
  std::string parens = std::string(300, '(') + "1" + std::string(300, ')');
  expectError("attention a { score = " + parens + "; }", 1, 22 + 257,
              message);
  std::string negations = std::string(300, '-') + "1";
  expectError("attention a { score = " + negations + "; }", 1, 22 + 256,
              message);
  // A flat chain builds a deep left-leaning tree; the 256th '+' is too deep.
  std::string chain = "1";
  for (int i = 0; i < 300; ++i)
    chain += "+1";
  expectError("attention a { score = " + chain + "; }", 1, 22 + 2 * 256,
              message);
  // 255 levels are fine.
  std::string fine = std::string(255, '(') + "1" + std::string(255, ')');
  EXPECT_TRUE(parse("attention a { score = " + fine + "; }").spec);
}

TEST(ParserError, LexerErrorWinsOverTheExpectation) {
  expectError("attention a { score = 1 @ 2; }", 1, 25,
              "unexpected character '@'");
  expectError("attention a {\n  score = 12abc;\n}", 2, 11,
              "malformed number: a letter follows the digits");
  expectError("attention a { score = 1e; }", 1, 23,
              "malformed number: expected digits after the exponent 'e'");
  expectError("attention a { mask = a & b; }", 1, 24,
              "unexpected character '&'; did you mean '&&'?");
  expectError("attention a { mask = a | b; }", 1, 24,
              "unexpected character '|'; did you mean '||'?");
}

TEST(ParserError, OnlyTheFirstErrorIsReported) {
  Parsed parsed = parse("attention a {\n  score = ;\n  mask = ;\n  @\n}");
  EXPECT_FALSE(parsed.spec.has_value());
  ASSERT_EQ(parsed.diagnostics.size(), 1u);
  EXPECT_EQ(parsed.diagnostics[0].line, 2u);
}

} // namespace
