//===- FrontendTest.cpp - specs through rbfc::buildAttnModule -------------===//
//
// Good specs must give a module that verifies; bad ones exactly one error,
// located in the spec through a FileLineColLoc.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Frontend/MLIRGen.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/STLExtras.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

using namespace mlir;

namespace {

struct Captured {
  DiagnosticSeverity severity;
  std::string message;
  std::string file;
  unsigned line = 0;
  unsigned column = 0;
  std::vector<Captured> notes;
};

Captured capture(Diagnostic &diag) {
  Captured result{diag.getSeverity(), diag.str(), "", 0, 0, {}};
  if (auto loc = dyn_cast<FileLineColLoc>(diag.getLocation())) {
    result.file = loc.getFilename().str();
    result.line = loc.getLine();
    result.column = loc.getColumn();
  }
  for (Diagnostic &note : diag.getNotes())
    result.notes.push_back(capture(note));
  return result;
}

/// Compiles `text` as `spec.attn` and keeps every diagnostic.
class Frontend : public ::testing::Test {
protected:
  OwningOpRef<ModuleOp> compile(llvm::StringRef text,
                                const rbfc::FrontendOptions &options = {}) {
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      diagnostics.push_back(capture(diag));
      return success();
    });
    return rbfc::buildAttnModule(context, text, "spec.attn", options);
  }

  /// Compiles `text` and checks that it fails with one error, `message`, at
  /// spec.attn:line:column.
  void expectError(llvm::StringRef text, unsigned line, unsigned column,
                   llvm::StringRef message,
                   const rbfc::FrontendOptions &options = {}) {
    SCOPED_TRACE(text.str());
    diagnostics.clear();
    OwningOpRef<ModuleOp> module = compile(text, options);
    EXPECT_FALSE(module);
    ASSERT_EQ(diagnostics.size(), 1u);
    const Captured &error = diagnostics.front();
    EXPECT_EQ(error.severity, DiagnosticSeverity::Error);
    EXPECT_EQ(error.message, message.str());
    EXPECT_EQ(error.file, "spec.attn");
    EXPECT_EQ(error.line, line);
    EXPECT_EQ(error.column, column);
  }

  rbfc::attn::AttentionOp attentionOf(ModuleOp module) {
    rbfc::attn::AttentionOp found;
    module.walk([&](rbfc::attn::AttentionOp op) { found = op; });
    return found;
  }

  MLIRContext context;
  std::vector<Captured> diagnostics;
};

TEST_F(Frontend, RbfSpecVerifies) {
  OwningOpRef<ModuleOp> module = compile("attention rbf {\n"
                                         "  param gamma: f32 = 0.5;\n"
                                         "  score = -gamma * dist2(q, k);\n"
                                         "}\n");
  ASSERT_TRUE(module);
  EXPECT_TRUE(diagnostics.empty());
  EXPECT_TRUE(succeeded(verify(*module)));
  auto func = module->lookupSymbol<func::FuncOp>("rbf");
  ASSERT_TRUE(func);
  // q, k, v and gamma.
  EXPECT_EQ(func.getNumArguments(), 4u);
  rbfc::attn::AttentionOp op = attentionOf(*module);
  ASSERT_TRUE(op);
  EXPECT_TRUE(op.isSoftmax());
  ASSERT_EQ(op.getParamNames().size(), 1u);
  EXPECT_EQ(cast<StringAttr>(op.getParamNames()[0]).getValue(), "gamma");
  auto fallback = dyn_cast<FloatAttr>(op.getParamDefaults()[0]);
  ASSERT_TRUE(fallback);
  EXPECT_EQ(fallback.getValueAsDouble(), 0.5);
  EXPECT_TRUE(op.getMask().empty());
  EXPECT_EQ(
      llvm::range_size(op.getScore().front().getOps<rbfc::attn::Dist2Op>()),
      1u);
}

TEST_F(Frontend, MaskCapturesAndNoneNormalizationVerify) {
  OwningOpRef<ModuleOp> module =
      compile("attention doc {\n"
              "  capture doc: i32[?, ?];\n"
              "  param window: int = 256;\n"
              "  score = dot(q, k) / sqrt(head_dim);\n"
              "  mask = doc[b, q_idx] == doc[b, kv_idx] && "
              "q_idx - kv_idx < window;\n"
              "  normalize = none;\n"
              "}\n");
  ASSERT_TRUE(module);
  EXPECT_TRUE(diagnostics.empty());
  rbfc::attn::AttentionOp op = attentionOf(*module);
  ASSERT_TRUE(op);
  EXPECT_FALSE(op.isSoftmax());
  EXPECT_FALSE(op.getMask().empty());
  EXPECT_EQ(op.getCaptures().size(), 1u);
  auto captureType = cast<RankedTensorType>(op.getCaptures()[0].getType());
  EXPECT_EQ(captureType.getRank(), 2);
  EXPECT_TRUE(captureType.getElementType().isInteger(32));
  auto fallback = dyn_cast<IntegerAttr>(op.getParamDefaults()[0]);
  ASSERT_TRUE(fallback);
  EXPECT_EQ(fallback.getInt(), 256);
}

TEST_F(Frontend, OptionsChooseElementTypeHeadDimAndLse) {
  rbfc::FrontendOptions options;
  options.dtype = "f16";
  options.headDim = 128;
  options.withLse = true;
  OwningOpRef<ModuleOp> module =
      compile("attention s { score = dot(q, k); }", options);
  ASSERT_TRUE(module);
  rbfc::attn::AttentionOp op = attentionOf(*module);
  ASSERT_TRUE(op);
  auto queryType = cast<RankedTensorType>(op.getQuery().getType());
  EXPECT_TRUE(queryType.getElementType().isF16());
  EXPECT_EQ(queryType.getShape()[3], 128);
  ASSERT_TRUE(op.getLse());
  EXPECT_EQ(cast<RankedTensorType>(op.getLse().getType()).getRank(), 3);
}

TEST_F(Frontend, LetsAndConditionalsVerify) {
  OwningOpRef<ModuleOp> module =
      compile("attention l {\n"
              "  param cap = 50.0;\n"
              "  let logits = dot(q, k) / sqrt(head_dim);\n"
              "  let far = q_idx - kv_idx > 16;\n"
              "  score = far ? cap * tanh(logits / cap) : logits;\n"
              "  mask = !far || kv_idx % 2 == 0;\n"
              "}\n");
  ASSERT_TRUE(module);
  EXPECT_TRUE(diagnostics.empty());
  EXPECT_TRUE(succeeded(verify(*module)));
}

TEST_F(Frontend, SyntaxErrorIsLocatedInTheSpec) {
  expectError("attention a {\n  score = dot(q, k) +;\n}", 2, 22,
              "expected an expression, found ';'");
}

TEST_F(Frontend, DuplicateScoreCarriesANote) {
  OwningOpRef<ModuleOp> module =
      compile("attention a {\n  score = 1.0;\n  score = 2.0;\n}");
  EXPECT_FALSE(module);
  ASSERT_EQ(diagnostics.size(), 1u);
  EXPECT_EQ(diagnostics[0].message, "the score is already defined");
  EXPECT_EQ(diagnostics[0].line, 3u);
  ASSERT_EQ(diagnostics[0].notes.size(), 1u);
  EXPECT_EQ(diagnostics[0].notes[0].message, "it was defined here");
  EXPECT_EQ(diagnostics[0].notes[0].line, 2u);
  EXPECT_EQ(diagnostics[0].notes[0].column, 3u);
}

TEST_F(Frontend, MissingScore) {
  expectError("attention a {\n  mask = kv_idx <= q_idx;\n}", 1, 1,
              "attention 'a' has no score; add a line such as "
              "'score = dot(q, k) / sqrt(head_dim);'");
}

TEST_F(Frontend, UnknownNameSuggestsTheClosest) {
  expectError("attention a {\n  mask = kv_idx <= qidx;\n}", 2, 20,
              "unknown name 'qidx'; did you mean 'q_idx'?");
  expectError("attention a { score = zzzzzz; }", 1, 23,
              "unknown name 'zzzzzz'");
}

TEST_F(Frontend, LetUsedBeforeItsDefinition) {
  OwningOpRef<ModuleOp> module = compile("attention a {\n"
                                         "  let x = y + 1;\n"
                                         "  let y = 2;\n"
                                         "  score = x;\n"
                                         "}");
  EXPECT_FALSE(module);
  ASSERT_EQ(diagnostics.size(), 1u);
  EXPECT_EQ(diagnostics[0].message, "'y' is used before its definition");
  EXPECT_EQ(diagnostics[0].line, 2u);
  EXPECT_EQ(diagnostics[0].column, 11u);
  ASSERT_EQ(diagnostics[0].notes.size(), 1u);
  EXPECT_EQ(diagnostics[0].notes[0].message, "'y' is defined here");
  EXPECT_EQ(diagnostics[0].notes[0].line, 3u);
}

TEST_F(Frontend, LetUsedInItsOwnDefinition) {
  expectError("attention a {\n  let x = x * 2;\n  score = x;\n}", 2, 11,
              "'x' is used in its own definition");
}

TEST_F(Frontend, LetIsVisibleOnlyAfterItsStatement) {
  OwningOpRef<ModuleOp> module = compile("attention a {\n"
                                         "  score = x;\n"
                                         "  let x = 1.0;\n"
                                         "}");
  EXPECT_FALSE(module);
  ASSERT_EQ(diagnostics.size(), 1u);
  EXPECT_EQ(diagnostics[0].message, "'x' is used before its definition");
  EXPECT_EQ(diagnostics[0].line, 2u);
  EXPECT_EQ(diagnostics[0].column, 11u);
  ASSERT_EQ(diagnostics[0].notes.size(), 1u);
  EXPECT_EQ(diagnostics[0].notes[0].line, 3u);

  // A let between the mask and the score is visible to the later one only.
  OwningOpRef<ModuleOp> good = compile("attention b {\n"
                                       "  mask = kv_idx <= q_idx;\n"
                                       "  let s = 2.0;\n"
                                       "  score = s * dot(q, k);\n"
                                       "}");
  EXPECT_TRUE(good);
}

TEST_F(Frontend, RedefinitionErrors) {
  expectError("attention a {\n  param g;\n  capture g: f32[?];\n"
              "  score = 1.0;\n}",
              3, 11, "'g' is already defined");
  expectError("attention a { param score; score = 1.0; }", 1, 21,
              "'score' is a keyword and cannot be defined");
  expectError("attention a { let exp = 1; score = 1.0; }", 1, 19,
              "'exp' is a builtin function and cannot be redefined");
  expectError("attention a { param q_idx: int; score = 1.0; }", 1, 21,
              "'q_idx' is a builtin name and cannot be redefined");
}

TEST_F(Frontend, ScoreAndMaskTypes) {
  expectError("attention a {\n  score = q_idx < kv_idx;\n}", 2, 17,
              "the score must be a number, got bool (did you mean to write "
              "it as the mask?)");
  expectError("attention a {\n  score = 1.0;\n  mask = kv_idx - q_idx;\n}", 3,
              17, "the mask must be a bool (e.g. kv_idx <= q_idx), got int");
  expectError("attention a {\n  score = 1.0;\n  mask = dot(q, k) > 0.0;\n}", 3,
              20,
              "the mask may not depend on q or k: it decides which tiles to "
              "skip before any score is computed");
}

TEST_F(Frontend, BuiltinCallErrors) {
  expectError("attention a { score = dot(k, k); }", 1, 23,
              "'dot' takes q and k, as in dot(q, k)");
  expectError("attention a { score = norm2(1.0); }", 1, 29,
              "'norm2' takes q or k, as in norm2(k)");
  expectError("attention a { score = exp(1.0, 2.0); }", 1, 23,
              "'exp' takes 1 argument, got 2");
  expectError("attention a { score = expp(1.0); }", 1, 23,
              "unknown function 'expp' (builtins: dot, norm2, dist2, select, "
              "min, max, abs, float, exp, exp2, log, log2, tanh, sqrt, rsqrt, "
              "floor, ceil)");
  expectError("attention a { score = select(1, 2.0, 3.0); }", 1, 30,
              "the first argument of 'select' must be a bool, got int");
  expectError("attention a { score = 1.0 + q; }", 1, 29,
              "'q' is a vector; use it inside dot(), norm2() or dist2()");
}

TEST_F(Frontend, CaptureUseErrors) {
  const char *prefix = "attention a {\n  capture t: f32[?, ?];\n";
  expectError(std::string(prefix) + "  score = t;\n}", 3, 11,
              "captured tensor 't' must be indexed, e.g. t[h]");
  expectError(std::string(prefix) + "  score = t(h, b);\n}", 3, 11,
              "'t' is a captured tensor; index it with [...], not (...)");
  expectError(std::string(prefix) + "  score = t[h];\n}", 3, 11,
              "'t' has 2 dimensions but is indexed with 1 index");
  expectError(std::string(prefix) + "  score = t[h, 1.5];\n}", 3, 16,
              "index 2 of 't' must be an int, got float");
  expectError(std::string(prefix) + "  score = head_dim[0];\n}", 3, 11,
              "'head_dim' is not a captured tensor and cannot be indexed");
}

TEST_F(Frontend, OperatorTypeErrors) {
  expectError("attention a { score = 1.5 % 2; }", 1, 27,
              "operator '%' needs ints, got float and int");
  expectError("attention a { mask = q_idx && true; score = 1.0; }", 1, 22,
              "operator '&&' needs bools, got int");
  expectError("attention a { mask = true == 1; score = 1.0; }", 1, 27,
              "operator '==' compares a bool with an int");
  expectError("attention a { score = -(q_idx < 1) ; }", 1, 31,
              "unary '-' needs a number, got bool");
  expectError("attention a { mask = !kv_idx; score = 1.0; }", 1, 22,
              "'!' needs a bool, got int");
  expectError("attention a { score = kv_idx > 0 ? 1.0 : true; }", 1, 34,
              "the two arms of '?:' have different types (float and bool)");
  expectError("attention a { score = 2 ? 1.0 : 0.0; }", 1, 23,
              "the condition of '?:' must be a bool, got int");
}

TEST_F(Frontend, ParameterDefaultErrors) {
  expectError("attention a { param n: int = 1.5; score = 1.0; }", 1, 30,
              "the default of int parameter 'n' must be an integer");
  expectError("attention a { param n: int = 4294967296; score = 1.0; }", 1, 30,
              "the default of int parameter 'n' does not fit in 32 bits");
  // inf - inf of integer products is NaN, which fits no int32 either.
  std::string huge = "4503599627370496";
  for (int i = 0; i < 20; ++i)
    huge += " * 4503599627370496";
  expectError("attention a { param n: int = (" + huge + ") - (" + huge +
                  "); score = 1.0; }",
              1, 30 + 2 + static_cast<unsigned>(huge.size()) + 1,
              "the default of int parameter 'n' does not fit in 32 bits");
  expectError("attention a { param g = kv_len * 2; score = 1.0; }", 1, 25,
              "the default of parameter 'g' must be a constant expression "
              "(numbers, head_dim, arithmetic and math functions)");
  expectError("attention a { param n: int = 7 // 0; score = 1.0; }", 1, 32,
              "division by zero in the default of 'n'");
}

TEST_F(Frontend, ParameterDefaultsAreFoldedWithTheHeadDim) {
  rbfc::FrontendOptions options;
  options.headDim = 256;
  OwningOpRef<ModuleOp> module =
      compile("attention a {\n"
              "  param g = 1.0 / sqrt(head_dim);\n"
              "  param n: int = max(head_dim // 3, 2) - 1;\n"
              "  score = g * dot(q, k) + n;\n"
              "}",
              options);
  ASSERT_TRUE(module);
  rbfc::attn::AttentionOp op = attentionOf(*module);
  ASSERT_TRUE(op);
  EXPECT_EQ(cast<FloatAttr>(op.getParamDefaults()[0]).getValueAsDouble(),
            0.0625);
  EXPECT_EQ(cast<IntegerAttr>(op.getParamDefaults()[1]).getInt(), 84);
}

TEST_F(Frontend, IntDefaultMayBeTheSmallestInt32) {
  OwningOpRef<ModuleOp> module = compile(
      "attention a { param n: int = -2147483648; score = 1.0 * n; }");
  ASSERT_TRUE(module);
  rbfc::attn::AttentionOp op = attentionOf(*module);
  ASSERT_TRUE(op);
  EXPECT_EQ(cast<IntegerAttr>(op.getParamDefaults()[0]).getInt(),
            std::numeric_limits<int32_t>::min());
}

TEST_F(Frontend, BadOptionsAreReportedAtTheSpec) {
  rbfc::FrontendOptions dtype;
  dtype.dtype = "f64";
  expectError("\n  attention a { score = 1.0; }", 2, 3,
              "unsupported dtype 'f64' (expected bf16, f16 or f32)", dtype);
  rbfc::FrontendOptions headDim;
  headDim.headDim = 0;
  expectError("attention a { score = 1.0; }", 1, 1,
              "head_dim must be between 1 and 1024, got 0", headDim);
}

} // namespace
