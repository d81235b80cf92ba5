//===- QueryGradKernel.cpp - the backward's dQ kernel ---------------------===//
//
// One block owns a tile of 64 query rows of one (batch, head), 16 per warp,
// as the forward does; Q and dO stay in registers or shared memory, and the
// K/V tiles the mask keeps stream through a ring with their keys' terms
// (which the dK/dV kernel wrote to the workspace). Per key tile:
//
//   S = Q K^T, dP = dO V^T                      (mma.sync; queries are rows)
//   per element: the score, P = 2^(s - lse2), dS = ln2 P (dP - delta), and
//                score_grad with adjoint dS, of which this kernel keeps
//                the scaled dot's gradient (dS for dQ) and ||q||^2's
//   dQ~ += dS K                                 (dS from registers)
//
// Then per row dQ = q_scale dQ~ + 2 (dL/d||q||^2) q, with the row terms'
// gradient (row_bias_grad, its adjoint the sum of the row's dS), and
// q_scale_grad with sum q . dQ~
// adds to the parameters' and captures' partial sums. dQ is written once,
// by one block: no atomics, the same bits on every run.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/BackwardKernel.h"

#include "rbfc/Conversion/NVGPU/Epilogue.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"


#define DEBUG_TYPE "attn-backward-kernels"

using namespace mlir;
using namespace rbfc;

namespace {

/// Registers a warp may spend on keeping Q's and dO's fragments resident.
constexpr int64_t kResidentFragmentRegisters = 64;

class QueryGradKernel : BackwardKernelBuilder {
public:
  QueryGradKernel(attn::AttentionOp op, const BackwardConfig &config,
                  const GradientSlots &slots, ImplicitLocOpBuilder &b)
      : BackwardKernelBuilder(op, config, slots, b, config.queryTile(),
                              config.queryKeyTile),
        scoreLayout(1, config.queryKeyTile / 8),
        gradLayout(1, config.headDim / 8) {}

  FailureOr<int64_t> build(gpu::GPUModuleOp module, StringRef name);

private:
  int64_t keyTile() const { return config.queryKeyTile; }
  /// Whether the rows carry the sum of their dS, the row terms' adjoint.
  bool sumsRowAdjoints() { return !op.getRowBiasGrad().empty(); }
  /// Per-lane-row values carried over the key tiles after dQ~: dL/d||q||^2,
  /// then (with row terms) the sum of dS.
  int64_t rowValuesCarried() {
    return scoreLayout.laneRows() * (sumsRowAdjoints() ? 2 : 1);
  }
  bool fragmentsResident() const {
    return !config.wgmma &&
           2 * config.dimSlices() * 4 <= kResidentFragmentRegisters;
  }
  /// dQ~ += dS K for the K tile at `tileBase`, dS from registers.
  void accumulateKeys(ArrayRef<Accumulator> scoreGrads, Value tileBase,
                      SmallVectorImpl<Accumulator> &queryGrad);
  FailureOr<SmallVector<Value>> emitTile(RegionApplication &regions,
                                         TileRing &ring, Value tileIndex,
                                         ValueRange state);
  LogicalResult applyElements(RegionApplication &regions, Value kvLo,
                              Value termBase, bool masked,
                              ArrayRef<Accumulator> scores,
                              ArrayRef<Accumulator> valueDots,
                              SmallVectorImpl<Accumulator> &scoreGrads,
                              MutableArrayRef<Value> rowValues);
  LogicalResult storeResults(RegionApplication &regions,
                             ArrayRef<Accumulator> unscaled,
                             ArrayRef<Value> rowValues);

  /// S and dP: query rows, key columns; dQ: query rows, head_dim columns.
  FragmentLayout scoreLayout, gradLayout;
  Value head, qLo, qTile;
  Value sharedQuery, sharedGrad, sharedKey, sharedValue, keyBiasRing,
      keyNormRing, scratch;
  SmallVector<Value> queryFragments, gradFragments;
  /// Per lane row: q_idx, delta, lse2, ||q||^2 (when a region reads it).
  SmallVector<Value> rowIdx, rowDelta, rowLse2, rowQueryNorm;
  Value qScale;
  std::optional<BackwardWorkspace> space;
  SmallVector<Value> partials;
};

LogicalResult QueryGradKernel::applyElements(
    RegionApplication &regions, Value kvLo, Value termBase, bool masked,
    ArrayRef<Accumulator> scores, ArrayRef<Accumulator> valueDots,
    SmallVectorImpl<Accumulator> &scoreGrads, MutableArrayRef<Value> rowValues) {
  int64_t slices = scoreLayout.getColumnSlices();
  int64_t rows = scoreLayout.laneRows();
  MutableArrayRef<Value> queryNormGrad = rowValues.take_front(rows);
  MutableArrayRef<Value> adjointSum = rowValues.drop_front(rows);
  SmallVector<ColumnTermPair> biases, norms;
  if (keyBiasRing)
    biases =
        streamCopies->loadColumnTerms(*fragment, slices, keyBiasRing, termBase);
  if (keyNormRing)
    norms =
        streamCopies->loadColumnTerms(*fragment, slices, keyNormRing, termBase);
  scoreGrads.assign(scores.size(), {f32(0.0), f32(0.0), f32(0.0), f32(0.0)});
  ElementValues element;
  element.qScale = qScale;
  int64_t columnOffset = 0;
  return fragment->forEachElementByColumn(
      scoreLayout,
      [&](int64_t slice, int64_t column, Value index) {
        columnOffset = FragmentLayout::laneColumnOffset(slice, column);
        element.kvIdx = add(kvLo, index);
        if (!biases.empty())
          element.keyBias = biases[slice][column];
        if (!norms.empty())
          element.keyNorm = norms[slice][column];
      },
      [&](int64_t accumulator, int64_t e, int64_t r) -> LogicalResult {
        element.qIdx = rowIdx[r];
        element.queryNorm = rowQueryNorm.empty() ? Value() : rowQueryNorm[r];
        element.dot = scores[accumulator][e];
        if (diagonals)
          element.diagonalSlot = diagonals->slot(r, columnOffset);
        auto scored = scoreAndKept(regions, element, masked);
        if (failed(scored))
          return failure();
        ElementGradient grad =
            elementGradient(scored->first, scored->second,
                            valueDots[accumulator][e], rowDelta[r], rowLse2[r]);
        element.adjoint = grad.adjoint;
        if (sumsRowAdjoints())
          adjointSum[r] = fadd(adjointSum[r], grad.adjoint);
        // The parameters' and captures' gradients of the score are the
        // dK/dV kernel's: none are added here.
        return evaluateGradients(
            regions, op.getScoreGrad(), element, {}, Value(),
            [&](Operation *gradOp, Value x) {
              return TypeSwitch<Operation *, LogicalResult>(gradOp)
                  .Case([&](attn::GradScaledDotOp) {
                    scoreGrads[accumulator][e] = x;
                    return success();
                  })
                  .Case([&](attn::GradNorm2Op norm) {
                    // ||k||^2's is the dK/dV kernel's.
                    if (norm.getVector() == attn::Vector::q)
                      queryNormGrad[r] = fadd(queryNormGrad[r], x);
                    return success();
                  })
                  // The dK/dV kernel's (a relative-position table's).
                  .Case<attn::GradKeyBiasOp, attn::GradCaptureOp>(
                      [](Operation *) { return success(); })
                  .Default([](Operation *other) {
                    return unownedGradient(other, "the dQ kernel's score");
                  });
            });
      });
}

FailureOr<SmallVector<Value>>
QueryGradKernel::emitTile(RegionApplication &regions, TileRing &ring,
                          Value tileIndex, ValueRange state) {
  int64_t gradValues = 4 * gradLayout.size();
  FailureOr<StreamStep> step = enterStreamTile(regions, ring, tileIndex, qLo,
                                               /*streamIsQueries=*/false);
  if (failed(step))
    return failure();
  Value tileBase = step->tileBase, termBase = step->termBase, kvLo = step->lo;

  OpBuilder::InsertionGuard guard(b);
  scf::IfOp compute = updateIf(step->live, state);
  // The windows' loads run under the products.
  if (diagonals && failed(diagonals->stage(qLo, kvLo)))
    return failure();
  SmallVector<Accumulator> scores, valueDots;
  if (config.wgmma) {
    // S = Q K^T and dP = dO V^T, both issued before either is waited for.
    auto products = multiplyByWgmma(
        {{blockDescriptors[0],
          warpgroupAtoms.kMajorDescriptor(sharedKey, tileBase, streamTile)},
         {blockDescriptors[1],
          warpgroupAtoms.kMajorDescriptor(sharedValue, tileBase, streamTile)}},
        blockTile, streamTile, scoreLayout.size());
    scores = products[0];
    valueDots = products[1];
  } else {
    scores = multiplyByStream(scoreLayout, queryFragments, sharedQuery,
                              sharedKey, tileBase);
    valueDots = multiplyByStream(scoreLayout, gradFragments, sharedGrad,
                                 sharedValue, tileBase);
  }
  SmallVector<Value> rowValues(state.drop_front(gradValues));
  int64_t scoreValues = 4 * scoreLayout.size();
  auto branches = branchOnPartialTile(
      step->partial, scoreValues + rowValuesCarried(),
      [&](bool masked) -> FailureOr<SmallVector<Value>> {
        SmallVector<Accumulator> scoreGrads;
        SmallVector<Value> rowValuesAfter = rowValues;
        if (failed(applyElements(regions, kvLo, termBase, masked, scores,
                                 valueDots, scoreGrads, rowValuesAfter)))
          return failure();
        SmallVector<Value> yielded = FragmentLayout::flatten(scoreGrads);
        llvm::append_range(yielded, rowValuesAfter);
        return yielded;
      });
  if (failed(branches))
    return failure();
  ValueRange results = *branches;
  SmallVector<Accumulator> scoreGrads =
      FragmentLayout::unflatten(results.take_front(scoreValues));
  SmallVector<Accumulator> queryGrad =
      FragmentLayout::unflatten(state.take_front(gradValues));
  accumulateKeys(scoreGrads, tileBase, queryGrad);
  SmallVector<Value> next = FragmentLayout::flatten(queryGrad);
  llvm::append_range(next, results.drop_front(scoreValues));
  scf::YieldOp::create(b, next);
  return SmallVector<Value>(compute.getResults());
}

void QueryGradKernel::accumulateKeys(ArrayRef<Accumulator> scoreGrads,
                                     Value tileBase,
                                     SmallVectorImpl<Accumulator> &queryGrad) {
  // K's [keys][head_dim] tile is the B operand transposed: MN-major.
  if (config.wgmma) {
    accumulateByWgmma(
        {operandsFromAccumulators(scoreGrads, scoreLayout)},
        {warpgroupAtoms.mnMajorDescriptor(sharedKey, tileBase, streamTile)},
        streamTile, queryGrad);
    return;
  }
  accumulateStream(scoreGrads, scoreLayout, sharedKey, tileBase, gradLayout,
                   queryGrad);
}

LogicalResult QueryGradKernel::storeResults(RegionApplication &regions,
                                            ArrayRef<Accumulator> unscaled,
                                            ArrayRef<Value> rowValues) {
  int64_t rows = scoreLayout.laneRows();
  SmallVector<Accumulator> queryGrad(unscaled.begin(), unscaled.end());
  Value scaleGrad = f32(0.0);
  for (int64_t r = 0; r < rows; ++r) {
    Value row = fragment->rowInTile(r);
    Value inside = cmp(arith::CmpIPredicate::ult, rowIdx[r], args.sizes.qLen);
    Value normGrad = laneSum(rowValues[r], 4);
    if (sumsRowAdjoints()) {
      // The row terms' adjoint is the sum of the row's dS in natural
      // units: dlse in exact arithmetic, and with D read from the rounded
      // output the same rounding the score's own gradients carry
      // (docs/backward.md, "Row terms"). A row without a kept key sums 0.
      Value adjoint =
          fmul(laneSum(rowValues[rows + r], 4),
               f32(config.log2Domain ? M_LOG2E : 1.0));
      Value applies = arith::AndIOp::create(
          b, inside,
          arith::CmpFOp::create(b, arith::CmpFPredicate::UNE, adjoint,
                                f32(0.0)));
      ElementValues element;
      element.qIdx =
          arith::MinUIOp::create(b, rowIdx[r], sub(args.sizes.qLen, index(1)));
      element.kvIdx = index(0);
      element.queryNorm = rowQueryNorm.empty() ? Value() : rowQueryNorm[r];
      element.adjoint = select(applies, adjoint, f32(0.0));
      Value once = arith::AndIOp::create(
          b, applies,
          cmp(arith::CmpIPredicate::eq, fragment->getInGroup(), index(0)));
      if (failed(evaluateGradients(
              regions, op.getRowBiasGrad(), element, partials, once,
              [&](Operation *gradOp, Value x) {
                auto norm = dyn_cast<attn::GradNorm2Op>(gradOp);
                if (!norm || norm.getVector() != attn::Vector::q)
                  return unownedGradient(gradOp, "the row terms' gradient");
                normGrad = fadd(normGrad, select(applies, x, f32(0.0)));
                return success();
              })))
        return failure();
    }
    // dQ = q_scale dQ~ + 2 (dL/d||q||^2) q; dL/dq_scale += q . dQ~.
    Value twice = fmul(normGrad, f32(2.0));
    for (int64_t slice = 0; slice < gradLayout.getColumnSlices(); ++slice) {
      std::array<Value, 2> queryPair =
          loadTilePair(blockTile, sharedQuery, index(0), row, slice);
      Accumulator &acc = queryGrad[gradLayout.accumulator(r / 2, slice)];
      for (int64_t column = 0; column < 2; ++column) {
        Value &element = acc[FragmentLayout::element(r, column)];
        scaleGrad = fadd(scaleGrad, fmul(queryPair[column], element));
        element = fadd(fmul(element, qScale), fmul(twice, queryPair[column]));
      }
    }
  }
  Epilogue epilogue(b, *fragment, gradLayout, atoms);
  for (int64_t r = 0; r < rows; ++r)
    if (failed(epilogue.storeRow(queryGrad, r, f32(1.0),
                                 {args.queryGrad.data,
                                  headBase(args.queryGrad, batchIdx, head),
                                  args.queryGrad.strides[2]},
                                 rowIdx[r], args.sizes.qLen)))
      return failure();
  // q_scale_grad is linear in its adjoint: each lane's share of
  // sum_i q_i . dQ~_i adds its share of the gradient, and the block's sum
  // adds them up.
  if (!op.getQScaleGrad().empty()) {
    ElementValues element;
    element.qIdx = index(0);
    element.kvIdx = index(0);
    element.adjoint = scaleGrad;
    if (failed(evaluateGradients(
            regions, op.getQScaleGrad(), element, partials, Value(),
            [](Operation *gradOp, Value) {
              return unownedGradient(gradOp, "q_scale's gradient");
            })))
      return failure();
  }
  return success();
}

FailureOr<int64_t> QueryGradKernel::build(gpu::GPUModuleOp module,
                                          StringRef name) {
  OpBuilder::InsertionGuard guard(b);
  gpu::GPUFuncOp func = declare(module, name, config.queryWarps);
  LLVM_DEBUG(llvm::dbgs() << "S: " << scoreLayout << "\ndQ: " << gradLayout
                          << "\n");
  head = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  // Heavier query tiles (more kept keys under causal-like masks) first.
  Value tiles = gpu::GridDimOp::create(b, gpu::Dimension::x);
  qTile =
      sub(sub(tiles, index(1)), gpu::BlockIdOp::create(b, gpu::Dimension::x));
  qLo = mul(qTile, config.queryTile());
  Value group = arith::DivUIOp::create(b, args.sizes.heads, args.sizes.kvHeads);
  Value kvHead = arith::DivUIOp::create(b, head, group);
  space.emplace(workspace());
  RegionApplication regions(b, op, args.sizes, args.params, args.captures,
                            batchIdx, head, lane, config.headDim);

  SharedMemoryArena shared = sharedMemory();
  sharedQuery =
      shared.carve(blockTile.elements(config.queryTile()), b.getF16Type());
  sharedGrad =
      shared.carve(blockTile.elements(config.queryTile()), b.getF16Type());
  sharedKey = shared.carve(config.stages * streamTile.elements(keyTile()),
                           b.getF16Type());
  sharedValue = shared.carve(config.stages * streamTile.elements(keyTile()),
                             b.getF16Type());
  if (keyBiasPlane() >= 0)
    keyBiasRing = shared.carve(config.stages * keyTile(), b.getF32Type());
  if (keyNormPlane() >= 0)
    keyNormRing = shared.carve(config.stages * keyTile(), b.getF32Type());
  if (slots.size())
    scratch = shared.carve(config.queryWarps * slots.size(), b.getF32Type());
  carveDiagonalWindows(shared, config.queryWarps, keyTile());
  stageDiagonalsWith(regions, DiagonalStaging::Rows::Queries, keyTile());

  // Q and dO as the A operand (rows of the warp), K and V as the B operand
  // of S = Q K^T and dP = dO V^T, K transposed as the B operand of
  // dQ += dS K.
  addressOperands(sharedQuery, sharedGrad);
  int64_t rows = scoreLayout.laneRows();
  for (int64_t r = 0; r < rows; ++r) {
    rowIdx.push_back(fragment->row(qLo, r));
    // The workspace rows are padded past q_len: every row's terms exist.
    rowDelta.push_back(memref::LoadOp::create(
        b, args.workspace,
        ValueRange{add(space->rowTerms(0, batchIdx, head), rowIdx[r])}));
    rowLse2.push_back(memref::LoadOp::create(
        b, args.workspace,
        ValueRange{add(space->rowTerms(1, batchIdx, head), rowIdx[r])}));
  }

  // The key tiles that may hold a kept key for these rows.
  Value keyTiles =
      arith::CeilDivUIOp::create(b, args.sizes.kvLen, index(keyTile()));
  auto classify = [&](Value t) {
    return regions.classifyTile(qLo, config.queryTile(), mul(t, keyTile()),
                                keyTile());
  };
  if (failed(regions.fixBounds(RegionApplication::FixedAxis::Queries, qLo,
                               config.queryTile())))
    return failure();
  auto live = regions.liveTiles(keyTiles, classify);
  if (failed(live))
    return failure();
  auto [firstTile, endTile] = *live;
  TileRing ring(
      *streamCopies, config.stages, keyTile(), args.sizes.kvLen, firstTile,
      endTile,
      {{sharedKey,
        {args.k.data, headBase(args.k, batchIdx, kvHead), args.k.strides[2]}},
       {sharedValue,
        {args.v.data, headBase(args.v, batchIdx, kvHead), args.v.strides[2]}}});
  Value termHead = keyTermsPerKvHead() ? kvHead : head;
  SmallVector<TileRing::TermPlane> planes;
  if (keyBiasRing)
    planes.push_back(
        {keyBiasRing, space->keyTerms(keyBiasPlane(), batchIdx, termHead)});
  if (keyNormRing)
    planes.push_back(
        {keyNormRing, space->keyTerms(keyNormPlane(), batchIdx, termHead)});
  if (!planes.empty())
    ring.setTerms(args.workspace, std::move(planes),
                  TileRing::TermCopy::Threads, Value());

  copyBlockTiles(
      {{sharedQuery,
        {args.q.data, headBase(args.q, batchIdx, head), args.q.strides[2]}},
       {sharedGrad,
        {args.outputGrad.data, headBase(args.outputGrad, batchIdx, head),
         args.outputGrad.strides[2]}}},
      qLo, args.sizes.qLen);
  for (int64_t stage = 0; stage + 1 < config.stages; ++stage) {
    ring.issue(add(firstTile, stage));
    NVVM::CpAsyncCommitGroupOp::create(b);
  }
  waitForCopies(config.stages - 1);
  if (fragmentsResident())
    for (int64_t slice = 0; slice < config.dimSlices(); ++slice) {
      llvm::append_range(queryFragments, loadBlockFragment(sharedQuery, slice));
      llvm::append_range(gradFragments, loadBlockFragment(sharedGrad, slice));
    }
  if (RegionApplication::usesNorm(op.getScore(), attn::Vector::q) ||
      RegionApplication::usesNorm(op.getRowBias(), attn::Vector::q))
    rowQueryNorm = blockRowSquareSums(scoreLayout, sharedQuery);
  FailureOr<Value> scale = regions.queryScale();
  if (failed(scale))
    return failure();
  qScale = *scale;

  int64_t gradValues = 4 * gradLayout.size();
  SmallVector<Value> init(gradValues + rowValuesCarried(), f32(0.0));
  auto loop = scf::ForOp::create(b, firstTile, endTile, index(1), init);
  {
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(loop.getBody());
    FailureOr<SmallVector<Value>> next = emitTile(
        regions, ring, loop.getInductionVar(), loop.getRegionIterArgs());
    if (failed(next))
      return failure();
    scf::YieldOp::create(b, *next);
  }
  NVVM::CpAsyncWaitGroupOp::create(b, 0);
  GradientPartials sums(b, slots);
  partials = sums.zeros();
  ValueRange results = loop.getResults();
  SmallVector<Value> rowValues(results.drop_front(gradValues));
  if (failed(storeResults(
          regions, FragmentLayout::unflatten(results.take_front(gradValues)),
          rowValues)))
    return failure();
  sums.storeBlockSums(partials, lane, warp, threadId, config.queryWarps,
                      scratch, args.workspace,
                      space->partials(1, batchIdx, head, qTile));
  gpu::ReturnOp::create(b);
  allowContraction(func);
  return shared.size();
}

} // namespace

FailureOr<int64_t> rbfc::buildQueryGradKernel(attn::AttentionOp op,
                                              const BackwardConfig &config,
                                              const GradientSlots &slots,
                                              gpu::GPUModuleOp module,
                                              StringRef name) {
  ImplicitLocOpBuilder b(op.getLoc(), op.getContext());
  return QueryGradKernel(op, config, slots, b).build(module, name);
}
