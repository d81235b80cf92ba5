//===- NumericProblem.h - host-backend problems against float64 -*- C++ -*-===//
//
// What the host numerics tests share: random problems on every example spec
// (inputs rounded to the element type, captures and parameters that make
// the masks bite), the JIT-compiled kernels, and the float64 reference
// interpreter run on the ORIGINAL (un-canonicalised) spec IR. The seed is
// printed once; RBFC_TEST_SEED replays a run.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_TEST_NUMERIC_NUMERICPROBLEM_H
#define RBFC_TEST_NUMERIC_NUMERICPROBLEM_H

#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Host/HostKernel.h"
#include "rbfc/Testing/ReferenceInterpreter.h"

#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>

namespace rbfc::numeric {

using rbfc::host::ElementType;
using rbfc::host::HostKernel;
using rbfc::host::TensorRef;

inline const double kNaN = std::numeric_limits<double>::quiet_NaN();

inline uint64_t testSeed() {
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

inline std::string readExample(const std::string &name) {
  std::ifstream file(std::string(RBFC_EXAMPLES_DIR) + "/" + name + ".attn");
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

inline uint16_t toBF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if (std::isnan(value))
    return 0x7fc0;
  bits += 0x7fff + ((bits >> 16) & 1); // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}
inline float fromBF16(uint16_t half) {
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
  size_t size() const {
    return bytes.size() / (type == ElementType::f32 ? 4 : 2);
  }
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

inline ElementType dtypeOf(const std::string &dtype) {
  return dtype == "bf16"  ? ElementType::bf16
         : dtype == "f16" ? ElementType::f16
                          : ElementType::f32;
}

struct Shape {
  int64_t batch, heads, kvHeads, qLen, kvLen;
};

inline std::string describe(const std::string &spec, const std::string &dtype,
                            int64_t headDim, const Shape &s) {
  std::ostringstream os;
  os << spec << " " << dtype << " D=" << headDim << " B=" << s.batch
     << " H=" << s.heads << " KVH=" << s.kvHeads << " Nq=" << s.qLen
     << " Nkv=" << s.kvLen;
  return os.str();
}

/// Compiled kernels, shared by the tests of one run (compiling dominates).
inline HostKernel &kernelFor(const std::string &spec, const std::string &dtype,
                             int64_t headDim, bool withLse,
                             bool withBackward = false,
                             const host::HostTiling &tiling = {}) {
  // Never destroyed: JIT engines torn down by static destructors, after
  // LLVM's own globals, can hang at exit.
  static auto &cache = *new std::map<std::string, std::unique_ptr<HostKernel>>;
  std::string key = spec + "/" + dtype + "/" + std::to_string(headDim) +
                    (withLse ? "/lse" : "") + (withBackward ? "/bwd" : "") +
                    "/" + std::to_string(tiling.tileM) + "x" +
                    std::to_string(tiling.tileN) + "/" +
                    std::to_string(tiling.rowsPerStep) + "x" +
                    std::to_string(tiling.keyLanes) + "/" +
                    std::to_string(tiling.keyVectorsPerStep) + "x" +
                    std::to_string(tiling.headDimVectorsPerStep);
  auto &slot = cache[key];
  if (!slot) {
    host::HostKernelOptions options;
    options.headDim = headDim;
    options.dtype = dtype;
    options.withLse = withLse;
    options.withBackward = withBackward;
    options.tiling = tiling;
    auto kernel =
        HostKernel::compile(readExample(spec), spec + ".attn", options);
    if (!kernel) {
      ADD_FAILURE() << key << ": " << llvm::toString(kernel.takeError());
      std::abort();
    }
    slot = std::move(*kernel);
  }
  return *slot;
}

/// The worst error of a gradient and where it is: each element's error is
/// relative to the largest reference value of the gradient or, where that
/// is a small difference of large terms (under softmax each row's adjoints
/// sum to 0), to `cancellation` times the largest sum of the magnitudes of
/// its terms. `quantum` is an absolute error allowed on top (the subnormal
/// spacing of f16).
class GradientError {
public:
  GradientError(double cancellation, double quantum)
      : cancellation(cancellation), quantum(quantum) {}

  /// `rounding`, when given, is how far each element may move with D taken
  /// from the stored output (AttentionGradients): twice it is allowed on
  /// top, as test/python/references.py's gradient_allowance does.
  template <typename Got>
  void add(const std::string &name, const Got &got,
           const std::vector<double> &want, const std::vector<double> &scale,
           const std::vector<double> &rounding = {}) {
    double largest = 0, magnitude = 0;
    for (double w : want)
      largest = std::max(largest, std::fabs(w));
    for (double m : scale)
      magnitude = std::max(magnitude, m);
    double denominator = std::max(largest, cancellation * magnitude);
    for (size_t i = 0; i < want.size(); ++i) {
      double value = got(i);
      double allowed =
          quantum + (rounding.empty() ? 0.0 : 2 * std::fabs(rounding[i]));
      double difference = std::max(0.0, std::fabs(value - want[i]) - allowed);
      double error = denominator == 0 ? difference : difference / denominator;
      if (std::isnan(error))
        error = std::numeric_limits<double>::infinity();
      if (error > worst) {
        worst = error;
        where = name + "[" + std::to_string(i) + "]: got " +
                std::to_string(value) + ", float64 " + std::to_string(want[i]) +
                " (largest " + std::to_string(largest) +
                ", sum of magnitudes " + std::to_string(magnitude) + ")";
      }
    }
  }

  double worst = 0;
  std::string where;

private:
  double cancellation, quantum;
};

/// Largest relative error seen per element type, for the summary.
inline std::map<std::string, double> &worstSeen() {
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
      std::uniform_int_distribution<int64_t> segment(
          1, std::max<int64_t>(2, len / 3));
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
    } else if (spec == "rbf_head_gamma") {
      // Length scales around 1/sqrt(head_dim), a different one per head.
      floatCapture.resize(shape.heads);
      for (int64_t h = 0; h < shape.heads; ++h)
        floatCapture[h] = (0.5 + double(h) / shape.heads) / std::sqrt(headDim);
      captureSizes["gammas"] = {shape.heads};
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
    HostKernel &kernel =
        kernelFor(spec, dtype, headDim, withLse, withBackward, tiling);
    host::HostKernelArgs call = args(withLse);
    call.numThreads = numThreads;
    llvm::Error error = kernel.run(call);
    ASSERT_FALSE(error) << llvm::toString(std::move(error));
  }

  /// The float64 reference on the original spec IR and the same (rounded)
  /// inputs.
  test::AttentionResult runReference() {
    mlir::MLIRContext context;
    auto module = referenceModule(context);
    attn::AttentionOp op = attentionIn(*module);
    std::string error;
    auto result = test::runReferenceAttention(op, referenceInputs(op), error);
    EXPECT_TRUE(mlir::succeeded(result)) << error;
    return mlir::succeeded(result) ? *result : test::AttentionResult{};
  }

  /// The spec's original (un-canonicalised) IR.
  mlir::OwningOpRef<mlir::ModuleOp>
  referenceModule(mlir::MLIRContext &context) {
    FrontendOptions frontend;
    frontend.headDim = headDim;
    frontend.dtype = dtype;
    frontend.withLse = true;
    auto module = buildAttnModule(context, readExample(spec), spec, frontend);
    EXPECT_TRUE(module);
    return module;
  }
  static attn::AttentionOp attentionIn(mlir::ModuleOp module) {
    attn::AttentionOp op;
    module->walk([&](attn::AttentionOp found) { op = found; });
    return op;
  }

  /// The problem's (rounded) inputs as the reference interpreter takes them.
  test::AttentionInputs referenceInputs(attn::AttentionOp op) {
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
    return in;
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
  /// The kernels' blocking; the default is the one chosen for this CPU.
  host::HostTiling tiling;
  /// Whether the forward runs in the kernel compiled with the backward
  /// (whose gradients are checked against it): the same forward code, one
  /// compile fewer.
  bool withBackward = false;
  Shape shape;
  std::map<std::string, double> params;
  Buffer query, key, value, output;
  std::vector<float> lse;
  std::vector<int32_t> docIds;
  std::vector<float> floatCapture;
  std::map<std::string, std::vector<int64_t>> captureSizes;
};

/// Parameters that make the masks and caps bite at test sizes.
inline std::map<std::string, double> testParams(const std::string &spec) {
  if (spec == "prefix_lm")
    return {{"prefix", 5}};
  if (spec == "sliding_window")
    return {{"window", 7}};
  if (spec == "softcap")
    return {{"cap", 2.0}};
  return {};
}

inline const char *const kSpecs[] = {
    "alibi",         "causal",         "document_mask",  "prefix_lm",
    "rbf",           "rbf_causal",     "rbf_head_gamma", "rbf_none",
    "relative_bias", "sliding_window", "softcap",        "softmax"};

} // namespace rbfc::numeric

#endif // RBFC_TEST_NUMERIC_NUMERICPROBLEM_H
