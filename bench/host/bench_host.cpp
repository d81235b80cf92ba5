//===- bench_host.cpp - host backend speed, forward and forward+backward --===//
//
// Times rbfc::host::HostKernel on examples/softmax.attn, causal.attn and
// rbf.attn (fp32, B=1, H=8, D=64) for the sequence lengths given on the
// command line, on 1 and 2 threads: the forward alone, and the forward (with
// LSE) followed by the backward. Prints one JSON object per measurement on
// standard output, so that bench/host/run.sh can put them next to torch's
// (torch_sdpa.py prints the same records). RBFC_BENCH_IMPL names the
// build in the records ("rbfc" by default), so that run.sh can time an
// older build beside this one; RBFC_BENCH_SCHEDULE=split or fused forces
// the backward's schedule (default: the automatic choice);
// RBFC_BENCH_TILING="TILE_M,TILE_N,ROWS_PER_STEP" sets HostTiling's fields
// (0 keeps a default), to time other blockings.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Host/HostKernel.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using rbfc::host::ElementType;
using rbfc::host::HostKernel;

namespace {

constexpr int64_t kBatch = 1, kHeads = 8, kHeadDim = 64;

std::string readFile(const std::string &path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

/// Best wall time of `repeats` calls after one warm-up call; exits on error.
double bestSeconds(int repeats, const std::function<llvm::Error()> &call) {
  double best = 1e30;
  for (int repeat = 0; repeat <= repeats; ++repeat) {
    auto start = std::chrono::steady_clock::now();
    if (llvm::Error error = call()) {
      std::fprintf(stderr, "%s\n", llvm::toString(std::move(error)).c_str());
      std::exit(1);
    }
    double elapsed = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    if (repeat > 0)
      best = std::min(best, elapsed);
  }
  return best;
}

} // namespace

int main(int argc, char **argv) {
  std::string examples = argc > 1 ? argv[1] : "examples";
  std::vector<int64_t> lengths;
  for (int i = 2; i < argc; ++i)
    lengths.push_back(std::atoll(argv[i]));
  if (lengths.empty())
    lengths = {1024, 4096};
  const char *impl = std::getenv("RBFC_BENCH_IMPL");
  if (!impl)
    impl = "rbfc";
  auto schedule = rbfc::host::BackwardSchedule::automatic;
  if (const char *name = std::getenv("RBFC_BENCH_SCHEDULE"))
    schedule = std::string(name) == "split"
                   ? rbfc::host::BackwardSchedule::split
                   : rbfc::host::BackwardSchedule::fused;

  rbfc::host::HostTiling tiling;
  if (const char *fields = std::getenv("RBFC_BENCH_TILING")) {
    long long tileM = 0, tileN = 0, rows = 0;
    if (std::sscanf(fields, "%lld,%lld,%lld", &tileM, &tileN, &rows) != 3 ||
        tileM < 0 || tileN < 0 || rows < 0) {
      std::fprintf(stderr, "RBFC_BENCH_TILING: want TILE_M,TILE_N,ROWS, "
                           "each >= 0 (0: the default), got \"%s\"\n",
                   fields);
      return 1;
    }
    tiling.tileM = tileM ? tileM : tiling.tileM;
    tiling.tileN = tileN ? tileN : tiling.tileN;
    tiling.rowsPerStep = rows;
  }

  for (const char *spec : {"softmax", "causal", "rbf"}) {
    rbfc::host::HostKernelOptions options;
    options.tiling = tiling;
    options.headDim = kHeadDim;
    options.dtype = "f32";
    options.withBackward = true;
    auto kernel = HostKernel::compile(
        readFile(examples + "/" + spec + ".attn"), spec, options);
    if (!kernel) {
      std::fprintf(stderr, "%s\n", llvm::toString(kernel.takeError()).c_str());
      return 1;
    }
    for (int64_t n : lengths) {
      const size_t count = kBatch * kHeads * n * kHeadDim;
      std::vector<float> q(count), k(count), v(count), o(count), dO(count),
          dQ(count), dK(count), dV(count), lse(kBatch * kHeads * n);
      std::mt19937 rng(42);
      std::normal_distribution<float> normal;
      for (auto *buffer : {&q, &k, &v, &dO})
        for (float &x : *buffer)
          x = normal(rng);
      std::vector<int64_t> sizes{kBatch, kHeads, n, kHeadDim},
          lseSizes{kBatch, kHeads, n};
      auto strides = rbfc::host::contiguousStrides(sizes);
      auto tensor = [&](std::vector<float> &data) {
        return rbfc::host::TensorRef{data.data(), ElementType::f32, sizes,
                                     strides};
      };
      rbfc::host::HostKernelArgs forward;
      forward.query = tensor(q);
      forward.key = tensor(k);
      forward.value = tensor(v);
      forward.output = tensor(o);
      forward.lse = {lse.data(), ElementType::f32, lseSizes,
                     rbfc::host::contiguousStrides(lseSizes)};
      rbfc::host::HostBackwardArgs backward;
      backward.query = forward.query;
      backward.key = forward.key;
      backward.value = forward.value;
      backward.output = forward.output;
      backward.lse = forward.lse;
      backward.outputGrad = tensor(dO);
      backward.queryGrad = tensor(dQ);
      backward.keyGrad = tensor(dK);
      backward.valueGrad = tensor(dV);
      backward.schedule = schedule;

      // Fewer repeats where one call takes seconds.
      const int repeats = n > 2048 ? 2 : 3;
      for (unsigned threads : {1u, 2u}) {
        forward.numThreads = backward.numThreads = threads;
        double fwd =
            bestSeconds(repeats, [&] { return (*kernel)->run(forward); });
        double fwdBwd = bestSeconds(repeats, [&]() -> llvm::Error {
          if (llvm::Error error = (*kernel)->run(forward))
            return error;
          return (*kernel)->backward(backward);
        });
        for (auto [direction, seconds] :
             {std::pair{"fwd", fwd}, std::pair{"fwd+bwd", fwdBwd}})
          std::printf("{\"impl\": \"%s\", \"spec\": \"%s\", \"n\": %lld, "
                      "\"threads\": %u, \"direction\": \"%s\", \"ms\": %.2f}\n",
                      impl, spec, static_cast<long long>(n), threads,
                      direction, 1e3 * seconds);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
