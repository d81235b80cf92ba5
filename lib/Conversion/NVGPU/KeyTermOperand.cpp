//===- KeyTermOperand.cpp - key terms as one more k of S = Q K^T ----------===//
#include "rbfc/Conversion/NVGPU/KeyTermOperand.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"

#include <limits>

using namespace mlir;
using namespace rbfc;

/// Bytes from 8 keys' rows to the next 8's (one core matrix).
static constexpr int64_t kCoreMatrixBytes = 128;

Value KeyTermOperand::entryOffset(Value buffer, Value key) {
  return add(mul(buffer, keys * kSharedWords), mul(key, kWorkspaceWords));
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
  // Writes a row of k 0-7 (four words) at `firstWord` + 4 row for each of
  // `count` rows.
  auto fillRows = [&](int64_t count, Value firstWord, ArrayRef<Value> words) {
    forEachShare(threadId, count, threads, [&](Value row) {
      Value base = add(firstWord, mul(row, kWorkspaceWords));
      for (auto [word, value] : llvm::enumerate(words))
        memref::StoreOp::create(b, value, shared,
                                ValueRange{add(base, index(word))});
    });
  };
  Value zero = f32(0.0);
  SmallVector<Value> zeros(kWorkspaceWords, zero);
  // k 8-15 of every ring buffer (where an entry past its last key would
  // go) and of the ones.
  for (int64_t buffer = 0; buffer < stages; ++buffer)
    fillRows(keys, entryOffset(index(buffer), index(keys)), zeros);
  fillRows(kWarpgroupRows, index(ringWords() + onesEntryWords()), zeros);
  // The ones' rows: bf16 1.0 (0x3F80) in k 0-2, zeros after.
  auto bits = [&](uint32_t pattern) -> Value {
    return arith::BitcastOp::create(
        b, b.getF32Type(),
        arith::ConstantIntOp::create(b, b.getI32Type(), pattern));
  };
  fillRows(kWarpgroupRows, index(ringWords()),
           {bits(0x3F803F80), bits(0x00003F80), zero, zero});
}

void KeyTermOperand::copyEntries(Value workspace, Value firstEntry,
                                 Value shared, Value buffer, Value threadId,
                                 int64_t threads) {
  auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
  forEachShare(threadId, keys, threads, [&](Value key) {
    nvgpu::DeviceAsyncCopyOp::create(
        b, tokenType, shared, ValueRange{entryOffset(buffer, key)}, workspace,
        ValueRange{add(firstEntry, mul(key, kWorkspaceWords))},
        b.getIndexAttr(kWorkspaceWords), Value(), /*bypassL1=*/b.getUnitAttr());
  });
}

Value KeyTermOperand::descriptor(Value shared, Value buffer) {
  return atom.descriptor(
      sharedAddress(b, shared, entryOffset(buffer, index(0))),
      bufferEntryBytes(), kCoreMatrixBytes, /*swizzled=*/false);
}

Value KeyTermOperand::onesDescriptor(Value shared) {
  return atom.descriptor(sharedAddress(b, shared, index(ringWords())),
                         onesEntryWords() * 4, kCoreMatrixBytes,
                         /*swizzled=*/false);
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
