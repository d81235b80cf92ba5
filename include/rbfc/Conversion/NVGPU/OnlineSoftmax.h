//===- OnlineSoftmax.h - streaming softmax over fragment rows ---*- C++ -*-===//
//
// FlashAttention's online softmax over the lane rows of a score fragment
// (FragmentLayout.h): per row the exponent's shift m, which follows the
// row's running maximum, and the running sum l of the weights 2^(s - m),
// both in log2 units (the scores are, docs/pipeline.md). Each K/V tile
// raises m where its scores need it, rescales O and l by 2^(m_old - m_new),
// and turns its scores into weights; at the end O / l is the output and
// (m + log2 l) ln 2 the log-sum-exp. Under `normalize = none` m stays -inf
// (shift 0) and l is the plain sum.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_ONLINESOFTMAX_H
#define RBFC_CONVERSION_NVGPU_ONLINESOFTMAX_H

#include "rbfc/Conversion/NVGPU/MatrixAtoms.h"

namespace rbfc {

class OnlineSoftmax : public KernelEmitter {
public:
  /// The state `rowMax`, `rowSum` of the lane rows of fragments laid out as
  /// `scoreLayout` (the scores) and `outputLayout` (O, whose rows are the
  /// same). `normalized`: softmax, not `none`. `unroundedSums`: each lane
  /// adds its own f32 weights to l, completed over the row's four lanes at
  /// the end, instead of summing the rounded weights on the tensor cores.
  OnlineSoftmax(mlir::ImplicitLocOpBuilder &b,
                const FragmentLayout &scoreLayout,
                const FragmentLayout &outputLayout, mlir::ValueRange rowMax,
                mlir::ValueRange rowSum, bool normalized, bool unroundedSums)
      : KernelEmitter(b), scoreLayout(scoreLayout), outputLayout(outputLayout),
        rowMax(rowMax), rowSum(rowSum), normalized(normalized),
        unroundedSums(unroundedSums) {}

  llvm::ArrayRef<mlir::Value> getRowMax() const { return rowMax; }
  llvm::ArrayRef<mlir::Value> getRowSum() const { return rowSum; }

  /// The exponent's shift of lane row `laneRow`: its m, or 0 while every
  /// key so far is masked (m = -inf), which keeps 2^(-inf - shift) = 0
  /// instead of NaN.
  mlir::Value shift(int64_t laneRow) { return zeroIfNegInf(rowMax[laneRow]); }

  /// Each lane row's maximum of `scores` over the four lanes that hold the
  /// row, plus `shiftedBy[r]` when given (scores that hold s - shift).
  llvm::SmallVector<mlir::Value>
  tileMax(llvm::MutableArrayRef<Accumulator> scores,
          llvm::ArrayRef<mlir::Value> shiftedBy);
  /// Raises the shifts to `tileMax` where a row outgrew its shift, and
  /// rescales l and `output` (and `shiftedScores`, which hold s - shift)
  /// to the new shifts.
  void rescale(llvm::ArrayRef<mlir::Value> tileMax,
               llvm::MutableArrayRef<Accumulator> output,
               llvm::MutableArrayRef<Accumulator> shiftedScores);
  /// What `rescale` does to O, left for later: FlashAttention-3's
  /// intra-warpgroup overlap computes a tile's softmax while the previous
  /// tile's O += P V is in flight, so O is rescaled after it completes.
  struct OutputRescale {
    /// Whether any row of the warp raised its shift (warp-uniform).
    mlir::Value warpGrown;
    /// Per lane row 2^(m_old - m_new).
    llvm::SmallVector<mlir::Value> factors;
  };
  /// `rescale` of l and `shiftedScores`; O's part is returned.
  OutputRescale
  rescaleDeferringOutput(llvm::ArrayRef<mlir::Value> tileMax,
                         llvm::MutableArrayRef<Accumulator> shiftedScores);
  void rescaleOutput(const OutputRescale &rescale,
                     llvm::MutableArrayRef<Accumulator> output);
  /// Turns scores into weights 2^(s - shift); `shifted` scores hold
  /// s - shift already.
  void exponentiate(llvm::MutableArrayRef<Accumulator> weights, bool shifted);

  /// Adds the weights of the accumulators of two adjacent slices of atom
  /// `atom` to l: on the tensor cores as P 1, where `a` are the weights'
  /// A operands (one per atom, this pair's at `atom`), or with unrounded
  /// sums as the lane's own f32 weights.
  void addWeights(int64_t atom, const Accumulator &left,
                  const Accumulator &right);
  void addWeightsByMma(MmaSyncAtom &atoms, llvm::ArrayRef<OperandRegisters> a);
  bool sumsUnroundedWeights() const { return unroundedSums; }

  /// After the last tile: the shifts in place of m.
  void finish();
  /// Lane row `laneRow`'s l, complete over the row's four lanes.
  mlir::Value total(int64_t laneRow);
  /// Whether a row's l is 0: every key of it was masked.
  mlir::Value isEmpty(mlir::Value total);
  /// What O's row is multiplied by: 1 / l (0 for an empty row) under
  /// softmax, 1 under `none`.
  mlir::Value outputScale(mlir::Value total, mlir::Value empty);
  /// The row's log-sum-exp in natural log, before its row_bias.
  mlir::Value logSumExp(int64_t laneRow, mlir::Value total);

private:
  mlir::Value zeroIfNegInf(mlir::Value max);
  /// The shifts `tileMax` raises (per lane row, the old one where it
  /// stays) and whether any row of the warp raised its shift.
  std::pair<llvm::SmallVector<mlir::Value>, mlir::Value>
  raisedShifts(llvm::ArrayRef<mlir::Value> tileMax);
  /// Within the branch of a raised shift: lane row `r`'s factor
  /// 2^(m_old - m_new) from its new maximum `raised`, after which l and
  /// `shiftedScores` of the row are rescaled.
  mlir::Value rescaleRow(int64_t r, mlir::Value raised,
                         llvm::MutableArrayRef<mlir::Value> sums,
                         llvm::MutableArrayRef<Accumulator> shiftedScores);
  /// Raises the shifts `tileMax` asks for and, in one branch taken when a
  /// row of the warp raised its shift, rescales l and `shiftedScores` row
  /// by row (rescaleRow) and calls `scaleCarried(r, alpha, values)` on the
  /// `carried` values the branch also carries. Returns those values after
  /// the branch and whether the warp raised a shift.
  std::pair<llvm::SmallVector<mlir::Value>, mlir::Value>
  rescaleRows(llvm::ArrayRef<mlir::Value> tileMax,
              llvm::ArrayRef<mlir::Value> carried,
              llvm::MutableArrayRef<Accumulator> shiftedScores,
              llvm::function_ref<void(int64_t, mlir::Value,
                                      llvm::MutableArrayRef<mlir::Value>)>
                  scaleCarried);

  const FragmentLayout &scoreLayout, &outputLayout;
  llvm::SmallVector<mlir::Value> rowMax, rowSum;
  bool normalized, unroundedSums;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_ONLINESOFTMAX_H
