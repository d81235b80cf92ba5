//===- KeyTermsKernel.cpp - the per-key terms prologue --------------------===//
#include "rbfc/Conversion/NVGPU/KeyTermsKernel.h"

#include "rbfc/Conversion/NVGPU/KeyTermOperand.h"
#include "rbfc/Conversion/NVGPU/RegionApplication.h"
#include "rbfc/Dialect/Attn/KeyBiasProduct.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/MathExtras.h"

#include <numeric>

#define DEBUG_TYPE "attn-key-terms-kernel"

using namespace mlir;
using namespace rbfc;

/// 16-byte loads of K each thread of the prologue keeps in flight: enough
/// to stream K at memory speed.
static constexpr int64_t kKeyTermLoads = 8;

int64_t rbfc::keyTermLanesPerKey(const ForwardConfig &config) {
  int64_t lanes = 1;
  while (lanes < kThreadsPerWarp && config.chunksPerRow() % (2 * lanes) == 0)
    lanes *= 2;
  return lanes;
}

int64_t rbfc::keyTermKeysPerBlock(const ForwardConfig &config) {
  // Runs of threads / keyTermLanesPerKey keys, enough runs for
  // kKeyTermLoads loads per thread, rounded up to a multiple of tile_n so
  // that the grid covers the padded workspace rows (to the next one, not
  // the least common multiple: 160-key tiles would make that 640 keys, 40
  // loads a thread).
  int64_t keysPerRun = config.threads() / keyTermLanesPerKey(config);
  int64_t chunksPerLane = config.chunksPerRow() / keyTermLanesPerKey(config);
  int64_t runs = std::max<int64_t>(1, kKeyTermLoads / chunksPerLane);
  return llvm::alignTo(keysPerRun * runs, std::lcm(keysPerRun, config.tileN));
}

namespace {

/// One thread group per key: the key's squared norm from global memory and
/// the key_bias region, written to the workspace planes.
class KeyTermsKernelBuilder : public KernelEmitter {
public:
  KeyTermsKernelBuilder(ImplicitLocOpBuilder &b, attn::AttentionOp op,
                        const ForwardConfig &config,
                        const KeyTermWorkspace &workspace)
      : KernelEmitter(b), op(op), config(config), workspace(workspace),
        block(b, op, config, workspace), tile(b, config.headDim) {}

  LogicalResult build(gpu::GPUModuleOp module, StringRef name);

private:
  attn::AttentionOp op;
  const ForwardConfig &config;
  const KeyTermWorkspace &workspace;
  ForwardBlock block;
  SwizzledTile tile;
};

} // namespace

LogicalResult KeyTermsKernelBuilder::build(gpu::GPUModuleOp module,
                                           StringRef name) {
  block.declare(module, name, config.threads());
  block.locate(/*byKvHead=*/workspace.perKvHead);
  const ForwardArgs &args = block.args;
  CopyEngine copies(b, tile, config.elementType, config.threads(),
                    block.threadId);
  if (workspace.inProduct && !attn::KeyBiasProduct::analyze(op))
    return op.emitOpError("key_terms \"product\" needs a key bias that "
                          "rides in S = Q K^T");
  SmallVector<Value> params = workspace.writerParams(b, args.params);
  RegionApplication regions(b, op, args.sizes, params, args.captures,
                            block.batch, block.head, block.lane,
                            config.headDim);
  KeyTermOperand entries(b, config.tileN, config.stages);
  // The flash kernel may start as soon as every prologue block has: it
  // loads Q while the prologue runs and waits before reading the terms.
  if (config.programmaticLaunch)
    NVVM::GriddepcontrolOp::create(b,
                                   NVVM::GridDepActionKind::launch_dependents);
  // Block x covers keyTermKeysPerBlock keys in runs of one key per
  // threadsPerKey adjacent lanes. All of a thread's loads are issued before
  // any sum is used (keys past kv_len read the last key instead).
  int64_t threadsPerKey = keyTermLanesPerKey(config);
  int64_t chunksPerThread = config.chunksPerRow() / threadsPerKey;
  int64_t keysPerRun = config.threads() / threadsPerKey;
  int64_t keysPerBlock = keyTermKeysPerBlock(config);
  int64_t runs = keysPerBlock / keysPerRun;
  LLVM_DEBUG(llvm::dbgs() << name << ": " << keysPerBlock << " keys a block, "
                          << threadsPerKey << " lanes a key\n");
  Value part = rem(block.threadId, threadsPerKey);
  Value first =
      add(mul(gpu::BlockIdOp::create(b, gpu::Dimension::x), keysPerBlock),
          div(block.threadId, threadsPerKey));
  Value lastKey = sub(args.sizes.kvLen, index(1));
  // K is read once here. Its lines are evicted first, so they displace one
  // another and not the dirty lines the previous kernel left in L2, whose
  // write-back would otherwise share this memory-bound kernel's bandwidth
  // (24 against 29 us at 4x16x4096x128, docs/benchmarks.md).
  Value readOncePolicy =
      workspace.needsKeyNorm ? copies.createEvictFirstPolicy() : Value{};
  SmallVector<Value> keys, sums;
  for (int64_t run = 0; run < runs; ++run) {
    keys.push_back(add(first, run * keysPerRun));
    if (!workspace.needsKeyNorm)
      continue;
    Value row =
        add(block.kBase, mul(arith::MinUIOp::create(b, keys.back(), lastKey),
                             args.k.strides[2]));
    sums.push_back(copies.squareSum(
        args.k.data, chunksPerThread,
        [&](int64_t c) {
          return add(row, mul(add(part, c * threadsPerKey), kChunk));
        },
        readOncePolicy));
  }
  Value leader = cmp(arith::CmpIPredicate::eq, part, index(0));
  for (auto [run, key] : llvm::enumerate(keys)) {
    Value keyNorm =
        workspace.needsKeyNorm ? laneSum(sums[run], threadsPerKey) : Value();
    // One lane per key writes, padding up to the row's length included (as
    // 0: a key_bias region may read captures at kv_idx, which must stay in
    // bounds).
    Value writer = arith::AndIOp::create(
        b, leader, cmp(arith::CmpIPredicate::ult, key, block.keyTermRowLength));
    auto write = scf::IfOp::create(b, TypeRange{}, writer, false);
    OpBuilder::InsertionGuard branch(b);
    b.setInsertionPointToStart(write.thenBlock());
    // A product entry's word w is at row + 4 key + w; plane p's term at
    // row_p + key.
    auto store = [&, key = key](Value value, int64_t plane) {
      Value offset = workspace.inProduct
                         ? add(add(block.keyTermRows.front(),
                                   mul(key, KeyTermOperand::kWorkspaceWords)),
                               plane)
                         : add(block.keyTermRows[plane], key);
      memref::StoreOp::create(b, value, args.workspace, ValueRange{offset});
    };
    auto storeBias = [&](Value bias) {
      if (!workspace.inProduct) {
        store(bias, workspace.keyBiasPlane);
        return;
      }
      auto [first, second] = entries.entryWords(bias);
      store(first, 0);
      store(second, 1);
      for (int64_t word = 2; word < KeyTermOperand::kWorkspaceWords; ++word)
        store(f32(0.0), word);
    };
    if (failed(workspace.emitKeyTerms(b, regions, key, args.sizes.kvLen,
                                      keyNorm, store, storeBias)))
      return failure();
  }
  gpu::ReturnOp::create(b);
  return success();
}

LogicalResult rbfc::buildKeyTermsKernel(ImplicitLocOpBuilder &b,
                                        attn::AttentionOp op,
                                        const ForwardConfig &config,
                                        const KeyTermWorkspace &workspace,
                                        gpu::GPUModuleOp module,
                                        StringRef name) {
  OpBuilder::InsertionGuard guard(b);
  return KeyTermsKernelBuilder(b, op, config, workspace).build(module, name);
}
