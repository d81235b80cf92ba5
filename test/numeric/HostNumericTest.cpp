//===- HostNumericTest.cpp - the host backend against float64 -------------===//
//
// Every example spec, JIT-compiled by rbfc::host::HostKernel, against the
// float64 reference interpreter run on the ORIGINAL (un-canonicalised) spec
// IR, on fresh random inputs. The seed is printed; RBFC_TEST_SEED replays a
// run. Outputs are poisoned with NaN before every call, so an element the
// kernel forgets to write fails the comparison.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Host/HostKernel.h"
#include "rbfc/Testing/ReferenceInterpreter.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>

using namespace rbfc;
using rbfc::host::ElementType;
using rbfc::host::HostKernel;
using rbfc::host::TensorRef;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

uint64_t testSeed() {
  static const uint64_t seed = [] {
    uint64_t value = std::random_device{}();
    if (const char *env = std::getenv("RBFC_TEST_SEED"))
      value = std::strtoull(env, nullptr, 10);
    std::printf("[host-numeric] seed = %llu (RBFC_TEST_SEED=%llu replays "
                "this run)\n",
                static_cast<unsigned long long>(value),
                static_cast<unsigned long long>(value));
    return value;
  }();
  return seed;
}

std::string readExample(const std::string &name) {
  std::ifstream file(std::string(RBFC_EXAMPLES_DIR) + "/" + name + ".attn");
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

uint16_t toBF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if (std::isnan(value))
    return 0x7fc0;
  bits += 0x7fff + ((bits >> 16) & 1); // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}
float fromBF16(uint16_t half) {
  uint32_t bits = static_cast<uint32_t>(half) << 16;
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

/// A host tensor of f32/f16/bf16 elements, read and written as doubles
/// (writes round to the element type).
struct Buffer {
  ElementType type;
  std::vector<uint8_t> bytes;
  Buffer(ElementType type, size_t count)
      : type(type), bytes(count * (type == ElementType::f32 ? 4 : 2)) {}
  size_t size() const { return bytes.size() / (type == ElementType::f32 ? 4 : 2); }
  void set(size_t i, double value) {
    if (type == ElementType::f32) {
      float f = static_cast<float>(value);
      std::memcpy(&bytes[4 * i], &f, 4);
    } else if (type == ElementType::f16) {
      _Float16 h = static_cast<_Float16>(static_cast<float>(value));
      std::memcpy(&bytes[2 * i], &h, 2);
    } else {
      uint16_t h = toBF16(static_cast<float>(value));
      std::memcpy(&bytes[2 * i], &h, 2);
    }
  }
  double get(size_t i) const {
    if (type == ElementType::f32) {
      float f;
      std::memcpy(&f, &bytes[4 * i], 4);
      return f;
    }
    uint16_t h;
    std::memcpy(&h, &bytes[2 * i], 2);
    if (type == ElementType::f16) {
      _Float16 value;
      std::memcpy(&value, &h, 2);
      return static_cast<float>(value);
    }
    return fromBF16(h);
  }
  TensorRef ref(std::vector<int64_t> sizes) {
    return {bytes.data(), type, sizes, host::contiguousStrides(sizes)};
  }
};

ElementType dtypeOf(const std::string &dtype) {
  return dtype == "bf16" ? ElementType::bf16
         : dtype == "f16" ? ElementType::f16
                          : ElementType::f32;
}

struct Shape {
  int64_t batch, heads, kvHeads, qLen, kvLen;
};

std::string describe(const std::string &spec, const std::string &dtype,
                     int64_t headDim, const Shape &s) {
  std::ostringstream os;
  os << spec << " " << dtype << " D=" << headDim << " B=" << s.batch
     << " H=" << s.heads << " KVH=" << s.kvHeads << " Nq=" << s.qLen
     << " Nkv=" << s.kvLen;
  return os.str();
}

/// Compiled kernels, shared by the tests of one run (compiling dominates).
HostKernel &kernelFor(const std::string &spec, const std::string &dtype,
                      int64_t headDim, bool withLse) {
  // Never destroyed: JIT engines torn down by static destructors, after
  // LLVM's own globals, can hang at exit.
  static auto &cache = *new std::map<std::string, std::unique_ptr<HostKernel>>;
  std::string key = spec + "/" + dtype + "/" + std::to_string(headDim) +
                    (withLse ? "/lse" : "");
  auto &slot = cache[key];
  if (!slot) {
    host::HostKernelOptions options;
    options.headDim = headDim;
    options.dtype = dtype;
    options.withLse = withLse;
    auto kernel = HostKernel::compile(readExample(spec), spec + ".attn",
                                      options);
    if (!kernel) {
      ADD_FAILURE() << key << ": " << llvm::toString(kernel.takeError());
      std::abort();
    }
    slot = std::move(*kernel);
  }
  return *slot;
}

/// Largest relative error seen per element type, for the summary.
std::map<std::string, double> &worstSeen() {
  static std::map<std::string, double> worst;
  return worst;
}

/// One problem: inputs (rounded to the dtype), captures and parameters, and
/// what the kernel and the reference made of them.
class Problem {
public:
  Problem(std::string spec, std::string dtype, int64_t headDim, Shape shape,
          std::mt19937_64 &rng, std::map<std::string, double> params = {})
      : spec(std::move(spec)), dtype(std::move(dtype)), headDim(headDim),
        shape(shape), params(std::move(params)),
        query(dtypeOf(this->dtype), count(shape.heads, shape.qLen)),
        key(dtypeOf(this->dtype), count(shape.kvHeads, shape.kvLen)),
        value(dtypeOf(this->dtype), count(shape.kvHeads, shape.kvLen)),
        output(dtypeOf(this->dtype), count(shape.heads, shape.qLen)),
        lse(shape.batch * shape.heads * shape.qLen) {
    std::normal_distribution<double> normal;
    for (Buffer *buffer : {&query, &key, &value})
      for (size_t i = 0; i < buffer->size(); ++i)
        buffer->set(i, normal(rng));
    makeCaptures(rng);
  }

  size_t count(int64_t heads, int64_t len) const {
    return shape.batch * heads * len * headDim;
  }

  void makeCaptures(std::mt19937_64 &rng) {
    if (spec == "document_mask") {
      // Sorted document ids (packed sequences), one row per batch entry.
      int64_t len = std::max(shape.qLen, shape.kvLen);
      std::vector<int64_t> sizes{shape.batch, len};
      docIds.resize(shape.batch * len);
      std::uniform_int_distribution<int64_t> segment(1, std::max<int64_t>(2, len / 3));
      for (int64_t b = 0; b < shape.batch; ++b) {
        int32_t doc = 0;
        for (int64_t i = 0; i < len;) {
          for (int64_t n = segment(rng); n > 0 && i < len; --n, ++i)
            docIds[b * len + i] = doc;
          ++doc;
        }
      }
      captureSizes["doc"] = sizes;
    } else if (spec == "relative_bias") {
      std::vector<int64_t> sizes{shape.heads, shape.qLen + shape.kvLen - 1};
      std::normal_distribution<float> normal;
      floatCapture.resize(sizes[0] * sizes[1]);
      for (float &x : floatCapture)
        x = normal(rng);
      captureSizes["bias"] = sizes;
    } else if (spec == "alibi") {
      floatCapture.resize(shape.heads);
      for (int64_t h = 0; h < shape.heads; ++h)
        floatCapture[h] = std::exp2(-8.0 * (h + 1) / shape.heads);
      captureSizes["slopes"] = {shape.heads};
    }
  }

  host::HostKernelArgs args(bool withLse) {
    host::HostKernelArgs args;
    args.query = query.ref({shape.batch, shape.heads, shape.qLen, headDim});
    args.key = key.ref({shape.batch, shape.kvHeads, shape.kvLen, headDim});
    args.value = value.ref({shape.batch, shape.kvHeads, shape.kvLen, headDim});
    args.output = output.ref({shape.batch, shape.heads, shape.qLen, headDim});
    if (withLse) {
      std::vector<int64_t> sizes{shape.batch, shape.heads, shape.qLen};
      args.lse = {lse.data(), ElementType::f32, sizes,
                  host::contiguousStrides(sizes)};
    }
    args.params = params;
    for (auto &[name, sizes] : captureSizes) {
      bool isDoc = name == "doc";
      args.captures[name] = {isDoc ? static_cast<void *>(docIds.data())
                                   : static_cast<void *>(floatCapture.data()),
                             isDoc ? ElementType::i32 : ElementType::f32, sizes,
                             host::contiguousStrides(sizes)};
    }
    return args;
  }

  /// Runs the kernel on NaN-poisoned outputs.
  void runKernel(bool withLse, unsigned numThreads = 0) {
    for (size_t i = 0; i < output.size(); ++i)
      output.set(i, kNaN);
    std::fill(lse.begin(), lse.end(), std::numeric_limits<float>::quiet_NaN());
    HostKernel &kernel = kernelFor(spec, dtype, headDim, withLse);
    host::HostKernelArgs call = args(withLse);
    call.numThreads = numThreads;
    llvm::Error error = kernel.run(call);
    ASSERT_FALSE(error) << llvm::toString(std::move(error));
  }

  /// The float64 reference on the original spec IR and the same (rounded)
  /// inputs.
  test::AttentionResult runReference() {
    mlir::MLIRContext context;
    FrontendOptions frontend;
    frontend.headDim = headDim;
    frontend.dtype = dtype;
    frontend.withLse = true;
    auto module = buildAttnModule(context, readExample(spec), spec, frontend);
    EXPECT_TRUE(module);
    attn::AttentionOp op;
    module->walk([&](attn::AttentionOp found) { op = found; });
    test::AttentionInputs in;
    in.batch = shape.batch;
    in.heads = shape.heads;
    in.kvHeads = shape.kvHeads;
    in.qLen = shape.qLen;
    in.kvLen = shape.kvLen;
    in.headDim = headDim;
    for (size_t i = 0; i < query.size(); ++i)
      in.query.push_back(query.get(i));
    for (size_t i = 0; i < key.size(); ++i) {
      in.key.push_back(key.get(i));
      in.value.push_back(value.get(i));
    }
    in.params = test::defaultParams(op);
    for (auto [i, name] : llvm::enumerate(op.getParamNames())) {
      auto given = params.find(mlir::cast<mlir::StringAttr>(name).str());
      if (given != params.end())
        in.params[i] = given->second;
    }
    for (auto &[name, sizes] : captureSizes) {
      test::CaptureData capture;
      capture.shape = sizes;
      if (name == "doc")
        capture.values.assign(docIds.begin(), docIds.end());
      else
        capture.values.assign(floatCapture.begin(), floatCapture.end());
      in.captures.push_back(capture);
    }
    std::string error;
    auto result = test::runReferenceAttention(op, in, error);
    EXPECT_TRUE(mlir::succeeded(result)) << error;
    return mlir::succeeded(result) ? *result : test::AttentionResult{};
  }

  /// Compares output rows (relative to the row's largest reference
  /// magnitude) and LSEs against the reference; reports the worst case.
  void compare(const test::AttentionResult &reference, bool withLse) {
    double tolerance = dtype == "f32" ? 1e-5 : 2e-2;
    // f16 outputs below its normal range (6e-5; unnormalised `none` rows
    // reach 1e-8) keep only the subnormal spacing 2^-24 of absolute
    // precision, whatever the kernel computed.
    double outputQuantum = dtype == "f16" ? std::ldexp(1.0, -24) : 0.0;
    double worst = 0;
    std::string worstAt;
    int64_t rows = shape.batch * shape.heads * shape.qLen;
    for (int64_t row = 0; row < rows; ++row) {
      double scale = 0, error = 0;
      for (int64_t c = 0; c < headDim; ++c)
        scale = std::max(scale, std::fabs(reference.output[row * headDim + c]));
      for (int64_t c = 0; c < headDim; ++c) {
        double got = output.get(row * headDim + c);
        double want = reference.output[row * headDim + c];
        double e = std::max(0.0, std::fabs(got - want) - outputQuantum) /
                   std::max(scale, 1e-30);
        if (scale == 0)
          e = got == 0 ? 0 : std::numeric_limits<double>::infinity();
        if (std::isnan(got))
          e = std::numeric_limits<double>::infinity();
        if (e > error) {
          error = e;
          if (e > worst) {
            worst = e;
            worstAt = "output row " + std::to_string(row) + " col " +
                      std::to_string(c) + ": got " + std::to_string(got) +
                      ", float64 " + std::to_string(want);
          }
        }
      }
      if (withLse) {
        double got = lse[row], want = reference.lse[row];
        double e = std::isinf(want) && got == want
                       ? 0
                       : std::fabs(got - want) / std::max(1.0, std::fabs(want));
        if (std::isnan(e))
          e = std::numeric_limits<double>::infinity();
        if (e > worst) {
          worst = e;
          worstAt = "lse row " + std::to_string(row) + ": got " +
                    std::to_string(got) + ", float64 " + std::to_string(want);
        }
      }
    }
    worstSeen()[dtype] = std::max(worstSeen()[dtype], worst);
    EXPECT_LE(worst, tolerance)
        << describe(spec, dtype, headDim, shape) << " (seed " << testSeed()
        << "): worst relative error " << worst << " at " << worstAt;
  }

  std::string spec, dtype;
  int64_t headDim;
  Shape shape;
  std::map<std::string, double> params;
  Buffer query, key, value, output;
  std::vector<float> lse;
  std::vector<int32_t> docIds;
  std::vector<float> floatCapture;
  std::map<std::string, std::vector<int64_t>> captureSizes;
};

/// Parameters that make the masks and caps bite at test sizes.
std::map<std::string, double> testParams(const std::string &spec) {
  if (spec == "prefix_lm")
    return {{"prefix", 5}};
  if (spec == "sliding_window")
    return {{"window", 7}};
  if (spec == "softcap")
    return {{"cap", 2.0}};
  return {};
}

const char *const kSpecs[] = {"alibi",          "causal",        "document_mask",
                              "prefix_lm",      "rbf",           "rbf_none",
                              "relative_bias",  "sliding_window", "softcap",
                              "softmax"};

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
