//===- CAPITest.cpp - librbfc's C API (rbfc.h) without a GPU --------------===//
//
// Host kernels compiled and run through the C API against a float64
// reference; CUDA kernels compiled to PTX and their calls checked up to the
// driver; spec, option and tensor errors; the memory and disk caches,
// damaged cache entries, and 8 threads and 4 processes compiling at once.
//
//===----------------------------------------------------------------------===//
#include "rbfc/rbfc.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <dlfcn.h>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace {

namespace fs = std::filesystem;

// ALiBi with a scale param: params, a capture, a mask and GQA in one spec.
const char *kSpec = R"(attention biased {
  param scale: f32 = 0.125;
  capture slopes: f32[?];
  score = dot(q, k) * scale + slopes[h] * (kv_idx - q_idx);
  mask = kv_idx <= q_idx;
}
)";

std::string lastError() { return rbfc_last_error(); }

bool contains(const std::string &text, const std::string &part) {
  return text.find(part) != std::string::npos;
}

/// A fresh, empty folder under the test's temporary directory.
fs::path freshDirectory(const std::string &name) {
  fs::path dir = fs::temp_directory_path() /
                 ("rbfc-capi-" + std::to_string(getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

rbfc_compile_options hostOptions(rbfc_dtype dtype = RBFC_DTYPE_F32) {
  rbfc_compile_options options;
  rbfc_compile_options_init(&options);
  options.dtype = dtype;
  options.lse = 1;
  options.cache_dir = "";
  return options;
}

/// CUDA options for sm_90a; `cacheDir` must outlive them.
rbfc_compile_options cudaOptions(const char *cacheDir) {
  rbfc_compile_options options;
  rbfc_compile_options_init(&options);
  options.target = RBFC_TARGET_CUDA;
  options.arch = "sm_90a";
  options.lse = 1;
  options.cache_dir = cacheDir;
  return options;
}

/// A kernel that is released at the end of the scope.
struct Kernel {
  rbfc_kernel *kernel = nullptr;
  ~Kernel() { rbfc_kernel_release(kernel); }
  rbfc_status compile(const char *spec, const rbfc_compile_options &options,
                      const char *name = "spec.attn") {
    rbfc_kernel_release(kernel);
    return rbfc_compile(spec, name, &options, &kernel);
  }
};

rbfc_tensor view(void *data, rbfc_dtype dtype, std::vector<int64_t> sizes,
                 std::vector<int64_t> strides) {
  rbfc_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.rank = int32_t(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    t.sizes[i] = sizes[i];
    t.strides[i] = strides[i];
  }
  return t;
}

std::vector<int64_t> contiguous(const std::vector<int64_t> &sizes) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (size_t d = sizes.size(); d > 1; --d)
    strides[d - 2] = strides[d - 1] * sizes[d - 1];
  return strides;
}

rbfc_cache_stats stats() {
  rbfc_cache_stats s{};
  s.struct_size = sizeof s;
  EXPECT_EQ(rbfc_cache_get_stats(&s), RBFC_OK);
  return s;
}

std::vector<float> randomNormal(std::mt19937 &rng, size_t n) {
  std::normal_distribution<float> normal;
  std::vector<float> values(n);
  for (float &value : values)
    value = normal(rng);
  return values;
}

/// Problem sizes, and q, k, v, slopes drawn at random; q, k, v are stored
/// [batch, seq, heads, head_dim] (bnhd) and passed as transposed views.
struct Problem {
  int64_t batch = 2, heads = 4, kvHeads = 2, qLen = 37, kvLen = 45, dim = 64;
  std::vector<float> q, k, v, slopes;
  explicit Problem(unsigned seed) {
    std::mt19937 rng(seed);
    q = randomNormal(rng, batch * qLen * heads * dim);
    k = randomNormal(rng, batch * kvLen * kvHeads * dim);
    v = randomNormal(rng, batch * kvLen * kvHeads * dim);
    for (int64_t h = 0; h < heads; ++h)
      slopes.push_back(std::exp2(-8.0f * (h + 1) / heads));
  }
  /// The bnhd buffer `data` of `seq` rows and `h` heads as a bhnd view.
  rbfc_tensor bnhd(float *data, int64_t h, int64_t seq) const {
    return view(data, RBFC_DTYPE_F32, {batch, h, seq, dim},
                {seq * h * dim, dim, h * dim, 1});
  }
  double at(const std::vector<float> &x, int64_t h, int64_t seq, int64_t b,
            int64_t head, int64_t row, int64_t d) const {
    return x[((b * seq + row) * h + head) * dim + d];
  }
  /// float64 reference output [b, h, i, :] and lse for `scale`.
  void reference(double scale, std::vector<double> &o,
                 std::vector<double> &lse) const {
    o.assign(batch * heads * qLen * dim, 0);
    lse.assign(batch * heads * qLen, -INFINITY);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < qLen; ++i) {
          int64_t kvh = h / (heads / kvHeads);
          std::vector<double> s;
          double m = -INFINITY;
          for (int64_t j = 0; j <= std::min(i, kvLen - 1); ++j) {
            double dot = 0;
            for (int64_t d = 0; d < dim; ++d)
              dot += at(q, heads, qLen, b, h, i, d) *
                     at(k, kvHeads, kvLen, b, kvh, j, d);
            s.push_back(dot * scale + slopes[h] * double(j - i));
            m = std::max(m, s.back());
          }
          double sum = 0;
          for (double x : s)
            sum += std::exp(x - m);
          size_t row = (b * heads + h) * qLen + i;
          lse[row] = m + std::log(sum);
          for (size_t j = 0; j < s.size(); ++j)
            for (int64_t d = 0; d < dim; ++d)
              o[row * dim + d] += std::exp(s[j] - m) / sum *
                                  at(v, kvHeads, kvLen, b, kvh, j, d);
        }
  }
};

/// Forward arguments over a Problem's buffers and the outputs.
struct ForwardCall {
  Problem &p;
  std::vector<float> o, lse;
  double scale = 0.125;
  rbfc_tensor slopes;
  rbfc_forward_args args;
  explicit ForwardCall(Problem &p) : p(p) {
    o.assign(p.batch * p.heads * p.qLen * p.dim, NAN);
    lse.assign(p.batch * p.heads * p.qLen, NAN);
    slopes = view(p.slopes.data(), RBFC_DTYPE_F32, {p.heads}, {1});
    rbfc_forward_args_init(&args);
    args.q = p.bnhd(p.q.data(), p.heads, p.qLen);
    args.k = p.bnhd(p.k.data(), p.kvHeads, p.kvLen);
    args.v = p.bnhd(p.v.data(), p.kvHeads, p.kvLen);
    args.o = view(o.data(), RBFC_DTYPE_F32, {p.batch, p.heads, p.qLen, p.dim},
                  contiguous({p.batch, p.heads, p.qLen, p.dim}));
    args.lse = view(lse.data(), RBFC_DTYPE_F32, {p.batch, p.heads, p.qLen},
                    contiguous({p.batch, p.heads, p.qLen}));
    args.params = &scale;
    args.num_params = 1;
    args.captures = &slopes;
    args.num_captures = 1;
  }
};

//===-- Host target --------------------------------------------------------===//

TEST(CAPIHost, ForwardMatchesTheReference) {
  Kernel kernel;
  rbfc_compile_options options = hostOptions();
  ASSERT_EQ(kernel.compile(kSpec, options), RBFC_OK) << lastError();

  rbfc_kernel_properties properties{};
  properties.struct_size = sizeof properties;
  ASSERT_EQ(rbfc_kernel_get_properties(kernel.kernel, &properties), RBFC_OK);
  EXPECT_EQ(properties.target, RBFC_TARGET_HOST);
  EXPECT_EQ(properties.has_backward, 0);
  EXPECT_STREQ(properties.info.name, "biased");
  EXPECT_STREQ(properties.info.normalization, "softmax");
  EXPECT_EQ(properties.info.dtype, RBFC_DTYPE_F32);
  EXPECT_EQ(properties.info.head_dim, 64);
  EXPECT_EQ(properties.info.has_lse, 1);
  EXPECT_EQ(properties.info.num_params, 1);
  EXPECT_EQ(properties.info.num_captures, 1);
  rbfc_param_info param;
  ASSERT_EQ(rbfc_kernel_param(kernel.kernel, 0, &param), RBFC_OK);
  EXPECT_STREQ(param.name, "scale");
  EXPECT_EQ(param.type, RBFC_DTYPE_F32);
  EXPECT_EQ(param.has_default, 1);
  EXPECT_DOUBLE_EQ(param.default_value, 0.125);
  rbfc_capture_info capture;
  ASSERT_EQ(rbfc_kernel_capture(kernel.kernel, 0, &capture), RBFC_OK);
  EXPECT_STREQ(capture.name, "slopes");
  EXPECT_EQ(capture.rank, 1);
  EXPECT_EQ(rbfc_kernel_param(kernel.kernel, 1, &param),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "param index 1 out of range [0, 1)"));

  Problem p(7);
  for (int threads : {1, 3}) {
    ForwardCall call(p);
    call.scale = 0.2;
    call.args.num_threads = threads;
    ASSERT_EQ(rbfc_forward(kernel.kernel, &call.args, nullptr), RBFC_OK)
        << lastError();
    std::vector<double> o, lse;
    p.reference(0.2, o, lse);
    double worst = 0, worstLse = 0;
    for (size_t i = 0; i < o.size(); ++i)
      worst = std::max(worst, std::abs(o[i] - call.o[i]));
    for (size_t i = 0; i < lse.size(); ++i)
      worstLse = std::max(worstLse, std::abs(lse[i] - call.lse[i]));
    EXPECT_LT(worst, 1e-5) << threads << " thread(s)";
    EXPECT_LT(worstLse, 1e-5) << threads << " thread(s)";
  }
}

TEST(CAPIHost, ParamsDefaultWhenNull) {
  Kernel kernel;
  ASSERT_EQ(kernel.compile(kSpec, hostOptions()), RBFC_OK) << lastError();
  Problem p(8);
  ForwardCall call(p);
  call.args.params = nullptr;
  call.args.num_params = 0;
  ASSERT_EQ(rbfc_forward(kernel.kernel, &call.args, nullptr), RBFC_OK)
      << lastError();
  std::vector<double> o, lse;
  p.reference(0.125, o, lse);
  for (size_t i = 0; i < lse.size(); ++i)
    ASSERT_NEAR(lse[i], call.lse[i], 1e-5) << i;
}

TEST(CAPIHost, HalfPrecisionKernelsCompile) {
  for (rbfc_dtype dtype : {RBFC_DTYPE_BF16, RBFC_DTYPE_F16}) {
    Kernel kernel;
    ASSERT_EQ(kernel.compile(kSpec, hostOptions(dtype)), RBFC_OK)
        << lastError();
    rbfc_kernel_properties properties{};
    properties.struct_size = sizeof properties;
    ASSERT_EQ(rbfc_kernel_get_properties(kernel.kernel, &properties), RBFC_OK);
    EXPECT_EQ(properties.info.dtype, dtype);
  }
}

TEST(CAPIHost, BadArgumentsNameTheArgumentAndWriteNothing) {
  Kernel kernel;
  ASSERT_EQ(kernel.compile(kSpec, hostOptions()), RBFC_OK) << lastError();
  Problem p(9);
  struct Case {
    const char *expected;
    std::function<void(ForwardCall &)> spoil;
  } cases[] = {
      {"head_dim 64",
       [](ForwardCall &c) { c.args.q.sizes[3] = 32; }},
      {"query has element type bf16",
       [](ForwardCall &c) { c.args.q.dtype = RBFC_DTYPE_BF16; }},
      {"q: rank 5 is outside [0, 4]", [](ForwardCall &c) { c.args.q.rank = 5; }},
      {"params: the kernel takes 1 parameter(s), got 2",
       [](ForwardCall &c) { c.args.num_params = 2; }},
      {"captures: the kernel takes 1 captured tensor(s), got 0",
       [](ForwardCall &c) { c.args.num_captures = 0; }},
      {"capture 'slopes' has element type i32",
       [](ForwardCall &c) { c.slopes.dtype = RBFC_DTYPE_I32; }},
      {"multiple of the key/value heads",
       [](ForwardCall &c) {
         c.args.k.sizes[1] = c.args.v.sizes[1] = 3;
       }},
      {"lse must be [batch, heads, q_len]",
       [](ForwardCall &c) { c.args.lse.sizes[2] = 1; }},
      {"num_threads is -1", [](ForwardCall &c) { c.args.num_threads = -1; }},
  };
  for (const Case &bad : cases) {
    ForwardCall call(p);
    bad.spoil(call);
    EXPECT_EQ(rbfc_forward(kernel.kernel, &call.args, nullptr),
              RBFC_ERROR_INVALID_ARGUMENT)
        << bad.expected;
    EXPECT_TRUE(contains(lastError(), bad.expected))
        << "expected '" << bad.expected << "' in: " << lastError();
    EXPECT_TRUE(contains(lastError(), "rbfc: biased: ")) << lastError();
    for (float x : call.o)
      ASSERT_TRUE(std::isnan(x)) << bad.expected << ": o was written";
  }

  rbfc_forward_args zero{};
  EXPECT_EQ(rbfc_forward(kernel.kernel, &zero, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "args->struct_size is 0, expected "));
  EXPECT_TRUE(contains(lastError(), "call rbfc_forward_args_init"));
  EXPECT_EQ(rbfc_forward(nullptr, &zero, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "kernel is null"));

  rbfc_backward_args backward;
  rbfc_backward_args_init(&backward);
  EXPECT_EQ(rbfc_backward(kernel.kernel, &backward, nullptr),
            RBFC_ERROR_UNSUPPORTED);
  EXPECT_TRUE(contains(lastError(), "compiled without a backward"));
}

/// One small problem (contiguous [B, H, N, D]) with a forward and a
/// backward call over it: loss = sum(o * grad_o) + sum(lse * grad_lse).
struct BackwardProblem {
  static constexpr int64_t B = 1, H = 2, KVH = 1, NQ = 5, NKV = 7, D = 64;
  std::vector<float> q, k, v, o, lse, gradO, gradLse, gradQ, gradK, gradV;
  std::vector<float> slopes{0.5f, 0.25f}, gradSlopes{NAN, NAN};
  double scale = 0.2;
  float gradScale = NAN;
  explicit BackwardProblem(unsigned seed) {
    std::mt19937 rng(seed);
    q = randomNormal(rng, B * H * NQ * D);
    k = randomNormal(rng, B * KVH * NKV * D);
    v = randomNormal(rng, B * KVH * NKV * D);
    gradO = randomNormal(rng, B * H * NQ * D);
    gradLse = randomNormal(rng, B * H * NQ);
    o.assign(q.size(), NAN);
    lse.assign(B * H * NQ, NAN);
    gradQ.assign(q.size(), NAN);
    gradK.assign(k.size(), NAN);
    gradV.assign(v.size(), NAN);
  }
  rbfc_tensor t(std::vector<float> &x, std::vector<int64_t> sizes) {
    return view(x.data(), RBFC_DTYPE_F32, sizes, contiguous(sizes));
  }
  rbfc_status forward(const rbfc_kernel *kernel) {
    rbfc_tensor captures = view(slopes.data(), RBFC_DTYPE_F32, {H}, {1});
    rbfc_forward_args args;
    rbfc_forward_args_init(&args);
    args.q = t(q, {B, H, NQ, D});
    args.k = t(k, {B, KVH, NKV, D});
    args.v = t(v, {B, KVH, NKV, D});
    args.o = t(o, {B, H, NQ, D});
    args.lse = t(lse, {B, H, NQ});
    args.params = &scale;
    args.num_params = 1;
    args.captures = &captures;
    args.num_captures = 1;
    return rbfc_forward(kernel, &args, nullptr);
  }
  double loss(const rbfc_kernel *kernel) {
    EXPECT_EQ(forward(kernel), RBFC_OK) << lastError();
    double sum = 0;
    for (size_t i = 0; i < o.size(); ++i)
      sum += double(o[i]) * gradO[i];
    for (size_t i = 0; i < lse.size(); ++i)
      sum += double(lse[i]) * gradLse[i];
    return sum;
  }
  rbfc_backward_args backwardArgs(rbfc_tensor &captures,
                                  rbfc_tensor &captureGrads,
                                  float *&paramGrad) {
    captures = view(slopes.data(), RBFC_DTYPE_F32, {H}, {1});
    captureGrads = view(gradSlopes.data(), RBFC_DTYPE_F32, {H}, {1});
    paramGrad = &gradScale;
    rbfc_backward_args args;
    rbfc_backward_args_init(&args);
    args.q = t(q, {B, H, NQ, D});
    args.k = t(k, {B, KVH, NKV, D});
    args.v = t(v, {B, KVH, NKV, D});
    args.o = t(o, {B, H, NQ, D});
    args.lse = t(lse, {B, H, NQ});
    args.grad_o = t(gradO, {B, H, NQ, D});
    args.grad_lse = t(gradLse, {B, H, NQ});
    args.grad_q = t(gradQ, {B, H, NQ, D});
    args.grad_k = t(gradK, {B, KVH, NKV, D});
    args.grad_v = t(gradV, {B, KVH, NKV, D});
    args.params = &scale;
    args.num_params = 1;
    args.captures = &captures;
    args.num_captures = 1;
    args.grad_params = &paramGrad;
    args.grad_captures = &captureGrads;
    return args;
  }
};

TEST(CAPIHost, BackwardMatchesFiniteDifferences) {
  Kernel kernel;
  rbfc_compile_options options = hostOptions();
  options.backward = 1;
  ASSERT_EQ(kernel.compile(kSpec, options), RBFC_OK) << lastError();
  rbfc_kernel_properties properties{};
  properties.struct_size = sizeof properties;
  ASSERT_EQ(rbfc_kernel_get_properties(kernel.kernel, &properties), RBFC_OK);
  EXPECT_EQ(properties.has_backward, 1);

  BackwardProblem p(11);
  ASSERT_EQ(p.forward(kernel.kernel), RBFC_OK) << lastError();
  rbfc_tensor captures, captureGrads;
  float *paramGrad;
  rbfc_backward_args args = p.backwardArgs(captures, captureGrads, paramGrad);
  ASSERT_EQ(rbfc_backward(kernel.kernel, &args, nullptr), RBFC_OK)
      << lastError();

  // Central differences of the loss in double over f32 outputs.
  auto check = [&](float &x, double analytic, const char *what) {
    const float eps = 1e-2f, saved = x;
    x = saved + eps;
    double up = p.loss(kernel.kernel);
    x = saved - eps;
    double down = p.loss(kernel.kernel);
    x = saved;
    double numeric = (up - down) / (2 * eps);
    EXPECT_NEAR(analytic, numeric, 3e-3 * (1 + std::abs(numeric))) << what;
  };
  check(p.q[3], p.gradQ[3], "dq");
  check(p.q[200], p.gradQ[200], "dq");
  check(p.k[70], p.gradK[70], "dk");
  check(p.v[131], p.gradV[131], "dv");
  check(p.slopes[1], p.gradSlopes[1], "dslopes");
  double savedScale = p.scale;
  p.scale = savedScale + 1e-2;
  double up = p.loss(kernel.kernel);
  p.scale = savedScale - 1e-2;
  double down = p.loss(kernel.kernel);
  p.scale = savedScale;
  EXPECT_NEAR(p.gradScale, (up - down) / 2e-2,
              3e-3 * (1 + std::abs((up - down) / 2e-2)))
      << "dscale";

  // Asked-for gradients only: none of the param's, a wrong capture size.
  p.gradScale = NAN;
  args.grad_params = nullptr;
  ASSERT_EQ(rbfc_backward(kernel.kernel, &args, nullptr), RBFC_OK);
  EXPECT_TRUE(std::isnan(p.gradScale)) << "written though not asked for";
  captureGrads.sizes[0] = 3;
  EXPECT_EQ(rbfc_backward(kernel.kernel, &args, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "slopes")) << lastError();
  captureGrads.sizes[0] = 2;
  args.grad_k.sizes[3] = 32;
  EXPECT_EQ(rbfc_backward(kernel.kernel, &args, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "rbfc: biased: ")) << lastError();
}

//===-- Spec and option errors ---------------------------------------------===//

TEST(CAPIErrors, SpecDiagnosticsHaveFileLineColumnLineAndCaret) {
  const char *spec = "attention typo {\n"
                     "  param gamma: f32 = 1.0;\n"
                     "  score = -gama * dist2(q, k);\n"
                     "}\n";
  for (rbfc_target target : {RBFC_TARGET_HOST, RBFC_TARGET_CUDA}) {
    Kernel kernel;
    rbfc_compile_options options =
        target == RBFC_TARGET_HOST ? hostOptions() : cudaOptions("");
    EXPECT_EQ(kernel.compile(spec, options, "typo.attn"), RBFC_ERROR_SPEC);
    EXPECT_EQ(kernel.kernel, nullptr);
    EXPECT_EQ(lastError(),
              "typo.attn:3:12: error: unknown name 'gama'; did you mean "
              "'gamma'?\n"
              "  score = -gama * dist2(q, k);\n"
              "           ^");
  }
  Kernel kernel;
  EXPECT_EQ(kernel.compile("attention x {", hostOptions(), nullptr),
            RBFC_ERROR_SPEC);
  EXPECT_TRUE(contains(lastError(), "<spec>:1:")) << lastError();
}

TEST(CAPISpec, ParsesWithoutATarget) {
  rbfc_spec *spec = nullptr;
  ASSERT_EQ(rbfc_spec_parse(kSpec, "spec.attn", &spec), RBFC_OK)
      << lastError();
  rbfc_spec_info info{};
  info.struct_size = sizeof info;
  ASSERT_EQ(rbfc_spec_get_info(spec, &info), RBFC_OK);
  EXPECT_STREQ(info.name, "biased");
  EXPECT_STREQ(info.normalization, "softmax");
  EXPECT_EQ(info.num_params, 1);
  EXPECT_EQ(info.num_captures, 1);
  rbfc_param_info param;
  ASSERT_EQ(rbfc_spec_param(spec, 0, &param), RBFC_OK);
  EXPECT_STREQ(param.name, "scale");
  EXPECT_EQ(param.has_default, 1);
  EXPECT_EQ(param.default_value, 0) << "defaults are per head dim";
  rbfc_capture_info capture;
  ASSERT_EQ(rbfc_spec_capture(spec, 0, &capture), RBFC_OK);
  EXPECT_STREQ(capture.name, "slopes");
  EXPECT_EQ(capture.type, RBFC_DTYPE_F32);
  EXPECT_EQ(rbfc_spec_capture(spec, 1, &capture), RBFC_ERROR_INVALID_ARGUMENT);
  rbfc_spec_release(spec);

  EXPECT_EQ(rbfc_spec_parse("attention x { score = q; }", "x.attn", &spec),
            RBFC_ERROR_SPEC);
  EXPECT_EQ(spec, nullptr);
  EXPECT_TRUE(contains(lastError(), "x.attn:1:23: error:")) << lastError();
}

TEST(CAPIErrors, OptionsAreChecked) {
  struct Case {
    const char *expected;
    std::function<void(rbfc_compile_options &)> spoil;
  } cases[] = {
      {"options->struct_size is 0",
       [](rbfc_compile_options &o) { o.struct_size = 0; }},
      {"options->head_dim is 0; expected 1 to 1024",
       [](rbfc_compile_options &o) { o.head_dim = 0; }},
      {"options->target is 7", [](rbfc_compile_options &o) {
         o.target = rbfc_target(7);
       }},
      {"options->dtype is i32; the host target takes bf16, f16 or f32",
       [](rbfc_compile_options &o) { o.dtype = RBFC_DTYPE_I32; }},
      {"options->dtype is f32; the cuda target takes bf16 or f16",
       [](rbfc_compile_options &o) {
         o.target = RBFC_TARGET_CUDA;
         o.arch = "sm_90a";
         o.dtype = RBFC_DTYPE_F32;
       }},
      {"options->backward needs options->lse",
       [](rbfc_compile_options &o) {
         o.lse = 0;
         o.backward = 1;
       }},
      {"options->arch is for the cuda target",
       [](rbfc_compile_options &o) { o.arch = "sm_90a"; }},
      {"options->arch is 'sm_75'; expected sm_80",
       [](rbfc_compile_options &o) {
         o.target = RBFC_TARGET_CUDA;
         o.dtype = RBFC_DTYPE_BF16;
         o.arch = "sm_75";
       }},
      {"rbfc: plan: expected an attribute like '#attn.plan<",
       [](rbfc_compile_options &o) {
         o.target = RBFC_TARGET_CUDA;
         o.dtype = RBFC_DTYPE_BF16;
         o.arch = "sm_90a";
         o.plan = "#attn.plan";
       }},
  };
  for (const Case &bad : cases) {
    rbfc_compile_options options = hostOptions();
    bad.spoil(options);
    Kernel kernel;
    EXPECT_EQ(kernel.compile(kSpec, options), RBFC_ERROR_INVALID_ARGUMENT)
        << bad.expected;
    EXPECT_TRUE(contains(lastError(), bad.expected))
        << "expected '" << bad.expected << "' in: " << lastError();
  }
  Kernel kernel;
  EXPECT_EQ(rbfc_compile(nullptr, nullptr, nullptr, &kernel.kernel),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "spec is null"));
  rbfc_compile_options options = hostOptions();
  EXPECT_EQ(rbfc_compile(kSpec, nullptr, &options, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "kernel out-pointer is null"));
  EXPECT_EQ(rbfc_api_version(), RBFC_API_VERSION);
}

//===-- CUDA target, up to the driver -------------------------------------===//

bool haveDriver() {
  if (void *handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    dlclose(handle);
    return true;
  }
  return false;
}

TEST(CAPICuda, CompilesToPtxAndChecksCallsWithoutAGpu) {
  Kernel kernel;
  rbfc_compile_options options = cudaOptions("");
  ASSERT_EQ(kernel.compile(kSpec, options), RBFC_OK) << lastError();
  rbfc_kernel_properties properties{};
  properties.struct_size = sizeof properties;
  ASSERT_EQ(rbfc_kernel_get_properties(kernel.kernel, &properties), RBFC_OK);
  EXPECT_EQ(properties.target, RBFC_TARGET_CUDA);
  EXPECT_STREQ(properties.info.arch, "sm_90a");
  EXPECT_EQ(properties.info.dtype, RBFC_DTYPE_BF16);
  EXPECT_GT(properties.info.tile_m, 0);
  EXPECT_TRUE(contains(properties.info.plan, "wgmma_cooperative"));

  // Pointers that are never dereferenced: every check runs before the
  // driver is needed.
  alignas(16) static char fake[16];
  auto bf16 = [&](std::vector<int64_t> sizes) {
    return view(fake, RBFC_DTYPE_BF16, sizes, contiguous(sizes));
  };
  float slope = 0;
  rbfc_tensor slopes = view(&slope, RBFC_DTYPE_F32, {4}, {1});
  rbfc_forward_args args;
  rbfc_forward_args_init(&args);
  args.q = args.o = bf16({1, 4, 100, 64});
  args.k = args.v = bf16({1, 2, 80, 64});
  args.lse = view(fake, RBFC_DTYPE_F32, {1, 4, 100}, {400, 100, 1});
  args.captures = &slopes;
  args.num_captures = 1;

  rbfc_forward_args bad = args;
  bad.k.sizes[3] = 128;
  bad.v.sizes[3] = 128;
  EXPECT_EQ(rbfc_forward(kernel.kernel, &bad, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "rbfc: biased: k: shape [1, 2, 80, 128] "
                                    "does not fit q"))
      << lastError();
  bad = args;
  bad.lse.data = nullptr;
  EXPECT_EQ(rbfc_forward(kernel.kernel, &bad, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "lse: the kernel was compiled with --lse"))
      << lastError();
  rbfc_backward_args backward;
  rbfc_backward_args_init(&backward);
  EXPECT_EQ(rbfc_backward(kernel.kernel, &backward, nullptr),
            RBFC_ERROR_UNSUPPORTED);
  EXPECT_TRUE(contains(lastError(), "compiled without a backward"))
      << lastError();
  if (haveDriver())
    GTEST_SKIP() << "a CUDA driver is installed here";
  EXPECT_EQ(rbfc_forward(kernel.kernel, &args, nullptr), RBFC_ERROR_NO_DRIVER);
  EXPECT_TRUE(contains(lastError(), "cannot load the CUDA driver"))
      << lastError();
}

TEST(CAPICuda, BackwardChecksCallsWithoutAGpu) {
  // A learnable ALiBi slope per head and a table read along anti-diagonals
  // (q_idx + kv_idx): the GPU backward gives the first a gradient, not the
  // second (docs/backward.md); an int parameter has none.
  const char *spec = "attention learnable {\n"
                     "  capture slopes: f32[?];\n"
                     "  capture table: f32[?, ?];\n"
                     "  param width: int = 4;\n"
                     "  score = dot(q, k) + slopes[h] * (kv_idx - q_idx)\n"
                     "          + table[h, q_idx + kv_idx];\n"
                     "  mask = q_idx - kv_idx < width * 100;\n"
                     "}\n";
  Kernel kernel;
  rbfc_compile_options options = cudaOptions("");
  options.lse = 1;
  options.backward = 1;
  ASSERT_EQ(kernel.compile(spec, options), RBFC_OK) << lastError();
  rbfc_kernel_properties properties{};
  properties.struct_size = sizeof properties;
  ASSERT_EQ(rbfc_kernel_get_properties(kernel.kernel, &properties), RBFC_OK);
  EXPECT_TRUE(properties.has_backward);

  alignas(16) static char fake[64];
  auto bf16 = [&](std::vector<int64_t> sizes) {
    return view(fake, RBFC_DTYPE_BF16, sizes, contiguous(sizes));
  };
  alignas(16) static float slopes[4], table[4 * 179], slopesGrad[4],
      tableGrad[4 * 179];
  rbfc_tensor captures[] = {view(slopes, RBFC_DTYPE_F32, {4}, {1}),
                            view(table, RBFC_DTYPE_F32, {4, 179}, {179, 1})};
  rbfc_tensor captureGrads[] = {
      view(slopesGrad, RBFC_DTYPE_F32, {4}, {1}),
      view(nullptr, RBFC_DTYPE_F32, {4, 179}, {179, 1})};
  rbfc_backward_args args;
  rbfc_backward_args_init(&args);
  args.q = args.o = args.grad_o = args.grad_q = bf16({1, 4, 100, 64});
  args.k = args.v = args.grad_k = args.grad_v = bf16({1, 2, 80, 64});
  args.lse = view(fake, RBFC_DTYPE_F32, {1, 4, 100}, {400, 100, 1});
  args.captures = captures;
  args.num_captures = 2;
  args.grad_captures = captureGrads;

  rbfc_backward_args bad = args;
  bad.grad_k.sizes[2] = 81;
  EXPECT_EQ(rbfc_backward(kernel.kernel, &bad, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "grad_k: shape [1, 2, 81, 64] differs "
                                    "from [1, 2, 80, 64]"))
      << lastError();
  bad = args;
  rbfc_tensor askTable[] = {captureGrads[0],
                            view(tableGrad, RBFC_DTYPE_F32, {4, 179}, {179, 1})};
  bad.grad_captures = askTable;
  EXPECT_EQ(rbfc_backward(kernel.kernel, &bad, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "grad of capture 'table': the GPU "
                                    "backward computes gradients of captures "
                                    "read at indices that depend on the "
                                    "batch and head only"))
      << lastError();
  bad = args;
  float widthGrad;
  float *paramGrads[] = {&widthGrad};
  bad.grad_params = paramGrads;
  EXPECT_EQ(rbfc_backward(kernel.kernel, &bad, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "grad of param 'width': it is an int "
                                    "parameter and has no gradient"))
      << lastError();
  bad = args;
  bad.lse.data = nullptr;
  EXPECT_EQ(rbfc_backward(kernel.kernel, &bad, nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(lastError(), "lse")) << lastError();
  if (haveDriver())
    GTEST_SKIP() << "a CUDA driver is installed here";
  EXPECT_EQ(rbfc_backward(kernel.kernel, &args, nullptr), RBFC_ERROR_NO_DRIVER);
}

TEST(CAPICuda, AHeadDimTheKernelCannotTakeSaysSoBriefly) {
  Kernel kernel;
  rbfc_compile_options options = cudaOptions("");
  options.head_dim = 40;
  EXPECT_NE(kernel.compile(kSpec, options), RBFC_OK);
  EXPECT_TRUE(contains(lastError(), "the head dimension must be"))
      << lastError();
  // The message and the caret, not the op in MLIR's generic form.
  EXPECT_FALSE(contains(lastError(), "see current operation")) << lastError();
}

/// A kernel compiled for CUDA and the q [2, 8, 100, 64] and k [2, 4, 300,
/// 64] its workspace is asked for (pointers never read).
struct CAPIWorkspace : ::testing::Test {
  Kernel kernel;
  rbfc_compile_options options = cudaOptions("");
  rbfc_tensor q = view(nullptr, RBFC_DTYPE_BF16, {2, 8, 100, 64},
                       contiguous({2, 8, 100, 64}));
  rbfc_tensor k = view(nullptr, RBFC_DTYPE_BF16, {2, 4, 300, 64},
                       contiguous({2, 4, 300, 64}));
  size_t bytes = 0;

  /// Compiles `spec` into `kernel` and asks its forward workspace.
  void compileAndAsk(const char *spec) {
    ASSERT_EQ(kernel.compile(spec, options), RBFC_OK) << lastError();
    ASSERT_EQ(rbfc_kernel_workspace_bytes(kernel.kernel, &q, &k, &bytes),
              RBFC_OK)
        << lastError();
  }
};

TEST_F(CAPIWorkspace, KeyTermsNeedAWorkspace) {
  const char *rbf = "attention rbf {\n"
                    "  param gamma: f32 = 0.125;\n"
                    "  score = -gamma * dist2(q, k);\n"
                    "}\n";
  ASSERT_NO_FATAL_FAILURE(compileAndAsk(rbf));
  EXPECT_GE(bytes, size_t(2 * 4 * 300 * 4));
  // The backward's workspace (delta and lse2 per row at least), and the
  // error of a kernel without a backward.
  EXPECT_EQ(rbfc_kernel_backward_workspace_bytes(kernel.kernel, &q, &k, &bytes),
            RBFC_ERROR_UNSUPPORTED);
  EXPECT_TRUE(contains(lastError(), "without backward")) << lastError();
  Kernel withBackward;
  options.backward = 1;
  ASSERT_EQ(withBackward.compile(rbf, options), RBFC_OK) << lastError();
  ASSERT_EQ(rbfc_kernel_backward_workspace_bytes(withBackward.kernel, &q, &k,
                                                 &bytes),
            RBFC_OK)
      << lastError();
  EXPECT_GE(bytes, size_t(2 * 2 * 8 * 100 * 4));
  EXPECT_EQ(rbfc_kernel_backward_workspace_bytes(withBackward.kernel, &q, &k,
                                                 nullptr),
            RBFC_ERROR_INVALID_ARGUMENT);
}

TEST_F(CAPIWorkspace, SmallKernelAddsNoWorkspace) {
  // A per-head gamma keeps the key bias out of S = Q K^T: the cooperative
  // kernel at 64 takes its terms on 64-key tiles (rows padded to 64), one
  // row per query head. The small-problem kernel beside it computes its
  // terms in its producer's warps (docs/abi.md, "Small problems") and
  // takes no workspace, so its 128-key tiles pad nothing.
  const char *spec = "attention rbf_head_gamma {\n"
                     "  capture gammas: f32[?];\n"
                     "  score = -gammas[h] * dist2(q, k);\n"
                     "}\n";
  ASSERT_NO_FATAL_FAILURE(compileAndAsk(spec));
  // 300 keys padded to 320, not to the small kernel's 384.
  EXPECT_EQ(bytes, size_t(2 * 8 * 320 * 4));
}

//===-- Caches -------------------------------------------------------------===//

/// The one entry file in `dir`.
fs::path onlyEntry(const fs::path &dir) {
  std::vector<fs::path> entries;
  for (const auto &entry : fs::directory_iterator(dir))
    entries.push_back(entry.path());
  EXPECT_EQ(entries.size(), 1u);
  return entries.empty() ? fs::path() : entries.front();
}

std::string readFile(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void writeFile(const fs::path &path, const std::string &contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

TEST(CAPICache, MemoryHitsReturnTheSameKernel) {
  rbfc_compile_options options = hostOptions();
  Kernel first, second;
  ASSERT_EQ(first.compile(kSpec, options), RBFC_OK) << lastError();
  rbfc_cache_stats before = stats();
  ASSERT_EQ(second.compile(kSpec, options, "another-name.attn"), RBFC_OK);
  rbfc_cache_stats after = stats();
  EXPECT_EQ(after.memory_hits, before.memory_hits + 1);
  EXPECT_EQ(after.compiles, before.compiles);
  rbfc_kernel_properties a{}, b{};
  a.struct_size = b.struct_size = sizeof a;
  ASSERT_EQ(rbfc_kernel_get_properties(first.kernel, &a), RBFC_OK);
  ASSERT_EQ(rbfc_kernel_get_properties(second.kernel, &b), RBFC_OK);
  EXPECT_EQ(a.info.name, b.info.name) << "one kernel behind both handles";
}

TEST(CAPICache, DiskEntriesAreReusedAndDamagedOnesRebuilt) {
  fs::path dir = freshDirectory("disk");
  std::string cache = dir.string();
  rbfc_compile_options options = cudaOptions(cache.c_str());
  const char *spec = "attention disk_cached {\n"
                     "  score = dot(q, k) * 0.5;\n"
                     "}\n";
  rbfc_cache_stats s0 = stats();
  {
    Kernel kernel;
    ASSERT_EQ(kernel.compile(spec, options), RBFC_OK) << lastError();
  }
  rbfc_cache_stats s1 = stats();
  EXPECT_EQ(s1.compiles, s0.compiles + 1);
  fs::path entry = onlyEntry(dir);
  std::string good = readFile(entry);
  EXPECT_TRUE(contains(good, "disk_cached_fwd")) << "holds the PTX";

  auto compileFromDisk = [&]() {
    rbfc_cache_clear_memory();
    Kernel kernel;
    EXPECT_EQ(kernel.compile(spec, options), RBFC_OK) << lastError();
  };
  compileFromDisk();
  rbfc_cache_stats s2 = stats();
  EXPECT_EQ(s2.disk_hits, s1.disk_hits + 1);
  EXPECT_EQ(s2.compiles, s1.compiles);

  std::string flipped = good;
  flipped[flipped.size() - 10] ^= 1;
  std::string header = good.substr(0, good.find('\n'));
  fs::path otherDir = freshDirectory("disk-other");
  std::string otherCache = otherDir.string();
  {
    Kernel other;
    ASSERT_EQ(other.compile(kSpec, cudaOptions(otherCache.c_str())), RBFC_OK);
  }
  std::string otherKey = readFile(onlyEntry(otherDir));
  std::vector<std::pair<const char *, std::string>> damaged = {
      {"one bit flipped in the image", flipped},
      {"truncated", good.substr(0, good.size() / 2)},
      {"header only", header},
      {"empty", ""},
      {"another key's entry", otherKey},
      {"garbage", std::string(300, '\x7f')},
  };
  for (const auto &[what, contents] : damaged) {
    writeFile(entry, contents);
    rbfc_cache_stats before = stats();
    compileFromDisk();
    rbfc_cache_stats after = stats();
    EXPECT_EQ(after.disk_rejected, before.disk_rejected + 1) << what;
    EXPECT_EQ(after.compiles, before.compiles + 1) << what;
    EXPECT_EQ(readFile(entry), good) << what << ": rebuilt in place";
  }
  EXPECT_EQ(onlyEntry(dir), entry) << "no temporary file left behind";

  // A folder that cannot be created costs the cache, not the kernel.
  fs::path blocked = dir / "blocked";
  writeFile(blocked, "a file, not a folder");
  std::string unwritableCache = (blocked / "sub").string();
  rbfc_compile_options unwritable = cudaOptions(unwritableCache.c_str());
  rbfc_cache_stats before = stats();
  rbfc_cache_clear_memory();
  Kernel kernel;
  EXPECT_EQ(kernel.compile(spec, unwritable), RBFC_OK) << lastError();
  EXPECT_EQ(stats().disk_write_failures, before.disk_write_failures + 1);
  fs::remove_all(dir);
  fs::remove_all(otherDir);
}

TEST(CAPICache, EightThreadsCompileOneKernelOnce) {
  fs::path dir = freshDirectory("threads");
  std::string cache = dir.string();
  const char *spec = "attention threads {\n"
                     "  param cap: f32 = 30.0;\n"
                     "  score = cap * tanh(dot(q, k) / cap);\n"
                     "}\n";
  for (rbfc_target target : {RBFC_TARGET_HOST, RBFC_TARGET_CUDA}) {
    rbfc_compile_options options =
        target == RBFC_TARGET_HOST ? hostOptions() : cudaOptions(cache.c_str());
    rbfc_cache_stats before = stats();
    std::vector<rbfc_status> statuses(8, RBFC_ERROR_IO);
    std::vector<rbfc_kernel *> kernels(8, nullptr);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&, t] {
        statuses[t] = rbfc_compile(spec, "threads.attn", &options, &kernels[t]);
      });
    for (std::thread &thread : threads)
      thread.join();
    for (int t = 0; t < 8; ++t) {
      EXPECT_EQ(statuses[t], RBFC_OK) << "thread " << t;
      EXPECT_NE(kernels[t], nullptr);
      rbfc_kernel_release(kernels[t]);
    }
    rbfc_cache_stats after = stats();
    EXPECT_EQ(after.compiles, before.compiles + 1) << "target " << target;
    EXPECT_EQ(after.memory_hits, before.memory_hits + 7) << "target " << target;
  }
  // Distinct kernels on distinct threads compile side by side.
  rbfc_cache_stats before = stats();
  std::vector<std::thread> threads;
  std::vector<rbfc_status> statuses(8, RBFC_ERROR_IO);
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      std::string text = "attention distinct" + std::to_string(t) +
                         " {\n  score = dot(q, k) * " + std::to_string(t + 1) +
                         ".0;\n}\n";
      rbfc_compile_options options = hostOptions();
      rbfc_kernel *kernel = nullptr;
      statuses[t] = rbfc_compile(text.c_str(), nullptr, &options, &kernel);
      rbfc_kernel_release(kernel);
    });
  for (std::thread &thread : threads)
    thread.join();
  for (rbfc_status status : statuses)
    EXPECT_EQ(status, RBFC_OK);
  EXPECT_EQ(stats().compiles, before.compiles + 8);
  fs::remove_all(dir);
}

const char *kProcessSpec = "attention processes {\n"
                           "  capture bias: f32[?, ?];\n"
                           "  score = dot(q, k) + bias[h, kv_idx];\n"
                           "}\n";

// Run by FourProcessesShareOneCache in each child process.
TEST(CAPICacheChild, CompileIntoSharedCache) {
  const char *dir = std::getenv("RBFC_CAPI_TEST_CHILD_CACHE");
  if (!dir)
    GTEST_SKIP() << "run by CAPICache.FourProcessesShareOneCache";
  Kernel kernel;
  ASSERT_EQ(kernel.compile(kProcessSpec, cudaOptions(dir)), RBFC_OK)
      << lastError();
  rbfc_cache_stats s = stats();
  EXPECT_EQ(s.disk_rejected, 0u) << "a reader saw a partial entry";
  EXPECT_EQ(s.compiles + s.disk_hits, 1u);
}

TEST(CAPICache, FourProcessesShareOneCache) {
  fs::path dir = freshDirectory("processes");
  std::string cache = dir.string();
  std::string env = "RBFC_CAPI_TEST_CHILD_CACHE=" + dir.string();
  // The children's reports would bury this test's; failures show in
  // their exit status.
  posix_spawn_file_actions_t quiet;
  posix_spawn_file_actions_init(&quiet);
  posix_spawn_file_actions_addopen(&quiet, STDOUT_FILENO, "/dev/null",
                                   O_WRONLY, 0);
  std::vector<char *> envp;
  for (char **e = environ; *e; ++e)
    envp.push_back(*e);
  envp.push_back(env.data());
  envp.push_back(nullptr);
  std::string self = fs::read_symlink("/proc/self/exe");
  std::string filter = "--gtest_filter=CAPICacheChild.CompileIntoSharedCache";
  char *argv[] = {self.data(), filter.data(), nullptr};
  // Two rounds: four processes racing on an empty cache, then four that
  // find the entry.
  for (int round = 0; round < 2; ++round) {
    std::vector<pid_t> children(4);
    for (pid_t &child : children)
      ASSERT_EQ(posix_spawn(&child, self.c_str(), &quiet, nullptr, argv,
                            envp.data()),
                0);
    for (pid_t child : children) {
      int status = 0;
      ASSERT_EQ(waitpid(child, &status, 0), child);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "round " << round << ": a child failed";
    }
  }
  posix_spawn_file_actions_destroy(&quiet);
  onlyEntry(dir);
  rbfc_cache_stats before = stats();
  Kernel kernel;
  ASSERT_EQ(kernel.compile(kProcessSpec, cudaOptions(cache.c_str())), RBFC_OK);
  EXPECT_EQ(stats().disk_hits, before.disk_hits + 1);
  fs::remove_all(dir);
}

} // namespace
