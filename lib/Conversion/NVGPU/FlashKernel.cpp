//===- FlashKernel.cpp - the mma.sync flash-attention kernel builder ------===//
//
// One thread block computes one tile of tile_m query rows of one (batch,
// head). Its warps each own 16 rows. The schedule per K/V tile j:
//
//   wait for tile j (cp.async group), barrier, issue the copy of tile
//   j + stages - 1 into the ring buffer, classify the tile (skip it when the
//   mask is empty there), compute the key-side terms of the tile into shared
//   memory, S = Q K^T with ldmatrix + mma.sync, apply the score region to
//   each accumulator element (masking only on partial tiles), update the
//   running max and sum, O = O * alpha + P V with P taken straight from the
//   S accumulators (the C fragment of m16n8k16 is the A fragment of the
//   next mma once packed to 16 bits).
//
// Shared tiles are [rows][head_dim] 16-bit elements; the 16-byte chunk c of
// row r is stored at chunk c ^ (r % 8), so the eight row addresses one
// ldmatrix reads fall into distinct banks.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/FlashKernel.h"

#include "rbfc/Conversion/NVGPU/CopyEngine.h"
#include "rbfc/Conversion/NVGPU/Epilogue.h"
#include "rbfc/Conversion/NVGPU/KernelArguments.h"
#include "rbfc/Conversion/NVGPU/MatrixAtoms.h"
#include "rbfc/Conversion/NVGPU/OnlineSoftmax.h"
#include "rbfc/Conversion/NVGPU/RegionApplication.h"
#include "rbfc/Conversion/RegionInlining.h"
#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/MathExtras.h"

#include <cmath>
#include <numeric>

#define DEBUG_TYPE "attn-flash-kernel"

using namespace mlir;
using namespace rbfc;

namespace {

/// Registers a warp may spend on keeping its Q fragments resident.
constexpr int64_t kResidentQueryRegisters = 32;
/// 16-byte loads of K each thread of the key-terms prologue keeps in
/// flight: enough to stream K at memory speed.
constexpr int64_t kKeyTermLoads = 8;
/// The key-terms prologue's entry is the kernel's with this suffix.
constexpr llvm::StringLiteral kKeyTermsSuffix = "_key_terms";

/// The plan's key_terms: staged in shared memory by per-thread cp.async
/// (`threads`) or by one cp.async.bulk (`bulk`), or loaded by each lane
/// from the workspace (`global`).
enum class KeyTermSource { Threads, Bulk, Global };

/// The canonical op's static facts the kernel is specialised on.
struct KernelConfig {
  int64_t headDim, tileM, tileN, warps, stages;
  Type elementType; // bf16 or f16
  bool softmax, log2Domain, hasLse;
  /// How per-key terms reach the tile's scores (the plan's key_terms).
  KeyTermSource keyTerms;
  /// Resident blocks per multiprocessor to compile for (0: no hint).
  int64_t blocksPerSM;
  /// sm_90 and later: the key-terms prologue lets the flash kernel launch
  /// before it ends (programmatic dependent launch), and the flash kernel
  /// waits for it only before its first read of the workspace.
  bool programmaticLaunch;

  int64_t threads() const { return warps * kThreadsPerWarp; }
  /// m16 atoms per warp: every K/V fragment a warp loads feeds this many
  /// mma, which is what keeps ldmatrix below shared memory's bandwidth.
  int64_t atoms() const { return tileM / (kAtomRows * warps); }
  int64_t rowsPerWarp() const { return tileM / warps; }
  int64_t dimSlices() const { return headDim / 16; }
  /// Q fragments stay in registers when small; otherwise they are reloaded
  /// from shared memory for every K tile (as FlashAttention-2 does).
  bool queryResident() const {
    return atoms() * dimSlices() * 4 <= kResidentQueryRegisters;
  }
  int64_t chunksPerRow() const { return headDim / kChunk; }
  /// Adjacent lanes of the key-terms prologue that read one key row
  /// together, a chunk each in turn, so a warp's load covers whole rows.
  int64_t keyTermLanesPerKey() const {
    int64_t lanes = 1;
    while (lanes < kThreadsPerWarp && chunksPerRow() % (2 * lanes) == 0)
      lanes *= 2;
    return lanes;
  }
  /// Keys one prologue block covers: runs of threads / keyTermLanesPerKey
  /// keys, enough runs for kKeyTermLoads loads per thread, and a multiple
  /// of tile_n so that the grid covers the padded workspace rows.
  int64_t keyTermKeysPerBlock() const {
    int64_t keysPerRun = threads() / keyTermLanesPerKey();
    int64_t chunksPerLane = chunksPerRow() / keyTermLanesPerKey();
    int64_t runs = std::max<int64_t>(1, kKeyTermLoads / chunksPerLane);
    return std::lcm(keysPerRun * runs, tileN);
  }
};



class FlashKernelBuilder : public KernelEmitter {
public:
  FlashKernelBuilder(attn::AttentionOp op, KernelConfig config,
                     ImplicitLocOpBuilder &b)
      : KernelEmitter(b), op(op), config(config),
        scoreLayout(config.atoms(), config.tileN / 8),
        outputLayout(config.atoms(), config.headDim / 8),
        atoms(b, config.elementType), tile(b, config.headDim) {}

  /// The flash kernel `name` and, when the score needs per-key terms, its
  /// prologue `name`_key_terms (docs/abi.md), both added to `module`.
  FailureOr<gpu::GPUFuncOp> build(gpu::GPUModuleOp module, StringRef name);

private:
  FailureOr<gpu::GPUFuncOp> buildFlashKernel(gpu::GPUModuleOp module,
                                             StringRef name);
  /// One thread group per key: the key's squared norm from global memory
  /// and the key_bias region, written to the workspace planes.
  LogicalResult buildKeyTermsKernel(gpu::GPUModuleOp module, StringRef name);
  /// Adds a kernel with the argument list of docs/abi.md to `module`, sets
  /// the insertion point to its entry and binds `args`, the thread and
  /// block ids and the per-(batch, head) bases. Block y is the query head,
  /// or for the key-terms prologue the head of the workspace row it writes.
  gpu::GPUFuncOp declareKernel(gpu::GPUModuleOp module, StringRef name,
                               bool keyTermsPrologue);
  /// The launch descriptor of docs/abi.md as a dictionary attribute.
  DictionaryAttr describe(StringRef entry, int64_t sharedBytes);
  /// Lets every float multiply-add pair of the kernel fuse into one FMA,
  /// as nvcc does by default (-fmad=true): without the flag NVPTX emits
  /// mul.rn/add.rn, which ptxas must not contract.
  void allowContraction(gpu::GPUFuncOp func);

  // Pieces of the schedule.
  /// The A registers of Q rows of `atom`, head dims [16 slice, 16 slice + 16).
  OperandRegisters loadQueryFragment(int64_t atom, int64_t slice);
  SmallVector<Value> computeQueryNorms();
  SmallVector<Accumulator> computeScores(ArrayRef<Value> queryFragments,
                                         Value keyBase,
                                         ArrayRef<Value> rowStart);
  /// The softmax state of the block's query rows. With an LSE output the
  /// row sums add the f32 weights before they are rounded for P V, each
  /// lane over its own columns: the LSE is then exact, not off by the
  /// rounding (up to 2^-8 in bf16). Without one the tensor cores sum
  /// exactly the rounded weights P V uses, complete over the lane group.
  OnlineSoftmax softmaxState(ValueRange rowMax, ValueRange rowSum) {
    return OnlineSoftmax(b, scoreLayout, outputLayout, rowMax, rowSum,
                         config.softmax, /*unroundedSums=*/config.hasLse);
  }
  /// O += P V, and the weights' row sums into `softmax`.
  SmallVector<Accumulator> accumulateValues(ArrayRef<Accumulator> weights,
                                            ArrayRef<Accumulator> output,
                                            Value valueBase,
                                            OnlineSoftmax &softmax);
  LogicalResult storeResults(ArrayRef<Accumulator> output,
                             OnlineSoftmax &softmax);


  attn::AttentionOp op;
  KernelConfig config;
  /// S = Q K^T: query rows, key columns; O: query rows, head_dim columns.
  FragmentLayout scoreLayout, outputLayout;
  MmaSyncAtom atoms;
  /// Q, K and V tiles in shared memory.
  SwizzledTile tile;
  ForwardArgs args;

  // Per-block values set up at the kernel's entry.
  Value threadId, lane, warp;
  std::optional<FragmentLane> fragment;
  std::optional<CopyEngine> copies;
  /// The K/V tiles (and with them their key terms) of the loop.
  std::optional<TileRing> ring;
  std::optional<RegionApplication> regions;
  Value batchIdx, headIdx, qLo;
  Value qBase, kBase, vBase, oBase;
  Value sharedQuery, sharedKey, sharedValue, sharedKeyBias, sharedKeyNorm;
  /// With bulk copies, one mbarrier (i64) per ring stage tracks the stage's
  /// key terms. They live in the dynamic shared memory: a static __shared__
  /// variable would overlap it, as MLIR bases dynamic shared memory on a
  /// one-byte static one.
  Value keyTermBarriers;
  /// Workspace planes of the per-key terms (-1: the score does not need
  /// the term), as docs/abi.md lays them out.
  int64_t keyBiasPlane = -1, keyNormPlane = -1;
  int64_t keyTermPlanes() const {
    return (keyBiasPlane >= 0) + (keyNormPlane >= 0);
  }
  /// round_up(kv_len, tile_n): the length of a workspace row, so a K tile's
  /// terms are one aligned run that exists whatever kv_len is.
  Value keyTermRowLength;
  /// Per plane, the workspace offset of row (batchIdx, headIdx).
  SmallVector<Value> keyTermRows;
  /// laneChunkOffsets of the lane's Q (row 0 of atom 0), K and V reads.
  SmallVector<Value> queryOffsets, keyOffsets, valueOffsets;
  /// Per lane row r (atom r / 2, half r % 2): index and ||q||^2.
  SmallVector<Value> rowIdx, rowQueryNorm;
  /// q_scale, which the verifier keeps uniform over a (batch, head).
  Value qScale;
  /// -1 / c when the score in log2 units is c * dot + t, t free of the dot
  /// (scaled dot product plus biases: RBF, ALiBi, relative biases), else
  /// null. The kernel then starts each row's S accumulators at
  /// -shift / c, so the score region yields the score minus the row's shift
  /// straight away and the exponent needs no subtraction per score.
  Value shiftToDot;
  bool needsKeyNorm = false;
  /// The key terms depend on the key/value head only (the key_bias region
  /// does not read h): the workspace holds a row per (batch, kv head), which
  /// every query head of the group reads, and the prologue computes each
  /// once, not once per query head.
  bool keyTermsPerKvHead = false;
  /// The K tiles the loop visits: [firstTile, endTile).
  Value firstTile, endTile;
};

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//




//===----------------------------------------------------------------------===//
// The schedule
//===----------------------------------------------------------------------===//

OperandRegisters FlashKernelBuilder::loadQueryFragment(int64_t atom,
                                                           int64_t slice) {
  // ldmatrix.x4: lanes 0-15 address rows 0-15 at column 0 of the k-slice,
  // lanes 16-31 the same rows at column 8: registers a0..a3 of m16n8k16.
  return atoms.ldmatrix(sharedQuery,
                  tile.laneChunkOffset(queryOffsets, atom * kAtomRows, slice),
                  false);
}


SmallVector<Value> FlashKernelBuilder::computeQueryNorms() {
  // The four lanes of a group share a row: each sums a quarter of it.
  int64_t chunksPerLane = config.chunksPerRow() / 4;
  SmallVector<Value> norms(scoreLayout.laneRows());
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r) {
    Value row = fragment->rowInTile(r);
    Value first = mul(fragment->getInGroup(), chunksPerLane);
    norms[r] = laneSum(
        copies->squareSum(
            sharedQuery, chunksPerLane,
            [&](int64_t c) { return tile.offset(row, add(first, c)); }),
        4);
  }
  return norms;
}

SmallVector<Accumulator>
FlashKernelBuilder::computeScores(ArrayRef<Value> queryFragments, Value keyBase,
                                  ArrayRef<Value> rowStart) {
  // Accumulators of atom a, 8-key slice n at a * slices + n; lane row r
  // starts at rowStart[r] (elements 2 (r % 2), 2 (r % 2) + 1 of atom r / 2).
  int64_t slices = scoreLayout.getColumnSlices();
  SmallVector<Accumulator> scores;
  for (int64_t atom = 0; atom < config.atoms(); ++atom) {
    Value top = rowStart.empty() ? f32(0.0) : rowStart[2 * atom];
    Value bottom = rowStart.empty() ? f32(0.0) : rowStart[2 * atom + 1];
    scores.append(slices, {top, top, bottom, bottom});
  }
  // ldmatrix.x4 over 16 keys x 16 dims: matrices (keys 0-7, dims 0-7),
  // (keys 0-7, dims 8-15), (keys 8-15, dims 0-7), (keys 8-15, dims 8-15)
  // are the b0/b1 registers of two adjacent 8-key slices.
  for (int64_t dimSlice = 0; dimSlice < config.dimSlices(); ++dimSlice) {
    SmallVector<OperandRegisters> a;
    for (int64_t atom = 0; atom < config.atoms(); ++atom) {
      if (queryFragments.empty()) {
        a.push_back(loadQueryFragment(atom, dimSlice));
        continue;
      }
      ArrayRef<Value> resident =
          queryFragments.slice(4 * (atom * config.dimSlices() + dimSlice), 4);
      a.push_back({resident[0], resident[1], resident[2], resident[3]});
    }
    for (int64_t pair = 0; pair < slices / 2; ++pair) {
      Value offset = tile.laneChunkOffset(keyOffsets, 16 * pair, dimSlice);
      auto registers = atoms.ldmatrix(sharedKey, add(keyBase, offset), false);
      atoms.mmaSlicePair(a, registers, scoreLayout, scores, 2 * pair);
    }
  }
  return scores;
}





SmallVector<Accumulator> FlashKernelBuilder::accumulateValues(
    ArrayRef<Accumulator> weights, ArrayRef<Accumulator> output,
    Value valueBase, OnlineSoftmax &softmax) {
  // O accumulators of atom a, 8-dim slice d at a * outputSlices + d.
  SmallVector<Accumulator> result(output.begin(), output.end());
  // ldmatrix.x4.trans over 16 keys x 16 dims gives the b0/b1 registers of
  // two adjacent 8-dim slices of V.
  for (int64_t keySlice = 0; keySlice < config.tileN / 16; ++keySlice) {
    // The S accumulators of two adjacent 8-key slices, packed to 16 bits,
    // are the A registers of P for this 16-key slice.
    SmallVector<OperandRegisters> a;
    for (int64_t atom = 0; atom < config.atoms(); ++atom) {
      a.push_back(atoms.operandA(
          weights[scoreLayout.accumulator(atom, 2 * keySlice)],
          weights[scoreLayout.accumulator(atom, 2 * keySlice + 1)]));
    }
    for (int64_t pair = 0; pair < config.dimSlices(); ++pair) {
      Value offset = tile.laneChunkOffset(valueOffsets, 16 * keySlice, pair);
      auto registers = atoms.ldmatrix(sharedValue, add(valueBase, offset), true);
      atoms.mmaSlicePair(a, registers, outputLayout, result, 2 * pair);
    }
    if (!softmax.sumsUnroundedWeights()) {
      softmax.addWeightsByMma(atoms, a);
      continue;
    }
    for (int64_t atom = 0; atom < config.atoms(); ++atom)
      softmax.addWeights(
          atom, weights[scoreLayout.accumulator(atom, 2 * keySlice)],
          weights[scoreLayout.accumulator(atom, 2 * keySlice + 1)]);
  }
  return result;
}

LogicalResult FlashKernelBuilder::storeResults(ArrayRef<Accumulator> output,
                                               OnlineSoftmax &softmax) {
  Epilogue epilogue(b, *fragment, outputLayout, atoms);
  for (int64_t r = 0; r < outputLayout.laneRows(); ++r) {
    Value sum = softmax.total(r);
    Value empty = softmax.isEmpty(sum);
    Value scale = softmax.outputScale(sum, empty);
    Value row = rowIdx[r];
    auto storeLse = [&]() -> LogicalResult {
      if (!config.hasLse)
        return success();
      auto lse = [&]() -> FailureOr<Value> {
        Value lse = softmax.logSumExp(r, sum);
        if (!op.getRowBias().empty()) {
          ElementValues element;
          element.qIdx = row;
          element.queryNorm = rowQueryNorm[r];
          auto bias = regions->evaluateElementRegion(op.getRowBias(), element);
          if (failed(bias))
            return failure();
          lse = fadd(lse, *bias);
        }
        return select(empty, f32(-std::numeric_limits<double>::infinity()),
                      lse);
      };
      return epilogue.storeRowValue(args.lse, lse, [&] {
        return add(add(mul(batchIdx, args.lseStrides[0]),
                       mul(headIdx, args.lseStrides[1])),
                   row);
      });
    };
    if (failed(epilogue.storeRow(output, r, scale,
                                 {args.o.data, oBase, args.o.strides[2]}, row,
                                 args.sizes.qLen, storeLse)))
      return failure();
  }
  return success();
}

FailureOr<gpu::GPUFuncOp> FlashKernelBuilder::build(gpu::GPUModuleOp module,
                                                    StringRef name) {
  if (!op.getKeyBias().empty())
    keyBiasPlane = keyTermPlanes();
  if (RegionApplication::usesNorm(op.getScore(), attn::Vector::k))
    keyNormPlane = keyTermPlanes();
  needsKeyNorm = RegionApplication::usesNorm(op.getKeyBias(), attn::Vector::k) ||
                 RegionApplication::usesNorm(op.getScore(), attn::Vector::k);
  attn::ScoreDependence dependence;
  keyTermsPerKvHead =
      op.getKeyBias().empty() ||
      !(dependence.get(op.getKeyBias().front().getTerminator()->getOperand(0)) &
        attn::kDependsOnHead);
  if (keyTermPlanes() &&
      failed(buildKeyTermsKernel(module, (name + kKeyTermsSuffix).str())))
    return failure();
  return buildFlashKernel(module, name);
}

gpu::GPUFuncOp FlashKernelBuilder::declareKernel(gpu::GPUModuleOp module,
                                                 StringRef name,
                                                 bool keyTermsPrologue) {
  args = ForwardArgs();
  KernelSignature signature(b.getContext());
  args.addTo(signature, op, config.hasLse, keyTermPlanes() > 0);
  gpu::GPUFuncOp func = signature.declare(b, module, name, config.threads());

  threadId = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  lane = rem(threadId, kThreadsPerWarp);
  warp = div(threadId, kThreadsPerWarp);
  fragment.emplace(b, lane, warp, config.rowsPerWarp());
  copies.emplace(b, tile, config.elementType, config.threads(), threadId);
  batchIdx = gpu::BlockIdOp::create(b, gpu::Dimension::z);
  Value group = arith::DivUIOp::create(b, args.sizes.heads, args.sizes.kvHeads);
  Value kvHead;
  if (keyTermsPrologue && keyTermsPerKvHead) {
    // The key_bias region does not read h: the first query head of the
    // group stands for all of them.
    kvHead = gpu::BlockIdOp::create(b, gpu::Dimension::y);
    headIdx = mul(kvHead, group);
  } else {
    headIdx = gpu::BlockIdOp::create(b, gpu::Dimension::y);
    kvHead = arith::DivUIOp::create(b, headIdx, group);
  }
  auto base = [&](const std::array<Value, 3> &strides, Value head) {
    return add(mul(batchIdx, strides[0]), mul(head, strides[1]));
  };
  qBase = base(args.q.strides, headIdx);
  kBase = base(args.k.strides, kvHead);
  vBase = base(args.v.strides, kvHead);
  oBase = base(args.o.strides, headIdx);
  regions.emplace(b, op, args.sizes, args.params, args.captures, batchIdx,
                  headIdx, lane, config.headDim);
  keyTermRows.clear();
  if (keyTermPlanes()) {
    keyTermRowLength =
        mul(arith::CeilDivUIOp::create(b, args.sizes.kvLen, index(config.tileN)),
            config.tileN);
    Value rowHeads = keyTermsPerKvHead ? args.sizes.kvHeads : args.sizes.heads;
    Value row =
        add(mul(batchIdx, rowHeads), keyTermsPerKvHead ? kvHead : headIdx);
    Value planeStride = mul(mul(args.sizes.batch, rowHeads), keyTermRowLength);
    for (int64_t plane = 0; plane < keyTermPlanes(); ++plane)
      keyTermRows.push_back(
          add(mul(planeStride, plane), mul(row, keyTermRowLength)));
  }
  return func;
}

LogicalResult FlashKernelBuilder::buildKeyTermsKernel(gpu::GPUModuleOp module,
                                                      StringRef name) {
  OpBuilder::InsertionGuard guard(b);
  declareKernel(module, name, /*keyTermsPrologue=*/true);
  // The flash kernel may start as soon as every prologue block has: it
  // loads Q while the prologue runs and waits before reading the terms.
  if (config.programmaticLaunch)
    NVVM::GriddepcontrolOp::create(b,
                                   NVVM::GridDepActionKind::launch_dependents);
  // Block x covers keyTermKeysPerBlock keys in runs of one key per
  // threadsPerKey adjacent lanes. All of a thread's loads are issued before
  // any sum is used (keys past kv_len read the last key instead).
  int64_t threadsPerKey = config.keyTermLanesPerKey();
  int64_t chunksPerThread = config.chunksPerRow() / threadsPerKey;
  int64_t keysPerRun = config.threads() / threadsPerKey;
  int64_t runs = config.keyTermKeysPerBlock() / keysPerRun;
  Value part = rem(threadId, threadsPerKey);
  Value first = add(mul(gpu::BlockIdOp::create(b, gpu::Dimension::x),
                        config.keyTermKeysPerBlock()),
                    div(threadId, threadsPerKey));
  Value lastKey = sub(args.sizes.kvLen, index(1));
  // K is read once here. Its lines are evicted first, so they displace one
  // another and not the dirty lines the previous kernel left in L2, whose
  // write-back would otherwise share this memory-bound kernel's bandwidth
  // (24 against 29 us at 4x16x4096x128, docs/benchmarks.md).
  Value readOncePolicy =
      needsKeyNorm ? copies->createEvictFirstPolicy() : Value{};
  SmallVector<Value> keys, sums;
  for (int64_t run = 0; run < runs; ++run) {
    keys.push_back(add(first, run * keysPerRun));
    if (!needsKeyNorm)
      continue;
    Value row = add(kBase, mul(arith::MinUIOp::create(b, keys.back(), lastKey),
                               args.k.strides[2]));
    sums.push_back(copies->squareSum(
        args.k.data, chunksPerThread,
        [&](int64_t c) {
          return add(row, mul(add(part, c * threadsPerKey), kChunk));
        },
        readOncePolicy));
  }
  Value leader = cmp(arith::CmpIPredicate::eq, part, index(0));
  for (auto [run, key] : llvm::enumerate(keys)) {
    ElementValues element;
    element.kvIdx = key;
    element.qIdx = index(0);
    if (needsKeyNorm)
      element.keyNorm = laneSum(sums[run], threadsPerKey);
    // One lane per key writes, padding up to the row's length included (as
    // 0: a key_bias region may read captures at kv_idx, which must stay in
    // bounds).
    Value writer = arith::AndIOp::create(
        b, leader, cmp(arith::CmpIPredicate::ult, key, keyTermRowLength));
    auto write = scf::IfOp::create(b, TypeRange{}, writer, false);
    OpBuilder::InsertionGuard branch(b);
    b.setInsertionPointToStart(write.thenBlock());
    auto inside = scf::IfOp::create(
        b, TypeRange{}, cmp(arith::CmpIPredicate::ult, key, args.sizes.kvLen), true);
    auto store = [&, key = key](Value value, int64_t plane) {
      memref::StoreOp::create(b, value, args.workspace,
                              ValueRange{add(keyTermRows[plane], key)});
    };
    b.setInsertionPointToStart(inside.elseBlock());
    for (int64_t plane = 0; plane < keyTermPlanes(); ++plane)
      store(f32(0.0), plane);
    b.setInsertionPointToStart(inside.thenBlock());
    if (keyNormPlane >= 0)
      store(element.keyNorm, keyNormPlane);
    if (keyBiasPlane >= 0) {
      auto bias = regions->evaluateElementRegion(op.getKeyBias(), element);
      if (failed(bias))
        return failure();
      store(*bias, keyBiasPlane);
    }
  }
  gpu::ReturnOp::create(b);
  return success();
}

FailureOr<gpu::GPUFuncOp>
FlashKernelBuilder::buildFlashKernel(gpu::GPUModuleOp module, StringRef name) {
  MLIRContext *ctx = b.getContext();
  OpBuilder::InsertionGuard guard(b);
  gpu::GPUFuncOp func = declareKernel(module, name, /*keyTermsPrologue=*/false);
  LLVM_DEBUG(llvm::dbgs() << "S: " << scoreLayout << "\nO: " << outputLayout
                          << "\n");
  // PTX's .minnctapersm: ptxas caps the registers so that many blocks fit.
  if (config.blocksPerSM > 0)
    func->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
                  b.getI32IntegerAttr(config.blocksPerSM));
  // Heavier query tiles (more unmasked keys under causal-like masks) start
  // first: block x counts down.
  Value tiles = gpu::GridDimOp::create(b, gpu::Dimension::x);
  Value qTile =
      sub(sub(tiles, index(1)), gpu::BlockIdOp::create(b, gpu::Dimension::x));
  qLo = mul(qTile, config.tileM);
  // The rows and chunk halves each lane addresses in ldmatrix.x4 (lanes
  // 8 i .. 8 i + 7 give the rows of matrix i): Q as the A operand, K as the
  // B operand of S = Q K^T, V (transposed) as the B operand of O += P V.
  LdmatrixAddress query = atoms.addressA(lane, fragment->atomRow(0));
  queryOffsets = tile.laneChunkOffsets(query.row, query.half);
  LdmatrixAddress key = atoms.addressB(lane);
  keyOffsets = tile.laneChunkOffsets(key.row, key.half);
  LdmatrixAddress value = atoms.addressBTransposed(lane);
  valueOffsets = tile.laneChunkOffsets(value.row, value.half);
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r)
    rowIdx.push_back(fragment->row(qLo, r));

  // Shared memory: Q tile, K and V ring buffers, per-key terms.
  bool needsQueryNorm = RegionApplication::usesNorm(op.getScore(), attn::Vector::q) ||
                        RegionApplication::usesNorm(op.getRowBias(), attn::Vector::q);
  SharedMemoryArena shared(b);
  sharedQuery = shared.carve(tile.elements(config.tileM), b.getF16Type());
  sharedKey =
      shared.carve(config.stages * tile.elements(config.tileN), b.getF16Type());
  sharedValue =
      shared.carve(config.stages * tile.elements(config.tileN), b.getF16Type());
  // With key_terms = global the lanes load the terms from the workspace
  // in the loop: no shared copy of them.
  bool globalKeyTerms = config.keyTerms == KeyTermSource::Global;
  if (keyBiasPlane >= 0 && !globalKeyTerms)
    sharedKeyBias = shared.carve(config.stages * config.tileN, b.getF32Type());
  if (keyNormPlane >= 0 && !globalKeyTerms)
    sharedKeyNorm = shared.carve(config.stages * config.tileN, b.getF32Type());
  if (keyTermPlanes() && config.keyTerms == KeyTermSource::Bulk)
    keyTermBarriers = shared.carve(config.stages, b.getI64Type());

  // The range of K tiles that may hold a kept key for this query tile.
  Value kvTiles =
      arith::CeilDivUIOp::create(b, args.sizes.kvLen, index(config.tileN));
  firstTile = index(0);
  Value lastTile = sub(kvTiles, index(1));
  if (!op.getTileClass().empty()) {
    auto classifyKeyTile = [&](Value tile) {
      return regions->classifyTile(qLo, config.tileM, mul(tile, config.tileN),
                                   config.tileN);
    };
    auto first = regions->scanLiveTile(index(0), kvTiles, /*forward=*/true,
                                       classifyKeyTile);
    if (failed(first))
      return failure();
    auto last = regions->scanLiveTile(lastTile, sub(*first, index(1)),
                                      /*forward=*/false, classifyKeyTile);
    if (failed(last))
      return failure();
    firstTile = *first;
    lastTile = *last;
  }
  endTile = add(lastTile, 1);
  ring.emplace(*copies, config.stages, config.tileN, args.sizes.kvLen, firstTile,
               endTile,
               SmallVector<TileRing::Stream>{
                   {sharedKey, {args.k.data, kBase, args.k.strides[2]}},
                   {sharedValue, {args.v.data, vBase, args.v.strides[2]}}});
  if (keyTermPlanes() && !globalKeyTerms) {
    SmallVector<TileRing::TermPlane> planes;
    for (auto [shared, plane] : {std::pair(sharedKeyBias, keyBiasPlane),
                                 std::pair(sharedKeyNorm, keyNormPlane)})
      if (plane >= 0)
        planes.push_back({shared, keyTermRows[plane]});
    ring->setTerms(args.workspace, std::move(planes),
                   config.keyTerms == KeyTermSource::Bulk
                       ? TileRing::TermCopy::Bulk
                       : TileRing::TermCopy::Threads,
                   keyTermBarriers);
  }

  // Prologue: Q, then the first stages - 1 K/V tiles, one group each.
  if (keyTermBarriers)
    ring->createTermBarriers();
  copies->copyTile(sharedQuery, index(0), {args.q.data, qBase, args.q.strides[2]},
                   qLo, args.sizes.qLen, config.tileM, /*bounded=*/true);
  NVVM::CpAsyncCommitGroupOp::create(b);
  // Launched early (programmatic dependent launch), the kernel waits for
  // the key-terms prologue to end and its workspace writes to show before
  // the first copy or load of the terms: before the first K/V copies when
  // those copy terms, else as the loop starts, so that Q and the first K/V
  // tiles load while the prologue ends. Launched in plain stream order it
  // does not wait.
  bool waitsForKeyTerms = keyTermPlanes() && config.programmaticLaunch;
  if (waitsForKeyTerms && !globalKeyTerms)
    NVVM::GriddepcontrolOp::create(b, NVVM::GridDepActionKind::wait);
  for (int64_t stage = 0; stage + 1 < config.stages; ++stage) {
    ring->issue(add(firstTile, stage));
    NVVM::CpAsyncCommitGroupOp::create(b);
  }
  NVVM::CpAsyncWaitGroupOp::create(b, config.stages - 1);
  gpu::BarrierOp::create(b);
  SmallVector<Value> queryFragments;
  if (config.queryResident())
    for (int64_t atom = 0; atom < config.atoms(); ++atom)
      for (int64_t slice = 0; slice < config.dimSlices(); ++slice)
        llvm::append_range(queryFragments, loadQueryFragment(atom, slice));
  rowQueryNorm.assign(scoreLayout.laneRows(), Value());
  if (needsQueryNorm)
    rowQueryNorm = computeQueryNorms();
  qScale = f32(1.0);
  if (!op.getQScale().empty()) {
    ElementValues element;
    element.qIdx = index(0);
    auto scale = regions->evaluateElementRegion(op.getQScale(), element);
    if (failed(scale))
      return failure();
    qScale = *scale;
  }
  if (config.softmax && RegionApplication::isAffineInDot(op.getScore())) {
    // |q_scale| below 2^-40 is taken as 2^-40 (sign kept, 0 as +): the
    // score moves by at most 2^-40 |q.k|, and -shift / c stays finite for
    // any shift below 2^87.
    Value tiny = f32(std::ldexp(1.0, -40));
    Value magnitude =
        arith::MaximumFOp::create(b, math::AbsFOp::create(b, qScale), tiny);
    Value negative =
        arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, qScale, f32(0.0));
    qScale = select(negative, arith::NegFOp::create(b, magnitude), magnitude);
    Value dotScale = config.log2Domain ? qScale : fmul(qScale, f32(M_LOG2E));
    shiftToDot = arith::DivFOp::create(b, f32(-1.0), dotScale);
  }

  // The loop over K/V tiles carries O (headDim/8 accumulators per atom),
  // then the running max and the per-lane partial sum of each lane row.
  int64_t rows = scoreLayout.laneRows();
  int64_t outputValues = 4 * outputLayout.size();
  SmallVector<Value> init(outputValues, f32(0.0));
  init.append(rows, f32(-std::numeric_limits<double>::infinity()));
  init.append(rows, f32(0.0));
  // With per-thread key terms (global loads, threads' copies) the loop
  // also carries each plane's workspace offset of the tile's first term.
  // Formed from the tile index instead, the address took the head_dim 64
  // RBF kernel (global) from 0.99x to 1.04x the dot kernel's time once the
  // workspace row depended on the kv head (a division): ptxas placed the
  // loop's registers differently. (Bulk copies' addresses are uniform.)
  bool carriedKeyTerms = config.keyTerms != KeyTermSource::Bulk;
  if (carriedKeyTerms)
    for (Value row : keyTermRows)
      init.push_back(add(row, mul(firstTile, config.tileN)));
  if (waitsForKeyTerms && globalKeyTerms)
    NVVM::GriddepcontrolOp::create(b, NVVM::GridDepActionKind::wait);
  auto loop = scf::ForOp::create(b, firstTile, endTile, index(1), init);
  {
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(loop.getBody());
    Value tile = loop.getInductionVar();
    ValueRange state = loop.getRegionIterArgs();
    SmallVector<Value> termOffsets;
    if (carriedKeyTerms) {
      termOffsets.assign(state.take_back(keyTermPlanes()).begin(),
                         state.take_back(keyTermPlanes()).end());
      state = state.drop_back(keyTermPlanes());
    }
    NVVM::CpAsyncWaitGroupOp::create(b, config.stages - 2);
    gpu::BarrierOp::create(b);
    SmallVector<Value> copyOffsets;
    for (Value offset : termOffsets)
      copyOffsets.push_back(add(offset, (config.stages - 1) * config.tileN));
    ring->issue(add(tile, config.stages - 1), copyOffsets);
    NVVM::CpAsyncCommitGroupOp::create(b);
    Value buffer = ring->buffer(tile);
    Value kvLo = mul(tile, config.tileN);
    // Every thread waits for every tile's fill, a skipped tile's too, so
    // that no bulk copy is still landing when the block exits. (Waiting
    // after S = Q K^T, or in thread 0 only before the barrier, measured
    // slower.)
    if (keyTermBarriers)
      ring->waitForTerms(tile);

    auto tileClass =
        regions->classifyTile(qLo, config.tileM, kvLo, config.tileN);
    if (failed(tileClass))
      return failure();
    Value boundary =
        cmp(arith::CmpIPredicate::sgt, add(kvLo, config.tileN), args.sizes.kvLen);
    Value partial = arith::OrIOp::create(b, boundary, notI(tileClass->allKept));
    Value live = notI(tileClass->allMasked);

    scf::IfOp compute;
    {
      OpBuilder::InsertionGuard body(b);
      compute = updateIf(live, state);
      // The exponent's shift per lane row as the tile starts.
      OnlineSoftmax softmax = softmaxState(state.slice(outputValues, rows),
                                           state.slice(outputValues + rows, rows));
      SmallVector<Value> oldShift, rowStart;
      for (int64_t r = 0; r < rows; ++r)
        oldShift.push_back(softmax.shift(r));
      if (shiftToDot)
        for (Value shift : oldShift)
          rowStart.push_back(fmul(shift, shiftToDot));
      // The key terms are loaded before S = Q K^T, which hides their
      // latency behind the mma.
      auto terms = [&](int64_t plane,
                       Value shared) -> SmallVector<ColumnTermPair> {
        if (plane < 0)
          return {};
        int64_t slices = scoreLayout.getColumnSlices();
        if (globalKeyTerms)
          return copies->loadColumnTerms(*fragment, slices, args.workspace,
                                         termOffsets[plane]);
        return copies->loadColumnTerms(*fragment, slices, shared,
                                       ring->termBase(buffer));
      };
      SmallVector<ColumnTermPair> biases = terms(keyBiasPlane, sharedKeyBias);
      SmallVector<ColumnTermPair> norms = terms(keyNormPlane, sharedKeyNorm);
      Value tileBase = ring->tileBase(buffer);
      SmallVector<Accumulator> dots =
          computeScores(queryFragments, tileBase, rowStart);

      // Partial tiles evaluate the mask per element; full tiles do not.
      int64_t scoreValues = 4 * scoreLayout.size();
      auto scored = scf::IfOp::create(
          b, SmallVector<Type>(scoreValues, b.getF32Type()), partial, true);
      for (bool masked : {true, false}) {
        OpBuilder::InsertionGuard branch(b);
        b.setInsertionPointToStart(masked ? scored.thenBlock()
                                          : scored.elseBlock());
        // Columns are keys, lane rows queries; a key's terms are read once
        // for all the lane's rows.
        auto scores = regions->applyScoreRegion(
            *fragment, scoreLayout, dots, masked,
            [&](ElementValues &element, int64_t slice, int64_t column,
                Value index) {
              element.kvIdx = add(kvLo, index);
              element.qScale = qScale;
              if (!biases.empty())
                element.keyBias = biases[slice][column];
              if (!norms.empty())
                element.keyNorm = norms[slice][column];
            },
            [&](ElementValues &element, int64_t r) {
              element.qIdx = rowIdx[r];
              element.queryNorm = rowQueryNorm[r];
            });
        if (failed(scores))
          return failure();
        scf::YieldOp::create(b, FragmentLayout::flatten(*scores));
      }
      SmallVector<Accumulator> scores =
          FragmentLayout::unflatten(scored.getResults());

      // Online softmax. `none` sums 2^s as is.
      SmallVector<Accumulator> output =
          FragmentLayout::unflatten(state.take_front(outputValues));
      if (config.softmax) {
        // Shifted scores hold s - shift: their maximum gets the shift back.
        SmallVector<Value> tileMax = softmax.tileMax(
            scores, shiftToDot ? ArrayRef<Value>(oldShift) : ArrayRef<Value>());
        softmax.rescale(tileMax, output,
                        shiftToDot ? MutableArrayRef<Accumulator>(scores)
                                   : MutableArrayRef<Accumulator>());
      }
      softmax.exponentiate(scores, /*shifted=*/bool(shiftToDot));
      output = accumulateValues(scores, output, tileBase, softmax);
      SmallVector<Value> next = FragmentLayout::flatten(output);
      llvm::append_range(next, softmax.getRowMax());
      llvm::append_range(next, softmax.getRowSum());
      scf::YieldOp::create(b, next);
    }
    SmallVector<Value> carried(compute.getResults());
    for (Value offset : termOffsets)
      carried.push_back(add(offset, config.tileN));
    scf::YieldOp::create(b, carried);
  }
  // Drain the cp.async groups still in flight (empty ones) before exit.
  NVVM::CpAsyncWaitGroupOp::create(b, 0);

  SmallVector<Accumulator> output =
      FragmentLayout::unflatten(loop.getResults().take_front(outputValues));
  OnlineSoftmax softmax =
      softmaxState(loop.getResults().slice(outputValues, rows),
                   loop.getResults().slice(outputValues + rows, rows));
  softmax.finish();
  if (failed(storeResults(output, softmax)))
    return failure();
  gpu::ReturnOp::create(b);
  allowContraction(func);
  func->setAttr(kDescriptorAttrName, describe(name, shared.size()));
  return func;
}

void FlashKernelBuilder::allowContraction(gpu::GPUFuncOp func) {
  func.walk([&](arith::ArithFastMathInterface op) {
    arith::FastMathFlags flags = arith::FastMathFlags::contract;
    if (arith::FastMathFlagsAttr current = op.getFastMathFlagsAttr())
      flags = flags | current.getValue();
    op->setAttr(op.getFastMathAttrName(),
                arith::FastMathFlagsAttr::get(b.getContext(), flags));
  });
}

DictionaryAttr FlashKernelBuilder::describe(StringRef entry,
                                            int64_t sharedBytes) {
  attn::PlanAttr plan = *op.getPlan();
  auto typeName = [](Type type) -> StringRef {
    if (type.isBF16())
      return "bf16";
    if (type.isF16())
      return "f16";
    if (type.isF32())
      return "f32";
    if (type.isInteger(32))
      return "i32";
    return "i64";
  };
  auto func = op->getParentOfType<FunctionOpInterface>();
  SmallVector<Attribute> params;
  for (auto [name, value, fallback] :
       llvm::zip(op.getParamNames(), op.getParams(), op.getParamDefaults())) {
    Attribute defaultValue = isa<UnitAttr>(fallback) ? Attribute() : fallback;
    SmallVector<NamedAttribute> fields{
        b.getNamedAttr("name", name),
        b.getNamedAttr("type", b.getStringAttr(typeName(value.getType())))};
    if (defaultValue)
      fields.push_back(b.getNamedAttr("default", defaultValue));
    params.push_back(b.getDictionaryAttr(fields));
  }
  SmallVector<Attribute> captures;
  for (auto [name, value] : llvm::zip(op.getCaptureNames(), op.getCaptures())) {
    auto tensor = cast<RankedTensorType>(value.getType());
    captures.push_back(b.getDictionaryAttr(
        {b.getNamedAttr("name", name),
         b.getNamedAttr("type",
                        b.getStringAttr(typeName(tensor.getElementType()))),
         b.getNamedAttr("rank", b.getI64IntegerAttr(tensor.getRank()))}));
  }
  std::string planText;
  llvm::raw_string_ostream(planText) << plan;
  SmallVector<NamedAttribute> fields{
      b.getNamedAttr("format", b.getStringAttr("rbfc-kernel/3")),
      b.getNamedAttr("name", b.getStringAttr(func ? func.getName() : entry)),
      b.getNamedAttr("entry", b.getStringAttr(entry)),
      b.getNamedAttr("arch", b.getStringAttr(plan.getArch())),
      b.getNamedAttr("dtype", b.getStringAttr(typeName(config.elementType))),
      b.getNamedAttr("head_dim", b.getI64IntegerAttr(config.headDim)),
      b.getNamedAttr("normalization",
                     b.getStringAttr(config.softmax ? "softmax" : "none")),
      b.getNamedAttr("has_lse", b.getBoolAttr(config.hasLse)),
      b.getNamedAttr("tile_m", b.getI64IntegerAttr(config.tileM)),
      b.getNamedAttr("tile_n", b.getI64IntegerAttr(config.tileN)),
      b.getNamedAttr("warps", b.getI64IntegerAttr(config.warps)),
      b.getNamedAttr("stages", b.getI64IntegerAttr(config.stages)),
      b.getNamedAttr("plan", b.getStringAttr(planText)),
      b.getNamedAttr("shared_memory_bytes", b.getI64IntegerAttr(sharedBytes)),
      b.getNamedAttr("params", b.getArrayAttr(params)),
      b.getNamedAttr("captures", b.getArrayAttr(captures)),
  };
  if (keyTermPlanes())
    fields.push_back(b.getNamedAttr(
        "key_terms",
        b.getDictionaryAttr({
            b.getNamedAttr("entry",
                           b.getStringAttr((entry + kKeyTermsSuffix).str())),
            b.getNamedAttr("block", b.getI64IntegerAttr(config.threads())),
            b.getNamedAttr("keys_per_block",
                           b.getI64IntegerAttr(config.keyTermKeysPerBlock())),
            b.getNamedAttr("terms", b.getI64IntegerAttr(keyTermPlanes())),
            b.getNamedAttr("row_multiple", b.getI64IntegerAttr(config.tileN)),
            b.getNamedAttr("heads",
                           b.getStringAttr(keyTermsPerKvHead ? "kv" : "q")),
            b.getNamedAttr("programmatic_launch",
                           b.getBoolAttr(config.programmaticLaunch)),
        })));
  return b.getDictionaryAttr(fields);
}

} // namespace

int rbfc::archVersion(StringRef arch) {
  int version = 0;
  if (arch.consume_front("sm_"))
    arch.take_while(llvm::isDigit).getAsInteger(10, version);
  return version;
}

LogicalResult rbfc::verifyMmaSyncPlan(attn::AttentionOp op,
                                      attn::PlanAttr plan) {
  auto queryType = cast<RankedTensorType>(op.getQuery().getType());
  int64_t headDim = queryType.getDimSize(3);
  Type element = queryType.getElementType();
  int64_t threads = plan.getWarps() * kThreadsPerWarp;
  auto fail = [&](const Twine &why) {
    return op.emitOpError() << "plan " << plan << " cannot be built: " << why;
  };
  if (plan.getKernel() != "mma_sync")
    return fail("only the mma_sync kernel structure is implemented");
  if (!element.isBF16() && !element.isF16())
    return fail("mma_sync kernels take bf16 or f16 inputs, not " +
                llvm::Twine(element.isF32() ? "f32" : "this type"));
  // The chunk swizzle XORs with the row, so a row holds a power of two of
  // 16-byte chunks.
  if (!llvm::is_contained({32, 64, 128, 256}, headDim))
    return fail("the head dimension must be 32, 64, 128 or 256");
  int64_t atoms = plan.getTileM() / (kAtomRows * plan.getWarps());
  if (plan.getTileM() % (kAtomRows * plan.getWarps()) != 0 ||
      !llvm::is_contained({1, 2, 4}, atoms))
    return fail("tile_m must be 16, 32 or 64 x warps (each warp owns 1, 2 "
                "or 4 blocks of 16 query rows)");
  if (plan.getTileN() % 16 != 0 || plan.getTileN() > threads ||
      threads % plan.getTileN() != 0 || threads / plan.getTileN() > 4)
    return fail("tile_n must be a multiple of 16 that divides 32 x warps, "
                "and at least 8 x warps");
  if ((plan.getTileN() * headDim / kChunk) % threads != 0 ||
      (plan.getTileM() * headDim / kChunk) % threads != 0)
    return fail(
        "the tiles must split into 16-byte copies evenly over the threads");
  if ((headDim / kChunk) % (threads / plan.getTileN()) != 0)
    return fail("a key row must split evenly over the threads that share it");
  if (plan.getStages() < 2)
    return fail("stages must be at least 2");
  if (plan.getKeyTerms() == "bulk" && archVersion(plan.getArch()) < 90)
    return fail("key_terms = \"bulk\" needs sm_90 (cp.async.bulk)");
  return success();
}

static KeyTermSource keyTermSource(attn::PlanAttr plan) {
  return llvm::StringSwitch<KeyTermSource>(plan.getKeyTerms())
      .Case("bulk", KeyTermSource::Bulk)
      .Case("global", KeyTermSource::Global)
      .Default(KeyTermSource::Threads);
}

FailureOr<gpu::GPUFuncOp> rbfc::buildFlashKernel(attn::AttentionOp op,
                                                 gpu::GPUModuleOp module,
                                                 StringRef name) {
  std::optional<attn::PlanAttr> plan = op.getPlan();
  if (!plan)
    return op.emitOpError() << "has no plan; run attn-select-plan first";
  if (failed(verifyMmaSyncPlan(op, *plan)))
    return failure();
  auto queryType = cast<RankedTensorType>(op.getQuery().getType());
  KernelConfig config{
      queryType.getDimSize(3), plan->getTileM(),
      plan->getTileN(),        plan->getWarps(),
      plan->getStages(),       queryType.getElementType(),
      op.isSoftmax(),          op.getLog2Domain(),
      op.getLse() != nullptr,  keyTermSource(*plan),
      plan->getBlocksPerSm(),  archVersion(plan->getArch()) >= 90};
  ImplicitLocOpBuilder b(op.getLoc(), op.getContext());
  FlashKernelBuilder builder(op, config, b);
  LLVM_DEBUG(llvm::dbgs() << "building " << name << " with " << *plan << "\n");
  return builder.build(module, name);
}
