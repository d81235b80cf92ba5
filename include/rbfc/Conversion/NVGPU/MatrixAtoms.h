//===- MatrixAtoms.h - the kernels' tensor-core instructions ----*- C++ -*-===//
//
// The smallest matrix operations the kernels are made of, CuTe's MMA and
// copy atoms: mma.sync m16n8k16 with bf16 or f16 operands and f32
// accumulators, the ldmatrix.x4 loads (plain and .trans) that bring its
// operands from shared memory, and the packing of f32 pairs into 16-bit
// operand registers, which is how an accumulator becomes the A operand of
// the next mma (FlashAttention's P = exp(S) never leaves registers); and
// Hopper's wgmma m64nNk16, issued by a warpgroup, B (and A, or A from the
// same registers as mma.sync's A fragment) named by shared-memory
// descriptors. wgmma's f32 accumulators for 64 rows and N columns are, warp
// by warp, the m16n8 accumulators of 16 rows and N / 8 slices, lane for
// lane and register for register: FragmentLayout describes both.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_MATRIXATOMS_H
#define RBFC_CONVERSION_NVGPU_MATRIXATOMS_H

#include "rbfc/Conversion/NVGPU/FragmentLayout.h"
#include "rbfc/Conversion/NVGPU/SharedTile.h"

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

/// wgmma m64nNk16 with f32 accumulators, as inline PTX: MLIR 22 has no op
/// for the form whose A operand is in registers, and inline assembly that
/// carries the accumulators through wgmma.fence and wgmma.wait_group is
/// what keeps LLVM from moving their reads and writes across those (CUTLASS
/// pins them the same way).
/// The rows of one wgmma: a warpgroup's four warps of 16.
inline constexpr int64_t kWarpgroupRows = 64;

class WarpgroupMmaAtom : public KernelEmitter {
public:
  WarpgroupMmaAtom(mlir::ImplicitLocOpBuilder &b, mlir::Type elementType)
      : KernelEmitter(b), elementType(elementType) {}

  /// The descriptor of an operand at shared byte address `address` (index)
  /// in a column-blocked SwizzledTile (128-byte swizzle), or with
  /// `swizzled` false in core matrices of 8 rows x 16 bytes stored as they
  /// are: `leadingBytes` and `strideBytes` are its leading and stride
  /// dimension byte offsets.
  mlir::Value descriptor(mlir::Value address, int64_t leadingBytes,
                         int64_t strideBytes, bool swizzled = true);
  /// `descriptor` for the operand `bytes` further on (a multiple of 16;
  /// the start address field does not overflow below 256 KB).
  mlir::Value advance(mlir::Value descriptor, int64_t bytes);

  /// The descriptor of a K-major operand whose first row is element
  /// `offset` of the 16-bit shared view `shared`, a column-blocked tile laid
  /// out as `tile`: k runs along the rows, 8-row core matrices one 1024-byte
  /// group apart (Q and K of S = Q K^T).
  mlir::Value kMajorDescriptor(mlir::Value shared, mlir::Value offset,
                               const SwizzledTile &tile);
  /// ... of an MN-major operand: k runs down the rows, and the leading
  /// dimension steps from one 64-column block to the next (V of O += P V).
  mlir::Value mnMajorDescriptor(mlir::Value shared, mlir::Value offset,
                                const SwizzledTile &tile);
  /// The descriptor of k [16 slice, 16 slice + 16) of the K-major (or
  /// MN-major) operand `descriptor` of `tile`.
  mlir::Value kMajorSlice(mlir::Value descriptor, const SwizzledTile &tile,
                          int64_t slice);
  mlir::Value mnMajorSlice(mlir::Value descriptor, const SwizzledTile &tile,
                           int64_t slice);
  /// Makes the thread's completed cp.async writes visible to the async
  /// proxy, through which wgmma reads shared memory; a barrier after it
  /// publishes them to the warpgroups.
  void fenceCopies();

  /// wgmma.fence: orders the registers' earlier writes (the accumulators,
  /// which pass through it) before the next wgmma's reads. `descriptors`
  /// (i64) pass through too, so that LLVM cannot sink their computation
  /// past the fence towards a wgmma in a branch (ptxas then adds a
  /// warpgroup.arrive before it, C7519).
  void fence(llvm::MutableArrayRef<Accumulator> accumulators,
             llvm::MutableArrayRef<mlir::Value> descriptors = {});
  void commitGroup();
  /// Waits until at most `pending` committed groups are in flight; the
  /// accumulators pass through so that nothing reads them earlier.
  void waitGroup(int64_t pending,
                 llvm::MutableArrayRef<Accumulator> accumulators);

  /// `count` accumulators whose values nothing reads: a product's first
  /// mma into them passes `accumulate` = false, and no register is set
  /// before it (zeros would cost one move per register).
  llvm::SmallVector<Accumulator> unsetAccumulators(int64_t count);
  /// accumulators += A B for 64 rows, 16 k and 8 x accumulators.size()
  /// columns, A and B from shared memory; `transposeB`: B is MN-major. With
  /// `accumulate` false, accumulators = A B.
  void mma(mlir::Value aDescriptor, mlir::Value bDescriptor,
           llvm::MutableArrayRef<Accumulator> accumulators, bool transposeB,
           bool accumulate = true);
  /// ... A from registers: the warp's 16 rows, as mma.sync's A fragment.
  void mma(const OperandRegisters &a, mlir::Value bDescriptor,
           llvm::MutableArrayRef<Accumulator> accumulators, bool transposeB);

private:
  /// A descriptor's low 32 bits, and `descriptor` with them replaced by
  /// `low` (i32).
  mlir::Value lowWord(mlir::Value descriptor);
  mlir::Value withLowWord(mlir::Value descriptor, mlir::Value low);
  /// Appends `descriptor`'s low and high words (i32) to `words`.
  void appendDescriptorWords(mlir::Value descriptor,
                             llvm::SmallVectorImpl<mlir::Value> &words);
  /// Runs `ptx` with the accumulators as its first, read-write, operands
  /// ($0 .. $n-1), the low words of the i64 `descriptors` after them, also
  /// read-write, and `inputs` after those, `constraints` theirs.
  void runWithAccumulators(llvm::StringRef ptx, mlir::ValueRange inputs,
                           llvm::StringRef constraints,
                           llvm::MutableArrayRef<Accumulator> accumulators,
                           llvm::MutableArrayRef<mlir::Value> descriptors = {});
  /// "{$first, ..., $first + n - 1}"
  static std::string registerList(int64_t first, int64_t n);

  mlir::Type elementType;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_MATRIXATOMS_H
