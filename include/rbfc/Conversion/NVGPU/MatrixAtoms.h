//===- MatrixAtoms.h - the kernels' tensor-core instructions ----*- C++ -*-===//
//
// The smallest matrix operations the kernels are made of, CuTe's MMA and
// copy atoms: mma.sync m16n8k16 with bf16 or f16 operands and f32
// accumulators, the ldmatrix.x4 loads (plain and .trans) that bring its
// operands from shared memory, and the packing of f32 pairs into 16-bit
// operand registers, which is how an accumulator becomes the A operand of
// the next mma (FlashAttention's P = exp(S) never leaves registers). The
// Hopper kernels will add wgmma here.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_MATRIXATOMS_H
#define RBFC_CONVERSION_NVGPU_MATRIXATOMS_H

#include "rbfc/Conversion/NVGPU/FragmentLayout.h"

namespace rbfc {

/// Four 32-bit registers of 16-bit pairs: what one ldmatrix.x4 loads, and
/// the A operand of one m16n8k16 mma.
using OperandRegisters = std::array<mlir::Value, 4>;

/// The row of a 16 x 16 block of 16-bit elements, and which 8-element half
/// of it, that a lane addresses in one ldmatrix.x4: lanes 8 i .. 8 i + 7
/// give the row addresses of the block's matrix i.
struct LdmatrixAddress {
  mlir::Value row, half;
};

class MmaSyncAtom : public KernelEmitter {
public:
  /// `elementType`: bf16 or f16, the type of both multiplicands.
  MmaSyncAtom(mlir::ImplicitLocOpBuilder &b, mlir::Type elementType)
      : KernelEmitter(b), elementType(elementType) {}

  /// d = a b + c over one m16n8k16 tile: `a` four A registers (16 rows x
  /// 16 k), `bOperand` two B registers (16 k x 8 columns).
  Accumulator mma(llvm::ArrayRef<mlir::Value> a,
                  llvm::ArrayRef<mlir::Value> bOperand, const Accumulator &c);
  /// Feeds the registers of one ldmatrix.x4 of B (b0, b1 of the adjacent
  /// slices `slice` and `slice` + 1) to the mma of every atom, whose A
  /// operand is `a[atom]`.
  void mmaSlicePair(llvm::ArrayRef<OperandRegisters> a,
                    const OperandRegisters &registers,
                    const FragmentLayout &layout,
                    llvm::MutableArrayRef<Accumulator> accumulators,
                    int64_t slice);

  OperandRegisters ldmatrix(mlir::Value shared, mlir::Value offset,
                            bool transpose);
  /// Where a lane points ldmatrix.x4 so that it loads the A operand of the
  /// 16 rows from `firstRow` on (a row-major [rows][k] tile): matrices
  /// (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15,
  /// k 8-15) are registers a0..a3.
  LdmatrixAddress addressA(mlir::Value lane, mlir::Value firstRow);
  /// ... the B operands of two adjacent 8-column slices from a [columns][k]
  /// tile (K for S = Q K^T): matrices (columns 0-7, k 0-7), (columns 0-7,
  /// k 8-15), (columns 8-15, k 0-7), (columns 8-15, k 8-15) are b0, b1 of
  /// the first slice and b0, b1 of the second.
  LdmatrixAddress addressB(mlir::Value lane);
  /// ... the same registers from a [k][columns] tile by ldmatrix.trans (V
  /// for O += P V).
  LdmatrixAddress addressBTransposed(mlir::Value lane);

  /// `low` and `high` rounded to the element type, as one operand register.
  mlir::Value packPair(mlir::Value low, mlir::Value high);
  /// Two 16-bit ones of the element type, as an operand register.
  mlir::Value ones() { return packPair(f32(1.0), f32(1.0)); }
  /// The A operand of 16 k-columns from the accumulators of two adjacent
  /// 8-column slices: the C fragment of m16n8k16, packed to 16 bits, is
  /// its A fragment, lane for lane.
  OperandRegisters operandA(const Accumulator &left, const Accumulator &right);

private:
  mlir::Type elementType;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_MATRIXATOMS_H
