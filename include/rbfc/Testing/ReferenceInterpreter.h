//===- ReferenceInterpreter.h - float64 semantics of attn IR ----*- C++ -*-===//
//
// A small interpreter of attn.attention for tests only: it evaluates the
// regions op by op in double precision and materialises every score, so it
// shares no code with the compiler's schedules. It gives the meaning that
// the algebra passes must preserve and the backends must reproduce.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_TESTING_REFERENCEINTERPRETER_H
#define RBFC_TESTING_REFERENCEINTERPRETER_H

#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/Support/LLVM.h"

#include <string>
#include <vector>

namespace rbfc::test {

/// A captured tensor, row-major.
struct CaptureData {
  std::vector<int64_t> shape;
  std::vector<double> values;
};

/// Problem sizes and row-major [batch, heads, len, head_dim] inputs.
struct AttentionInputs {
  int64_t batch = 1, heads = 1, kvHeads = 1, qLen = 1, kvLen = 1, headDim = 1;
  std::vector<double> query, key, value;
  std::vector<double> params; // one per op parameter (ints as doubles)
  std::vector<CaptureData> captures;
};

struct AttentionResult {
  std::vector<double> output; // [batch, heads, q_len, head_dim]
  std::vector<double> lse;    // [batch, heads, q_len]
};

/// The gradients of a scalar loss L through the attention op: with
/// dL/dO = `outputGrad` and dL/dlse = `lseGrad` (empty: zero), the
/// gradients of q, k, v (layouts of AttentionInputs), of every parameter
/// (0 for int ones) and of every captured tensor (row-major, 0 for integer
/// captures). The *Scale members hold, per entry, the sum of the absolute
/// values of the terms that make it up: a gradient that is a small
/// difference of large terms is only as precise as they are.
struct AttentionGradients {
  std::vector<double> query, key, value;
  std::vector<double> queryScale, keyScale, valueScale;
  std::vector<double> params, paramScale;
  std::vector<std::vector<double>> captures, captureScale;
  /// How far each gradient moves when D = rowsum(dO * O) is taken from the
  /// output as the kernels store it (rounded to their element type), as
  /// FlashAttention's backward and rbfc's do: dS moves by P (D - D'), which
  /// a parameter's gradient sums over every pair with one sign where the
  /// score's slope has one (RBF's gamma). dV does not depend on D.
  std::vector<double> queryRounding, keyRounding, paramRounding;
  std::vector<std::vector<double>> captureRounding;
};

/// The parameters' default values, NaN for a parameter without one.
std::vector<double> defaultParams(attn::AttentionOp op);

/// Computes the attention op on `inputs`. Fails, with `error` set, on an
/// op the interpreter does not know.
mlir::FailureOr<AttentionResult>
runReferenceAttention(attn::AttentionOp op, const AttentionInputs &inputs,
                      std::string &error);

/// The gradients of `op` at `inputs` in float64, by the chain rule through
/// the materialised scores and forward-mode derivatives of the score region
/// (PyTorch's conventions at kinks: max/min split ties, abs has slope 0 at
/// 0, select passes to the chosen operand, floor/ceil and integers 0). It
/// shares no code with the compiler's derivation.
/// `roundOutput`, when given, rounds an output element as the kernel
/// stores it: the ...Rounding gradients use it.
mlir::FailureOr<AttentionGradients>
runReferenceAttentionGrad(attn::AttentionOp op, const AttentionInputs &inputs,
                          const std::vector<double> &outputGrad,
                          const std::vector<double> &lseGrad,
                          std::string &error,
                          llvm::function_ref<double(double)> roundOutput = {});

/// Classification of the tile [qLo, qHi] x [kvLo, kvHi] (inclusive) by the
/// op's tile_class region: (all_kept, all_masked).
mlir::FailureOr<std::pair<bool, bool>>
classifyTile(attn::AttentionOp op, const AttentionInputs &inputs, int64_t b,
             int64_t h, int64_t qLo, int64_t qHi, int64_t kvLo, int64_t kvHi,
             std::string &error);

/// Whether the mask keeps element (b, h, qIdx, kvIdx); true without a mask.
mlir::FailureOr<bool> maskKeeps(attn::AttentionOp op,
                                const AttentionInputs &inputs, int64_t b,
                                int64_t h, int64_t qIdx, int64_t kvIdx,
                                std::string &error);

} // namespace rbfc::test

#endif // RBFC_TESTING_REFERENCEINTERPRETER_H
