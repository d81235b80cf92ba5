//===- DiagonalStagingTest.cpp - which table reads go through windows -----===//
//
// DiagonalStaging stages a score's capture read only where the element it
// reads depends on the score's element through q_idx - kv_idx alone: each
// warp's window holds one value a diagonal, so a read that moves along a
// row, a column or an anti-diagonal would read another element's value.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/DiagonalStaging.h"
#include "rbfc/Conversion/NVGPU/TargetEmission.h"
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <string>

using namespace mlir;
using namespace rbfc;

namespace {

class DiagonalStagingTest : public ::testing::Test {
protected:
  DiagonalStagingTest() {
    DialectRegistry registry;
    registerGPUBackend(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  /// How many of the canonical score's capture reads of `spec` are staged.
  size_t stagedReads(const std::string &spec) {
    module = buildAttnModule(context, spec, "spec.attn", FrontendOptions());
    EXPECT_TRUE(module);
    if (!module)
      return 0;
    PassManager pm(&context);
    buildAttnCanonicalizePipeline(pm);
    EXPECT_TRUE(succeeded(pm.run(*module)));
    attn::AttentionOp op;
    module->walk([&](attn::AttentionOp found) { op = found; });
    return DiagonalStaging::stagedLoads(op).size();
  }

  MLIRContext context;
  OwningOpRef<ModuleOp> module;
};

TEST_F(DiagonalStagingTest, RelativePositionTablesAreStaged) {
  EXPECT_EQ(stagedReads(R"(attention relative_bias {
    capture bias: f32[?, ?];
    score = dot(q, k) + bias[h, q_idx - kv_idx + kv_len - 1];
  })"),
            1u);
  // Bucketed offsets (T5): clamped, so monotone in the diagonal.
  EXPECT_EQ(stagedReads(R"(attention buckets {
    capture bias: f32[?, ?];
    score = dot(q, k) + bias[h, min(max(kv_idx - q_idx, -8), 8) + 8];
  })"),
            1u);
  // A multiple of the diagonal.
  EXPECT_EQ(stagedReads(R"(attention wide {
    capture bias: f32[?, ?];
    score = dot(q, k) + bias[h, 2 * (q_idx - kv_idx) + kv_len];
  })"),
            1u);
}

TEST_F(DiagonalStagingTest, OtherReadsAreNot) {
  // Uniform over a (batch, head): read once, nothing to stage.
  EXPECT_EQ(stagedReads(R"(attention alibi {
    capture slopes: f32[?];
    score = dot(q, k) + slopes[h] * (kv_idx - q_idx);
  })"),
            0u);
  // Along a row or a column of the scores.
  EXPECT_EQ(stagedReads(R"(attention rows {
    capture bias: f32[?, ?];
    score = dot(q, k) + bias[h, q_idx] + bias[h, kv_idx];
  })"),
            0u);
  // Along an anti-diagonal.
  EXPECT_EQ(stagedReads(R"(attention anti {
    capture bias: f32[?, ?];
    score = dot(q, k) + bias[h, q_idx + kv_idx];
  })"),
            0u);
}

} // namespace
