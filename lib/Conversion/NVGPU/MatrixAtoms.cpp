//===- MatrixAtoms.cpp - the tensor-core instructions of the kernels ------===//
#include "rbfc/Conversion/NVGPU/MatrixAtoms.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace rbfc;

Accumulator MmaSyncAtom::mma(ArrayRef<Value> a, ArrayRef<Value> bOperand,
                             const Accumulator &c) {
  bool bf16 = elementType.isBF16();
  // The 16-bit registers hold raw bits; bf16 operands travel as i32 because
  // nvvm.mma.sync types bf16 multiplicands as packed integers.
  auto asOperand = [&](Value pair) -> Value {
    if (!bf16)
      return pair;
    Value word = vector::BitCastOp::create(
        b, VectorType::get({1}, b.getI32Type()), pair);
    return vector::ExtractOp::create(b, word, ArrayRef<int64_t>{0});
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
