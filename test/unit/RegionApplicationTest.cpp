//===- RegionApplicationTest.cpp - attn regions in a GPU kernel -----------===//
//
// The GPU kernels evaluate the attn regions through RegionApplication. The
// backward kernels will evaluate the gradient regions with it too: a kernel
// extends materialize with its own cases for attn.grad_* ops, a gradient
// region gets its adjoint, and its captures are the op's captures whatever
// arguments come before them.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/RegionApplication.h"
#include "rbfc/Conversion/NVGPU/TargetEmission.h"
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/TypeSwitch.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace mlir;
using namespace rbfc;

namespace {

/// A learnable per-head cap around a tanh: its score_grad reads the cap
/// (a capture after the adjoint and a param in the region's arguments) and
/// adds to the capture's gradient.
constexpr llvm::StringLiteral kCappedSpec = R"(
attention capped {
  param temperature: f32 = 30.0;
  capture cap: f32[?];
  score = cap[h] * tanh(dot(q, k) / temperature);
}
)";

class RegionApplicationTest : public ::testing::Test {
protected:
  RegionApplicationTest() {
    DialectRegistry registry;
    registerGPUBackend(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  /// The canonical op of `spec`, with its gradient regions.
  attn::AttentionOp derive(llvm::StringRef spec) {
    FrontendOptions options;
    options.withLse = true;
    module = buildAttnModule(context, spec, "spec.attn", options);
    EXPECT_TRUE(module);
    PassManager pm(&context);
    buildAttnCanonicalizePipeline(pm);
    buildAttnBackwardPipeline(pm);
    EXPECT_TRUE(succeeded(pm.run(*module)));
    attn::AttentionOp op;
    module->walk([&](attn::AttentionOp found) { op = found; });
    return op;
  }

  /// Declares a kernel with the forward's parameters and a RegionApplication
  /// at its entry, for the block (0, 0) and lane 0.
  RegionApplication &enterKernel(attn::AttentionOp op) {
    OpBuilder moduleBuilder(module->getBodyRegion());
    auto kernels = gpu::GPUModuleOp::create(moduleBuilder, op.getLoc(), "k");
    KernelSignature signature(&context);
    args.addTo(signature, op, /*hasLse=*/true, /*hasWorkspace=*/false,
               /*hasTensorMaps=*/false);
    signature.declare(b, kernels, "test", /*threads=*/128);
    Value zero = arith::ConstantIndexOp::create(b, 0);
    regions.emplace(b, op, args.sizes, args.params, args.captures, zero, zero,
                    zero, /*headDim=*/64);
    return *regions;
  }

  /// An element of S with every value a gradient region may read.
  ElementValues element() {
    auto f32 = [&](double value) -> Value {
      return arith::ConstantOp::create(b, b.getF32FloatAttr(value));
    };
    ElementValues values;
    values.qIdx = arith::ConstantIndexOp::create(b, 3);
    values.kvIdx = arith::ConstantIndexOp::create(b, 5);
    values.dot = f32(2.0);
    values.qScale = f32(0.5);
    values.adjoint = f32(1.0);
    return values;
  }

  MLIRContext context;
  OwningOpRef<ModuleOp> module;
  ImplicitLocOpBuilder b{UnknownLoc::get(&context), &context};
  ForwardArgs args;
  std::optional<RegionApplication> regions;
};

TEST_F(RegionApplicationTest, HookMaterializesGradientOps) {
  attn::AttentionOp op = derive(kCappedSpec);
  RegionApplication &regions = enterKernel(op);
  std::vector<std::string> seen;
  // Result-less ops are the hook's; a null value for any other op leaves
  // it to the built-in cases.
  auto gradients = [&](Operation *attnOp, IRMapping &mapping,
                       const ElementValues &) -> FailureOr<Value> {
    TypeSwitch<Operation *>(attnOp)
        .Case([&](attn::GradScaledDotOp) { seen.push_back("grad_scaled_dot"); })
        .Case([&](attn::GradParamOp grad) {
          seen.push_back("grad_param");
          EXPECT_EQ(mapping.lookup(grad.getParam()), args.params[0]);
        })
        .Case([&](attn::GradCaptureOp grad) {
          seen.push_back("grad_capture");
          auto argument = cast<BlockArgument>(grad.getCapture());
          EXPECT_EQ(argument.getArgNumber() + 1,
                    argument.getOwner()->getNumArguments());
        });
    return Value();
  };
  ASSERT_TRUE(succeeded(
      regions.evaluateGradRegion(op.getScoreGrad(), element(), gradients)));
  llvm::sort(seen);
  // 1 / temperature went to q_scale: its gradient comes from q_scale_grad.
  EXPECT_EQ(seen,
            (std::vector<std::string>{"grad_capture", "grad_scaled_dot"}));
  seen.clear();
  ASSERT_TRUE(succeeded(
      regions.evaluateGradRegion(op.getQScaleGrad(), element(), gradients)));
  EXPECT_EQ(seen, (std::vector<std::string>{"grad_param"}));
  gpu::ReturnOp::create(b);
  EXPECT_TRUE(succeeded(verify(*module)));
  // The cap's load, a built-in case, reads the capture and not the param.
  bool readsCap = false;
  module->walk([&](memref::LoadOp load) {
    readsCap |= load.getMemRef() == args.captures[0].data;
  });
  EXPECT_TRUE(readsCap);
}

TEST_F(RegionApplicationTest, GradientOpsNeedAHook) {
  attn::AttentionOp op = derive(kCappedSpec);
  RegionApplication &regions = enterKernel(op);
  std::vector<std::string> errors;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
    errors.push_back(diag.str());
    return success();
  });
  EXPECT_TRUE(
      failed(regions.evaluateGradRegion(op.getScoreGrad(), element(), {})));
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(errors.front().find("cannot be evaluated by the mma_sync kernel "
                                "(a gradient op"),
            std::string::npos);
}

} // namespace
