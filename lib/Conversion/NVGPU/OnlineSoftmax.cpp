//===- OnlineSoftmax.cpp - streaming softmax over fragment rows -----------===//
#include "rbfc/Conversion/NVGPU/OnlineSoftmax.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

#include <cmath>

using namespace mlir;
using namespace rbfc;

/// How far (log2 units) a row's maximum may outgrow the exponent's shift
/// before the kernel rescales: weights stay below 2^8.
static constexpr double kRescaleSlack = 8.0;

Value OnlineSoftmax::zeroIfNegInf(Value max) {
  Value negInf = f32(-std::numeric_limits<double>::infinity());
  return select(
      arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, max, negInf),
      f32(0.0), max);
}

SmallVector<Value> OnlineSoftmax::tileMax(MutableArrayRef<Accumulator> scores,
                                          ArrayRef<Value> shiftedBy) {
  SmallVector<Value> maxima;
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r) {
    Value max = f32(-std::numeric_limits<double>::infinity());
    for (Value *score : scoreLayout.rowElements(scores, r))
      max = arith::MaximumFOp::create(b, max, *score);
    max = laneReduce(max, 4, [&](Value x, Value y) -> Value {
      return arith::MaximumFOp::create(b, x, y);
    });
    maxima.push_back(shiftedBy.empty() ? max : fadd(max, shiftedBy[r]));
  }
  return maxima;
}

std::pair<SmallVector<Value>, Value>
OnlineSoftmax::raisedShifts(ArrayRef<Value> tileMax) {
  // The exponent's shift m only moves up when a row's maximum grows past it
  // by more than kRescaleSlack (FlashAttention-4's lazy rescaling): below
  // that the weights 2^(s - m) stay under 2^kRescaleSlack, well inside
  // f32, f16 and bf16, and O and the sum need no rescaling. Sum and O share
  // the stale shift, so their ratio and the LSE are exact. A warp rescales
  // when any of its rows must, which after the first tiles is rare.
  int64_t rows = scoreLayout.laneRows();
  SmallVector<Value> grown(rows);
  Value anyGrown;
  for (int64_t r = 0; r < rows; ++r) {
    Value candidate = arith::MaximumFOp::create(b, rowMax[r], tileMax[r]);
    Value grows = arith::CmpFOp::create(b, arith::CmpFPredicate::OGT, candidate,
                                        fadd(rowMax[r], f32(kRescaleSlack)));
    grown[r] = select(grows, candidate, rowMax[r]);
    anyGrown = anyGrown ? arith::OrIOp::create(b, anyGrown, grows) : grows;
  }
  Value warpGrown = NVVM::VoteSyncOp::create(b, b.getI1Type(), i32(-1),
                                             anyGrown, NVVM::VoteSyncKind::any);
  return {std::move(grown), warpGrown};
}

Value OnlineSoftmax::rescaleRow(int64_t r, Value raised,
                                MutableArrayRef<Value> sums,
                                MutableArrayRef<Accumulator> shiftedScores) {
  // 2^(m_old - m_new): 1 for rows that keep their shift, 0 for rows
  // without a kept key so far (their O and sum are 0).
  Value newShift = zeroIfNegInf(raised);
  Value alpha = exp2(arith::SubFOp::create(b, rowMax[r], newShift));
  sums[r] = fmul(sums[r], alpha);
  if (!shiftedScores.empty()) {
    Value delta = arith::SubFOp::create(b, zeroIfNegInf(rowMax[r]), newShift);
    for (Value *score : scoreLayout.rowElements(shiftedScores, r))
      *score = fadd(*score, delta);
  }
  return alpha;
}

std::pair<SmallVector<Value>, Value> OnlineSoftmax::rescaleRows(
    ArrayRef<Value> tileMax, ArrayRef<Value> carried,
    MutableArrayRef<Accumulator> shiftedScores,
    function_ref<void(int64_t, Value, MutableArrayRef<Value>)> scaleCarried) {
  int64_t rows = scoreLayout.laneRows();
  auto [grown, warpGrown] = raisedShifts(tileMax);
  SmallVector<Value> state(carried);
  llvm::append_range(state, rowSum);
  llvm::append_range(state, FragmentLayout::flatten(shiftedScores));
  scf::IfOp update;
  {
    OpBuilder::InsertionGuard guard(b);
    update = updateIf(warpGrown, state);
    SmallVector<Value> next(carried);
    SmallVector<Value> sums(rowSum.begin(), rowSum.end());
    SmallVector<Accumulator> scores(shiftedScores.begin(), shiftedScores.end());
    for (int64_t r = 0; r < rows; ++r)
      scaleCarried(r, rescaleRow(r, grown[r], sums, scores), next);
    llvm::append_range(next, sums);
    llvm::append_range(next, FragmentLayout::flatten(scores));
    scf::YieldOp::create(b, next);
  }
  ValueRange results = update.getResults();
  int64_t carriedValues = carried.size();
  llvm::copy(results.slice(carriedValues, rows), rowSum.begin());
  llvm::copy(
      FragmentLayout::unflatten(results.drop_front(carriedValues + rows)),
      shiftedScores.begin());
  rowMax = std::move(grown);
  return {SmallVector<Value>(results.take_front(carriedValues)), warpGrown};
}

void OnlineSoftmax::rescale(ArrayRef<Value> tileMax,
                            MutableArrayRef<Accumulator> output,
                            MutableArrayRef<Accumulator> shiftedScores) {
  auto scaleRow = [&](int64_t r, Value alpha, MutableArrayRef<Value> values) {
    SmallVector<Accumulator> scaled = FragmentLayout::unflatten(values);
    for (Value *value : outputLayout.rowElements(scaled, r))
      *value = fmul(*value, alpha);
    llvm::copy(FragmentLayout::flatten(scaled), values.begin());
  };
  SmallVector<Value> scaled =
      rescaleRows(tileMax, FragmentLayout::flatten(output), shiftedScores,
                  scaleRow)
          .first;
  llvm::copy(FragmentLayout::unflatten(scaled), output.begin());
}

OnlineSoftmax::OutputRescale OnlineSoftmax::rescaleDeferringOutput(
    ArrayRef<Value> tileMax, MutableArrayRef<Accumulator> shiftedScores) {
  // The factors are 1 where the warp keeps its shifts.
  SmallVector<Value> unscaled(scoreLayout.laneRows(), f32(1.0));
  auto [factors, warpGrown] =
      rescaleRows(tileMax, unscaled, shiftedScores,
                  [](int64_t r, Value alpha, MutableArrayRef<Value> values) {
                    values[r] = alpha;
                  });
  return {warpGrown, std::move(factors)};
}

void OnlineSoftmax::rescaleOutput(const OutputRescale &rescale,
                                  MutableArrayRef<Accumulator> output) {
  SmallVector<Value> state = FragmentLayout::flatten(output);
  scf::IfOp update;
  {
    OpBuilder::InsertionGuard guard(b);
    update = updateIf(rescale.warpGrown, state);
    SmallVector<Accumulator> scaled(output.begin(), output.end());
    for (auto [r, alpha] : llvm::enumerate(rescale.factors))
      for (Value *value : outputLayout.rowElements(scaled, r))
        *value = fmul(*value, alpha);
    scf::YieldOp::create(b, FragmentLayout::flatten(scaled));
  }
  llvm::copy(FragmentLayout::unflatten(update.getResults()), output.begin());
}

void OnlineSoftmax::exponentiate(MutableArrayRef<Accumulator> weights,
                                 bool shifted) {
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r) {
    Value rowShift = shifted ? Value() : shift(r);
    for (Value *score : scoreLayout.rowElements(weights, r))
      *score =
          exp2(shifted ? *score : arith::SubFOp::create(b, *score, rowShift));
  }
}

void OnlineSoftmax::addWeights(int64_t atom, const Accumulator &left,
                               const Accumulator &right) {
  for (int64_t half = 0; half < 2; ++half) {
    int64_t r = 2 * atom + half;
    Value &sum = rowSum[r];
    for (const Accumulator *weights : {&left, &right})
      sum = fadd(sum, fadd((*weights)[FragmentLayout::element(r, 0)],
                           (*weights)[FragmentLayout::element(r, 1)]));
  }
}

void OnlineSoftmax::addWeightsByMma(MmaSyncAtom &atoms,
                                    ArrayRef<OperandRegisters> a) {
  // P times a column of ones: every column of the result is the row sum.
  Value ones = atoms.ones();
  for (auto [atom, operand] : llvm::enumerate(a)) {
    Value &top = rowSum[2 * atom], &bottom = rowSum[2 * atom + 1];
    Accumulator d =
        atoms.mma(operand, {ones, ones}, {top, top, bottom, bottom});
    top = d[0];
    bottom = d[2];
  }
}

void OnlineSoftmax::finish() {
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r)
    rowMax[r] = shift(r);
}

Value OnlineSoftmax::total(int64_t laneRow) {
  return unroundedSums ? laneSum(rowSum[laneRow], 4) : rowSum[laneRow];
}

Value OnlineSoftmax::isEmpty(Value total) {
  return arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, total, f32(0.0));
}

Value OnlineSoftmax::outputScale(Value total, Value empty) {
  // A row whose every key is masked has sum 0: its output is 0, not NaN.
  if (!normalized)
    return f32(1.0);
  return select(empty, f32(0.0), arith::DivFOp::create(b, f32(1.0), total));
}

Value OnlineSoftmax::logSumExp(int64_t laneRow, Value total) {
  // In natural log: the kernel's scores are in log2 units.
  Value shift = normalized ? rowMax[laneRow] : f32(0.0);
  return fmul(fadd(shift, log2(total)), f32(M_LN2));
}
