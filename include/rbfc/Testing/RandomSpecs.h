//===- RandomSpecs.h - random attention specs for property tests -*- C++
//-*-===//
//
// Random score and mask expressions from the .attn grammar, the spec that
// wraps them, and random inputs for it: the algebra property test compares
// the canonical form with the spec as written on them, the host backward's
// property test compares its gradients with the float64 chain rule.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_TESTING_RANDOMSPECS_H
#define RBFC_TESTING_RANDOMSPECS_H

#include "rbfc/Testing/ReferenceInterpreter.h"

#include <random>
#include <string>

namespace rbfc::test {

/// Draws random .attn expressions. Amplitudes stay moderate so that exp()
/// of a score is far from overflow and the comparison measures the algebra.
class ExpressionGenerator {
public:
  explicit ExpressionGenerator(uint64_t seed) : rng(seed) {}

  std::string score(int depth) {
    if (depth == 0 || pick(4) == 0)
      return leaf();
    switch (pick(9)) {
    case 0:
      return "(" + score(depth - 1) + " + " + score(depth - 1) + ")";
    case 1:
      return "(" + score(depth - 1) + " - " + score(depth - 1) + ")";
    case 2:
      return "(" + score(depth - 1) + " * " + score(depth - 1) + ")";
    case 3:
      return "-" + score(depth - 1);
    case 4:
      return "tanh(" + score(depth - 1) + ")";
    case 5:
      return "(" + score(depth - 1) + " / 2.0)";
    case 6:
      return score(depth - 1) + " / (1.0 + g * g)";
    case 7:
      return "g * (" + score(depth - 1) + " + " + score(depth - 1) + ")";
    default:
      return "select(" + condition() + ", " + score(depth - 1) + ", " +
             score(depth - 1) + ")";
    }
  }

  std::string mask(int depth) {
    if (depth == 0 || pick(3) == 0)
      return condition();
    switch (pick(4)) {
    case 0:
      return "(" + mask(depth - 1) + " && " + mask(depth - 1) + ")";
    case 1:
      return "(" + mask(depth - 1) + " || " + mask(depth - 1) + ")";
    case 2:
      return "!(" + mask(depth - 1) + ")";
    default:
      return "select(" + condition() + ", " + mask(depth - 1) + ", " +
             mask(depth - 1) + ")";
    }
  }

  unsigned pick(unsigned n) {
    return std::uniform_int_distribution<unsigned>(0, n - 1)(rng);
  }
  double uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  }
  std::mt19937_64 &engine() { return rng; }

private:
  std::string leaf() {
    static const char *kLeaves[] = {"dot(q, k)",
                                    "norm2(q)",
                                    "norm2(k)",
                                    "dist2(q, k)",
                                    "dist2(k, q)",
                                    "g",
                                    "s",
                                    "float(q_idx) * 0.25",
                                    "float(kv_idx) * 0.25",
                                    "float(h)",
                                    "bq[q_idx]",
                                    "bk[kv_idx]",
                                    "bh[h]",
                                    "0.5",
                                    "1.5",
                                    "-2.0",
                                    "float(kv_idx - q_idx) * s",
                                    "float(b)",
                                    "bh[h] * dot(q, k)",
                                    "dot(q, k) / sqrt(head_dim)"};
    return kLeaves[pick(std::size(kLeaves))];
  }
  std::string condition() {
    static const char *kConditions[] = {
        "kv_idx <= q_idx",
        "q_idx - kv_idx < w",
        "kv_idx < w || kv_idx <= q_idx",
        "doc[q_idx] == doc[kv_idx]",
        "doc[q_idx] != doc[kv_idx]",
        "abs(q_idx - kv_idx) <= 2",
        "kv_idx >= q_idx // 2",
        "(q_idx + kv_idx) % 3 != 0",
        "max(q_idx, kv_idx) < 7",
        "min(q_idx, 2 * kv_idx) > 1",
        "kv_idx * 2 <= q_idx + w",
        "h == 1",
        "kv_idx < kv_len - 3",
        "q_idx >= kv_idx - w && kv_idx <= q_idx + 1"};
    return kConditions[pick(std::size(kConditions))];
  }

  std::mt19937_64 rng;
};

/// A spec with parameters g, s (f32) and w (int), captures bq[q_len],
/// bk[kv_len], bh[heads] (f32) and doc (i32), and the given score and mask.
std::string makeSpec(const std::string &score, const std::string &mask,
                     bool softmax);

/// Random inputs for a makeSpec spec: batch 2, 4 heads, 1 or 2 kv heads,
/// q_len 1-9, kv_len 1-11, head_dim 8; sorted document ids.
AttentionInputs randomInputs(ExpressionGenerator &gen);

} // namespace rbfc::test

#endif // RBFC_TESTING_RANDOMSPECS_H
