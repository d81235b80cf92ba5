//===- ForwardBlock.cpp - what the forward kernels' blocks start from -----===//
#include "rbfc/Conversion/NVGPU/ForwardBlock.h"

#include "rbfc/Conversion/NVGPU/RegionApplication.h"
#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "mlir/Dialect/Math/IR/Math.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-forward-block"

using namespace mlir;
using namespace rbfc;

/// The bytes of K and V of the heads whose blocks run together under a
/// mask (ForwardBlock::locateQueryTile): about half the 50 MB of L2 of the
/// H100 and H200, the rest left to Q, O and the next group's first blocks.
static constexpr int64_t kL2BytesForKeysAndValues = 24 << 20;

KeyTermWorkspace KeyTermWorkspace::forOp(attn::AttentionOp op,
                                         KeyTermSource source) {
  KeyTermWorkspace workspace;
  if (!op.getKeyBias().empty())
    workspace.keyBiasPlane = workspace.planes();
  bool scoreReadsKeyNorm =
      RegionApplication::usesNorm(op.getScore(), attn::Vector::k);
  if (scoreReadsKeyNorm)
    workspace.keyNormPlane = workspace.planes();
  workspace.needsKeyNorm =
      scoreReadsKeyNorm ||
      RegionApplication::usesNorm(op.getKeyBias(), attn::Vector::k);
  attn::ScoreDependence dependence;
  workspace.perKvHead =
      op.getKeyBias().empty() ||
      !(dependence.get(op.getKeyBias().front().getTerminator()->getOperand(0)) &
        attn::kDependsOnHead);
  // Set last: the planes above are numbered as planes; the product's
  // entries then take the place of the key bias plane's.
  workspace.inProduct = source == KeyTermSource::Product;
  workspace.computedInKernel = source == KeyTermSource::Producer;
  LLVM_DEBUG(
      llvm::dbgs() << "key terms: " << workspace.planes() << " planes, per "
                   << (workspace.perKvHead ? "kv" : "query") << " head\n");
  return workspace;
}

LogicalResult KeyTermWorkspace::emitKeyTerms(
    ImplicitLocOpBuilder &b, RegionApplication &regions, Value kvIdx,
    Value kvLen, Value keyNorm, function_ref<void(Value, int64_t)> storePlane,
    function_ref<void(Value)> storeBias) const {
  OpBuilder::InsertionGuard guard(b);
  auto inside = scf::IfOp::create(
      b, TypeRange{},
      arith::CmpIOp::create(b, arith::CmpIPredicate::ult, kvIdx, kvLen),
      /*withElseRegion=*/true);
  b.setInsertionPointToStart(inside.elseBlock());
  Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0));
  for (int64_t plane = 0; plane < planes(); ++plane)
    storePlane(zero, plane);
  b.setInsertionPointToStart(inside.thenBlock());
  if (keyNormPlane >= 0)
    storePlane(keyNorm, keyNormPlane);
  if (keyBiasPlane < 0)
    return success();
  FailureOr<Value> bias = regions.keyBias(kvIdx, keyNorm);
  if (failed(bias))
    return failure();
  storeBias(*bias);
  return success();
}

gpu::GPUFuncOp ForwardBlock::declare(gpu::GPUModuleOp module, StringRef name,
                                     int64_t threads) {
  args = ForwardArgs();
  KernelSignature signature(b.getContext());
  args.addTo(signature, op, config.hasLse, workspace.inWorkspace(),
             config.tensorMapCopies);
  gpu::GPUFuncOp func = signature.declare(b, module, name, threads);
  threadId = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  lane = rem(threadId, kThreadsPerWarp);
  warp = div(threadId, kThreadsPerWarp);
  return func;
}

void ForwardBlock::locate(bool byKvHead) {
  batch = gpu::BlockIdOp::create(b, gpu::Dimension::z);
  const ProblemSizes &sizes = args.sizes;
  Value group = arith::DivUIOp::create(b, sizes.heads, sizes.kvHeads);
  if (byKvHead) {
    kvHead = gpu::BlockIdOp::create(b, gpu::Dimension::y);
    head = mul(kvHead, group);
  } else {
    head = gpu::BlockIdOp::create(b, gpu::Dimension::y);
    kvHead = arith::DivUIOp::create(b, head, group);
  }
  bindRows();
}

void ForwardBlock::locateQueryTile() {
  if (op.getMask().empty()) {
    locate(/*byKvHead=*/false);
    queryTile = sub(sub(gpu::GridDimOp::create(b, gpu::Dimension::x), index(1)),
                    gpu::BlockIdOp::create(b, gpu::Dimension::x));
    return;
  }
  const ProblemSizes &sizes = args.sizes;
  Value tiles = gpu::GridDimOp::create(b, gpu::Dimension::x);
  Value lastTile = sub(tiles, index(1));
  Value linear = add(
      gpu::BlockIdOp::create(b, gpu::Dimension::x),
      mul(tiles,
          add(gpu::BlockIdOp::create(b, gpu::Dimension::y),
              mul(sizes.heads, gpu::BlockIdOp::create(b, gpu::Dimension::z)))));
  Value headsTimesBatch = mul(sizes.heads, sizes.batch);
  // As many heads as fit their K and V in kL2BytesForKeysAndValues, down
  // to a power of two (which divides the usual head counts: a last group
  // of a few heads leaves multiprocessors idle at the end).
  Value headBytes = mul(sizes.kvLen, config.headDim * 2 * 2);
  Value fitting = arith::MaxUIOp::create(
      b,
      arith::DivUIOp::create(b, index(kL2BytesForKeysAndValues),
                             arith::MaxUIOp::create(b, headBytes, index(1))),
      index(1));
  Type i64 = b.getI64Type();
  Value leadingZeros = math::CountLeadingZerosOp::create(
      b, arith::IndexCastUIOp::create(b, i64, fitting));
  Value powerOfTwo = arith::ShLIOp::create(
      b, arith::ConstantIntOp::create(b, i64, 1),
      arith::SubIOp::create(b, arith::ConstantIntOp::create(b, i64, 63),
                            leadingZeros));
  Value groupHeads = arith::MinUIOp::create(
      b, arith::IndexCastUIOp::create(b, b.getIndexType(), powerOfTwo),
      headsTimesBatch);
  Value groupBlocks = mul(groupHeads, tiles);
  Value firstHead =
      mul(arith::DivUIOp::create(b, linear, groupBlocks), groupHeads);
  Value inGroup = arith::RemUIOp::create(b, linear, groupBlocks);
  // The last group may hold fewer heads.
  Value headsHere =
      arith::MinUIOp::create(b, groupHeads, sub(headsTimesBatch, firstHead));
  Value headAndBatch =
      add(firstHead, arith::RemUIOp::create(b, inGroup, headsHere));
  queryTile = sub(lastTile, arith::DivUIOp::create(b, inGroup, headsHere));
  batch = arith::DivUIOp::create(b, headAndBatch, sizes.heads);
  head = arith::RemUIOp::create(b, headAndBatch, sizes.heads);
  kvHead = arith::DivUIOp::create(
      b, head, arith::DivUIOp::create(b, sizes.heads, sizes.kvHeads));
  bindRows();
}

void ForwardBlock::bindRows() {
  const ProblemSizes &sizes = args.sizes;
  auto base = [&](const TensorArgs &tensor, Value tensorHead) {
    return add(mul(batch, tensor.strides[0]),
               mul(tensorHead, tensor.strides[1]));
  };
  qBase = base(args.q, head);
  kBase = base(args.k, kvHead);
  vBase = base(args.v, kvHead);
  oBase = base(args.o, head);
  keyTermRows.clear();
  if (!workspace.inWorkspace())
    return;
  keyTermRowLength =
      mul(arith::CeilDivUIOp::create(b, sizes.kvLen, index(config.tileN)),
          config.tileN);
  Value rowHeads = workspace.perKvHead ? sizes.kvHeads : sizes.heads;
  Value row = add(mul(batch, rowHeads), workspace.perKvHead ? kvHead : head);
  // Product entries are the planes' words side by side: one row of them.
  if (workspace.inProduct) {
    keyTermRows.push_back(
        mul(mul(row, keyTermRowLength), KeyTermOperand::kWorkspaceWords));
    return;
  }
  Value planeStride = mul(mul(sizes.batch, rowHeads), keyTermRowLength);
  for (int64_t plane = 0; plane < workspace.planes(); ++plane)
    keyTermRows.push_back(
        add(mul(planeStride, plane), mul(row, keyTermRowLength)));
}
