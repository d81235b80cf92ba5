//===- KeyTermOperand.cpp - key terms as one more k of S = Q K^T ----------===//
#include "rbfc/Conversion/NVGPU/KeyTermOperand.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"

#include <limits>

using namespace mlir;
using namespace rbfc;

/// Bytes from k 0-7 to k 8-15 of the same keys (one core matrix), and from
/// 8 keys to the next 8 (two).
static constexpr int64_t kLeadingBytes = 128, kStrideBytes = 256;
/// f32 words of a core matrix's row (16 bytes).
static constexpr int64_t kCoreRowWords = 4;
/// Words from a row's k 0-7 to its k 8-15.
static constexpr int64_t kUpperHalfWords = kLeadingBytes / 4;

Value KeyTermOperand::rowOffset(Value row) {
  return add(mul(div(row, 8), kStrideBytes / 4),
             mul(rem(row, 8), kCoreRowWords));
}

void KeyTermOperand::forEachShare(Value threadId, int64_t count,
                                  int64_t threads,
                                  llvm::function_ref<void(Value)> body) {
  for (int64_t first = 0; first < count; first += threads) {
    OpBuilder::InsertionGuard guard(b);
    Value item = add(threadId, first);
    if (first + threads > count)
      b.setInsertionPointToStart(
          scf::IfOp::create(b, TypeRange{},
                            cmp(arith::CmpIPredicate::ult, item, index(count)),
                            false)
              .thenBlock());
    body(item);
  }
}

void KeyTermOperand::initialize(Value shared, Value threadId,
                                int64_t threads) {
  // Writes (word, value) into each of `count` rows from word `firstWord`.
  using RowWords = ArrayRef<std::pair<int64_t, Value>>;
  auto fillRows = [&](int64_t count, int64_t firstWord, RowWords words) {
    forEachShare(threadId, count, threads, [&](Value row) {
      Value base = add(rowOffset(row), firstWord);
      for (auto [word, value] : words)
        memref::StoreOp::create(b, value, shared, ValueRange{add(base, word)});
    });
  };
  Value zero = f32(0.0);
  // The ring's rows: zeros where the copies write nothing.
  SmallVector<std::pair<int64_t, Value>> padding{{kWorkspaceWords, zero},
                                                 {kWorkspaceWords + 1, zero}};
  for (int64_t word = 0; word < kCoreRowWords; ++word)
    padding.push_back({kUpperHalfWords + word, zero});
  fillRows(stages * keys, 0, padding);
  // The ones' rows: bf16 1.0 (0x3F80) in k 0-2, zeros after.
  auto bits = [&](uint32_t pattern) -> Value {
    return arith::BitcastOp::create(
        b, b.getF32Type(),
        arith::ConstantIntOp::create(b, b.getI32Type(), pattern));
  };
  SmallVector<std::pair<int64_t, Value>> onesRow{
      {0, bits(0x3F803F80)}, {1, bits(0x00003F80)}, {2, zero}, {3, zero}};
  for (int64_t word = 0; word < kCoreRowWords; ++word)
    onesRow.push_back({kUpperHalfWords + word, zero});
  fillRows(kWarpgroupRows, ringWords(), onesRow);
}

void KeyTermOperand::copyEntries(Value workspace, Value firstEntry,
                                 Value shared, Value buffer, Value threadId,
                                 int64_t threads) {
  auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
  forEachShare(threadId, keys, threads, [&](Value key) {
    Value target = rowOffset(add(mul(buffer, keys), key));
    // Not bypassing L1: cp.async.cg copies 16 bytes only.
    nvgpu::DeviceAsyncCopyOp::create(
        b, tokenType, shared, ValueRange{target}, workspace,
        ValueRange{add(firstEntry, mul(key, kWorkspaceWords))},
        b.getIndexAttr(kWorkspaceWords), Value(), /*bypassL1=*/UnitAttr());
  });
}

Value KeyTermOperand::descriptor(Value shared, Value buffer) {
  return atom.descriptor(
      sharedAddress(b, shared, mul(buffer, keys * kSharedWords)), kLeadingBytes,
      kStrideBytes, /*swizzled=*/false);
}

Value KeyTermOperand::onesDescriptor(Value shared) {
  return atom.descriptor(sharedAddress(b, shared, index(ringWords())),
                         kLeadingBytes, kStrideBytes, /*swizzled=*/false);
}

void KeyTermOperand::accumulate(Value onesDescriptor, Value descriptor,
                                MutableArrayRef<Accumulator> scores) {
  atom.mma(onesDescriptor, descriptor, scores, /*transposeB=*/false);
}

std::pair<Value, Value> KeyTermOperand::entryWords(Value term) {
  Type bf16 = b.getBF16Type(), f32Type = b.getF32Type();
  Type i32 = b.getI32Type();
  auto part = [&](Value value) {
    return arith::TruncFOp::create(b, bf16, value).getResult();
  };
  auto widen = [&](Value value) {
    return arith::ExtFOp::create(b, f32Type, value).getResult();
  };
  auto bits = [&](Value value) {
    Value raw = arith::BitcastOp::create(b, b.getI16Type(), value);
    return arith::ExtUIOp::create(b, i32, raw).getResult();
  };
  auto word = [&](Value low, Value high) {
    Value packed = bits(low);
    if (high)
      packed = arith::OrIOp::create(
          b, packed,
          arith::ShLIOp::create(b, bits(high),
                                arith::ConstantIntOp::create(b, i32, 16)));
    return arith::BitcastOp::create(b, f32Type, packed).getResult();
  };
  // Each remainder is exact in f32: the part before it kept its leading
  // 8 bits.
  Value hi = part(term);
  Value finite = arith::CmpFOp::create(
      b, arith::CmpFPredicate::OLT, math::AbsFOp::create(b, term),
      f32(std::numeric_limits<double>::infinity()));
  Value rest =
      select(finite, arith::SubFOp::create(b, term, widen(hi)), f32(0.0));
  Value mid = part(rest);
  Value lo = part(arith::SubFOp::create(b, rest, widen(mid)));
  return {word(hi, mid), word(lo, Value())};
}
