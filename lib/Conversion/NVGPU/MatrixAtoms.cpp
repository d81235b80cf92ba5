//===- MatrixAtoms.cpp - the tensor-core instructions of the kernels ------===//
#include "rbfc/Conversion/NVGPU/MatrixAtoms.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace rbfc;

/// A pair of 16-bit values as the i32 register that inline PTX and
/// nvvm.mma.sync's bf16 form take.
static Value asWord(ImplicitLocOpBuilder &b, Value pair) {
  Value word =
      vector::BitCastOp::create(b, VectorType::get({1}, b.getI32Type()), pair);
  return vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0});
}

Accumulator MmaSyncAtom::mma(ArrayRef<Value> a, ArrayRef<Value> bOperand,
                             const Accumulator &c) {
  bool bf16 = elementType.isBF16();
  // The 16-bit registers hold raw bits; bf16 operands travel as i32 because
  // nvvm.mma.sync types bf16 multiplicands as packed integers.
  auto asOperand = [&](Value pair) -> Value {
    return bf16 ? asWord(b, pair) : pair;
  };
  SmallVector<Value> operandA, operandB;
  for (Value pair : a)
    operandA.push_back(asOperand(pair));
  for (Value pair : bOperand)
    operandB.push_back(asOperand(pair));
  Type f32Type = b.getF32Type();
  auto resultType = LLVM::LLVMStructType::getLiteral(
      b.getContext(), {f32Type, f32Type, f32Type, f32Type});
  NVVM::MMATypes multiplicand =
      bf16 ? NVVM::MMATypes::bf16 : NVVM::MMATypes::f16;
  Value result = NVVM::MmaOp::create(
      b, resultType, operandA, operandB, ValueRange(c), {16, 8, 16},
      std::nullopt, std::nullopt,
      std::array<NVVM::MMATypes, 2>{multiplicand, multiplicand},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  Accumulator d;
  for (int64_t i = 0; i < 4; ++i)
    d[i] = LLVM::ExtractValueOp::create(b, result, ArrayRef<int64_t>{i});
  return d;
}

void MmaSyncAtom::mmaSlicePair(ArrayRef<OperandRegisters> a,
                               const OperandRegisters &registers,
                               const FragmentLayout &layout,
                               MutableArrayRef<Accumulator> accumulators,
                               int64_t slice) {
  for (auto [atom, operand] : llvm::enumerate(a)) {
    Accumulator &left = accumulators[layout.accumulator(atom, slice)];
    Accumulator &right = accumulators[layout.accumulator(atom, slice + 1)];
    left = mma(operand, {registers[0], registers[1]}, left);
    right = mma(operand, {registers[2], registers[3]}, right);
  }
}

OperandRegisters MmaSyncAtom::ldmatrix(Value shared, Value offset,
                                       bool transpose) {
  auto fragmentType = VectorType::get({4, 2}, b.getF16Type());
  Value tiles = nvgpu::LdMatrixOp::create(b, fragmentType, shared,
                                          ValueRange{offset}, transpose, 4);
  OperandRegisters registers;
  for (int64_t i = 0; i < 4; ++i)
    registers[i] = vector::ExtractOp::create(b, tiles, ArrayRef<int64_t>{i});
  return registers;
}

LdmatrixAddress MmaSyncAtom::addressA(Value lane, Value firstRow) {
  return {add(firstRow, rem(lane, 16)), div(lane, 16)};
}

LdmatrixAddress MmaSyncAtom::addressB(Value lane) {
  return {add(rem(lane, 8), mul(div(lane, 16), 8)), rem(div(lane, 8), 2)};
}

LdmatrixAddress MmaSyncAtom::addressBTransposed(Value lane) {
  return {add(rem(lane, 8), mul(rem(div(lane, 8), 2), 8)), div(lane, 16)};
}

Value MmaSyncAtom::packPair(Value low, Value high) {
  Value pair = vector::FromElementsOp::create(
      b, VectorType::get({2}, elementType),
      ValueRange{arith::TruncFOp::create(b, elementType, low),
                 arith::TruncFOp::create(b, elementType, high)});
  if (elementType.isF16())
    return pair;
  return vector::BitCastOp::create(b, VectorType::get({2}, b.getF16Type()),
                                   pair);
}

OperandRegisters MmaSyncAtom::operandA(const Accumulator &left,
                                       const Accumulator &right) {
  return {packPair(left[0], left[1]), packPair(left[2], left[3]),
          packPair(right[0], right[1]), packPair(right[2], right[3])};
}

Value WarpgroupMmaAtom::descriptor(Value address, int64_t leadingBytes,
                                   int64_t strideBytes, bool swizzled) {
  // PTX ISA "Matrix Descriptor Format": bits 0-13 the start address, 16-29
  // the leading and 32-45 the stride dimension byte offsets, all >> 4;
  // bits 62-63 the swizzle, 1 for 128 bytes, 0 for none. Base offset 0:
  // every column block starts 1024-byte aligned.
  Type i64 = b.getI64Type();
  Value start = arith::IndexCastUIOp::create(b, i64, address);
  start = arith::ShRUIOp::create(
      b, arith::AndIOp::create(b, start,
                               arith::ConstantIntOp::create(b, i64, 0x3FFFF)),
      arith::ConstantIntOp::create(b, i64, 4));
  uint64_t fields = (uint64_t(leadingBytes >> 4) << 16) |
                    (uint64_t(strideBytes >> 4) << 32) |
                    (uint64_t(swizzled) << 62);
  return arith::OrIOp::create(
      b, start, arith::ConstantIntOp::create(b, i64, int64_t(fields)));
}

Value WarpgroupMmaAtom::advance(Value descriptor, int64_t bytes) {
  assert(bytes % 16 == 0 && "descriptors address 16-byte units");
  if (bytes == 0)
    return descriptor;
  // The start address is a field of the low word: added to that word alone,
  // no carry reaches the high word, so ptxas adds 32 bits (not an add and
  // an add-with-carry) and keeps the high word a constant where it is one.
  Value low = arith::AddIOp::create(
      b, lowWord(descriptor),
      arith::ConstantIntOp::create(b, b.getI32Type(), bytes >> 4));
  return withLowWord(descriptor, low);
}

Value WarpgroupMmaAtom::lowWord(Value descriptor) {
  return arith::TruncIOp::create(b, b.getI32Type(), descriptor);
}

Value WarpgroupMmaAtom::withLowWord(Value descriptor, Value low) {
  Type i64 = b.getI64Type();
  Value high = arith::AndIOp::create(
      b, descriptor,
      arith::ConstantIntOp::create(b, i64, int64_t(0xFFFFFFFF00000000ull)));
  return arith::OrIOp::create(b, high, arith::ExtUIOp::create(b, i64, low));
}

/// Descriptors name byte offsets; tiles count 16-bit elements.
static int64_t tileBytes(int64_t elements) { return elements * kElementBytes; }
/// The 8 x 16-byte core matrices of the 128-byte swizzle: for a K-major
/// operand the leading byte offset is unused and 16 by convention; 8 rows
/// of a column block are the stride.
static constexpr int64_t kSwizzleLeadingBytes = 16;
static constexpr int64_t kCoreMatrixRows = 8;

Value WarpgroupMmaAtom::kMajorDescriptor(Value shared, Value offset,
                                         const SwizzledTile &tile) {
  return descriptor(sharedAddress(b, shared, offset), kSwizzleLeadingBytes,
                    tileBytes(tile.rowShift(kCoreMatrixRows)));
}

Value WarpgroupMmaAtom::mnMajorDescriptor(Value shared, Value offset,
                                          const SwizzledTile &tile) {
  return descriptor(sharedAddress(b, shared, offset),
                    tileBytes(tile.columnStart(SwizzledTile::kBlockElements)),
                    tileBytes(tile.rowShift(kCoreMatrixRows)));
}

Value WarpgroupMmaAtom::kMajorSlice(Value descriptor, const SwizzledTile &tile,
                                    int64_t slice) {
  return advance(descriptor, tileBytes(tile.columnStart(16 * slice)));
}

Value WarpgroupMmaAtom::mnMajorSlice(Value descriptor, const SwizzledTile &tile,
                                     int64_t slice) {
  return advance(descriptor, tileBytes(tile.rowShift(16 * slice)));
}

void WarpgroupMmaAtom::fenceCopies() { fenceSharedForAsyncProxy(); }

std::string WarpgroupMmaAtom::registerList(int64_t first, int64_t n) {
  std::string list = "{";
  for (int64_t i = 0; i < n; ++i)
    list += (i ? ", $" : "$") + std::to_string(first + i);
  return list + "}";
}

void WarpgroupMmaAtom::runWithAccumulators(
    StringRef ptx, ValueRange inputs, StringRef constraints,
    MutableArrayRef<Accumulator> accumulators,
    MutableArrayRef<Value> descriptors) {
  SmallVector<Value> values = FragmentLayout::flatten(accumulators);
  int64_t n = values.size();
  // Only a descriptor's low word (its start address) passes through: the
  // high word's fields stay what they were, a constant to ptxas, which then
  // keeps no 64-bit descriptor live across the asm.
  for (Value descriptor : descriptors)
    values.push_back(lowWord(descriptor));
  // Outputs $0 .. $n-1 and the descriptors' low words after them, then
  // `inputs`, then the outputs' old values tied to them (numbered after the
  // inputs, unnamed in `ptx`).
  std::string allConstraints;
  for (int64_t i = 0; i < int64_t(values.size()); ++i)
    allConstraints += std::string(i ? "," : "") + (i < n ? "=f" : "=r");
  if (!constraints.empty())
    allConstraints += ("," + constraints).str();
  for (int64_t i = 0; i < int64_t(values.size()); ++i)
    allConstraints += "," + std::to_string(i);
  SmallVector<Value> operands(inputs.begin(), inputs.end());
  operands.append(values);
  SmallVector<Type> resultTypes(n, b.getF32Type());
  resultTypes.append(descriptors.size(), b.getI32Type());
  auto resultType =
      LLVM::LLVMStructType::getLiteral(b.getContext(), resultTypes);
  auto asmOp = LLVM::InlineAsmOp::create(
      b, resultType, operands, ptx, allConstraints, /*has_side_effects=*/true,
      /*is_align_stack=*/false, LLVM::tailcallkind::TailCallKind::None,
      LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
      ArrayAttr());
  for (int64_t i = 0; i < int64_t(values.size()); ++i) {
    Value result =
        LLVM::ExtractValueOp::create(b, asmOp.getRes(), ArrayRef<int64_t>{i});
    if (i < n)
      accumulators[i / 4][i % 4] = result;
    else
      descriptors[i - n] = withLowWord(descriptors[i - n], result);
  }
}

void WarpgroupMmaAtom::fence(MutableArrayRef<Accumulator> accumulators,
                             MutableArrayRef<Value> descriptors) {
  runWithAccumulators("wgmma.fence.sync.aligned;", {}, "", accumulators,
                      descriptors);
}

void WarpgroupMmaAtom::commitGroup() {
  NVVM::WgmmaGroupSyncAlignedOp::create(b);
}

void WarpgroupMmaAtom::waitGroup(int64_t pending,
                                 MutableArrayRef<Accumulator> accumulators) {
  runWithAccumulators(
      ("wgmma.wait_group.sync.aligned " + Twine(pending) + ";").str(), {}, "",
      accumulators);
}

/// The instruction for `columns` columns of elements of type `element`,
/// its scale-d predicate p (true: the accumulators are added to) set to
/// `accumulate` in the braces that scope it, and the 64-bit descriptors d0,
/// d1, ... there assembled from the words `firstWord`, `firstWord` + 1, ...
/// (low, high; appendDescriptorWords). Words, not 64-bit operands: a
/// descriptor's high word is a constant (its strides and swizzle) that
/// ptxas then sees, and its start address is added to in 32 bits.
static std::string wgmmaPrefix(Type element, int64_t columns, int64_t firstWord,
                               int64_t descriptors, bool accumulate = true) {
  StringRef type = element.isBF16() ? "bf16" : "f16";
  std::string ptx = ("{\n.reg .pred p;\n.reg .b64 d<" + Twine(descriptors) +
                     ">;\nsetp.ne.b32 p, " + Twine(int(accumulate)) + ", 0;\n")
                        .str();
  for (int64_t d = 0; d < descriptors; ++d)
    ptx += ("mov.b64 d" + Twine(d) + ", {$" + Twine(firstWord + 2 * d) + ", $" +
            Twine(firstWord + 2 * d + 1) + "};\n")
               .str();
  return ptx + ("wgmma.mma_async.sync.aligned.m64n" + Twine(columns) +
                "k16.f32." + type + "." + type + " ")
                   .str();
}

void WarpgroupMmaAtom::appendDescriptorWords(Value descriptor,
                                             SmallVectorImpl<Value> &words) {
  Type i32 = b.getI32Type();
  words.push_back(lowWord(descriptor));
  words.push_back(arith::TruncIOp::create(
      b, i32,
      arith::ShRUIOp::create(
          b, descriptor, arith::ConstantIntOp::create(b, b.getI64Type(), 32))));
}

SmallVector<Accumulator> WarpgroupMmaAtom::unsetAccumulators(int64_t count) {
  Value unset = LLVM::UndefOp::create(b, b.getF32Type());
  return SmallVector<Accumulator>(count, {unset, unset, unset, unset});
}

void WarpgroupMmaAtom::mma(Value aDescriptor, Value bDescriptor,
                           MutableArrayRef<Accumulator> accumulators,
                           bool transposeB, bool accumulate) {
  int64_t n = 4 * accumulators.size();
  std::string ptx =
      wgmmaPrefix(elementType, 8 * accumulators.size(), n, 2, accumulate) +
      registerList(0, n) + ", d0, d1, p, 1, 1, 0, " +
      std::to_string(int(transposeB)) + ";\n}";
  SmallVector<Value> words;
  appendDescriptorWords(aDescriptor, words);
  appendDescriptorWords(bDescriptor, words);
  runWithAccumulators(ptx, words, "r,r,r,r", accumulators);
}

void WarpgroupMmaAtom::mma(const OperandRegisters &a, Value bDescriptor,
                           MutableArrayRef<Accumulator> accumulators,
                           bool transposeB) {
  int64_t n = 4 * accumulators.size();
  std::string ptx =
      wgmmaPrefix(elementType, 8 * accumulators.size(), n + 4, 1) +
      registerList(0, n) + ", " + registerList(n, 4) + ", d0, p, 1, 1, " +
      std::to_string(int(transposeB)) + ";\n}";
  SmallVector<Value> inputs;
  for (Value pair : a)
    inputs.push_back(asWord(b, pair));
  appendDescriptorWords(bDescriptor, inputs);
  runWithAccumulators(ptx, inputs, "r,r,r,r,r,r", accumulators);
}
