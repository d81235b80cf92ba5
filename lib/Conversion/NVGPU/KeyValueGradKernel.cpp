//===- KeyValueGradKernel.cpp - the backward's dK/dV kernel ---------------===//
//
// One block owns a tile of 128 keys of one (batch, kv head); each of its 8
// warps owns 16 of the keys. K and V stay in shared memory; for every query
// head of the group and every query tile the mask keeps, Q, dO and the
// rows' delta and lse2 stream through a ring (cp.async), and per tile:
//
//   S^T = K Q^T, dP^T = V dO^T                  (mma.sync; keys are rows)
//   per element: the score, P = 2^(s - lse2), dS = ln2 P (dP - delta), and
//                score_grad with adjoint dS: its scaled-dot gradient is
//                the dS that dK takes, its key-bias and ||k||^2 gradients
//                add up per key, its parameters' and captures' per lane
//   dV += P^T dO, dK += (q_scale dS)^T Q        (P and dS from registers)
//
// The forward's S = Q K^T schedule with the roles of queries and keys
// swapped: the same fragment layout, matrix atoms, copy engine and region
// application, with rows bound to kv_idx and columns to q_idx. After a
// head's tiles the key bias's gradient (key_bias_grad) runs once per key,
// and the block's partial sums go to the workspace; at the end dK gets
// 2 (dL/d||k||^2) k and both gradients are stored. The block also writes
// its keys' terms (key bias, ||k||^2) to the workspace for the dQ kernel.
// A relative-position table's gradient goes through a shared tile to the
// block's diagonal sums (DiagonalSums.h) after each tile.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/BackwardKernel.h"

#include "rbfc/Conversion/NVGPU/DiagonalSums.h"
#include "rbfc/Conversion/NVGPU/Epilogue.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-backward-kernels"

using namespace mlir;
using namespace rbfc;

namespace {

class KeyValueGradKernel : BackwardKernelBuilder {
public:
  KeyValueGradKernel(attn::AttentionOp op, const BackwardConfig &config,
                     const GradientSlots &slots, ImplicitLocOpBuilder &b)
      : BackwardKernelBuilder(op, config, slots, b, config.keyTile(),
                              config.keyValueQueryTile),
        scoreLayout(1, config.keyValueQueryTile / 8),
        gradLayout(1, config.headDim / 8) {}

  FailureOr<int64_t> build(gpu::GPUModuleOp module, StringRef name);

private:
  int64_t queryTile() const { return config.keyValueQueryTile; }
  /// One head of the group: its query tiles, then key_bias_grad and the
  /// block's partial sums. Returns the carried state after the head.
  FailureOr<SmallVector<Value>> emitHead(Value head, Value isFirstHead,
                                         ValueRange state);
  /// One query tile against the block's keys.
  FailureOr<SmallVector<Value>> emitTile(RegionApplication &regions,
                                         TileRing &ring, Value tileIndex,
                                         Value qScale, ValueRange state);
  /// The elementwise step over S^T for one tile; `masked` evaluates the
  /// mask (and the bounds) per element.
  LogicalResult applyElements(RegionApplication &regions, Value qLo,
                              Value termBase, Value qScale, bool masked,
                              ArrayRef<Accumulator> scores,
                              ArrayRef<Accumulator> valueDots,
                              SmallVectorImpl<Accumulator> &weights,
                              SmallVectorImpl<Accumulator> &scoreGrads,
                              MutableArrayRef<Value> keyBiasGrad,
                              MutableArrayRef<Value> keyNormGrad,
                              MutableArrayRef<Value> partials);
  /// Puts the tile's values of the relative-position table's gradient
  /// into the shared tile, when that gradient is asked for: each group of
  /// `values` (the lane's elements on one diagonal) added, at the lane's
  /// (key, query) of its first element in `positions`.
  void storeDiagonalValues(ArrayRef<std::pair<Value, Value>> positions,
                           ArrayRef<SmallVector<Value>> values);
  /// Writes the keys' terms for the dQ kernel (padding keys get 0).
  void storeKeyTerms(BackwardWorkspace &space, Value head);

  /// S^T and dP^T: key rows, query columns; dK and dV: key rows, head_dim.
  FragmentLayout scoreLayout, gradLayout;
  Value kvHead, kvLo, group;
  Value sharedKey, sharedValue, sharedQuery, sharedGrad, deltaRing, lse2Ring,
      queryNormRing, scratch;
  /// The relative-position table's gradient: the shared tile of one tile
  /// pair's values and, per head, the first float of the block's row.
  std::optional<DiagonalSums> diagonalSums;
  Value diagonalTile, diagonalRow;
  /// Per lane row: kv_idx, ||k||^2 (when a region reads it), key bias.
  SmallVector<Value> kvIdx, keyNorm, keyBias;
  std::optional<BackwardWorkspace> space;
};

void KeyValueGradKernel::storeKeyTerms(BackwardWorkspace &space, Value head) {
  int64_t biasPlane = keyBiasPlane(), normPlane = keyNormPlane();
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r) {
    Value writer = arith::AndIOp::create(
        b, cmp(arith::CmpIPredicate::eq, fragment->getInGroup(), index(0)),
        cmp(arith::CmpIPredicate::ult, kvIdx[r], space.keyLength));
    auto write = scf::IfOp::create(b, TypeRange{}, writer, false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(write.thenBlock());
    // Padding keys get 0: a key_bias region may read captures at kv_idx.
    Value inside = cmp(arith::CmpIPredicate::ult, kvIdx[r], args.sizes.kvLen);
    auto store = [&](int64_t plane, Value value) {
      memref::StoreOp::create(
          b, select(inside, value, f32(0.0)), args.workspace,
          ValueRange{add(space.keyTerms(plane, batchIdx, head), kvIdx[r])});
    };
    if (biasPlane >= 0)
      store(biasPlane, keyBias[r]);
    if (normPlane >= 0)
      store(normPlane, keyNorm[r]);
  }
}

LogicalResult KeyValueGradKernel::applyElements(
    RegionApplication &regions, Value qLo, Value termBase, Value qScale,
    bool masked, ArrayRef<Accumulator> scores, ArrayRef<Accumulator> valueDots,
    SmallVectorImpl<Accumulator> &weights,
    SmallVectorImpl<Accumulator> &scoreGrads,
    MutableArrayRef<Value> keyBiasGrad, MutableArrayRef<Value> keyNormGrad,
    MutableArrayRef<Value> partials) {
  int64_t slices = scoreLayout.getColumnSlices();
  SmallVector<ColumnTermPair> delta =
      streamCopies->loadColumnTerms(*fragment, slices, deltaRing, termBase);
  SmallVector<ColumnTermPair> lse2 =
      streamCopies->loadColumnTerms(*fragment, slices, lse2Ring, termBase);
  SmallVector<ColumnTermPair> queryNorms;
  if (queryNormRing)
    queryNorms = streamCopies->loadColumnTerms(*fragment, slices, queryNormRing,
                                               termBase);
  weights.assign(scores.size(), {});
  scoreGrads.assign(scores.size(), {f32(0.0), f32(0.0), f32(0.0), f32(0.0)});
  ElementValues element;
  element.qScale = qScale;
  Value columnDelta, columnLse2;
  // The table's values by the diagonal they lie on within the lane's
  // elements: the lane adds each diagonal's values before they go to
  // shared memory.
  int64_t columnOffset = 0;
  llvm::SmallDenseMap<int64_t, int64_t> diagonalGroupOf;
  SmallVector<std::pair<Value, Value>> diagonalPositions;
  SmallVector<SmallVector<Value>> diagonalValues;
  LogicalResult status = fragment->forEachElementByColumn(
      scoreLayout,
      [&](int64_t slice, int64_t column, Value index) {
        columnOffset = FragmentLayout::laneColumnOffset(slice, column);
        element.qIdx = add(qLo, index);
        columnDelta = delta[slice][column];
        columnLse2 = lse2[slice][column];
        if (!queryNorms.empty())
          element.queryNorm = queryNorms[slice][column];
      },
      [&](int64_t accumulator, int64_t e, int64_t r) -> LogicalResult {
        element.kvIdx = kvIdx[r];
        element.keyNorm = keyNorm.empty() ? Value() : keyNorm[r];
        element.keyBias = keyBias.empty() ? Value() : keyBias[r];
        element.dot = scores[accumulator][e];
        if (diagonals)
          element.diagonalSlot = diagonals->slot(r, columnOffset);
        auto scored = scoreAndKept(regions, element, masked);
        if (failed(scored))
          return failure();
        ElementGradient grad =
            elementGradient(scored->first, scored->second,
                            valueDots[accumulator][e], columnDelta, columnLse2);
        weights[accumulator][e] = grad.weight;
        element.adjoint = grad.adjoint;
        return evaluateGradients(
            regions, op.getScoreGrad(), element, partials, Value(),
            [&](Operation *gradOp, Value x) {
              return TypeSwitch<Operation *, LogicalResult>(gradOp)
                  .Case([&](attn::GradScaledDotOp) {
                    scoreGrads[accumulator][e] = fmul(x, qScale);
                    return success();
                  })
                  .Case([&](attn::GradKeyBiasOp) {
                    keyBiasGrad[r] = fadd(keyBiasGrad[r], x);
                    return success();
                  })
                  .Case([&](attn::GradNorm2Op norm) {
                    // ||q||^2's is the dQ kernel's.
                    if (norm.getVector() == attn::Vector::k)
                      keyNormGrad[r] = fadd(keyNormGrad[r], x);
                    return success();
                  })
                  .Case([&](attn::GradCaptureOp) {
                    int64_t diagonal =
                        columnOffset - FragmentLayout::laneRowOffset(r);
                    auto [group, added] = diagonalGroupOf.try_emplace(
                        diagonal, diagonalValues.size());
                    if (added) {
                      diagonalPositions.push_back(
                          {sub(element.kvIdx, kvLo), sub(element.qIdx, qLo)});
                      diagonalValues.emplace_back();
                    }
                    diagonalValues[group->second].push_back(x);
                    return success();
                  })
                  .Default([](Operation *other) {
                    return unownedGradient(other, "the dK/dV kernel's score");
                  });
            });
      });
  if (failed(status))
    return failure();
  storeDiagonalValues(diagonalPositions, diagonalValues);
  return success();
}

void KeyValueGradKernel::storeDiagonalValues(
    ArrayRef<std::pair<Value, Value>> positions,
    ArrayRef<SmallVector<Value>> values) {
  if (values.empty())
    return;
  auto asked = scf::IfOp::create(b, TypeRange{}, wantsDiagonalSums(), false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(asked.thenBlock());
  // The other elements' places are never written: they stay zero.
  for (auto [position, group] : llvm::zip(positions, values)) {
    Value sum = group.front();
    for (Value value : llvm::drop_begin(group))
      sum = fadd(sum, value);
    diagonalSums->store(diagonalTile, position.first, position.second, sum);
  }
}

FailureOr<SmallVector<Value>>
KeyValueGradKernel::emitTile(RegionApplication &regions, TileRing &ring,
                             Value tileIndex, Value qScale, ValueRange state) {
  int64_t gradValues = 4 * gradLayout.size();
  int64_t rows = scoreLayout.laneRows();
  FailureOr<StreamStep> step =
      enterStreamTile(regions, ring, tileIndex, kvLo, /*streamIsQueries=*/true);
  if (failed(step))
    return failure();
  Value tileBase = step->tileBase, termBase = step->termBase, qLo = step->lo;

  OpBuilder::InsertionGuard guard(b);
  scf::IfOp compute = updateIf(step->live, state);
  // The windows' loads run under the products.
  if (diagonals && failed(diagonals->stage(kvLo, qLo)))
    return failure();
  if (queryNormRing) {
    // ||q||^2 of the tile's queries, four threads a row, into the ring's
    // plane beside the tile: the lanes read their columns' from there.
    int64_t threadsPerRow =
        config.keyValueWarps * kThreadsPerWarp / queryTile();
    Value row = div(threadId, threadsPerRow);
    Value norm =
        streamCopies->rowSquareSum(sharedQuery, tileBase, row,
                                   rem(threadId, threadsPerRow), threadsPerRow);
    auto writer = scf::IfOp::create(
        b, TypeRange{},
        cmp(arith::CmpIPredicate::eq, rem(threadId, threadsPerRow), index(0)),
        false);
    {
      OpBuilder::InsertionGuard inner(b);
      b.setInsertionPointToStart(writer.thenBlock());
      memref::StoreOp::create(b, norm, queryNormRing,
                              ValueRange{add(termBase, row)});
    }
    gpu::BarrierOp::create(b);
  }
  SmallVector<Accumulator> scores, valueDots;
  if (config.wgmma) {
    // S^T = K Q^T and dP^T = V dO^T, both issued before either is waited
    // for.
    auto products = multiplyByWgmma(
        {{blockDescriptors[0],
          warpgroupAtoms.kMajorDescriptor(sharedQuery, tileBase, streamTile)},
         {blockDescriptors[1],
          warpgroupAtoms.kMajorDescriptor(sharedGrad, tileBase, streamTile)}},
        blockTile, streamTile, scoreLayout.size());
    scores = products[0];
    valueDots = products[1];
  } else {
    scores =
        multiplyByStream(scoreLayout, {}, sharedKey, sharedQuery, tileBase);
    valueDots =
        multiplyByStream(scoreLayout, {}, sharedValue, sharedGrad, tileBase);
  }

  // Partial tiles test the mask and the bounds per element; the others do
  // not. Both branches yield P^T, dS^T, the key-side gradients and the
  // partial sums.
  SmallVector<Value> keyBiasGrad(state.slice(2 * gradValues, rows));
  SmallVector<Value> keyNormGrad(state.slice(2 * gradValues + rows, rows));
  SmallVector<Value> partials(state.drop_front(2 * gradValues + 2 * rows));
  int64_t scoreValues = 4 * scoreLayout.size();
  auto branches = branchOnPartialTile(
      step->partial, 2 * scoreValues + 2 * rows + partials.size(),
      [&](bool masked) -> FailureOr<SmallVector<Value>> {
        SmallVector<Accumulator> weights, scoreGrads;
        SmallVector<Value> biasGrad = keyBiasGrad, normGrad = keyNormGrad,
                           sums = partials;
        if (failed(applyElements(regions, qLo, termBase, qScale, masked, scores,
                                 valueDots, weights, scoreGrads, biasGrad,
                                 normGrad, sums)))
          return failure();
        SmallVector<Value> yielded = FragmentLayout::flatten(weights);
        llvm::append_range(yielded, FragmentLayout::flatten(scoreGrads));
        llvm::append_range(yielded, biasGrad);
        llvm::append_range(yielded, normGrad);
        llvm::append_range(yielded, sums);
        return yielded;
      });
  if (failed(branches))
    return failure();
  ValueRange results = *branches;
  SmallVector<Accumulator> weights =
      FragmentLayout::unflatten(results.take_front(scoreValues));
  SmallVector<Accumulator> scoreGrads =
      FragmentLayout::unflatten(results.slice(scoreValues, scoreValues));
  SmallVector<Accumulator> keyGrad =
      FragmentLayout::unflatten(state.take_front(gradValues));
  SmallVector<Accumulator> valueGrad =
      FragmentLayout::unflatten(state.slice(gradValues, gradValues));
  SmallVector<Value> next;
  if (config.wgmma) {
    // dV += P^T dO and dK += dS^T Q, issued together; dO and Q are the B
    // operands transposed (MN-major).
    SmallVector<Accumulator> grads(keyGrad);
    llvm::append_range(grads, valueGrad);
    accumulateByWgmma(
        {operandsFromAccumulators(scoreGrads, scoreLayout),
         operandsFromAccumulators(weights, scoreLayout)},
        {warpgroupAtoms.mnMajorDescriptor(sharedQuery, tileBase, streamTile),
         warpgroupAtoms.mnMajorDescriptor(sharedGrad, tileBase, streamTile)},
        streamTile, grads);
    next = FragmentLayout::flatten(grads);
  } else {
    accumulateStream(weights, scoreLayout, sharedGrad, tileBase, gradLayout,
                     valueGrad);
    accumulateStream(scoreGrads, scoreLayout, sharedQuery, tileBase, gradLayout,
                     keyGrad);
    next = FragmentLayout::flatten(keyGrad);
    llvm::append_range(next, FragmentLayout::flatten(valueGrad));
  }
  llvm::append_range(next, results.drop_front(2 * scoreValues));
  if (diagonalSums) {
    auto asked = scf::IfOp::create(b, TypeRange{}, wantsDiagonalSums(), false);
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(asked.thenBlock());
    // The next tile's first barrier keeps its stores after these reads.
    diagonalSums->addTile(diagonalTile, args.workspace, diagonalRow, qLo,
                          threadId, lane, warp);
  }
  scf::YieldOp::create(b, next);
  return SmallVector<Value>(compute.getResults());
}

FailureOr<SmallVector<Value>>
KeyValueGradKernel::emitHead(Value head, Value isFirstHead, ValueRange state) {
  int64_t gradValues = 4 * gradLayout.size();
  int64_t rows = scoreLayout.laneRows();
  RegionApplication regions(b, op, args.sizes, args.params, args.captures,
                            batchIdx, head, lane, config.headDim);
  stageDiagonalsWith(regions, DiagonalStaging::Rows::Keys, queryTile());
  FailureOr<Value> qScale = regions.queryScale();
  if (failed(qScale))
    return failure();
  keyBias.clear();
  if (!op.getKeyBias().empty()) {
    for (int64_t r = 0; r < rows; ++r) {
      ElementValues element;
      element.qIdx = index(0);
      element.kvIdx = kvIdx[r];
      element.keyNorm = keyNorm.empty() ? Value() : keyNorm[r];
      FailureOr<Value> bias =
          regions.evaluateElementRegion(op.getKeyBias(), element);
      if (failed(bias))
        return failure();
      keyBias.push_back(*bias);
    }
  }
  if (keyTermPlanes()) {
    // Terms that do not read h are the same for every head of the group:
    // the first head writes them to the kv head's row.
    if (keyTermsPerKvHead()) {
      auto first = scf::IfOp::create(b, TypeRange{}, isFirstHead, false);
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(first.thenBlock());
      storeKeyTerms(*space, kvHead);
    } else {
      storeKeyTerms(*space, head);
    }
  }

  // The query tiles that may hold a kept element for these keys.
  Value queryTiles =
      arith::CeilDivUIOp::create(b, args.sizes.qLen, index(queryTile()));
  auto classify = [&](Value t) {
    return regions.classifyTile(mul(t, queryTile()), queryTile(), kvLo,
                                config.keyTile());
  };
  if (failed(regions.fixBounds(RegionApplication::FixedAxis::Keys, kvLo,
                               config.keyTile())))
    return failure();
  auto live = regions.liveTiles(queryTiles, classify);
  if (failed(live))
    return failure();
  auto [firstTile, endTile] = *live;
  if (diagonalSums) {
    // Zeroed before the first tile's barrier, so every diagonal a masked
    // tile leaves out reads 0.
    diagonalRow = add(space->diagonals(batchIdx, head),
                      mul(gpu::BlockIdOp::create(b, gpu::Dimension::x),
                          space->diagonalLength));
    auto asked = scf::IfOp::create(b, TypeRange{}, wantsDiagonalSums(), false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(asked.thenBlock());
    diagonalSums->zeroRow(args.workspace, diagonalRow, space->diagonalLength,
                          threadId, config.keyValueWarps * kThreadsPerWarp);
  }
  TileRing ring(
      *streamCopies, config.stages, queryTile(), args.sizes.qLen, firstTile,
      endTile,
      {{sharedQuery,
        {args.q.data, headBase(args.q, batchIdx, head), args.q.strides[2]}},
       {sharedGrad,
        {args.outputGrad.data, headBase(args.outputGrad, batchIdx, head),
         args.outputGrad.strides[2]}}});
  ring.setTerms(args.workspace,
                {{deltaRing, space->rowTerms(0, batchIdx, head)},
                 {lse2Ring, space->rowTerms(1, batchIdx, head)}},
                TileRing::TermCopy::Threads, Value());
  for (int64_t stage = 0; stage + 1 < config.stages; ++stage) {
    ring.issue(add(firstTile, stage));
    NVVM::CpAsyncCommitGroupOp::create(b);
  }

  // The tiles carry dK, dV, the key bias's and ||k||^2's gradients per lane
  // row (the lane's own columns) and the partial sums.
  SmallVector<Value> init(state.take_front(2 * gradValues));
  init.append(2 * rows, f32(0.0));
  GradientPartials sums(b, slots);
  llvm::append_range(init, sums.zeros());
  auto loop = scf::ForOp::create(b, firstTile, endTile, index(1), init);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    FailureOr<SmallVector<Value>> next =
        emitTile(regions, ring, loop.getInductionVar(), *qScale,
                 loop.getRegionIterArgs());
    if (failed(next))
      return failure();
    scf::YieldOp::create(b, *next);
  }
  NVVM::CpAsyncWaitGroupOp::create(b, 0);
  // The next head of the group refills the ring from its first buffer,
  // which may be the one this head's last tile is still being read from.
  gpu::BarrierOp::create(b);
  ValueRange results = loop.getResults();
  SmallVector<Value> partials(results.drop_front(2 * gradValues + 2 * rows));
  SmallVector<Value> keyNormGrad(state.slice(2 * gradValues, rows));
  SmallVector<Value> keyNormScore(state.slice(2 * gradValues + rows, rows));

  for (int64_t r = 0; r < rows; ++r) {
    // The score's ||k||^2 gradient stays per lane until the end; the key
    // bias's is complete over the row's lanes before key_bias_grad.
    keyNormScore[r] = fadd(keyNormScore[r], results[2 * gradValues + rows + r]);
    if (op.getKeyBiasGrad().empty())
      continue;
    ElementValues element;
    element.qIdx = index(0);
    element.kvIdx = kvIdx[r];
    element.keyNorm = keyNorm.empty() ? Value() : keyNorm[r];
    element.adjoint = laneSum(results[2 * gradValues + r], 4);
    // The row's four lanes evaluate it alike; one adds to the sums.
    Value once = arith::AndIOp::create(
        b, cmp(arith::CmpIPredicate::eq, fragment->getInGroup(), index(0)),
        cmp(arith::CmpIPredicate::ult, kvIdx[r], args.sizes.kvLen));
    if (failed(
            evaluateGradients(regions, op.getKeyBiasGrad(), element, partials,
                              once, [&](Operation *gradOp, Value x) {
                                auto norm = dyn_cast<attn::GradNorm2Op>(gradOp);
                                if (!norm ||
                                    norm.getVector() != attn::Vector::k)
                                  return unownedGradient(
                                      gradOp, "the key terms' gradient");
                                keyNormGrad[r] = fadd(keyNormGrad[r], x);
                                return success();
                              })))
      return failure();
  }
  sums.storeBlockSums(
      partials, lane, warp, threadId, config.keyValueWarps, scratch,
      args.workspace,
      space->partials(0, batchIdx, head,
                      gpu::BlockIdOp::create(b, gpu::Dimension::x)));
  SmallVector<Value> next(results.take_front(2 * gradValues));
  llvm::append_range(next, keyNormGrad);
  llvm::append_range(next, keyNormScore);
  return next;
}

FailureOr<int64_t> KeyValueGradKernel::build(gpu::GPUModuleOp module,
                                             StringRef name) {
  OpBuilder::InsertionGuard guard(b);
  gpu::GPUFuncOp func = declare(module, name, config.keyValueWarps);
  LLVM_DEBUG(llvm::dbgs() << "S^T: " << scoreLayout
                          << "\ndK, dV: " << gradLayout << "\n");
  kvHead = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  kvLo = mul(gpu::BlockIdOp::create(b, gpu::Dimension::x), config.keyTile());
  group = arith::DivUIOp::create(b, args.sizes.heads, args.sizes.kvHeads);
  space.emplace(workspace());

  SharedMemoryArena shared = sharedMemory();
  sharedKey =
      shared.carve(blockTile.elements(config.keyTile()), b.getF16Type());
  sharedValue =
      shared.carve(blockTile.elements(config.keyTile()), b.getF16Type());
  sharedQuery = shared.carve(config.stages * streamTile.elements(queryTile()),
                             b.getF16Type());
  sharedGrad = shared.carve(config.stages * streamTile.elements(queryTile()),
                            b.getF16Type());
  deltaRing = shared.carve(config.stages * queryTile(), b.getF32Type());
  lse2Ring = shared.carve(config.stages * queryTile(), b.getF32Type());
  if (RegionApplication::usesNorm(op.getScore(), attn::Vector::q))
    queryNormRing = shared.carve(config.stages * queryTile(), b.getF32Type());
  if (slots.size())
    scratch = shared.carve(config.keyValueWarps * slots.size(), b.getF32Type());
  carveDiagonalWindows(shared, config.keyValueWarps, queryTile());
  if (slots.getDiagonalSink()) {
    diagonalSums.emplace(b, config.keyTile(), queryTile());
    diagonalTile = shared.carve(diagonalSums->sharedFloats(), b.getF32Type());
    // Its padding stays zero; the barrier after the K and V copies
    // publishes it.
    diagonalSums->zeroShared(diagonalTile, threadId,
                             config.keyValueWarps * kThreadsPerWarp);
  }

  // K as the A operand of S^T = K Q^T (and V of dP^T); Q and dO as the B
  // operand, rows as columns; the same tiles transposed as the B operand
  // of dV += P^T dO and dK += dS^T Q.
  addressOperands(sharedKey, sharedValue);
  copyBlockTiles(
      {{sharedKey,
        {args.k.data, headBase(args.k, batchIdx, kvHead), args.k.strides[2]}},
       {sharedValue,
        {args.v.data, headBase(args.v, batchIdx, kvHead), args.v.strides[2]}}},
      kvLo, args.sizes.kvLen);
  waitForCopies(0);

  int64_t rows = scoreLayout.laneRows();
  for (int64_t r = 0; r < rows; ++r)
    kvIdx.push_back(fragment->row(kvLo, r));
  if (RegionApplication::usesNorm(op.getKeyBias(), attn::Vector::k) ||
      RegionApplication::usesNorm(op.getScore(), attn::Vector::k))
    keyNorm = blockRowSquareSums(scoreLayout, sharedKey);

  // The heads of the group carry dK, dV and, per lane row, the key bias
  // region's ||k||^2 gradient and the score's (the lane's own columns).
  int64_t gradValues = 4 * gradLayout.size();
  SmallVector<Value> init(2 * gradValues, f32(0.0));
  init.append(2 * rows, f32(0.0));
  auto heads = scf::ForOp::create(b, index(0), group, index(1), init);
  {
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(heads.getBody());
    Value g = heads.getInductionVar();
    Value head = add(mul(kvHead, group), g);
    FailureOr<SmallVector<Value>> next =
        emitHead(head, cmp(arith::CmpIPredicate::eq, g, index(0)),
                 heads.getRegionIterArgs());
    if (failed(next))
      return failure();
    scf::YieldOp::create(b, *next);
  }
  ValueRange results = heads.getResults();
  SmallVector<Accumulator> keyGrad =
      FragmentLayout::unflatten(results.take_front(gradValues));
  SmallVector<Accumulator> valueGrad =
      FragmentLayout::unflatten(results.slice(gradValues, gradValues));
  // dK += 2 (dL/d||k||^2) k.
  for (int64_t r = 0; r < rows; ++r) {
    Value normGrad = fadd(results[2 * gradValues + r],
                          laneSum(results[2 * gradValues + rows + r], 4));
    Value twice = fmul(normGrad, f32(2.0));
    Value row = fragment->rowInTile(r);
    for (int64_t slice = 0; slice < gradLayout.getColumnSlices(); ++slice) {
      std::array<Value, 2> keyPair =
          loadTilePair(blockTile, sharedKey, index(0), row, slice);
      Accumulator &acc = keyGrad[gradLayout.accumulator(r / 2, slice)];
      for (int64_t column = 0; column < 2; ++column) {
        Value &element = acc[FragmentLayout::element(r, column)];
        element = fadd(element, fmul(twice, keyPair[column]));
      }
    }
  }
  Epilogue epilogue(b, *fragment, gradLayout, atoms);
  Value one = f32(1.0);
  for (int64_t r = 0; r < rows; ++r) {
    if (failed(epilogue.storeRow(keyGrad, r, one,
                                 {args.keyGrad.data,
                                  headBase(args.keyGrad, batchIdx, kvHead),
                                  args.keyGrad.strides[2]},
                                 kvIdx[r], args.sizes.kvLen)) ||
        failed(epilogue.storeRow(valueGrad, r, one,
                                 {args.valueGrad.data,
                                  headBase(args.valueGrad, batchIdx, kvHead),
                                  args.valueGrad.strides[2]},
                                 kvIdx[r], args.sizes.kvLen)))
      return failure();
  }
  gpu::ReturnOp::create(b);
  allowContraction(func);
  return shared.size();
}

} // namespace

FailureOr<int64_t> rbfc::buildKeyValueGradKernel(attn::AttentionOp op,
                                                 const BackwardConfig &config,
                                                 const GradientSlots &slots,
                                                 gpu::GPUModuleOp module,
                                                 StringRef name) {
  ImplicitLocOpBuilder b(op.getLoc(), op.getContext());
  return KeyValueGradKernel(op, config, slots, b).build(module, name);
}
