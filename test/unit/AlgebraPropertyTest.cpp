//===- AlgebraPropertyTest.cpp - the canonical form keeps the meaning -----===//
//
// Random score and mask expressions from the .attn grammar are compiled
// twice: as written, and through the canonical pipeline. The float64
// reference interpreter must give the same outputs and log-sum-exp for both
// (up to the f32 rounding of the constants the passes fold), and every tile
// the classifier calls all-kept or all-masked must be so element by element.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Testing/RandomSpecs.h"
#include "rbfc/Testing/ReferenceInterpreter.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

using namespace mlir;
using namespace rbfc;

namespace {

uint64_t runSeed() {
  static const uint64_t seed = [] {
    const char *fixed = std::getenv("RBFC_TEST_SEED");
    uint64_t value = fixed ? std::strtoull(fixed, nullptr, 10)
                           : std::random_device{}();
    std::printf("AlgebraPropertyTest seed: %llu (set RBFC_TEST_SEED to "
                "repeat)\n",
                static_cast<unsigned long long>(value));
    return value;
  }();
  return seed;
}

struct Compiled {
  OwningOpRef<ModuleOp> module;
  attn::AttentionOp op;
};

class AlgebraPropertyTest : public ::testing::Test {
protected:
  AlgebraPropertyTest() {
    loadFrontendDialects(context);
    context.getDiagEngine().registerHandler([this](Diagnostic &diag) {
      diagnostics += diag.str() + "\n";
      return success();
    });
  }

  Compiled compile(const std::string &spec, bool canonical) {
    FrontendOptions options;
    options.headDim = 8;
    options.dtype = "f32";
    Compiled result;
    result.module = buildAttnModule(context, spec, "random.attn", options);
    if (!result.module)
      return result;
    if (canonical) {
      PassManager pm(&context);
      buildAttnCanonicalizePipeline(pm);
      if (failed(pm.run(*result.module))) {
        result.module = nullptr;
        return result;
      }
    }
    result.module->walk([&](attn::AttentionOp op) { result.op = op; });
    return result;
  }

  MLIRContext context;
  std::string diagnostics;
};

/// ||actual - expected|| / max(||expected||, floor): the floor keeps a
/// result that is exactly zero (the log-sum-exp of one key with score 0)
/// from turning round-off into a huge relative error.
double relativeError(const std::vector<double> &actual,
                     const std::vector<double> &expected, double floor) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (std::isinf(expected[i]) && actual[i] == expected[i])
      continue;
    diff += (actual[i] - expected[i]) * (actual[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), floor);
}

TEST_F(AlgebraPropertyTest, CanonicalFormComputesTheSameAttention) {
  test::ExpressionGenerator gen(runSeed());
  constexpr int kCases = 400;
  // Folded constants are f32: log2(e) and products of user constants carry
  // a relative rounding of ~6e-8 per term, scaled by the score magnitude.
  constexpr double kTolerance = 1e-5;
  double worst = 0;
  std::string worstSpec;
  for (int c = 0; c < kCases; ++c) {
    bool softmax = gen.pick(2) == 0;
    std::string spec = test::makeSpec(gen.score(3), gen.pick(2) ? gen.mask(2) : "",
                                softmax);
    Compiled original = compile(spec, false);
    Compiled canonical = compile(spec, true);
    ASSERT_TRUE(original.op && canonical.op)
        << "spec failed to compile:\n" << spec << diagnostics;
    test::AttentionInputs inputs = test::randomInputs(gen);
    std::string error;
    auto expected = test::runReferenceAttention(original.op, inputs, error);
    ASSERT_TRUE(succeeded(expected)) << error;
    auto actual = test::runReferenceAttention(canonical.op, inputs, error);
    ASSERT_TRUE(succeeded(actual)) << error;
    double outputError =
        relativeError(actual->output, expected->output, 1e-9);
    double lseError = relativeError(actual->lse, expected->lse, 1.0);
    double caseError = std::max(outputError, lseError);
    if (!(caseError <= worst)) {
      worst = caseError;
      worstSpec = spec;
    }
    ASSERT_LE(outputError, kTolerance) << "output differs for\n" << spec;
    ASSERT_LE(lseError, kTolerance) << "lse differs for\n" << spec;
  }
  std::printf("worst relative error over %d random specs: %.3g\n%s", kCases,
              worst, worstSpec.c_str());
}

TEST_F(AlgebraPropertyTest, TileClassesAreSound) {
  test::ExpressionGenerator gen(runSeed() + 1);
  constexpr int kCases = 300;
  int decided = 0, tiles = 0;
  for (int c = 0; c < kCases; ++c) {
    std::string spec = test::makeSpec("dot(q, k)", gen.mask(3), true);
    Compiled original = compile(spec, false);
    Compiled canonical = compile(spec, true);
    ASSERT_TRUE(original.op && canonical.op) << spec << diagnostics;
    test::AttentionInputs inputs = test::randomInputs(gen);
    int64_t tileM = 1 + gen.pick(5), tileN = 1 + gen.pick(5);
    for (int64_t b = 0; b < inputs.batch; ++b)
      for (int64_t h = 0; h < inputs.heads; ++h)
        for (int64_t q0 = 0; q0 < inputs.qLen; q0 += tileM)
          for (int64_t k0 = 0; k0 < inputs.kvLen; k0 += tileN) {
            int64_t q1 = std::min(q0 + tileM, inputs.qLen) - 1;
            int64_t k1 = std::min(k0 + tileN, inputs.kvLen) - 1;
            std::string error;
            auto facts = test::classifyTile(canonical.op, inputs, b, h, q0, q1,
                                            k0, k1, error);
            ASSERT_TRUE(succeeded(facts)) << error;
            ++tiles;
            decided += facts->first || facts->second;
            for (int64_t i = q0; i <= q1; ++i)
              for (int64_t j = k0; j <= k1; ++j) {
                auto keep = test::maskKeeps(original.op, inputs, b, h, i, j,
                                            error);
                ASSERT_TRUE(succeeded(keep)) << error;
                ASSERT_FALSE(facts->first && !*keep)
                    << "tile called all-kept masks (" << i << ", " << j
                    << ")\n" << spec;
                ASSERT_FALSE(facts->second && *keep)
                    << "tile called all-masked keeps (" << i << ", " << j
                    << ")\n" << spec;
              }
          }
  }
  std::printf("tiles decided without per-element tests: %d of %d\n", decided,
              tiles);
  // The classifier must decide a good share, or it is not doing its job.
  EXPECT_GT(decided, tiles / 4);
}

} // namespace
