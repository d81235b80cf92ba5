//===- HostNumericTest.cpp - the host backend against float64 -------------===//
//
// Every example spec, JIT-compiled by rbfc::host::HostKernel, against the
// float64 reference interpreter run on the ORIGINAL (un-canonicalised) spec
// IR, on fresh random inputs. The seed is printed; RBFC_TEST_SEED replays a
// run. Outputs are poisoned with NaN before every call, so an element the
// kernel forgets to write fails the comparison.
//
//===----------------------------------------------------------------------===//
#include "NumericProblem.h"

using namespace rbfc;

namespace {

using namespace rbfc::numeric;

struct GalleryCase {
  const char *dtype;
  int64_t headDim;
};

class HostGallery : public ::testing::TestWithParam<std::tuple<const char *, GalleryCase>> {};

TEST_P(HostGallery, MatchesFloat64Reference) {
  std::string spec = std::get<0>(GetParam());
  GalleryCase c = std::get<1>(GetParam());
  std::mt19937_64 rng(testSeed() ^ std::hash<std::string>{}(
                                       spec + c.dtype + std::to_string(c.headDim)));
  // N=1, N=17, q_len != kv_len both ways, GQA 4:1 and 8:1, several tiles.
  std::vector<Shape> shapes = {{1, 2, 2, 1, 1},   {1, 2, 1, 17, 17},
                               {2, 4, 1, 33, 70}, {1, 8, 1, 40, 23},
                               {1, 2, 2, 97, 130}};
  if (c.headDim != 64) // the other head dimensions get a smaller gallery
    shapes = {{1, 2, 1, 17, 17}, {1, 8, 2, 45, 77}};
  for (const Shape &shape : shapes) {
    Problem problem(spec, c.dtype, c.headDim, shape, rng, testParams(spec));
    problem.runKernel(/*withLse=*/true);
    problem.compare(problem.runReference(), /*withLse=*/true);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Examples, HostGallery,
    ::testing::Combine(::testing::ValuesIn(kSpecs),
                       ::testing::Values(GalleryCase{"f32", 64},
                                         GalleryCase{"f16", 64},
                                         GalleryCase{"bf16", 64},
                                         GalleryCase{"f32", 32},
                                         GalleryCase{"f32", 80},
                                         GalleryCase{"bf16", 96},
                                         GalleryCase{"bf16", 128})),
    [](const auto &info) {
      GalleryCase c = std::get<1>(info.param);
      return std::string(std::get<0>(info.param)) + "_" + c.dtype + "_d" +
             std::to_string(c.headDim);
    });

TEST(HostKernel, WithoutLse) {
  std::mt19937_64 rng(testSeed() + 1);
  for (const char *spec : {"causal", "rbf_none", "document_mask"}) {
    Problem problem(spec, "f32", 64, {1, 4, 2, 50, 66}, rng, testParams(spec));
    problem.runKernel(/*withLse=*/false);
    problem.compare(problem.runReference(), /*withLse=*/false);
  }
}

TEST(HostKernel, FullyMaskedRowsGiveZerosAndMinusInfinity) {
  std::mt19937_64 rng(testSeed() + 2);
  // window = 0 masks every key of every row.
  Problem none("sliding_window", "f32", 64, {1, 2, 2, 20, 30}, rng,
               {{"window", 0}});
  none.runKernel(true);
  for (size_t i = 0; i < none.output.size(); ++i)
    ASSERT_EQ(none.output.get(i), 0.0) << "element " << i;
  for (float value : none.lse)
    ASSERT_TRUE(std::isinf(value) && value < 0) << value;

  // Queries past the keys' last document see no key of their document.
  Problem docs("document_mask", "bf16", 64, {1, 2, 1, 40, 20}, rng);
  for (int64_t i = 0; i < 40; ++i)
    docs.docIds[i] = i < 10 ? 0 : i < 20 ? 1 : 2;
  docs.runKernel(true);
  auto reference = docs.runReference();
  docs.compare(reference, true);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 20; i < 40; ++i) {
      EXPECT_TRUE(std::isinf(docs.lse[h * 40 + i]) && docs.lse[h * 40 + i] < 0);
      for (int64_t c = 0; c < 64; ++c)
        ASSERT_EQ(docs.output.get((h * 40 + i) * 64 + c), 0.0);
    }
}

TEST(HostKernel, NaNReachesOnlyTheRowsItTouches) {
  std::mt19937_64 rng(testSeed() + 3);
  const int64_t qLen = 90, kvLen = 90, d = 64;
  // A NaN in value row 70 of a causal op: rows 70.. read it, rows < 70 mask
  // it (some of them in the partial tile that holds key 70).
  Problem causal("causal", "f32", d, {1, 2, 1, qLen, kvLen}, rng);
  causal.value.set(70 * d + 5, kNaN);
  causal.runKernel(true);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < qLen; ++i) {
      bool nan = std::isnan(causal.output.get((h * qLen + i) * d + 5));
      EXPECT_EQ(nan, i >= 70) << "head " << h << " row " << i;
      EXPECT_FALSE(std::isnan(causal.output.get((h * qLen + i) * d + 6)) &&
                   i < 70);
    }
  // A NaN in query row 3 of head 1: only that row.
  Problem softmax("softmax", "bf16", d, {1, 2, 2, qLen, kvLen}, rng);
  softmax.query.set((1 * qLen + 3) * d, kNaN);
  softmax.runKernel(true);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < qLen; ++i) {
      bool touched = h == 1 && i == 3;
      EXPECT_EQ(std::isnan(softmax.lse[h * qLen + i]), touched);
      for (int64_t c = 0; c < d; ++c)
        ASSERT_EQ(std::isnan(softmax.output.get((h * qLen + i) * d + c)),
                  touched)
            << "head " << h << " row " << i;
    }
}

TEST(HostKernel, StridedViewsAndThreadCounts) {
  std::mt19937_64 rng(testSeed() + 4);
  Shape shape{2, 4, 2, 70, 45};
  const int64_t d = 32;
  Problem problem("alibi", "f32", d, shape, rng);
  auto reference = problem.runReference();
  // The same query in a [batch, q_len, heads, head_dim] buffer (the layout
  // of a fused QKV projection), passed as a strided view.
  std::vector<float> interleaved(problem.query.size());
  for (int64_t b = 0; b < shape.batch; ++b)
    for (int64_t h = 0; h < shape.heads; ++h)
      for (int64_t i = 0; i < shape.qLen; ++i)
        for (int64_t c = 0; c < d; ++c)
          interleaved[((b * shape.qLen + i) * shape.heads + h) * d + c] =
              problem.query.get(((b * shape.heads + h) * shape.qLen + i) * d + c);
  HostKernel &kernel = kernelFor("alibi", "f32", d, true);
  for (unsigned threads : {1u, 2u, 3u}) {
    for (size_t i = 0; i < problem.output.size(); ++i)
      problem.output.set(i, kNaN);
    host::HostKernelArgs args = problem.args(true);
    args.query.data = interleaved.data();
    args.query.strides = {shape.qLen * shape.heads * d, d, shape.heads * d, 1};
    args.numThreads = threads;
    llvm::Error error = kernel.run(args);
    ASSERT_FALSE(error) << llvm::toString(std::move(error));
    problem.compare(reference, true);
  }
}

TEST(HostKernel, BadArgumentsAreErrors) {
  std::mt19937_64 rng(testSeed() + 5);
  Problem problem("alibi", "f32", 64, {1, 4, 2, 8, 8}, rng);
  HostKernel &kernel = kernelFor("alibi", "f32", 64, true);
  auto expectError = [&](host::HostKernelArgs args, const char *needle) {
    llvm::Error error = kernel.run(args);
    ASSERT_TRUE(static_cast<bool>(error)) << "no error for " << needle;
    std::string message = llvm::toString(std::move(error));
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  };
  host::HostKernelArgs args = problem.args(true);
  args.query.sizes[3] = 32;
  expectError(args, "head_dim");
  args = problem.args(true);
  args.key.sizes[1] = 3;
  args.value.sizes[1] = 3;
  expectError(args, "multiple of the key/value heads");
  args = problem.args(true);
  args.value.type = ElementType::bf16;
  expectError(args, "element type bf16");
  args = problem.args(true);
  args.captures.clear();
  expectError(args, "capture 'slopes' was not given");
  args = problem.args(true);
  args.params["gamma"] = 1.0;
  expectError(args, "no parameter 'gamma'");
  args = problem.args(true);
  args.key.strides[3] = 2;
  expectError(args, "head_dim stride of 1");
  args = problem.args(true);
  args.lse = {};
  expectError(args, "lse is missing");

  // A kernel can be compiled and destroyed within a run.
  host::HostKernelOptions options;
  {
    auto kernel = HostKernel::compile(readExample("softmax"), "softmax.attn",
                                      options);
    ASSERT_TRUE(static_cast<bool>(kernel))
        << llvm::toString(kernel.takeError());
  }
  auto broken = HostKernel::compile("attention x { score = dot(q, z); }",
                                    "broken.attn", options);
  ASSERT_FALSE(static_cast<bool>(broken));
  std::string message = llvm::toString(broken.takeError());
  EXPECT_NE(message.find("broken.attn:1:"), std::string::npos) << message;
}

/// Prints the worst errors of the whole run once every test is done.
class WorstErrorReport : public ::testing::Environment {
  void TearDown() override {
    for (auto &[dtype, worst] : worstSeen())
      std::printf("[host-numeric] worst relative error, %s: %.3g\n",
                  dtype.c_str(), worst);
  }
};
[[maybe_unused]] ::testing::Environment *const kWorstErrorReport =
    ::testing::AddGlobalTestEnvironment(new WorstErrorReport);

} // namespace
