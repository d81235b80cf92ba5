//===- HostBackwardTest.cpp - the host backward against float64 -----------===//
//
// The gradients the host backend computes (rbfc::host::HostKernel::backward:
// q, k, v, every f32 parameter and f32 captured tensor) against the float64
// chain rule of the reference interpreter on the ORIGINAL spec IR, for every
// example spec, on fresh random inputs and output gradients. Gradients are
// NaN-poisoned before every call. Errors are measured by GradientError
// (NumericProblem.h): relative to the gradient's largest value or, for a
// small difference of large terms, to a fraction of the sum of their
// magnitudes: 1e-2 in f32, 5e-2 for 16-bit inputs, whose backward reads the
// output rounded to 16 bits (as FlashAttention's does: D = rowsum(dO * O))
// and so carries an error of a few 1e-4 of that sum.
//
//===----------------------------------------------------------------------===//
#include "NumericProblem.h"

#include "rbfc/Testing/RandomSpecs.h"

#include <cstring>

using namespace rbfc;

namespace {

using namespace rbfc::numeric;

/// A forward problem with the backward's tensors and results.
class GradProblem : public Problem {
public:
  GradProblem(std::string spec, std::string dtype, int64_t headDim, Shape shape,
              std::mt19937_64 &rng, std::map<std::string, double> params = {})
      : Problem(spec, dtype, headDim, shape, rng, std::move(params)),
        outputGrad(dtypeOf(this->dtype), count(shape.heads, shape.qLen)),
        queryGrad(dtypeOf(this->dtype), count(shape.heads, shape.qLen)),
        keyGrad(dtypeOf(this->dtype), count(shape.kvHeads, shape.kvLen)),
        valueGrad(dtypeOf(this->dtype), count(shape.kvHeads, shape.kvLen)),
        lseGrad(shape.batch * shape.heads * shape.qLen) {
    std::normal_distribution<double> normal;
    for (size_t i = 0; i < outputGrad.size(); ++i)
      outputGrad.set(i, normal(rng));
    for (float &x : lseGrad)
      x = normal(rng);
    withBackward = true;
  }

  HostKernel &kernel() {
    return kernelFor(spec, dtype, headDim, true, withBackward, tiling);
  }

  /// The forward (with lse), then the backward asking for every f32
  /// parameter's and capture's gradient, on NaN-poisoned gradients.
  host::HostBackwardArgs backwardArgs(bool withLseGrad) {
    host::HostBackwardArgs call;
    host::HostKernelArgs forward = args(true);
    call.query = forward.query;
    call.key = forward.key;
    call.value = forward.value;
    call.output = forward.output;
    call.lse = forward.lse;
    call.params = forward.params;
    call.captures = forward.captures;
    call.outputGrad = outputGrad.ref(forward.output.sizes);
    if (withLseGrad)
      call.lseGrad = {lseGrad.data(), ElementType::f32, forward.lse.sizes,
                      forward.lse.strides};
    call.queryGrad = queryGrad.ref(forward.query.sizes);
    call.keyGrad = keyGrad.ref(forward.key.sizes);
    call.valueGrad = valueGrad.ref(forward.value.sizes);
    for (const HostKernel::Param &param : kernel().params())
      if (!param.isInteger)
        call.paramGrads[param.name] = &paramGrads[param.name];
    for (auto &[name, tensor] : call.captures)
      if (tensor.type == ElementType::f32) {
        captureGrads[name].assign(numel(tensor.sizes), NAN);
        call.captureGrads[name] = {captureGrads[name].data(), ElementType::f32,
                                   tensor.sizes,
                                   host::contiguousStrides(tensor.sizes)};
      }
    return call;
  }

  void runBackward(bool withLseGrad, unsigned numThreads = 0) {
    runKernel(/*withLse=*/true);
    for (Buffer *buffer : {&queryGrad, &keyGrad, &valueGrad})
      for (size_t i = 0; i < buffer->size(); ++i)
        buffer->set(i, kNaN);
    for (auto &[name, value] : paramGrads)
      value = NAN;
    host::HostBackwardArgs call = backwardArgs(withLseGrad);
    call.numThreads = numThreads;
    call.schedule = schedule;
    llvm::Error error = kernel().backward(call);
    ASSERT_FALSE(error) << llvm::toString(std::move(error));
  }

  test::AttentionGradients referenceGradients(bool withLseGrad) {
    mlir::MLIRContext context;
    auto module = referenceModule(context);
    attn::AttentionOp op = attentionIn(*module);
    std::vector<double> dO, dLse;
    for (size_t i = 0; i < outputGrad.size(); ++i)
      dO.push_back(outputGrad.get(i));
    if (withLseGrad)
      dLse.assign(lseGrad.begin(), lseGrad.end());
    std::string error;
    // D is taken from the output as stored, rounded to its type.
    Buffer stored(dtypeOf(dtype), 1);
    auto roundOutput = [&stored](double value) {
      stored.set(0, value);
      return stored.get(0);
    };
    auto grads = test::runReferenceAttentionGrad(op, referenceInputs(op), dO,
                                                 dLse, error, roundOutput);
    EXPECT_TRUE(mlir::succeeded(grads)) << error;
    this->op = op;
    return mlir::succeeded(grads) ? *grads : test::AttentionGradients{};
  }

  /// Compares every gradient; reports the worst error and where.
  void compare(const test::AttentionGradients &reference) {
    double tolerance = dtype == "f32" ? 1e-4 : 2e-2;
    // f16 gradients below its normal range keep only the subnormal spacing
    // 2^-24 of absolute precision (unnormalised `none` weights reach 1e-8).
    GradientError error(dtype == "f32" ? 1e-2 : 5e-2,
                        dtype == "f16" ? std::ldexp(1.0, -24) : 0.0);
    auto of = [](const Buffer &buffer) {
      return [&buffer](size_t i) { return buffer.get(i); };
    };
    error.add("dq", of(queryGrad), reference.query, reference.queryScale,
              reference.queryRounding);
    error.add("dk", of(keyGrad), reference.key, reference.keyScale,
              reference.keyRounding);
    error.add("dv", of(valueGrad), reference.value, reference.valueScale);
    for (auto [i, name] : llvm::enumerate(op.getParamNames())) {
      auto found = paramGrads.find(mlir::cast<mlir::StringAttr>(name).str());
      if (found != paramGrads.end())
        error.add("d" + found->first,
                  [&](size_t) { return double(found->second); },
                  {reference.params[i]}, {reference.paramScale[i]},
                  {reference.paramRounding[i]});
    }
    for (auto [i, name] : llvm::enumerate(op.getCaptureNames())) {
      auto found = captureGrads.find(mlir::cast<mlir::StringAttr>(name).str());
      if (found != captureGrads.end())
        error.add(
            "d" + found->first,
            [&](size_t e) { return double(found->second[e]); },
            reference.captures[i], reference.captureScale[i],
            reference.captureRounding[i]);
    }
    worstSeen()["grad " + dtype] =
        std::max(worstSeen()["grad " + dtype], error.worst);
    EXPECT_LE(error.worst, tolerance)
        << describe(spec, dtype, headDim, shape) << " (seed " << testSeed()
        << "): worst relative gradient error " << error.worst << " at "
        << error.where;
  }

  /// The bytes of the gradients of q, k and v.
  std::vector<uint8_t> queryKeyValueGradBits() const {
    std::vector<uint8_t> bits;
    for (const Buffer *buffer : {&queryGrad, &keyGrad, &valueGrad})
      llvm::append_range(bits, buffer->bytes);
    return bits;
  }

  static size_t numel(const std::vector<int64_t> &sizes) {
    size_t count = 1;
    for (int64_t size : sizes)
      count *= size;
    return count;
  }

  host::BackwardSchedule schedule = host::BackwardSchedule::automatic;
  Buffer outputGrad, queryGrad, keyGrad, valueGrad;
  std::vector<float> lseGrad;
  std::map<std::string, float> paramGrads;
  std::map<std::string, std::vector<float>> captureGrads;
  attn::AttentionOp op;
};

struct BackwardCase {
  const char *dtype;
  int64_t headDim;
};

class HostBackwardGallery
    : public ::testing::TestWithParam<std::tuple<const char *, BackwardCase>> {
};

TEST_P(HostBackwardGallery, MatchesFloat64ChainRule) {
  std::string spec = std::get<0>(GetParam());
  BackwardCase c = std::get<1>(GetParam());
  std::mt19937_64 rng(testSeed() ^
                      std::hash<std::string>{}("backward" + spec + c.dtype +
                                               std::to_string(c.headDim)));
  // N=1, N=17, q_len != kv_len both ways, GQA 4:1, several tiles.
  std::vector<Shape> shapes = {
      {1, 2, 2, 1, 1}, {1, 2, 1, 17, 17}, {2, 4, 1, 33, 70}, {1, 8, 2, 40, 23}};
  if (c.headDim > 64) // the wider head dimensions get a smaller gallery
    shapes = {{1, 2, 1, 17, 17}, {1, 4, 1, 30, 45}};
  for (auto [index, shape] : llvm::enumerate(shapes)) {
    // Every other problem also backpropagates through the log-sum-exp;
    // both backward schedules run (the fused one on the even problems).
    bool withLseGrad = index % 2 == 1;
    GradProblem problem(spec, c.dtype, c.headDim, shape, rng, testParams(spec));
    problem.schedule = withLseGrad ? host::BackwardSchedule::split
                                   : host::BackwardSchedule::fused;
    problem.runBackward(withLseGrad);
    problem.compare(problem.referenceGradients(withLseGrad));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Examples, HostBackwardGallery,
    ::testing::Combine(::testing::ValuesIn(kSpecs),
                       ::testing::Values(BackwardCase{"f32", 64},
                                         BackwardCase{"f32", 32},
                                         BackwardCase{"f32", 80},
                                         BackwardCase{"bf16", 96},
                                         BackwardCase{"f32", 128},
                                         BackwardCase{"bf16", 64},
                                         BackwardCase{"f16", 64})),
    [](const auto &info) {
      BackwardCase c = std::get<1>(info.param);
      return std::string(std::get<0>(info.param)) + "_" + c.dtype + "_d" +
             std::to_string(c.headDim);
    });

/// The forward (with LSE) and the gradients of `spec` in f32 under
/// `tiling` against the float64 reference.
static void expectBlockingMatchesReference(const char *spec, int64_t headDim,
                                           const Shape &shape,
                                           const host::HostTiling &tiling,
                                           std::mt19937_64 &rng) {
  GradProblem problem(spec, "f32", headDim, shape, rng, testParams(spec));
  problem.tiling = tiling;
  problem.runBackward(/*withLseGrad=*/true);
  problem.Problem::compare(problem.runReference(), /*withLse=*/true);
  problem.compare(problem.referenceGradients(/*withLseGrad=*/true));
}

// The blocking follows the CPU (docs/host-backend.md), and the gallery runs
// this machine's. AVX2's and AVX-512's (8 and 16 key lanes, as chosen for
// them), and an odd one: 4 lanes, 3 rows per step, tiles that are multiples
// of neither, steps of 2 of the 3 key vectors and 3 of the 16 head_dim
// vectors (each pass's last chunk narrower), give the forward and the
// gradients of the reference too.
TEST(HostBackward, OtherBlockingsMatchTheReference) {
  std::mt19937_64 rng(testSeed() + 7);
  host::HostTiling avx2, avx512, odd;
  avx2.keyLanes = 8;
  avx512.keyLanes = 16;
  odd.tileM = 7;
  odd.tileN = 10;
  odd.keyLanes = 4;
  odd.rowsPerStep = 3;
  odd.keyVectorsPerStep = 2;
  odd.headDimVectorsPerStep = 3;
  for (const host::HostTiling &tiling : {avx2, avx512, odd})
    for (const char *spec : {"causal", "alibi", "relative_bias", "rbf_none",
                             "softcap", "document_mask"}) {
      SCOPED_TRACE(std::string(spec) + " with " +
                   std::to_string(tiling.keyLanes) + " key lanes");
      expectBlockingMatchesReference(spec, 64, {2, 4, 1, 33, 70}, tiling, rng);
    }
}

// Query tiles three times as tall as the key tiles (96 rows of blocks of
// 6 against 32 keys, AVX2's widths on any CPU): inside a tile the mask
// does not keep whole, each row block is classified on its own, so the
// diagonal of causal, the window's two edges and the documents' boundaries
// leave blocks that are skipped and blocks that run without the mask next
// to those that take it per element. 200 x 230 puts several of each in
// every item, and the last query tile short of 96 rows.
TEST(HostBackward, TallQueryTilesClassifyEachRowBlock) {
  std::mt19937_64 rng(testSeed() + 11);
  host::HostTiling tall;
  tall.tileM = 96;
  tall.tileN = 32;
  tall.keyLanes = 8;
  tall.rowsPerStep = 6;
  for (const char *spec : {"causal", "sliding_window", "document_mask",
                           "prefix_lm", "rbf_causal"}) {
    SCOPED_TRACE(spec);
    expectBlockingMatchesReference(spec, 32, {1, 2, 1, 200, 230}, tall, rng);
  }
}

TEST(HostBackward, SameBitsOnEveryThreadCount) {
  std::mt19937_64 rng(testSeed() + 10);
  for (auto schedule :
       {host::BackwardSchedule::split, host::BackwardSchedule::fused})
  for (const char *spec : {"relative_bias", "alibi", "rbf_head_gamma"}) {
    GradProblem problem(spec, "f32", 32, {2, 4, 2, 70, 90}, rng);
    problem.schedule = schedule;
    std::vector<uint8_t> first;
    for (unsigned threads : {1u, 2u, 3u}) {
      problem.runBackward(true, threads);
      std::vector<uint8_t> bits = problem.queryKeyValueGradBits();
      for (auto &[name, values] : problem.captureGrads) {
        auto *raw = reinterpret_cast<const uint8_t *>(values.data());
        bits.insert(bits.end(), raw, raw + 4 * values.size());
      }
      if (first.empty())
        first = bits;
      else
        EXPECT_TRUE(bits == first)
            << spec << ": " << threads << " threads changed the gradients";
    }
  }
}

// The fused schedule adds the same dS k and dS q in the same order as the
// split one: the gradients of q, k and v are the same bits. The parameters'
// and captures' partial sums fall into other chunks: within float rounding,
// which for a parameter whose terms cancel is more than the sum's own
// precision (softcap's cap, bf16: 0.19224560 split, 0.19224310 fused, 1.3e-5
// apart relative, seed 2007170981; RBF's gamma, f32: 3.8668213 split,
// 3.8672485 fused, 1.1e-4 apart, seed 4145301861): 1e-4 of it, or 1e-5 of
// the sum of its terms' magnitudes (the float64 reference's scale).
TEST(HostBackward, FusedScheduleGivesTheSplitSchedulesGradients) {
  std::mt19937_64 rng(testSeed() + 12);
  for (const char *spec : kSpecs)
    for (const char *dtype : {"f32", "bf16"}) {
      SCOPED_TRACE(std::string(spec) + " " + dtype);
      GradProblem problem(spec, dtype, 64, {2, 4, 2, 45, 70}, rng,
                          testParams(spec));
      problem.schedule = host::BackwardSchedule::split;
      problem.runBackward(/*withLseGrad=*/true);
      std::vector<uint8_t> split = problem.queryKeyValueGradBits();
      auto params = problem.paramGrads;
      auto captures = problem.captureGrads;
      problem.schedule = host::BackwardSchedule::fused;
      problem.runBackward(/*withLseGrad=*/true);
      EXPECT_TRUE(problem.queryKeyValueGradBits() == split)
          << "dq, dk or dv differ between schedules";
      test::AttentionGradients reference =
          problem.referenceGradients(/*withLseGrad=*/true);
      auto termsOf = [&](const std::string &name) {
        for (auto [i, param] : llvm::enumerate(problem.op.getParamNames()))
          if (mlir::cast<mlir::StringAttr>(param).str() == name &&
              i < reference.paramScale.size())
            return reference.paramScale[i];
        return 0.0;
      };
      for (auto &[name, value] : params) {
        double fused = problem.paramGrads[name];
        double tolerance = std::max(
            1e-4 * std::max({std::abs(double(value)), std::abs(fused), 1e-3}),
            1e-5 * termsOf(name));
        EXPECT_LE(std::abs(value - fused), tolerance)
            << "d" << name << ": " << value << " split, " << fused << " fused";
      }
      for (auto &[name, values] : captures) {
        double largest = 0;
        for (float x : values)
          largest = std::max(largest, double(std::abs(x)));
        for (size_t i = 0; i < values.size(); ++i)
          EXPECT_LE(std::abs(values[i] - problem.captureGrads[name][i]),
                    1e-5 * std::max(largest, 1e-3))
              << "d" << name << "[" << i << "]";
      }
    }
}

/// Both backward schedules, for the tests that pin down what a gradient
/// holds.
constexpr host::BackwardSchedule kSchedules[] = {
    host::BackwardSchedule::split, host::BackwardSchedule::fused};

TEST(HostBackward, FullyMaskedRowsGiveZeroGradients) {
  for (host::BackwardSchedule schedule : kSchedules) {
    SCOPED_TRACE(schedule == host::BackwardSchedule::split ? "split"
                                                           : "fused");
    std::mt19937_64 rng(testSeed() + 11);
    // window = 0 masks every key of every row.
    GradProblem none("sliding_window", "f32", 64, {1, 2, 2, 20, 30}, rng,
                     {{"window", 0}});
    none.schedule = schedule;
    none.runBackward(true);
    for (Buffer *buffer : {&none.queryGrad, &none.keyGrad, &none.valueGrad})
      for (size_t i = 0; i < buffer->size(); ++i)
        ASSERT_EQ(buffer->get(i), 0.0) << "element " << i;

    // Queries past the keys' last document see no key: their dq is 0.
    GradProblem docs("document_mask", "bf16", 64, {1, 2, 1, 40, 20}, rng);
    for (int64_t i = 0; i < 40; ++i)
      docs.docIds[i] = i < 10 ? 0 : i < 20 ? 1 : 2;
    docs.schedule = schedule;
    docs.runBackward(true);
    docs.compare(docs.referenceGradients(true));
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 20; i < 40; ++i)
        for (int64_t c = 0; c < 64; ++c)
          ASSERT_EQ(docs.queryGrad.get((h * 40 + i) * 64 + c), 0.0);
  }
}

TEST(HostBackward, NaNReachesOnlyTheGradientsItShould) {
  for (host::BackwardSchedule schedule : kSchedules) {
    SCOPED_TRACE(schedule == host::BackwardSchedule::split ? "split"
                                                           : "fused");
    std::mt19937_64 rng(testSeed() + 12);
    const int64_t n = 90, d = 64;
    // A NaN in value row 70 of a causal op: dP is NaN exactly for the rows
    // that keep key 70 (rows >= 70), so their dq and, through D, the dk of
    // every key they keep; dV = P^T dO never reads V.
    GradProblem causal("causal", "f32", d, {1, 2, 1, n, n}, rng);
    causal.value.set(70 * d + 5, kNaN);
    causal.schedule = schedule;
    causal.runBackward(false);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < n; ++i)
        EXPECT_EQ(std::isnan(causal.queryGrad.get((h * n + i) * d + 1)), i >= 70)
            << "dq head " << h << " row " << i;
    for (int64_t j = 0; j < n; ++j) {
      EXPECT_TRUE(std::isnan(causal.keyGrad.get(j * d + 1))) << "dk row " << j;
      EXPECT_FALSE(std::isnan(causal.valueGrad.get(j * d + 1))) << "dv row " << j;
    }
    // A NaN in query row 3 of head 1 (of two kv heads): that row's dq and
    // the dk/dv of kv head 1, nothing of kv head 0.
    GradProblem softmax("softmax", "f32", d, {1, 2, 2, n, n}, rng);
    softmax.query.set((1 * n + 3) * d, kNaN);
    softmax.schedule = schedule;
    softmax.runBackward(false);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(std::isnan(softmax.queryGrad.get((h * n + i) * d + 1)),
                  h == 1 && i == 3)
            << "dq head " << h << " row " << i;
        EXPECT_EQ(std::isnan(softmax.keyGrad.get((h * n + i) * d + 1)), h == 1);
        EXPECT_EQ(std::isnan(softmax.valueGrad.get((h * n + i) * d + 1)), h == 1);
      }
  }
}

TEST(HostBackward, StridedViews) {
  std::mt19937_64 rng(testSeed() + 13);
  Shape shape{2, 4, 2, 37, 45};
  const int64_t d = 32;
  GradProblem problem("relative_bias", "f32", d, shape, rng);
  problem.runBackward(true);
  auto reference = problem.referenceGradients(true);
  problem.compare(reference);
  // dq into a [batch, q_len, heads, head_dim] buffer (a fused projection's
  // layout), dk into every other row of a buffer twice as long.
  std::vector<float> interleaved(problem.queryGrad.size(), NAN);
  std::vector<float> spaced(2 * problem.keyGrad.size(), NAN);
  host::HostBackwardArgs args = problem.backwardArgs(true);
  args.queryGrad = {interleaved.data(),
                    ElementType::f32,
                    args.queryGrad.sizes,
                    {shape.qLen * shape.heads * d, d, shape.heads * d, 1}};
  args.keyGrad = {
      spaced.data(),
      ElementType::f32,
      args.keyGrad.sizes,
      {shape.kvHeads * shape.kvLen * 2 * d, shape.kvLen * 2 * d, 2 * d, 1}};
  llvm::Error error = problem.kernel().backward(args);
  ASSERT_FALSE(error) << llvm::toString(std::move(error));
  for (int64_t b = 0; b < shape.batch; ++b)
    for (int64_t h = 0; h < shape.heads; ++h)
      for (int64_t i = 0; i < shape.qLen; ++i)
        for (int64_t c = 0; c < d; ++c)
          ASSERT_EQ(
              interleaved[((b * shape.qLen + i) * shape.heads + h) * d + c],
              problem.queryGrad.get(
                  ((b * shape.heads + h) * shape.qLen + i) * d + c));
  for (size_t row = 0; row < problem.keyGrad.size() / d; ++row)
    for (int64_t c = 0; c < d; ++c)
      ASSERT_EQ(spaced[2 * row * d + c], problem.keyGrad.get(row * d + c));
}

TEST(HostBackward, BadArgumentsAreErrors) {
  std::mt19937_64 rng(testSeed() + 14);
  GradProblem problem("alibi", "f32", 64, {1, 4, 2, 8, 8}, rng);
  problem.runKernel(true);
  auto expectError = [&](GradProblem &of, host::HostBackwardArgs args,
                         const char *needle) {
    llvm::Error error = of.kernel().backward(args);
    ASSERT_TRUE(static_cast<bool>(error)) << "no error for " << needle;
    std::string message = llvm::toString(std::move(error));
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  };
  host::HostBackwardArgs args = problem.backwardArgs(false);
  args.keyGrad.sizes[2] = 7;
  expectError(problem, args, "key gradient must have the shape of the key");
  args = problem.backwardArgs(false);
  args.lse = {};
  expectError(problem, args, "lse is missing");
  args = problem.backwardArgs(false);
  args.captureGrads["slopes"].sizes = {3};
  expectError(problem, args,
              "the gradient of capture 'slopes' must have the shape");
  args = problem.backwardArgs(false);
  args.paramGrads["gamma"] = nullptr;
  expectError(problem, args, "parameter 'gamma', which the spec does not have");
  args = problem.backwardArgs(false);
  args.outputGrad.type = ElementType::bf16;
  expectError(problem, args, "output gradient has element type bf16");

  GradProblem docs("document_mask", "f32", 64, {1, 2, 2, 8, 8}, rng);
  args = docs.backwardArgs(false);
  args.captureGrads["doc"] = args.captures["doc"];
  expectError(docs, args, "only f32 captures have a gradient");
  GradProblem window("sliding_window", "f32", 64, {1, 2, 2, 8, 8}, rng);
  static float sink;
  args = window.backwardArgs(false);
  args.paramGrads["window"] = &sink;
  expectError(window, args, "parameter 'window' is an int");
  // A kernel compiled without the backward says so.
  llvm::Error error =
      kernelFor("alibi", "f32", 64, true).backward(problem.backwardArgs(false));
  ASSERT_TRUE(static_cast<bool>(error));
  EXPECT_NE(llvm::toString(std::move(error)).find("without the backward"),
            std::string::npos);
}

TEST(HostBackward, RandomSpecsMatchTheChainRule) {
  // The algebra property test's random specs (scores of dot products,
  // norms, distances, parameters, captures indexed by q_idx, kv_idx and h,
  // positions, tanh, select, divisions; both normalisations; random masks),
  // each compiled with its backward and checked in f32 against the float64
  // chain rule on the spec as written.
  test::ExpressionGenerator gen(testSeed() + 15);
  constexpr int kCases = 60;
  double worst = 0;
  for (int c = 0; c < kCases; ++c) {
    bool softmax = gen.pick(2) == 0;
    std::string spec =
        test::makeSpec(gen.score(3), gen.pick(2) ? gen.mask(2) : "", softmax);
    host::HostKernelOptions options;
    options.headDim = 8;
    options.withBackward = true;
    auto kernel = HostKernel::compile(spec, "random.attn", options);
    ASSERT_TRUE(static_cast<bool>(kernel))
        << spec << llvm::toString(kernel.takeError());
    test::AttentionInputs in = test::randomInputs(gen);
    // The kernel's f32 inputs, and the same values for the reference.
    auto toFloat = [](std::vector<double> &values) {
      std::vector<float> rounded(values.begin(), values.end());
      values.assign(rounded.begin(), rounded.end());
      return rounded;
    };
    std::vector<float> q = toFloat(in.query), k = toFloat(in.key),
                       v = toFloat(in.value);
    std::vector<std::vector<float>> captures;
    for (test::CaptureData &capture : in.captures)
      captures.push_back(toFloat(capture.values));
    std::vector<int32_t> doc(in.captures[3].values.begin(),
                             in.captures[3].values.end());
    in.params[0] = float(in.params[0]);
    in.params[1] = float(in.params[1]);
    std::vector<int64_t> qSizes{in.batch, in.heads, in.qLen, in.headDim},
        kvSizes{in.batch, in.kvHeads, in.kvLen, in.headDim},
        rowSizes{in.batch, in.heads, in.qLen};
    auto ref = [](auto &data, ElementType type, std::vector<int64_t> sizes) {
      return TensorRef{data.data(), type, sizes,
                       host::contiguousStrides(sizes)};
    };
    std::vector<float> o(q.size(), NAN), lse(in.batch * in.heads * in.qLen),
        dO(q.size()), dLse(lse.size()), dq(q.size(), NAN), dk(k.size(), NAN),
        dv(v.size(), NAN);
    std::vector<double> dOReference, dLseReference;
    for (float &x : dO)
      dOReference.push_back(x = float(gen.uniform(-1, 1)));
    bool withLseGrad = gen.pick(2) == 0;
    for (float &x : dLse)
      x = float(gen.uniform(-1, 1));
    if (withLseGrad)
      dLseReference.assign(dLse.begin(), dLse.end());

    host::HostBackwardArgs args;
    args.query = ref(q, ElementType::f32, qSizes);
    args.key = ref(k, ElementType::f32, kvSizes);
    args.value = ref(v, ElementType::f32, kvSizes);
    args.output = ref(o, ElementType::f32, qSizes);
    args.lse = ref(lse, ElementType::f32, rowSizes);
    args.params = {
        {"g", in.params[0]}, {"s", in.params[1]}, {"w", in.params[2]}};
    const char *names[] = {"bq", "bk", "bh"};
    for (int i = 0; i < 3; ++i)
      args.captures[names[i]] =
          ref(captures[i], ElementType::f32, in.captures[i].shape);
    args.captures["doc"] = ref(doc, ElementType::i32, in.captures[3].shape);
    host::HostKernelArgs forward;
    forward.query = args.query;
    forward.key = args.key;
    forward.value = args.value;
    forward.output = args.output;
    forward.lse = args.lse;
    forward.params = args.params;
    forward.captures = args.captures;
    llvm::Error error = (*kernel)->run(forward);
    ASSERT_FALSE(error) << llvm::toString(std::move(error));

    args.outputGrad = ref(dO, ElementType::f32, qSizes);
    if (withLseGrad)
      args.lseGrad = ref(dLse, ElementType::f32, rowSizes);
    args.queryGrad = ref(dq, ElementType::f32, qSizes);
    args.keyGrad = ref(dk, ElementType::f32, kvSizes);
    args.valueGrad = ref(dv, ElementType::f32, kvSizes);
    float dg = NAN, ds = NAN;
    args.paramGrads = {{"g", &dg}, {"s", &ds}};
    std::vector<std::vector<float>> captureGrads;
    for (int i = 0; i < 3; ++i)
      captureGrads.emplace_back(captures[i].size(), NAN);
    for (int i = 0; i < 3; ++i)
      args.captureGrads[names[i]] =
          ref(captureGrads[i], ElementType::f32, in.captures[i].shape);
    error = (*kernel)->backward(args);
    ASSERT_FALSE(error) << llvm::toString(std::move(error));

    mlir::MLIRContext context;
    FrontendOptions frontend;
    frontend.headDim = 8;
    frontend.dtype = "f32";
    auto module = buildAttnModule(context, spec, "random.attn", frontend);
    ASSERT_TRUE(module);
    std::string message;
    auto reference = test::runReferenceAttentionGrad(
        Problem::attentionIn(*module), in, dOReference, dLseReference, message);
    ASSERT_TRUE(mlir::succeeded(reference)) << message;

    GradientError gradError(1e-2, 0.0);
    auto of = [](const std::vector<float> &values) {
      return [&values](size_t i) { return double(values[i]); };
    };
    gradError.add("dq", of(dq), reference->query, reference->queryScale);
    gradError.add("dk", of(dk), reference->key, reference->keyScale);
    gradError.add("dv", of(dv), reference->value, reference->valueScale);
    gradError.add("dg", [&](size_t) { return double(dg); },
                  {reference->params[0]}, {reference->paramScale[0]});
    gradError.add("ds", [&](size_t) { return double(ds); },
                  {reference->params[1]}, {reference->paramScale[1]});
    for (int i = 0; i < 3; ++i)
      gradError.add(std::string("d") + names[i], of(captureGrads[i]),
                    reference->captures[i], reference->captureScale[i]);
    worst = std::max(worst, gradError.worst);
    ASSERT_LE(gradError.worst, 1e-4)
        << "seed " << testSeed() << ": gradient error " << gradError.worst
        << " at " << gradError.where << " for\n"
        << spec;
  }
  worstSeen()["grad f32, random specs"] = worst;
}

} // namespace
