//===- ForwardBlock.cpp - what the forward kernels' blocks start from -----===//
#include "rbfc/Conversion/NVGPU/ForwardBlock.h"

#include "rbfc/Conversion/NVGPU/BlockOrder.h"
#include "rbfc/Conversion/NVGPU/RegionApplication.h"
#include "rbfc/Dialect/Attn/KeyBiasProduct.h"
#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-forward-block"

using namespace mlir;
using namespace rbfc;

KeyTermWorkspace KeyTermWorkspace::forOp(attn::AttentionOp op,
                                         KeyTermSource source,
                                         bool scoresByWgmma) {
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
  std::optional<attn::KeyBiasProduct> product;
  if (workspace.keyBiasPlane >= 0)
    product = attn::KeyBiasProduct::analyze(op);
  workspace.biasStartsScores = scoresByWgmma && product && !workspace.inProduct;
  if (workspace.biasOverQueryScale() && product)
    workspace.cancelledParams = product->cancelledParams;
  LLVM_DEBUG(
      llvm::dbgs() << "key terms: " << workspace.planes() << " planes, per "
                   << (workspace.perKvHead ? "kv" : "query") << " head\n");
  return workspace;
}

SmallVector<Value>
KeyTermWorkspace::writerParams(ImplicitLocOpBuilder &b,
                               ArrayRef<Value> params) const {
  SmallVector<Value> writer(params);
  for (unsigned param : cancelledParams)
    writer[param] = arith::ConstantOp::create(b, b.getF32FloatAttr(1.0));
  return writer;
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
  if (!biasOverQueryScale()) {
    storeBias(*bias);
    return success();
  }
  FailureOr<Value> scale = regions.queryScale();
  if (failed(scale))
    return failure();
  // A reciprocal, once, and a product per key: the producer warps, which
  // compute these per tile, have no registers for a division's slow path.
  storeBias(
      arith::DivFOp::create(b, *bias, *scale, arith::FastMathFlags::arcp));
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
  // Read from the first lane, the warp index is warp-uniform to ptxas: what
  // derives from it (the warpgroup's branches and wgmma descriptors) then
  // lives in uniform registers, and branches on it need no WARPSYNC.
  warp = arith::IndexCastOp::create(
      b, b.getIndexType(),
      uniformFromFirstLane(arith::IndexCastOp::create(
          b, b.getI32Type(), div(threadId, kThreadsPerWarp))));
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
  // A head's blocks stream its K and V.
  BlockOrder::Place place = BlockOrder(b).longestFirst(
      sizes.heads, sizes.batch, sizes.kvLen, config.headDim * 2 * 2,
      /*longestLast=*/true);
  queryTile = place.tile;
  batch = place.batch;
  head = place.head;
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
