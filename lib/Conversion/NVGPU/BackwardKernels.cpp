//===- BackwardKernels.cpp - the mma.sync backward kernels ----------------===//
//
// What the backward kernels share (BackwardKernel.h), the two small kernels
// at either end -- the row pre-pass and the reduction of the gradients'
// partial sums -- and the entry that builds all five (BackwardKernels.h).
// The two gradient kernels have files of their own.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/BackwardKernels.h"

#include "rbfc/Conversion/NVGPU/ApproximateTanh.h"
#include "rbfc/Conversion/NVGPU/BackwardKernel.h"
#include "rbfc/Conversion/NVGPU/DiagonalSums.h"
#include "rbfc/Conversion/NVGPU/FlashKernel.h"
#include "rbfc/Conversion/RegionInlining.h"
#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "llvm/Support/Debug.h"

#include <cmath>
#include <limits>

#define DEBUG_TYPE "attn-backward-kernels"

using namespace mlir;
using namespace rbfc;

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
/// Threads of the row pre-pass and of the reduction kernels.
constexpr int64_t kSmallKernelThreads = 128;
/// The dK/dV kernel's warps where 128-key tiles do not fit: 64 keys.
constexpr int64_t kNarrowKeyValueWarps = 4;

Value ceilDiv(ImplicitLocOpBuilder &b, Value x, int64_t y) {
  return arith::CeilDivUIOp::create(b, x, arith::ConstantIndexOp::create(b, y));
}

} // namespace

//===----------------------------------------------------------------------===//
// BackwardWorkspace
//===----------------------------------------------------------------------===//

BackwardWorkspace::BackwardWorkspace(ImplicitLocOpBuilder &b,
                                     const BackwardConfig &config,
                                     const ProblemSizes &sizes,
                                     int64_t keyTermPlanes,
                                     bool keyTermsPerKvHead, int64_t slots,
                                     bool diagonalSums)
    : KernelEmitter(b), sizes(sizes), slots(slots) {
  int64_t multiple = BackwardConfig::kRowMultiple;
  rowLength = mul(ceilDiv(b, sizes.qLen, multiple), multiple);
  keyLength = mul(ceilDiv(b, sizes.kvLen, multiple), multiple);
  keyTiles = ceilDiv(b, sizes.kvLen, config.keyTile());
  queryTiles = ceilDiv(b, sizes.qLen, config.queryTile());
  maxTiles = arith::MaxUIOp::create(b, keyTiles, queryTiles);
  keyTermRows =
      mul(sizes.batch, keyTermsPerKvHead ? sizes.kvHeads : sizes.heads);
  Value headRows = mul(sizes.batch, sizes.heads);
  keyTermBase = mul(mul(headRows, rowLength), 2);
  partialsBase =
      add(keyTermBase, mul(mul(keyTermRows, keyLength), keyTermPlanes));
  sumsBase = add(partialsBase, mul(mul(mul(headRows, maxTiles), slots), 2));
  diagonalBase = add(sumsBase, mul(mul(headRows, slots), 2));
  diagonalLength =
      diagonalSums ? DiagonalSums(b, config.keyTile(), config.keyValueQueryTile)
                         .rowLength(sizes.qLen)
                   : index(0);
}

Value BackwardWorkspace::rowTerms(int64_t plane, Value batch, Value head) {
  Value headRows = mul(sizes.batch, sizes.heads);
  return mul(add(add(mul(headRows, plane), mul(batch, sizes.heads)), head),
             rowLength);
}

Value BackwardWorkspace::keyTerms(int64_t plane, Value batch, Value head) {
  Value rowsPerBatch = arith::DivUIOp::create(b, keyTermRows, sizes.batch);
  Value row = add(mul(batch, rowsPerBatch), head);
  return add(keyTermBase, mul(add(mul(keyTermRows, plane), row), keyLength));
}

Value BackwardWorkspace::partials(int64_t kernel, Value batch, Value head,
                                  Value tile) {
  Value bh =
      add(mul(add(mul(index(kernel), sizes.batch), batch), sizes.heads), head);
  return add(partialsBase, mul(add(mul(bh, maxTiles), tile), slots));
}

Value BackwardWorkspace::sums(Value kernel, Value batch, Value head) {
  Value bh = add(mul(add(mul(kernel, sizes.batch), batch), sizes.heads), head);
  return add(sumsBase, mul(bh, slots));
}

Value BackwardWorkspace::diagonals(Value batch, Value head) {
  Value bh = add(mul(batch, sizes.heads), head);
  return add(diagonalBase, mul(mul(bh, keyTiles), diagonalLength));
}

//===----------------------------------------------------------------------===//
// BackwardKernelBuilder
//===----------------------------------------------------------------------===//

gpu::GPUFuncOp BackwardKernelBuilder::declare(gpu::GPUModuleOp module,
                                              StringRef name, int64_t warps) {
  args = BackwardArgs();
  KernelSignature signature(b.getContext());
  args.addTo(signature, op);
  gpu::GPUFuncOp func =
      signature.declare(b, module, name, warps * kThreadsPerWarp);
  threadId = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  lane = rem(threadId, kThreadsPerWarp);
  warp = div(threadId, kThreadsPerWarp);
  batchIdx = gpu::BlockIdOp::create(b, gpu::Dimension::z);
  fragment.emplace(b, lane, warp, kAtomRows);
  blockCopies.emplace(b, blockTile, config.elementType, warps * kThreadsPerWarp,
                      threadId);
  streamCopies.emplace(b, streamTile, config.elementType,
                       warps * kThreadsPerWarp, threadId);
  return func;
}

SmallVector<SmallVector<Accumulator>> BackwardKernelBuilder::multiplyByWgmma(
    ArrayRef<std::pair<Value, Value>> operands, const SwizzledTile &aTile,
    const SwizzledTile &bTile, int64_t accumulators) {
  // One fence and one wait for all the products: every accumulator passes
  // through both. Each slice's descriptors are formed after the fence,
  // unlike the forward's: formed before it, the 64-bit descriptors of two
  // products' slices stay live together, and the dK/dV kernel at head_dim
  // 128 spilled more (softmax: 148 bytes against 100, ptxas -v).
  SmallVector<Accumulator> all =
      warpgroupAtoms.unsetAccumulators(operands.size() * accumulators);
  MutableArrayRef<Accumulator> acc(all);
  warpgroupAtoms.fence(acc);
  for (auto [i, pair] : llvm::enumerate(operands))
    for (int64_t slice = 0; slice < config.dimSlices(); ++slice)
      warpgroupAtoms.mma(warpgroupAtoms.kMajorSlice(pair.first, aTile, slice),
                         warpgroupAtoms.kMajorSlice(pair.second, bTile, slice),
                         acc.slice(i * accumulators, accumulators),
                         /*transposeB=*/false, /*accumulate=*/slice > 0);
  warpgroupAtoms.commitGroup();
  warpgroupAtoms.waitGroup(0, acc);
  SmallVector<SmallVector<Accumulator>> products;
  for (size_t i = 0; i < operands.size(); ++i)
    products.emplace_back(acc.slice(i * accumulators, accumulators));
  return products;
}

void BackwardKernelBuilder::accumulateByWgmma(
    ArrayRef<SmallVector<OperandRegisters>> a, ArrayRef<Value> bDescriptors,
    const SwizzledTile &bTile, MutableArrayRef<Accumulator> acc) {
  SmallVector<SmallVector<Value>> slices;
  for (auto [registers, descriptor] : llvm::zip(a, bDescriptors)) {
    slices.emplace_back();
    for (int64_t k = 0; k < int64_t(registers.size()); ++k)
      slices.back().push_back(
          warpgroupAtoms.mnMajorSlice(descriptor, bTile, k));
  }
  int64_t run = acc.size() / a.size();
  warpgroupAtoms.fence(acc);
  for (auto [i, registers] : llvm::enumerate(a))
    for (auto [operand, descriptor] : llvm::zip(registers, slices[i]))
      warpgroupAtoms.mma(operand, descriptor, acc.slice(i * run, run),
                         /*transposeB=*/true);
  warpgroupAtoms.commitGroup();
  warpgroupAtoms.waitGroup(0, acc);
}

SmallVector<OperandRegisters>
BackwardKernelBuilder::operandsFromAccumulators(ArrayRef<Accumulator> operand,
                                                const FragmentLayout &layout) {
  SmallVector<OperandRegisters> registers;
  for (int64_t k = 0; k < layout.getColumnSlices() / 2; ++k)
    registers.push_back(
        atoms.operandA(operand[layout.accumulator(0, 2 * k)],
                       operand[layout.accumulator(0, 2 * k + 1)]));
  return registers;
}

void BackwardKernelBuilder::addressOperands(Value first, Value second) {
  if (config.wgmma) {
    blockDescriptors = {
        warpgroupAtoms.kMajorDescriptor(first, warpgroupRows(), blockTile),
        warpgroupAtoms.kMajorDescriptor(second, warpgroupRows(), blockTile)};
    return;
  }
  LdmatrixAddress block = atoms.addressA(lane, fragment->atomRow(0));
  blockOffsets = blockTile.laneChunkOffsets(block.row, block.half);
  LdmatrixAddress stream = atoms.addressB(lane);
  streamOffsets = streamTile.laneChunkOffsets(stream.row, stream.half);
  LdmatrixAddress transposed = atoms.addressBTransposed(lane);
  streamTransposedOffsets =
      streamTile.laneChunkOffsets(transposed.row, transposed.half);
}

void BackwardKernelBuilder::copyBlockTiles(
    ArrayRef<std::pair<Value, GlobalRows>> tiles, Value lo, Value length) {
  for (const auto &[shared, source] : tiles)
    blockCopies->copyTile(shared, index(0), source, lo, length, blockRows,
                          /*bounded=*/true);
  NVVM::CpAsyncCommitGroupOp::create(b);
}

void BackwardKernelBuilder::waitForCopies(int64_t pending) {
  NVVM::CpAsyncWaitGroupOp::create(b, pending);
  if (config.wgmma)
    warpgroupAtoms.fenceCopies();
  gpu::BarrierOp::create(b);
}

SmallVector<Value>
BackwardKernelBuilder::blockRowSquareSums(const FragmentLayout &layout,
                                          Value shared) {
  SmallVector<Value> sums;
  for (int64_t r = 0; r < layout.laneRows(); ++r)
    sums.push_back(blockCopies->rowSquareSum(
        shared, Value{}, fragment->rowInTile(r), fragment->getInGroup(), 4));
  return sums;
}

SmallVector<Accumulator>
BackwardKernelBuilder::multiplyByStream(const FragmentLayout &layout,
                                        ArrayRef<Value> resident, Value block,
                                        Value stream, Value tileBase) {
  SmallVector<Accumulator> acc(layout.size(),
                               {f32(0.0), f32(0.0), f32(0.0), f32(0.0)});
  for (int64_t dimSlice = 0; dimSlice < config.dimSlices(); ++dimSlice) {
    OperandRegisters a;
    if (resident.empty()) {
      a = loadBlockFragment(block, dimSlice);
    } else {
      ArrayRef<Value> registers = resident.slice(4 * dimSlice, 4);
      a = {registers[0], registers[1], registers[2], registers[3]};
    }
    for (int64_t pair = 0; pair < layout.getColumnSlices() / 2; ++pair) {
      Value offset =
          add(tileBase,
              streamTile.laneChunkOffset(streamOffsets, 16 * pair, dimSlice));
      atoms.mmaSlicePair({a}, atoms.ldmatrix(stream, offset, false), layout,
                         acc, 2 * pair);
    }
  }
  return acc;
}

void BackwardKernelBuilder::accumulateStream(
    ArrayRef<Accumulator> operand, const FragmentLayout &operandLayout,
    Value stream, Value tileBase, const FragmentLayout &layout,
    SmallVectorImpl<Accumulator> &acc) {
  for (int64_t k = 0; k < operandLayout.getColumnSlices() / 2; ++k) {
    OperandRegisters a =
        atoms.operandA(operand[operandLayout.accumulator(0, 2 * k)],
                       operand[operandLayout.accumulator(0, 2 * k + 1)]);
    for (int64_t pair = 0; pair < layout.getColumnSlices() / 2; ++pair) {
      Value offset = add(tileBase, streamTile.laneChunkOffset(
                                       streamTransposedOffsets, 16 * k, pair));
      atoms.mmaSlicePair({a}, atoms.ldmatrix(stream, offset, true), layout, acc,
                         2 * pair);
    }
  }
}

FailureOr<BackwardKernelBuilder::StreamStep>
BackwardKernelBuilder::enterStreamTile(RegionApplication &regions,
                                       TileRing &ring, Value tileIndex,
                                       Value blockLo, bool streamIsQueries) {
  ring.advance(tileIndex, config.wgmma);
  Value buffer = ring.buffer(tileIndex);
  StreamStep step;
  step.tileBase = ring.tileBase(buffer);
  step.termBase = ring.termBase(buffer);
  step.lo = mul(tileIndex, streamRows);
  Value qLo = streamIsQueries ? step.lo : blockLo;
  Value kvLo = streamIsQueries ? blockLo : step.lo;
  int64_t queryRows = streamIsQueries ? streamRows : blockRows;
  int64_t keyRows = streamIsQueries ? blockRows : streamRows;
  FailureOr<TileClass> tileClass =
      regions.classifyTile(qLo, queryRows, kvLo, keyRows);
  if (failed(tileClass))
    return failure();
  auto pastEnd = [&](Value lo, int64_t rows, Value length) {
    return cmp(arith::CmpIPredicate::sgt, add(lo, rows), length);
  };
  Value queryLength = args.sizes.qLen, keyLength = args.sizes.kvLen;
  Value streamPastEnd =
      pastEnd(step.lo, streamRows, streamIsQueries ? queryLength : keyLength);
  Value blockPastEnd =
      pastEnd(blockLo, blockRows, streamIsQueries ? keyLength : queryLength);
  Value boundary = arith::OrIOp::create(b, streamPastEnd, blockPastEnd);
  step.partial = arith::OrIOp::create(b, boundary, notI(tileClass->allKept));
  step.live = notI(tileClass->allMasked);
  return step;
}

int64_t BackwardKernelBuilder::keyNormPlane() {
  if (!RegionApplication::usesNorm(op.getScore(), attn::Vector::k))
    return -1;
  return keyBiasPlane() + 1;
}

int64_t BackwardKernelBuilder::keyTermPlanes() {
  return (keyBiasPlane() >= 0) + (keyNormPlane() >= 0);
}

bool BackwardKernelBuilder::keyTermsPerKvHead() {
  attn::ScoreDependence dependence;
  return op.getKeyBias().empty() ||
         !(dependence.get(attn::AttentionOp::getYielded(op.getKeyBias())[0]) &
           attn::kDependsOnHead);
}

Value BackwardKernelBuilder::wants(int64_t bit) {
  Value one = arith::ConstantOp::create(b, b.getI64IntegerAttr(1));
  Value shifted = arith::ShRUIOp::create(
      b, args.gradMask, arith::ConstantOp::create(b, b.getI64IntegerAttr(bit)));
  return arith::CmpIOp::create(b, arith::CmpIPredicate::eq,
                               arith::AndIOp::create(b, shifted, one), one);
}

Value BackwardKernelBuilder::wantsDiagonalSums() {
  std::optional<attn::GradCaptureOp> sink = slots.getDiagonalSink();
  if (!sink)
    return arith::ConstantIntOp::create(b, 0, 1);
  return wants(op.getParams().size() + captureIndex(op, sink->getCapture()));
}

BackwardKernelBuilder::ElementGradient
BackwardKernelBuilder::elementGradient(Value score, Value kept, Value dP,
                                       Value delta, Value lse2) {
  Value units = f32(config.log2Domain ? M_LN2 : 1.0);
  // 2^(s - lse2): 0 for a masked element (s = -inf) and for a row without
  // weight (lse2 = +inf).
  Value relative = exp2(arith::SubFOp::create(b, score, lse2));
  Value weight, adjoint;
  if (config.softmax) {
    weight = relative;
    adjoint = fmul(units, fmul(relative, arith::SubFOp::create(b, dP, delta)));
  } else {
    weight = exp2(score);
    adjoint = fmul(units, fadd(fmul(weight, dP), fmul(delta, relative)));
  }
  if (kept) {
    // dP of a masked element may be inf or NaN (a masked value row is not
    // read by the forward either): it must not reach the gradients.
    Value zero = f32(0.0);
    weight = select(kept, weight, zero);
    adjoint = select(kept, adjoint, zero);
  }
  return {weight, adjoint};
}

void BackwardKernelBuilder::carveDiagonalWindows(SharedMemoryArena &shared,
                                                 int64_t warps,
                                                 int64_t columns) {
  stagedLoads = DiagonalStaging::stagedLoads(op);
  diagonalWindows = DiagonalStaging::carveWindows(shared, stagedLoads, warps,
                                                  kAtomRows, columns);
}

void BackwardKernelBuilder::stageDiagonalsWith(RegionApplication &regions,
                                               DiagonalStaging::Rows rows,
                                               int64_t columns) {
  if (!stagedLoads.empty())
    diagonals.emplace(b, regions, stagedLoads, diagonalWindows, *fragment, lane,
                      warp, rows, kAtomRows, columns);
}

FailureOr<std::pair<Value, Value>>
BackwardKernelBuilder::scoreAndKept(RegionApplication &regions,
                                    const ElementValues &element, bool masked) {
  auto readStaged = [&](Operation *attnOp, IRMapping &,
                        const ElementValues &at) {
    return diagonals->read(attnOp, at);
  };
  FailureOr<Value> score = regions.evaluateElementRegion(
      op.getScore(), element,
      diagonals ? ElementOpHook(readStaged) : ElementOpHook());
  if (failed(score))
    return failure();
  Value value = config.log2Domain ? *score : fmul(*score, f32(M_LOG2E));
  if (!masked)
    return std::pair(value, Value());
  Value keep = arith::AndIOp::create(
      b, cmp(arith::CmpIPredicate::ult, element.qIdx, args.sizes.qLen),
      cmp(arith::CmpIPredicate::ult, element.kvIdx, args.sizes.kvLen));
  if (!op.getMask().empty()) {
    FailureOr<Value> kept =
        regions.evaluateElementRegion(op.getMask(), element);
    if (failed(kept))
      return failure();
    keep = arith::AndIOp::create(b, keep, *kept);
  }
  return std::pair(select(keep, value, f32(-kInfinity)), keep);
}

LogicalResult BackwardKernelBuilder::evaluateGradients(
    RegionApplication &regions, Region &region, const ElementValues &element,
    MutableArrayRef<Value> partials, Value active,
    function_ref<LogicalResult(Operation *, Value)> onOther) {
  int64_t numParams = op.getParams().size();
  GradientPartials sums(b, slots);
  auto gated = [&](int64_t bit, Value x) {
    Value on = wants(bit);
    if (active)
      on = arith::AndIOp::create(b, on, active);
    return select(on, x, f32(0.0));
  };
  return regions.evaluateGradRegion(
      region, element,
      [&](Operation *attnOp, IRMapping &mapping,
          const ElementValues &) -> FailureOr<Value> {
        if (attnOp->getNumResults() != 0)
          return Value();
        Value x = mapping.lookup(attnOp->getOperands().back());
        bool ownsSums = !partials.empty();
        if (auto param = dyn_cast<attn::GradParamOp>(attnOp)) {
          if (!ownsSums)
            return Value();
          unsigned index =
              cast<BlockArgument>(param.getParam()).getArgNumber() -
              attn::AttentionOp::kNumGradArgs;
          sums.accumulate(partials, slots.paramSlot(index), gated(index, x));
        } else if (auto sink = dyn_cast<attn::GradCaptureOp>(attnOp)) {
          std::optional<int64_t> slot = slots.captureSlot(sink);
          if (ownsSums && slot) {
            unsigned capture = captureIndex(op, sink.getCapture());
            sums.accumulate(partials, *slot, gated(numParams + capture, x));
          } else if (sink == slots.getDiagonalSink() &&
                     failed(onOther(attnOp, x))) {
            return failure();
          }
        } else if (failed(onOther(attnOp, x))) {
          return failure();
        }
        return Value();
      });
}

LogicalResult BackwardKernelBuilder::unownedGradient(Operation *gradOp,
                                                     StringRef where) {
  return gradOp->emitOpError() << "has no place in " << where
                               << " (no kernel of the backward adds it up)";
}

Value BackwardKernelBuilder::loadChunk(Value memref, Value offset) {
  Value raw = vector::LoadOp::create(
      b, VectorType::get({kChunk}, b.getF16Type()), memref, ValueRange{offset},
      /*nontemporal=*/false, llvm::Align(16));
  Value typed =
      config.elementType.isF16()
          ? raw
          : vector::BitCastOp::create(
                b, VectorType::get({kChunk}, config.elementType), raw);
  return arith::ExtFOp::create(b, VectorType::get({kChunk}, b.getF32Type()),
                               typed);
}

std::array<Value, 2>
BackwardKernelBuilder::loadTilePair(SwizzledTile &tile, Value shared,
                                    Value tileBase, Value row, int64_t slice) {
  // The lane's columns 2 (l % 4) and 2 (l % 4) + 1 of slice `slice` are
  // elements 2 (l % 4) of chunk `slice`, which the swizzle moves as a
  // whole.
  Value offset = add(add(tileBase, tile.offset(row, index(slice))),
                     mul(fragment->getInGroup(), 2));
  Value raw = vector::LoadOp::create(b, VectorType::get({2}, b.getF16Type()),
                                     shared, ValueRange{offset},
                                     /*nontemporal=*/false, llvm::Align(4));
  Value typed = config.elementType.isF16()
                    ? raw
                    : vector::BitCastOp::create(
                          b, VectorType::get({2}, config.elementType), raw);
  Value wide =
      arith::ExtFOp::create(b, VectorType::get({2}, b.getF32Type()), typed);
  return {vector::ExtractOp::create(b, wide, ArrayRef<int64_t>{0}),
          vector::ExtractOp::create(b, wide, ArrayRef<int64_t>{1})};
}

namespace {

//===----------------------------------------------------------------------===//
// NAME_bwd_rows
//===----------------------------------------------------------------------===//

/// Per query row: delta = rowsum(dO * O) - dlse (softmax; dlse under
/// `none`) and lse2 = (lse - row_bias) log2(e), +inf for a row without a
/// kept key; padding rows up to the workspace row's length get 0 and +inf.
/// Each row is read by adjacent lanes, a 16-byte chunk each in turn: D/8
/// lanes one chunk each, or where D/8 is not a power of two (head_dim 80,
/// 96) the largest power of two of lanes that divides it.
class RowsKernel : BackwardKernelBuilder {
public:
  using BackwardKernelBuilder::BackwardKernelBuilder;

  int64_t lanesPerRow() const {
    return config.chunksPerRow() & -config.chunksPerRow();
  }
  int64_t chunksPerLane() const { return config.chunksPerRow() / lanesPerRow(); }
  int64_t rowsPerBlock() const { return kSmallKernelThreads / lanesPerRow(); }

  LogicalResult build(gpu::GPUModuleOp module, StringRef name) {
    OpBuilder::InsertionGuard guard(b);
    gpu::GPUFuncOp func =
        declare(module, name, kSmallKernelThreads / kThreadsPerWarp);
    Value head = gpu::BlockIdOp::create(b, gpu::Dimension::y);
    BackwardWorkspace space = workspace();
    Value row =
        add(mul(gpu::BlockIdOp::create(b, gpu::Dimension::x), rowsPerBlock()),
            div(threadId, lanesPerRow()));
    Value part = rem(threadId, lanesPerRow());
    Value inside = cmp(arith::CmpIPredicate::ult, row, args.sizes.qLen);
    // Rows past q_len read the last row instead (and store padding).
    Value readRow =
        arith::MinUIOp::create(b, row, sub(args.sizes.qLen, index(1)));
    auto chunkOf = [&](const TensorArgs &tensor, int64_t turn) {
      return loadChunk(
          tensor.data,
          add(add(headBase(tensor, batchIdx, head),
                  mul(readRow, tensor.strides[2])),
              mul(add(part, turn * lanesPerRow()), kChunk)));
    };
    // The row's sum of `products(turn)` over the lane's chunks and the
    // row's lanes.
    auto rowSum = [&](function_ref<Value(int64_t)> products) {
      Value sum = products(0);
      for (int64_t turn = 1; turn < chunksPerLane(); ++turn)
        sum = arith::AddFOp::create(b, sum, products(turn));
      return laneSum(
          vector::ReductionOp::create(b, vector::CombiningKind::ADD, sum),
          lanesPerRow());
    };
    Value dot = rowSum([&](int64_t turn) {
      return arith::MulFOp::create(b, chunkOf(args.outputGrad, turn),
                                   chunkOf(args.o, turn));
    });
    Value queryNorm;
    if (RegionApplication::usesNorm(op.getRowBias(), attn::Vector::q))
      queryNorm = rowSum([&](int64_t turn) {
        Value q = chunkOf(args.q, turn);
        return arith::MulFOp::create(b, q, q);
      });
    RegionApplication regions(b, op, args.sizes, args.params, args.captures,
                              batchIdx, head, lane, config.headDim);

    Value writer = arith::AndIOp::create(
        b, cmp(arith::CmpIPredicate::eq, part, index(0)),
        cmp(arith::CmpIPredicate::ult, row, space.rowLength));
    auto write = scf::IfOp::create(b, TypeRange{}, writer, false);
    b.setInsertionPointToStart(write.thenBlock());
    Value rowOffset = add(
        add(mul(batchIdx, args.lseStrides[0]), mul(head, args.lseStrides[1])),
        readRow);
    Value lse = memref::LoadOp::create(b, args.lse, ValueRange{rowOffset});
    Value lseGrad = loadLseGrad(readRow, head);
    Value delta =
        config.softmax ? arith::SubFOp::create(b, dot, lseGrad) : lseGrad;
    Value rowLse = lse;
    if (!op.getRowBias().empty()) {
      ElementValues element;
      element.qIdx = readRow;
      element.queryNorm = queryNorm;
      FailureOr<Value> bias =
          regions.evaluateElementRegion(op.getRowBias(), element);
      if (failed(bias))
        return failure();
      rowLse = arith::SubFOp::create(b, rowLse, *bias);
    }
    Value empty =
        arith::OrIOp::create(b, notI(inside),
                             arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ,
                                                   lse, f32(-kInfinity)));
    Value lse2 = select(empty, f32(kInfinity), fmul(rowLse, f32(M_LOG2E)));
    delta = select(inside, delta, f32(0.0));
    memref::StoreOp::create(
        b, delta, args.workspace,
        ValueRange{add(space.rowTerms(0, batchIdx, head), row)});
    memref::StoreOp::create(
        b, lse2, args.workspace,
        ValueRange{add(space.rowTerms(1, batchIdx, head), row)});
    b.setInsertionPointAfter(write);
    gpu::ReturnOp::create(b);
    allowContraction(func);
    return success();
  }

private:
  /// dL/dlse of a row, 0 when the caller passed none (a null pointer).
  Value loadLseGrad(Value row, Value head) {
    Value pointer =
        memref::ExtractAlignedPointerAsIndexOp::create(b, args.lseGrad);
    Value given = cmp(arith::CmpIPredicate::ne, pointer, index(0));
    auto load = scf::IfOp::create(b, TypeRange{b.getF32Type()}, given, true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(load.thenBlock());
    Value offset = add(add(mul(batchIdx, args.lseGradStrides[0]),
                           mul(head, args.lseGradStrides[1])),
                       row);
    scf::YieldOp::create(b, ValueRange{memref::LoadOp::create(
                                b, args.lseGrad, ValueRange{offset})});
    b.setInsertionPointToStart(load.elseBlock());
    scf::YieldOp::create(b, ValueRange{f32(0.0)});
    return load.getResult(0);
  }
};

//===----------------------------------------------------------------------===//
// NAME_bwd_tile_sums, NAME_bwd_reduce
//===----------------------------------------------------------------------===//

/// The partial sums' two reductions. tile_sums: per (kernel, batch, head,
/// slot), the sum over that kernel's tiles, in tile order. reduce: per
/// asked-for gradient element -- a parameter, or an element of a capture
/// -- the sum over (kernel, batch, head) and the slots that target it, in
/// that order, written to where the caller wants it.
class ReductionKernels : BackwardKernelBuilder {
public:
  using BackwardKernelBuilder::BackwardKernelBuilder;

  LogicalResult buildTileSums(gpu::GPUModuleOp module, StringRef name) {
    OpBuilder::InsertionGuard guard(b);
    declare(module, name, kSmallKernelThreads / kThreadsPerWarp);
    BackwardWorkspace space = workspace();
    int64_t count = slots.size();
    Value item = add(
        mul(gpu::BlockIdOp::create(b, gpu::Dimension::x), kSmallKernelThreads),
        threadId);
    Value headRows = mul(args.sizes.batch, args.sizes.heads);
    Value total = mul(mul(headRows, 2), count);
    auto inRange = scf::IfOp::create(
        b, TypeRange{}, cmp(arith::CmpIPredicate::ult, item, total), false);
    b.setInsertionPointToStart(inRange.thenBlock());
    Value slot = rem(item, count);
    Value kernelHead = div(item, count);
    Value kernel = arith::DivUIOp::create(b, kernelHead, headRows);
    Value batchHead = arith::RemUIOp::create(b, kernelHead, headRows);
    Value batch = arith::DivUIOp::create(b, batchHead, args.sizes.heads);
    Value head = arith::RemUIOp::create(b, batchHead, args.sizes.heads);
    Value isQuery = cmp(arith::CmpIPredicate::eq, kernel, index(1));
    Value tiles = select(isQuery, space.queryTiles, space.keyTiles);
    // partials(kernel, ...) with a run-time kernel: the two kernels' rows
    // are one block of batch x heads x maxTiles rows apart.
    Value first = add(space.partials(0, batch, head, index(0)),
                      mul(kernel, mul(mul(headRows, space.maxTiles), count)));
    auto loop =
        scf::ForOp::create(b, index(0), tiles, index(1), ValueRange{f32(0.0)});
    {
      OpBuilder::InsertionGuard inner(b);
      b.setInsertionPointToStart(loop.getBody());
      Value offset = add(add(first, mul(loop.getInductionVar(), count)), slot);
      scf::YieldOp::create(b, fadd(loop.getRegionIterArg(0),
                                   memref::LoadOp::create(b, args.workspace,
                                                          ValueRange{offset})));
    }
    memref::StoreOp::create(
        b, loop.getResult(0), args.workspace,
        ValueRange{add(space.sums(kernel, batch, head), slot)});
    b.setInsertionPointAfter(inRange);
    gpu::ReturnOp::create(b);
    return success();
  }

  /// The gradient elements, one per thread: the f32 parameters in order,
  /// then the elements of every capture with a GPU gradient, row-major.
  LogicalResult buildReduce(gpu::GPUModuleOp module, StringRef name) {
    OpBuilder::InsertionGuard guard(b);
    declare(module, name, kSmallKernelThreads / kThreadsPerWarp);
    BackwardWorkspace space = workspace();
    RegionApplication regions(b, op, args.sizes, args.params, args.captures,
                              batchIdx, index(0), lane, config.headDim);
    Value item = add(
        mul(gpu::BlockIdOp::create(b, gpu::Dimension::x), kSmallKernelThreads),
        threadId);
    int64_t numParams = op.getParams().size();
    int64_t next = 0;
    for (auto [position, param] : llvm::enumerate(op.getParams())) {
      if (!param.getType().isF32())
        continue;
      int64_t p = position;
      Value given = cmp(
          arith::CmpIPredicate::ne,
          memref::ExtractAlignedPointerAsIndexOp::create(b, args.paramGrads[p]),
          index(0));
      Value mine = arith::AndIOp::create(
          b, cmp(arith::CmpIPredicate::eq, item, index(next++)),
          arith::AndIOp::create(b, given, wants(p)));
      auto branch = scf::IfOp::create(b, TypeRange{}, mine, false);
      OpBuilder::InsertionGuard inner(b);
      b.setInsertionPointToStart(branch.thenBlock());
      Value sum = sumOverHeads(space, [&](Value, Value, Value sums) {
        return memref::LoadOp::create(
            b, args.workspace, ValueRange{add(sums, slots.paramSlot(p))});
      });
      memref::StoreOp::create(b, sum, args.paramGrads[p], ValueRange{index(0)});
    }
    Value first = index(next);
    for (auto [c, capture] : llvm::enumerate(op.getCaptures())) {
      if (!slots.hasGradient(c))
        continue;
      const CaptureArgs &data = args.captures[c];
      Value count = index(1);
      for (Value size : data.sizes)
        count = mul(count, size);
      Value element = sub(item, first);
      Value given = cmp(arith::CmpIPredicate::ne,
                        memref::ExtractAlignedPointerAsIndexOp::create(
                            b, args.captureGrads[c].data),
                        index(0));
      Value mine = arith::AndIOp::create(
          b,
          arith::AndIOp::create(b, cmp(arith::CmpIPredicate::uge, item, first),
                                cmp(arith::CmpIPredicate::ult, element, count)),
          arith::AndIOp::create(b, given, wants(numParams + c)));
      auto branch = scf::IfOp::create(b, TypeRange{}, mine, false);
      {
        OpBuilder::InsertionGuard inner(b);
        b.setInsertionPointToStart(branch.thenBlock());
        FailureOr<Value> sum = captureElementSum(regions, space, c, element);
        if (failed(sum))
          return failure();
        // The element's row-major index to the gradient's strides.
        Value rest = element, offset = index(0);
        for (int64_t d = data.sizes.size() - 1; d >= 0; --d) {
          offset =
              add(offset, mul(arith::RemUIOp::create(b, rest, data.sizes[d]),
                              args.captureGrads[c].strides[d]));
          rest = arith::DivUIOp::create(b, rest, data.sizes[d]);
        }
        memref::StoreOp::create(b, *sum, args.captureGrads[c].data,
                                ValueRange{offset});
      }
      first = add(first, count);
    }
    gpu::ReturnOp::create(b);
    return success();
  }

private:
  /// total + the sum over batch and head, in that order, of
  /// `term(batch, head)`.
  Value sumOverBatchAndHeads(Value total,
                             function_ref<Value(Value, Value)> term) {
    auto batches = scf::ForOp::create(b, index(0), args.sizes.batch, index(1),
                                      ValueRange{total});
    OpBuilder::InsertionGuard outer(b);
    b.setInsertionPointToStart(batches.getBody());
    auto heads = scf::ForOp::create(b, index(0), args.sizes.heads, index(1),
                                    ValueRange{batches.getRegionIterArg(0)});
    {
      OpBuilder::InsertionGuard inner(b);
      b.setInsertionPointToStart(heads.getBody());
      scf::YieldOp::create(
          b, fadd(heads.getRegionIterArg(0),
                  term(batches.getInductionVar(), heads.getInductionVar())));
    }
    scf::YieldOp::create(b, heads.getResult(0));
    b.setInsertionPointAfter(batches);
    return batches.getResult(0);
  }

  /// sum over kernel, batch and head of `term(batch, head, sums)`, `sums`
  /// being the offset of that (kernel, batch, head)'s slot sums.
  Value sumOverHeads(BackwardWorkspace &space,
                     function_ref<Value(Value, Value, Value)> term) {
    Value total = f32(0.0);
    for (int64_t kernel = 0; kernel < 2; ++kernel)
      total = sumOverBatchAndHeads(total, [&](Value batch, Value head) {
        return term(batch, head, space.sums(index(kernel), batch, head));
      });
    return total;
  }

  /// The gradient of element `element` (row-major) of capture `capture`:
  /// every uniform grad_capture op on it, at every (batch, head) whose
  /// indices it targets.
  FailureOr<Value> captureElementSum(RegionApplication &regions,
                                     BackwardWorkspace &space, unsigned capture,
                                     Value element) {
    SmallVector<attn::GradCaptureOp> sinks;
    for (attn::GradCaptureOp sink : slots.getUniformSinks()) {
      if (captureIndex(op, sink.getCapture()) == capture)
        sinks.push_back(sink);
    }
    LogicalResult status = success();
    Value sum = sumOverHeads(space, [&](Value batch, Value head, Value sums) {
      Value total = f32(0.0);
      for (attn::GradCaptureOp sink : sinks) {
        FailureOr<Value> target = targetOf(regions, sink, batch, head);
        if (failed(target)) {
          status = failure();
          continue;
        }
        Value hit = cmp(arith::CmpIPredicate::eq, *target, element);
        Value value = memref::LoadOp::create(
            b, args.workspace, ValueRange{add(sums, *slots.captureSlot(sink))});
        total = fadd(total, select(hit, value, f32(0.0)));
      }
      return total;
    });
    if (failed(status))
      return failure();
    std::optional<attn::GradCaptureOp> diagonal = slots.getDiagonalSink();
    if (diagonal && captureIndex(op, diagonal->getCapture()) == capture) {
      FailureOr<Value> diagonalSum =
          diagonalElementSum(regions, space, *diagonal, element);
      if (failed(diagonalSum))
        return failure();
      sum = fadd(sum, *diagonalSum);
    }
    return sum;
  }

  /// What the dK/dV kernel's diagonal sums add to element `element` of the
  /// relative-position table: per (batch, head), the diagonals whose
  /// index selects it -- an interval, found by binary search, as the
  /// element moves monotonically with the diagonal -- and per diagonal
  /// the key tiles' rows, in that order.
  FailureOr<Value> diagonalElementSum(RegionApplication &regions,
                                      BackwardWorkspace &space,
                                      attn::GradCaptureOp sink, Value element) {
    DiagonalSums diagonals(b, config.keyTile(), config.keyValueQueryTile);
    // The element as the direction orders it: a non-decreasing key.
    int64_t direction = slots.getDiagonalDirection();
    Value key = mul(element, direction);
    LogicalResult status = success();
    Value sum = sumOverBatchAndHeads(f32(0.0), [&](Value batch, Value head) {
      // Diagonals q_idx - kv_idx of the problem (local indices; the
      // regions see them shifted by the sequence block's offsets).
      Value low = sub(index(1), args.sizes.kvLen);
      Value high = args.sizes.qLen;
      auto keyAt = [&](Value diagonal) -> Value {
        FailureOr<Value> target =
            targetOf(regions, sink, batch, head,
                     add(diagonal, args.sizes.qOffset), args.sizes.kvOffset);
        if (failed(target)) {
          status = failure();
          return index(0);
        }
        return mul(*target, direction);
      };
      // The element moves monotonically from the first diagonal to the
      // last: a (batch, head) whose range misses it (another head's row of
      // the table) takes two evaluations, not a search.
      Value reaches = arith::AndIOp::create(
          b, cmp(arith::CmpIPredicate::sle, keyAt(low), key),
          cmp(arith::CmpIPredicate::sge, keyAt(sub(high, index(1))), key));
      auto sumIfReached =
          scf::IfOp::create(b, TypeRange{b.getF32Type()}, reaches, true);
      OpBuilder::InsertionGuard reached(b);
      b.setInsertionPointToStart(sumIfReached.elseBlock());
      scf::YieldOp::create(b, f32(0.0));
      b.setInsertionPointToStart(sumIfReached.thenBlock());
      Value first = diagonals.firstWhere(low, high, [&](Value diagonal) {
        return cmp(arith::CmpIPredicate::sge, keyAt(diagonal), key);
      });
      Value end = diagonals.firstWhere(first, high, [&](Value diagonal) {
        return cmp(arith::CmpIPredicate::sgt, keyAt(diagonal), key);
      });
      Value rows = space.diagonals(batch, head);
      auto perDiagonal =
          scf::ForOp::create(b, first, end, index(1), ValueRange{f32(0.0)});
      {
        OpBuilder::InsertionGuard body(b);
        b.setInsertionPointToStart(perDiagonal.getBody());
        auto tiles =
            scf::ForOp::create(b, index(0), space.keyTiles, index(1),
                               ValueRange{perDiagonal.getRegionIterArg(0)});
        {
          OpBuilder::InsertionGuard tileBody(b);
          b.setInsertionPointToStart(tiles.getBody());
          auto [offset, inside] = diagonals.entry(
              rows, space.diagonalLength, tiles.getInductionVar(),
              perDiagonal.getInductionVar());
          Value value =
              memref::LoadOp::create(b, args.workspace, ValueRange{offset});
          scf::YieldOp::create(b, fadd(tiles.getRegionIterArg(0),
                                       select(inside, value, f32(0.0))));
        }
        scf::YieldOp::create(b, tiles.getResult(0));
      }
      scf::YieldOp::create(b, perDiagonal.getResult(0));
      return sumIfReached.getResult(0);
    });
    if (failed(status))
      return failure();
    return sum;
  }

  /// The row-major element a grad_capture op adds to at (batch, head) and
  /// (q_idx, kv_idx) (0 for a uniform op): its indices recomputed here
  /// (they read b, h, q_idx, kv_idx, parameters, sizes and captures only),
  /// clamped as the load clamps them.
  FailureOr<Value> targetOf(RegionApplication &regions,
                            attn::GradCaptureOp sink, Value batch, Value head,
                            Value qIdx = Value(), Value kvIdx = Value()) {
    Block &block = *sink->getBlock();
    SetVector<Operation *> slice;
    for (Value idx : sink.getIndices())
      if (Operation *def = idx.getDefiningOp()) {
        (void)getBackwardSlice(def, &slice);
        slice.insert(def);
      }
    IRMapping mapping;
    mapping.map(block.getArgument(0), batch);
    mapping.map(block.getArgument(1), head);
    mapping.map(block.getArgument(2), qIdx ? qIdx : index(0));
    mapping.map(block.getArgument(3), kvIdx ? kvIdx : index(0));
    for (auto [i, param] : llvm::enumerate(args.params))
      mapping.map(block.getArgument(attn::AttentionOp::kNumGradArgs + i),
                  param);
    for (Operation &inner : block) {
      if (!slice.contains(&inner))
        continue;
      if (isa<attn::AttnDialect>(inner.getDialect())) {
        FailureOr<Value> value =
            regions.materialize(&inner, mapping, ElementValues{});
        if (failed(value))
          return failure();
        mapping.map(inner.getResult(0), *value);
        continue;
      }
      b.clone(inner, mapping);
    }
    const CaptureArgs &data =
        args.captures[captureIndex(op, sink.getCapture())];
    Value flat = index(0);
    for (auto [d, idx] : llvm::enumerate(sink.getIndices()))
      flat = add(
          mul(flat, data.sizes[d]),
          clampToDimension(b, b.getLoc(), mapping.lookup(idx), data.sizes[d]));
    return flat;
  }
};

} // namespace

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

LogicalResult rbfc::verifyBackwardKernels(attn::AttentionOp op) {
  auto fail = [&](const Twine &why) {
    return op.emitOpError() << "has no GPU backward: " << why;
  };
  if (!op.hasBackward())
    return fail("its gradient regions are not derived (attn-derive-backward)");
  if (!op.getLse())
    return fail("the backward reads the forward's lse, which the op does not "
                "return");
  auto queryType = cast<RankedTensorType>(op.getQuery().getType());
  int64_t headDim = queryType.getDimSize(3);
  // A warp's dK and dV accumulators hold 16 keys x head_dim each: past
  // 128 they alone would take 2 x 128 of its 255 registers.
  if (headDim % 16 != 0 || headDim < 32 || headDim > 128)
    return fail("the mma.sync backward kernels take head_dim a multiple of 16 "
                "from 32 to 128, not " +
                Twine(headDim));
  Type element = queryType.getElementType();
  if (!element.isBF16() && !element.isF16())
    return fail("the mma.sync backward kernels take bf16 or f16 inputs");
  if (op.getParams().size() + op.getCaptures().size() > 64)
    return fail("the gradient mask holds 64 parameters and captures");
  return success();
}

FailureOr<DictionaryAttr> rbfc::buildBackwardKernels(attn::AttentionOp op,
                                                     gpu::GPUModuleOp module,
                                                     StringRef forwardName) {
  if (failed(verifyBackwardKernels(op)))
    return failure();
  auto queryType = cast<RankedTensorType>(op.getQuery().getType());
  BackwardConfig config{queryType.getDimSize(3), queryType.getElementType(),
                        op.isSoftmax(), op.getLog2Domain()};
  // wgmma takes head dims in whole 64-element column blocks (128-byte
  // swizzle); the others, and every target before sm_90a, take mma.sync.
  attn::PlanAttr plan = op.getPlanAttr();
  config.wgmma = plan && plan.getArch() == "sm_90a" && config.headDim % 64 == 0;
  GradientSlots slots(op);
  ImplicitLocOpBuilder b(op.getLoc(), op.getContext());
  std::string prefix = forwardName.str();
  auto entry = [&](StringRef suffix) {
    return prefix + "_bwd_" + suffix.str();
  };
  RowsKernel rows(op, config, slots, b);
  if (failed(rows.build(module, entry("rows"))))
    return failure();
  // The dK/dV kernel's key tile sizes the workspace of the kernels built
  // after it (the row pre-pass touches no tile's sums): 128 keys, or with
  // mma.sync 64 where a block of the target cannot hold those (sm_86 and
  // sm_89 from head_dim 112, a relative-position table's diagonal sums from
  // 64 there and at 128 on sm_80).
  FailureOr<int64_t> keyValueShared =
      buildKeyValueGradKernel(op, config, slots, module, entry("dkdv"));
  if (succeeded(keyValueShared) && plan && !config.wgmma &&
      *keyValueShared > sharedMemoryLimit(plan.getArch()) &&
      config.keyValueWarps > kNarrowKeyValueWarps) {
    LLVM_DEBUG(llvm::dbgs() << "dK/dV: " << *keyValueShared
                            << " bytes on 128-key tiles; 64-key tiles\n");
    module.lookupSymbol(entry("dkdv"))->erase();
    config.keyValueWarps = kNarrowKeyValueWarps;
    keyValueShared =
        buildKeyValueGradKernel(op, config, slots, module, entry("dkdv"));
  }
  // Past what its target's blocks hold, the forward alone can run there.
  auto fits = [&](StringRef suffix, int64_t bytes) {
    return !plan || succeeded(checkSharedMemory(
                        op, plan.getArch(), entry(suffix), bytes,
                        "its tiles are at their smallest, and a smaller "
                        "head_dim fits"));
  };
  if (failed(keyValueShared) || !fits("dkdv", *keyValueShared))
    return failure();
  FailureOr<int64_t> queryShared =
      buildQueryGradKernel(op, config, slots, module, entry("dq"));
  if (failed(queryShared) || !fits("dq", *queryShared))
    return failure();
  // The gradient kernels difference the score's functions (a param's
  // gradient): full precision there.
  for (StringRef suffix : {"dkdv", "dq"})
    module.lookupSymbol(entry(suffix))
        ->setAttr(kExactFunctionsAttrName, b.getUnitAttr());
  ReductionKernels reductions(op, config, slots, b);
  if (failed(reductions.buildTileSums(module, entry("tile_sums"))) ||
      failed(reductions.buildReduce(module, entry("reduce"))))
    return failure();

  // What the runtime needs to size the workspace and launch (docs/abi.md).
  auto integer = [&](int64_t value) { return b.getI64IntegerAttr(value); };
  SmallVector<Attribute> paramGrads, captureGrads;
  for (Value param : op.getParams())
    paramGrads.push_back(b.getBoolAttr(param.getType().isF32()));
  for (size_t c = 0; c < op.getCaptures().size(); ++c)
    captureGrads.push_back(b.getBoolAttr(slots.hasGradient(c)));
  int64_t keyTermPlanes =
      (op.getKeyBias().empty() ? 0 : 1) +
      RegionApplication::usesNorm(op.getScore(), attn::Vector::k);
  attn::ScoreDependence dependence;
  bool perKvHead =
      op.getKeyBias().empty() ||
      !(dependence.get(attn::AttentionOp::getYielded(op.getKeyBias())[0]) &
        attn::kDependsOnHead);
  auto kernel = [&](StringRef suffix, int64_t threads, int64_t rowsPerBlock,
                    int64_t shared) {
    return b.getDictionaryAttr(
        {b.getNamedAttr("entry", b.getStringAttr(entry(suffix))),
         b.getNamedAttr("block", integer(threads)),
         b.getNamedAttr("rows_per_block", integer(rowsPerBlock)),
         b.getNamedAttr("shared_memory_bytes", integer(shared))});
  };
  DictionaryAttr backward = b.getDictionaryAttr({
      b.getNamedAttr(
          "rows", kernel("rows", kSmallKernelThreads, rows.rowsPerBlock(), 0)),
      b.getNamedAttr("dkdv", kernel("dkdv", config.keyValueWarps * 32,
                                    config.keyTile(), *keyValueShared)),
      b.getNamedAttr("dq", kernel("dq", config.queryWarps * 32,
                                  config.queryTile(), *queryShared)),
      b.getNamedAttr("tile_sums", kernel("tile_sums", kSmallKernelThreads,
                                         kSmallKernelThreads, 0)),
      b.getNamedAttr("reduce", kernel("reduce", kSmallKernelThreads,
                                      kSmallKernelThreads, 0)),
      b.getNamedAttr("row_multiple", integer(BackwardConfig::kRowMultiple)),
      b.getNamedAttr("key_terms", integer(keyTermPlanes)),
      b.getNamedAttr("key_terms_heads",
                     b.getStringAttr(perKvHead ? "kv" : "q")),
      b.getNamedAttr("slots", integer(slots.size())),
      b.getNamedAttr(
          "diagonal_query_tile",
          integer(slots.getDiagonalSink() ? config.keyValueQueryTile : 0)),
      b.getNamedAttr("param_grads", b.getArrayAttr(paramGrads)),
      b.getNamedAttr("capture_grads", b.getArrayAttr(captureGrads)),
  });
  LLVM_DEBUG(llvm::dbgs() << "built the backward kernels of " << forwardName
                          << ": " << backward << "\n");
  return backward;
}
