//===- bench_host.cpp - host backend speed against a naive reference -----===//
//
// Times rbfc::host::HostKernel (examples/softmax.attn and causal.attn,
// fp32) against a naive attention that materialises the N x N score matrix,
// for B=1, H=8, D=64 and the sequence lengths given on the command line.
// Built and run by bench/host/run.sh.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Host/HostKernel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using rbfc::host::ElementType;
using rbfc::host::HostKernel;

namespace {

constexpr int64_t kBatch = 1, kHeads = 8, kHeadDim = 64;

double seconds(const std::chrono::steady_clock::time_point &start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

/// softmax(Q K^T / sqrt(D)) V with the whole score matrix in memory.
void naiveAttention(const std::vector<float> &q, const std::vector<float> &k,
                    const std::vector<float> &v, std::vector<float> &o,
                    int64_t n, bool causal) {
  const float scale = 1.0f / std::sqrt(float(kHeadDim));
  std::vector<float> scores(n * n);
  for (int64_t h = 0; h < kBatch * kHeads; ++h) {
    const float *qh = &q[h * n * kHeadDim], *kh = &k[h * n * kHeadDim],
                *vh = &v[h * n * kHeadDim];
    float *oh = &o[h * n * kHeadDim];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        float dot = 0;
        for (int64_t d = 0; d < kHeadDim; ++d)
          dot += qh[i * kHeadDim + d] * kh[j * kHeadDim + d];
        scores[i * n + j] = causal && j > i ? -INFINITY : dot * scale;
      }
    for (int64_t i = 0; i < n; ++i) {
      float *row = &scores[i * n];
      float max = *std::max_element(row, row + n), sum = 0;
      for (int64_t j = 0; j < n; ++j)
        sum += row[j] = std::exp(row[j] - max);
      std::fill(oh + i * kHeadDim, oh + (i + 1) * kHeadDim, 0.0f);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t d = 0; d < kHeadDim; ++d)
          oh[i * kHeadDim + d] += row[j] / sum * vh[j * kHeadDim + d];
    }
  }
}

std::string readFile(const std::string &path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

} // namespace

int main(int argc, char **argv) {
  std::string examples = argc > 1 ? argv[1] : "examples";
  std::vector<int64_t> lengths;
  for (int i = 2; i < argc; ++i)
    lengths.push_back(std::atoll(argv[i]));
  if (lengths.empty())
    lengths = {1024, 4096};

  std::printf("%-8s %6s %8s %14s %14s %14s %10s\n", "spec", "N", "threads",
              "rbfc host ms", "naive ms", "speedup", "max |diff|");
  for (const char *spec : {"softmax", "causal"}) {
    rbfc::host::HostKernelOptions options;
    options.headDim = kHeadDim;
    options.dtype = "f32";
    auto start = std::chrono::steady_clock::now();
    auto kernel = HostKernel::compile(
        readFile(examples + "/" + spec + ".attn"), spec, options);
    if (!kernel) {
      std::fprintf(stderr, "%s\n", llvm::toString(kernel.takeError()).c_str());
      return 1;
    }
    std::printf("# %s: compiled in %.0f ms\n", spec, 1e3 * seconds(start));
    for (int64_t n : lengths) {
      size_t count = kBatch * kHeads * n * kHeadDim;
      std::vector<float> q(count), k(count), v(count), o(count), naive(count);
      std::mt19937 rng(42);
      std::normal_distribution<float> normal;
      for (auto *buffer : {&q, &k, &v})
        for (float &x : *buffer)
          x = normal(rng);
      std::vector<int64_t> sizes{kBatch, kHeads, n, kHeadDim};
      auto strides = rbfc::host::contiguousStrides(sizes);
      rbfc::host::HostKernelArgs args;
      args.query = {q.data(), ElementType::f32, sizes, strides};
      args.key = {k.data(), ElementType::f32, sizes, strides};
      args.value = {v.data(), ElementType::f32, sizes, strides};
      args.output = {o.data(), ElementType::f32, sizes, strides};

      start = std::chrono::steady_clock::now();
      naiveAttention(q, k, v, naive, n, std::string(spec) == "causal");
      double naiveTime = seconds(start);
      for (unsigned threads : {1u, 2u}) {
        args.numThreads = threads;
        double best = 1e30;
        for (int repeat = 0; repeat < 3; ++repeat) {
          start = std::chrono::steady_clock::now();
          if (llvm::Error error = (*kernel)->run(args)) {
            std::fprintf(stderr, "%s\n", llvm::toString(std::move(error)).c_str());
            return 1;
          }
          best = std::min(best, seconds(start));
        }
        double diff = 0;
        for (size_t i = 0; i < count; ++i)
          diff = std::max(diff, double(std::fabs(o[i] - naive[i])));
        std::printf("%-8s %6lld %8u %14.1f %14.1f %13.2fx %10.2g\n", spec,
                    static_cast<long long>(n), threads, 1e3 * best,
                    1e3 * naiveTime, naiveTime / best, diff);
      }
    }
  }
  return 0;
}
