//===- ReferenceInterpreter.cpp - float64 semantics of attn IR ------------===//
#include "rbfc/Testing/ReferenceInterpreter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace rbfc;
using namespace rbfc::test;

namespace {

/// The (query, key) pair an element region is evaluated for.
struct Element {
  const double *query = nullptr;
  const double *key = nullptr;
  int64_t headDim = 0;
  double qScale = 1.0;
  double keyBias = 0.0;
};

class RegionEvaluator {
public:
  RegionEvaluator(attn::AttentionOp op, const AttentionInputs &inputs,
                  std::string &error)
      : op(op), inputs(inputs), error(error) {}

  /// Evaluates `region` with its leading index arguments set to `indices`.
  FailureOr<SmallVector<double>> run(Region &region, ArrayRef<double> indices,
                                     const Element &element);

private:
  FailureOr<double> evaluate(Operation &op, const Element &element);
  const CaptureData &captureOf(Value capture) {
    auto arg = cast<BlockArgument>(capture);
    unsigned numIndices = arg.getOwner()->getNumArguments() -
                          op.getParams().size() - op.getCaptures().size();
    return inputs.captures[arg.getArgNumber() - numIndices -
                           op.getParams().size()];
  }
  double dot(const Element &element, bool queryLeft, bool keyRight) {
    const double *lhs = queryLeft ? element.query : element.key;
    const double *rhs = keyRight ? element.key : element.query;
    double sum = 0;
    for (int64_t d = 0; d < element.headDim; ++d)
      sum += lhs[d] * rhs[d];
    return sum;
  }
  double sizeOf(attn::Size size) {
    switch (size) {
    case attn::Size::batch: return inputs.batch;
    case attn::Size::heads: return inputs.heads;
    case attn::Size::kv_heads: return inputs.kvHeads;
    case attn::Size::q_len: return inputs.qLen;
    case attn::Size::kv_len: return inputs.kvLen;
    case attn::Size::head_dim: return inputs.headDim;
    }
    return 0;
  }
  /// Flat offset of `indices`, each clamped into its dimension.
  static int64_t clampedOffset(const CaptureData &capture,
                               ArrayRef<int64_t> indices) {
    int64_t offset = 0;
    for (auto [index, dim] : llvm::zip(indices, capture.shape))
      offset = offset * dim + std::clamp<int64_t>(index, 0, dim - 1);
    return offset;
  }

  attn::AttentionOp op;
  const AttentionInputs &inputs;
  std::string &error;
  llvm::DenseMap<Value, double> values;
};

FailureOr<SmallVector<double>>
RegionEvaluator::run(Region &region, ArrayRef<double> indices,
                     const Element &element) {
  values.clear();
  Block &block = region.front();
  for (auto [position, index] : llvm::enumerate(indices))
    values[block.getArgument(position)] = index;
  for (auto [position, param] : llvm::enumerate(inputs.params))
    values[block.getArgument(indices.size() + position)] = param;
  for (Operation &op : block.without_terminator()) {
    FailureOr<double> result = evaluate(op, element);
    if (failed(result))
      return failure();
    values[op.getResult(0)] = *result;
  }
  SmallVector<double> results;
  for (Value yielded : block.getTerminator()->getOperands())
    results.push_back(values.lookup(yielded));
  return results;
}

static bool compareInt(arith::CmpIPredicate predicate, double a, double b) {
  using P = arith::CmpIPredicate;
  switch (predicate) {
  case P::eq: return a == b;
  case P::ne: return a != b;
  case P::slt: return a < b;
  case P::sle: return a <= b;
  case P::sgt: return a > b;
  case P::sge: return a >= b;
  default: return false;
  }
}

static bool compareFloat(arith::CmpFPredicate predicate, double a, double b) {
  using P = arith::CmpFPredicate;
  bool unordered = std::isnan(a) || std::isnan(b);
  switch (predicate) {
  case P::OEQ: return !unordered && a == b;
  case P::OLT: return !unordered && a < b;
  case P::OLE: return !unordered && a <= b;
  case P::OGT: return !unordered && a > b;
  case P::OGE: return !unordered && a >= b;
  case P::ONE: return !unordered && a != b;
  case P::UNE: return unordered || a != b;
  default: return false;
  }
}

FailureOr<double> RegionEvaluator::evaluate(Operation &operation,
                                            const Element &element) {
  auto in = [&](unsigned i) { return values.lookup(operation.getOperand(i)); };
  std::optional<double> result =
      TypeSwitch<Operation *, std::optional<double>>(&operation)
          .Case([&](arith::ConstantOp constant) -> std::optional<double> {
            Attribute value = constant.getValue();
            if (auto f = dyn_cast<FloatAttr>(value))
              return f.getValueAsDouble();
            if (auto i = dyn_cast<IntegerAttr>(value))
              return i.getType().isInteger(1)
                         ? static_cast<double>(i.getValue().getBoolValue())
                         : static_cast<double>(i.getValue().getSExtValue());
            return std::nullopt;
          })
          .Case<arith::AddFOp, arith::AddIOp>([&](auto) { return in(0) + in(1); })
          .Case<arith::SubFOp, arith::SubIOp>([&](auto) { return in(0) - in(1); })
          .Case<arith::MulFOp, arith::MulIOp>([&](auto) { return in(0) * in(1); })
          .Case([&](arith::DivFOp) { return in(0) / in(1); })
          .Case([&](arith::NegFOp) { return -in(0); })
          .Case([&](arith::FloorDivSIOp) -> std::optional<double> {
            if (in(1) == 0)
              return std::nullopt;
            return std::floor(in(0) / in(1));
          })
          .Case<arith::MinSIOp>([&](auto) { return std::min(in(0), in(1)); })
          .Case<arith::MaxSIOp>([&](auto) { return std::max(in(0), in(1)); })
          .Case<arith::MinimumFOp>([&](auto) {
            return std::isnan(in(0)) || std::isnan(in(1))
                       ? std::numeric_limits<double>::quiet_NaN()
                       : std::min(in(0), in(1));
          })
          .Case<arith::MaximumFOp>([&](auto) {
            return std::isnan(in(0)) || std::isnan(in(1))
                       ? std::numeric_limits<double>::quiet_NaN()
                       : std::max(in(0), in(1));
          })
          .Case([&](arith::CmpIOp cmp) {
            return static_cast<double>(
                compareInt(cmp.getPredicate(), in(0), in(1)));
          })
          .Case([&](arith::CmpFOp cmp) {
            return static_cast<double>(
                compareFloat(cmp.getPredicate(), in(0), in(1)));
          })
          .Case<arith::AndIOp>([&](auto) {
            return static_cast<double>(in(0) != 0 && in(1) != 0);
          })
          .Case<arith::OrIOp>([&](auto) {
            return static_cast<double>(in(0) != 0 || in(1) != 0);
          })
          .Case<arith::XOrIOp>([&](auto) {
            return static_cast<double>((in(0) != 0) != (in(1) != 0));
          })
          .Case([&](arith::SelectOp) { return in(0) != 0 ? in(1) : in(2); })
          .Case<arith::IndexCastOp, arith::SIToFPOp>([&](auto) { return in(0); })
          .Case<math::AbsFOp, math::AbsIOp>([&](auto) { return std::fabs(in(0)); })
          .Case<math::ExpOp>([&](auto) { return std::exp(in(0)); })
          .Case<math::Exp2Op>([&](auto) { return std::exp2(in(0)); })
          .Case<math::LogOp>([&](auto) { return std::log(in(0)); })
          .Case<math::Log2Op>([&](auto) { return std::log2(in(0)); })
          .Case<math::TanhOp>([&](auto) { return std::tanh(in(0)); })
          .Case<math::SqrtOp>([&](auto) { return std::sqrt(in(0)); })
          .Case<math::RsqrtOp>([&](auto) { return 1.0 / std::sqrt(in(0)); })
          .Case<math::FloorOp>([&](auto) { return std::floor(in(0)); })
          .Case<math::CeilOp>([&](auto) { return std::ceil(in(0)); })
          .Case([&](attn::DotOp) { return dot(element, true, true); })
          .Case([&](attn::ScaledDotOp) {
            return element.qScale * dot(element, true, true);
          })
          .Case([&](attn::Dist2Op) {
            double sum = 0;
            for (int64_t d = 0; d < element.headDim; ++d) {
              double diff = element.query[d] - element.key[d];
              sum += diff * diff;
            }
            return sum;
          })
          .Case([&](attn::Norm2Op norm) {
            bool isQuery = norm.getVector() == attn::Vector::q;
            return dot(element, isQuery, !isQuery);
          })
          .Case([&](attn::KeyBiasOp) { return element.keyBias; })
          .Case([&](attn::SizeOp size) { return sizeOf(size.getSize()); })
          .Case([&](attn::LoadOp load) {
            const CaptureData &capture = captureOf(load.getCapture());
            SmallVector<int64_t> indices;
            for (Value index : load.getIndices())
              indices.push_back(static_cast<int64_t>(values.lookup(index)));
            return capture.values[clampedOffset(capture, indices)];
          })
          .Case([&](attn::LoadBoundOp bound) {
            const CaptureData &capture = captureOf(bound.getCapture());
            SmallVector<int64_t> lows, highs, index;
            for (auto [low, high] : llvm::zip(bound.getLows(), bound.getHighs())) {
              lows.push_back(static_cast<int64_t>(values.lookup(low)));
              highs.push_back(static_cast<int64_t>(values.lookup(high)));
            }
            bool isMin = bound.getBound() == attn::Bound::min;
            double best = isMin ? std::numeric_limits<double>::infinity()
                                : -std::numeric_limits<double>::infinity();
            // Odometer over the box.
            index = lows;
            while (true) {
              double v = capture.values[clampedOffset(capture, index)];
              best = isMin ? std::min(best, v) : std::max(best, v);
              size_t d = index.size();
              while (d > 0 && index[d - 1] >= highs[d - 1]) {
                index[d - 1] = lows[d - 1];
                --d;
              }
              if (d == 0)
                break;
              ++index[d - 1];
            }
            return best;
          })
          .Default([](Operation *) { return std::nullopt; });
  if (!result) {
    error = "reference interpreter cannot evaluate '" +
            operation.getName().getStringRef().str() + "'";
    return failure();
  }
  return *result;
}

} // namespace

std::vector<double> rbfc::test::defaultParams(attn::AttentionOp op) {
  std::vector<double> params;
  for (Attribute fallback : op.getParamDefaults()) {
    if (auto f = dyn_cast<FloatAttr>(fallback))
      params.push_back(f.getValueAsDouble());
    else if (auto i = dyn_cast<IntegerAttr>(fallback))
      params.push_back(static_cast<double>(i.getInt()));
    else
      params.push_back(std::numeric_limits<double>::quiet_NaN());
  }
  return params;
}

FailureOr<bool> rbfc::test::maskKeeps(attn::AttentionOp op,
                                      const AttentionInputs &inputs, int64_t b,
                                      int64_t h, int64_t qIdx, int64_t kvIdx,
                                      std::string &error) {
  if (op.getMask().empty())
    return true;
  RegionEvaluator evaluator(op, inputs, error);
  auto kept = evaluator.run(
      op.getMask(),
      {double(b), double(h), double(qIdx), double(kvIdx)}, Element{});
  if (failed(kept))
    return failure();
  return (*kept)[0] != 0;
}

FailureOr<std::pair<bool, bool>>
rbfc::test::classifyTile(attn::AttentionOp op, const AttentionInputs &inputs,
                         int64_t b, int64_t h, int64_t qLo, int64_t qHi,
                         int64_t kvLo, int64_t kvHi, std::string &error) {
  if (op.getTileClass().empty())
    return std::pair(op.getMask().empty(), false);
  RegionEvaluator evaluator(op, inputs, error);
  auto facts = evaluator.run(op.getTileClass(),
                             {double(b), double(h), double(qLo), double(qHi),
                              double(kvLo), double(kvHi)},
                             Element{});
  if (failed(facts))
    return failure();
  return std::pair((*facts)[0] != 0, (*facts)[1] != 0);
}

FailureOr<AttentionResult>
rbfc::test::runReferenceAttention(attn::AttentionOp op,
                                  const AttentionInputs &in,
                                  std::string &error) {
  const int64_t d = in.headDim;
  AttentionResult result;
  result.output.assign(in.batch * in.heads * in.qLen * d, 0.0);
  result.lse.assign(in.batch * in.heads * in.qLen, 0.0);
  RegionEvaluator evaluator(op, in, error);
  const int64_t group = in.heads / in.kvHeads;
  std::vector<double> scores(in.kvLen);
  std::vector<bool> kept(in.kvLen);

  for (int64_t b = 0; b < in.batch; ++b)
    for (int64_t h = 0; h < in.heads; ++h) {
      int64_t kvHead = h / group;
      const double *keys = &in.key[((b * in.kvHeads + kvHead) * in.kvLen) * d];
      const double *vals = &in.value[((b * in.kvHeads + kvHead) * in.kvLen) * d];
      for (int64_t i = 0; i < in.qLen; ++i) {
        const double *query = &in.query[((b * in.heads + h) * in.qLen + i) * d];
        std::vector<double> index{double(b), double(h), double(i), 0.0};
        Element element{query, keys, d, 1.0, 0.0};
        if (!op.getQScale().empty()) {
          auto scale = evaluator.run(op.getQScale(), index, element);
          if (failed(scale))
            return failure();
          element.qScale = (*scale)[0];
        }
        double rowBias = 0.0;
        if (!op.getRowBias().empty()) {
          auto bias = evaluator.run(op.getRowBias(), index, element);
          if (failed(bias))
            return failure();
          rowBias = (*bias)[0];
        }
        double maximum = -std::numeric_limits<double>::infinity();
        bool anyKept = false;
        for (int64_t j = 0; j < in.kvLen; ++j) {
          index[3] = double(j);
          element.key = keys + j * d;
          kept[j] = true;
          if (!op.getMask().empty()) {
            auto keep = evaluator.run(op.getMask(), index, element);
            if (failed(keep))
              return failure();
            kept[j] = (*keep)[0] != 0;
          }
          if (!kept[j])
            continue;
          if (!op.getKeyBias().empty()) {
            auto bias = evaluator.run(op.getKeyBias(), index, element);
            if (failed(bias))
              return failure();
            element.keyBias = (*bias)[0];
          }
          auto score = evaluator.run(op.getScore(), index, element);
          if (failed(score))
            return failure();
          // In the log2 domain the weight is 2^s = e^(s ln 2).
          scores[j] = op.getLog2Domain() ? (*score)[0] * M_LN2 : (*score)[0];
          maximum = std::max(maximum, scores[j]);
          anyKept = true;
        }
        double *out = &result.output[((b * in.heads + h) * in.qLen + i) * d];
        double &lse = result.lse[(b * in.heads + h) * in.qLen + i];
        if (!anyKept) {
          lse = -std::numeric_limits<double>::infinity();
          continue;
        }
        // Softmax subtracts the row maximum; `none` uses exp(s) as is.
        double shift = op.isSoftmax() ? maximum : 0.0;
        double sum = 0.0;
        for (int64_t j = 0; j < in.kvLen; ++j) {
          if (!kept[j])
            continue;
          double weight = std::exp(scores[j] - shift);
          sum += weight;
          for (int64_t c = 0; c < d; ++c)
            out[c] += weight * vals[j * d + c];
        }
        if (op.isSoftmax())
          for (int64_t c = 0; c < d; ++c)
            out[c] /= sum;
        lse = shift + std::log(sum) + rowBias;
      }
    }
  return result;
}

namespace {

/// A value and its derivatives with respect to the leaves of one score
/// evaluation.
struct Tangent {
  double value = 0;
  std::vector<double> slope;
};

/// What one leaf of a score region stands for.
struct Leaf {
  enum Kind { Dot, QueryNorm, KeyNorm, Distance, Param, Capture } kind;
  unsigned index = 0; // parameter or capture number
  int64_t offset = 0; // element of the capture (row-major, clamped)
};

/// Forward-mode evaluation of the original (un-canonicalised) score region:
/// every leaf -- dot, norms, distance, f32 parameters, each f32 capture
/// element read -- gets a slope of its own.
class TangentEvaluator {
public:
  TangentEvaluator(attn::AttentionOp op, const AttentionInputs &inputs)
      : op(op), inputs(inputs) {}

  FailureOr<Tangent> run(Region &region, ArrayRef<double> indices,
                         const double *query, const double *key,
                         std::string &error);
  const std::vector<Leaf> &getLeaves() const { return leaves; }

private:
  size_t addLeaf(Leaf leaf) {
    leaves.push_back(leaf);
    return leaves.size() - 1;
  }

  attn::AttentionOp op;
  const AttentionInputs &inputs;
  std::vector<Leaf> leaves;
};

FailureOr<Tangent> TangentEvaluator::run(Region &region,
                                         ArrayRef<double> indices,
                                         const double *query, const double *key,
                                         std::string &error) {
  leaves.clear();
  Block &block = region.front();
  DenseMap<Value, Tangent> values;
  const int64_t d = inputs.headDim;
  // Slopes grow as leaves appear (a load's leaf is known once its indices
  // are); shorter slopes are zero past their end.
  for (auto [position, index] : llvm::enumerate(indices))
    values[block.getArgument(position)] = {index, {}};
  for (auto [position, param] : llvm::enumerate(inputs.params)) {
    Value arg = block.getArgument(indices.size() + position);
    Tangent &tangent = values[arg];
    tangent.value = param;
    if (!arg.getType().isF32())
      continue;
    tangent.slope.assign(addLeaf({Leaf::Param, unsigned(position), 0}) + 1,
                         0.0);
    tangent.slope.back() = 1.0;
  }
  auto captureOf = [&](Value tensor) {
    auto arg = cast<BlockArgument>(tensor);
    return arg.getArgNumber() -
           (block.getNumArguments() - inputs.captures.size());
  };
  for (Operation &operation : block.without_terminator()) {
    auto in = [&](unsigned i) { return values[operation.getOperand(i)]; };
    Tangent result;
    auto unary = [&](double value, double slope) {
      Tangent a = in(0);
      result.value = value;
      result.slope = a.slope;
      for (double &s : result.slope)
        s *= slope;
    };
    auto binary = [&](double value, double slopeA, double slopeB) {
      Tangent a = in(0), b = in(1);
      result.value = value;
      size_t n = std::max(a.slope.size(), b.slope.size());
      result.slope.assign(n, 0.0);
      for (size_t i = 0; i < a.slope.size(); ++i)
        result.slope[i] += slopeA * a.slope[i];
      for (size_t i = 0; i < b.slope.size(); ++i)
        result.slope[i] += slopeB * b.slope[i];
    };
    auto leaf = [&](double value, Leaf description) {
      result.value = value;
      size_t index = addLeaf(description);
      result.slope.assign(index + 1, 0.0);
      result.slope[index] = 1.0;
    };
    auto dotOf = [&](const double *a, const double *b) {
      double sum = 0;
      for (int64_t c = 0; c < d; ++c)
        sum += a[c] * b[c];
      return sum;
    };
    bool handled = true;
    TypeSwitch<Operation *>(&operation)
        .Case([&](arith::ConstantOp constant) {
          Attribute value = constant.getValue();
          if (auto f = dyn_cast<FloatAttr>(value))
            result.value = f.getValueAsDouble();
          else if (auto i = dyn_cast<IntegerAttr>(value))
            result.value = i.getType().isInteger(1)
                               ? double(i.getValue().getBoolValue())
                               : double(i.getValue().getSExtValue());
        })
        .Case([&](arith::AddFOp) { binary(in(0).value + in(1).value, 1, 1); })
        .Case([&](arith::SubFOp) { binary(in(0).value - in(1).value, 1, -1); })
        .Case([&](arith::MulFOp) {
          double a = in(0).value, b = in(1).value;
          binary(a * b, b, a);
        })
        .Case([&](arith::DivFOp) {
          double a = in(0).value, b = in(1).value;
          binary(a / b, 1 / b, -a / (b * b));
        })
        .Case([&](arith::NegFOp) { unary(-in(0).value, -1); })
        .Case<arith::MaximumFOp, arith::MinimumFOp>([&](Operation *extremum) {
          double a = in(0).value, b = in(1).value;
          bool isMax = isa<arith::MaximumFOp>(extremum);
          double value = std::isnan(a) || std::isnan(b)
                             ? std::numeric_limits<double>::quiet_NaN()
                         : isMax ? std::max(a, b)
                                 : std::min(a, b);
          double slopeA = 1, slopeB = 1;
          if (a == b) {
            slopeA = slopeB = 0.5;
          } else if (a < b) {
            (isMax ? slopeA : slopeB) = 0;
          } else if (a > b) {
            (isMax ? slopeB : slopeA) = 0;
          }
          binary(value, slopeA, slopeB);
        })
        .Case([&](arith::SelectOp) {
          Tangent chosen = in(0).value != 0 ? in(1) : in(2);
          result = chosen;
        })
        .Case([&](math::AbsFOp) {
          double a = in(0).value;
          unary(std::fabs(a), a > 0 ? 1.0 : a < 0 ? -1.0 : 0.0);
        })
        .Case([&](math::ExpOp) {
          double v = std::exp(in(0).value);
          unary(v, v);
        })
        .Case([&](math::Exp2Op) {
          double v = std::exp2(in(0).value);
          unary(v, v * M_LN2);
        })
        .Case(
            [&](math::LogOp) { unary(std::log(in(0).value), 1 / in(0).value); })
        .Case([&](math::Log2Op) {
          unary(std::log2(in(0).value), 1 / (in(0).value * M_LN2));
        })
        .Case([&](math::TanhOp) {
          double v = std::tanh(in(0).value);
          unary(v, 1 - v * v);
        })
        .Case([&](math::SqrtOp) {
          double v = std::sqrt(in(0).value);
          unary(v, 0.5 / v);
        })
        .Case([&](math::RsqrtOp) {
          double a = in(0).value;
          unary(1 / std::sqrt(a), -0.5 / (a * std::sqrt(a)));
        })
        .Case([&](math::FloorOp) { result.value = std::floor(in(0).value); })
        .Case([&](math::CeilOp) { result.value = std::ceil(in(0).value); })
        .Case([&](attn::DotOp) { leaf(dotOf(query, key), {Leaf::Dot}); })
        .Case([&](attn::Norm2Op norm) {
          bool isQuery = norm.getVector() == attn::Vector::q;
          const double *row = isQuery ? query : key;
          leaf(dotOf(row, row), {isQuery ? Leaf::QueryNorm : Leaf::KeyNorm});
        })
        .Case([&](attn::Dist2Op) {
          double sum = 0;
          for (int64_t c = 0; c < d; ++c)
            sum += (query[c] - key[c]) * (query[c] - key[c]);
          leaf(sum, {Leaf::Distance});
        })
        .Case([&](attn::SizeOp size) {
          switch (size.getSize()) {
          case attn::Size::batch: result.value = inputs.batch; break;
          case attn::Size::heads: result.value = inputs.heads; break;
          case attn::Size::kv_heads: result.value = inputs.kvHeads; break;
          case attn::Size::q_len: result.value = inputs.qLen; break;
          case attn::Size::kv_len: result.value = inputs.kvLen; break;
          case attn::Size::head_dim: result.value = inputs.headDim; break;
          }
        })
        .Case([&](attn::LoadOp load) {
          unsigned capture = captureOf(load.getCapture());
          const CaptureData &data = inputs.captures[capture];
          int64_t offset = 0;
          for (auto [index, dim] : llvm::zip(load.getIndices(), data.shape))
            offset =
                offset * dim +
                std::clamp<int64_t>(int64_t(values[index].value), 0, dim - 1);
          double value = data.values[offset];
          if (load.getType().isF32())
            leaf(value, {Leaf::Capture, capture, offset});
          else
            result.value = value;
        })
        // Integer arithmetic and comparisons carry no slope.
        .Case<arith::AddIOp>(
            [&](auto) { result.value = in(0).value + in(1).value; })
        .Case<arith::SubIOp>(
            [&](auto) { result.value = in(0).value - in(1).value; })
        .Case<arith::MulIOp>(
            [&](auto) { result.value = in(0).value * in(1).value; })
        .Case([&](arith::FloorDivSIOp) {
          result.value =
              in(1).value == 0 ? 0 : std::floor(in(0).value / in(1).value);
        })
        .Case<arith::MinSIOp>(
            [&](auto) { result.value = std::min(in(0).value, in(1).value); })
        .Case<arith::MaxSIOp>(
            [&](auto) { result.value = std::max(in(0).value, in(1).value); })
        .Case<arith::IndexCastOp, arith::SIToFPOp>(
            [&](auto) { result.value = in(0).value; })
        .Case<math::AbsIOp>(
            [&](auto) { result.value = std::fabs(in(0).value); })
        .Case([&](arith::CmpIOp cmp) {
          result.value =
              compareInt(cmp.getPredicate(), in(0).value, in(1).value);
        })
        .Case([&](arith::CmpFOp cmp) {
          result.value =
              compareFloat(cmp.getPredicate(), in(0).value, in(1).value);
        })
        .Case<arith::AndIOp>(
            [&](auto) { result.value = in(0).value != 0 && in(1).value != 0; })
        .Case<arith::OrIOp>(
            [&](auto) { result.value = in(0).value != 0 || in(1).value != 0; })
        .Case<arith::XOrIOp>([&](auto) {
          result.value = (in(0).value != 0) != (in(1).value != 0);
        })
        .Default([&](Operation *) { handled = false; });
    if (!handled) {
      error = "reference gradient cannot differentiate '" +
              operation.getName().getStringRef().str() + "'";
      return failure();
    }
    values[operation.getResult(0)] = std::move(result);
  }
  Tangent yielded = values[block.getTerminator()->getOperand(0)];
  yielded.slope.resize(leaves.size(), 0.0);
  return yielded;
}

} // namespace

FailureOr<AttentionGradients> rbfc::test::runReferenceAttentionGrad(
    attn::AttentionOp op, const AttentionInputs &in,
    const std::vector<double> &outputGrad, const std::vector<double> &lseGrad,
    std::string &error, function_ref<double(double)> roundOutput) {
  const int64_t d = in.headDim;
  AttentionGradients grads;
  grads.query.assign(in.query.size(), 0.0);
  grads.key.assign(in.key.size(), 0.0);
  grads.value.assign(in.value.size(), 0.0);
  grads.queryScale.assign(in.query.size(), 0.0);
  grads.keyScale.assign(in.key.size(), 0.0);
  grads.valueScale.assign(in.value.size(), 0.0);
  grads.queryRounding.assign(in.query.size(), 0.0);
  grads.keyRounding.assign(in.key.size(), 0.0);
  grads.params.assign(in.params.size(), 0.0);
  grads.paramScale.assign(in.params.size(), 0.0);
  grads.paramRounding.assign(in.params.size(), 0.0);
  for (const CaptureData &capture : in.captures) {
    grads.captures.emplace_back(capture.values.size(), 0.0);
    grads.captureScale.emplace_back(capture.values.size(), 0.0);
    grads.captureRounding.emplace_back(capture.values.size(), 0.0);
  }
  RegionEvaluator evaluator(op, in, error);
  TangentEvaluator tangents(op, in);
  const int64_t group = in.heads / in.kvHeads;
  const double scoreUnits = op.getLog2Domain() ? M_LN2 : 1.0;

  for (int64_t b = 0; b < in.batch; ++b)
    for (int64_t h = 0; h < in.heads; ++h) {
      int64_t kvHead = h / group;
      int64_t kvBase = (b * in.kvHeads + kvHead) * in.kvLen * d;
      for (int64_t i = 0; i < in.qLen; ++i) {
        int64_t row = (b * in.heads + h) * in.qLen + i;
        const double *query = &in.query[row * d];
        const double *dO = &outputGrad[row * d];
        double dLse = lseGrad.empty() ? 0.0 : lseGrad[row];
        // The row's kept scores, as the forward reference computes them.
        std::vector<double> scores(in.kvLen);
        std::vector<bool> kept(in.kvLen, false);
        double maximum = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < in.kvLen; ++j) {
          std::vector<double> index{double(b), double(h), double(i), double(j)};
          Element element{query, &in.key[kvBase + j * d], d, 1.0, 0.0};
          kept[j] = true;
          if (!op.getMask().empty()) {
            auto keep = evaluator.run(op.getMask(), index, element);
            if (failed(keep))
              return failure();
            kept[j] = (*keep)[0] != 0;
          }
          if (!kept[j])
            continue;
          auto score = evaluator.run(op.getScore(), index, element);
          if (failed(score))
            return failure();
          scores[j] = (*score)[0] * scoreUnits;
          maximum = std::max(maximum, scores[j]);
        }
        if (llvm::none_of(kept, [](bool k) { return k; }))
          continue;
        double shift = op.isSoftmax() ? maximum : 0.0;
        double sum = 0;
        for (int64_t j = 0; j < in.kvLen; ++j)
          if (kept[j])
            sum += std::exp(scores[j] - shift);
        double lse = shift + std::log(sum);
        // weight w_j (P under softmax), dP_j = dO . V_j, D = sum_j w_j dP_j.
        std::vector<double> weight(in.kvLen, 0.0), dP(in.kvLen, 0.0);
        double delta = 0;
        for (int64_t j = 0; j < in.kvLen; ++j) {
          if (!kept[j])
            continue;
          weight[j] =
              op.isSoftmax() ? std::exp(scores[j] - lse) : std::exp(scores[j]);
          const double *v = &in.value[kvBase + j * d];
          for (int64_t c = 0; c < d; ++c)
            dP[j] += dO[c] * v[c];
          delta += weight[j] * dP[j];
        }
        // D from the output as stored: sum_c dO_c round(sum_j w_j v_jc).
        double storedDelta = delta;
        if (roundOutput) {
          storedDelta = 0;
          for (int64_t c = 0; c < d; ++c) {
            double output = 0;
            for (int64_t j = 0; j < in.kvLen; ++j)
              if (kept[j])
                output += weight[j] * in.value[kvBase + j * d + c];
            storedDelta += dO[c] * roundOutput(output);
          }
        }
        for (int64_t j = 0; j < in.kvLen; ++j) {
          if (!kept[j])
            continue;
          const double *key = &in.key[kvBase + j * d];
          double probability = std::exp(scores[j] - lse);
          double dS = op.isSoftmax() ? probability * (dP[j] - delta + dLse)
                                     : weight[j] * dP[j] + dLse * probability;
          double dSMove =
              op.isSoftmax() ? probability * (delta - storedDelta) : 0.0;
          for (int64_t c = 0; c < d; ++c) {
            grads.value[kvBase + j * d + c] += weight[j] * dO[c];
            grads.valueScale[kvBase + j * d + c] +=
                std::fabs(weight[j] * dO[c]);
          }
          // Adds g * `factor` to a gradient element, its magnitude to the
          // element's scale and what the stored D moves it by to its
          // rounding.
          double g = 0, gMove = 0;
          auto add = [&](std::vector<double> &grad, std::vector<double> &scale,
                         std::vector<double> &rounding, int64_t at,
                         double factor) {
            grad[at] += g * factor;
            scale[at] += std::fabs(g * factor);
            rounding[at] += gMove * factor;
          };
          auto tangent = tangents.run(
              op.getScore(), {double(b), double(h), double(i), double(j)},
              query, key, error);
          if (failed(tangent))
            return failure();
          for (auto [leaf, slope] :
               llvm::zip(tangents.getLeaves(), tangent->slope)) {
            g = dS * slope * scoreUnits;
            gMove = dSMove * slope * scoreUnits;
            switch (leaf.kind) {
            case Leaf::Dot:
              for (int64_t c = 0; c < d; ++c) {
                add(grads.query, grads.queryScale, grads.queryRounding,
                    row * d + c, key[c]);
                add(grads.key, grads.keyScale, grads.keyRounding,
                    kvBase + j * d + c, query[c]);
              }
              break;
            case Leaf::QueryNorm:
              for (int64_t c = 0; c < d; ++c)
                add(grads.query, grads.queryScale, grads.queryRounding,
                    row * d + c, 2 * query[c]);
              break;
            case Leaf::KeyNorm:
              for (int64_t c = 0; c < d; ++c)
                add(grads.key, grads.keyScale, grads.keyRounding,
                    kvBase + j * d + c, 2 * key[c]);
              break;
            case Leaf::Distance:
              for (int64_t c = 0; c < d; ++c) {
                double diff = query[c] - key[c];
                add(grads.query, grads.queryScale, grads.queryRounding,
                    row * d + c, 2 * diff);
                add(grads.key, grads.keyScale, grads.keyRounding,
                    kvBase + j * d + c, -2 * diff);
              }
              break;
            case Leaf::Param:
              add(grads.params, grads.paramScale, grads.paramRounding,
                  leaf.index, 1.0);
              break;
            case Leaf::Capture:
              add(grads.captures[leaf.index], grads.captureScale[leaf.index],
                  grads.captureRounding[leaf.index], leaf.offset, 1.0);
              break;
            }
          }
        }
      }
    }
  return grads;
}
