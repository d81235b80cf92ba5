//===- AttnOps.cpp - attn dialect operations ------------------------------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/StringSet.h"

using namespace mlir;
using namespace rbfc::attn;

#define GET_OP_CLASSES
#include "rbfc/Dialect/Attn/AttnOps.cpp.inc"

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

static SmallVector<Type> regionArgTypes(AttentionOp op, unsigned numIndices) {
  SmallVector<Type> types(numIndices, IndexType::get(op.getContext()));
  llvm::append_range(types, op.getParams().getTypes());
  llvm::append_range(types, op.getCaptures().getTypes());
  return types;
}

SmallVector<Type> AttentionOp::getElementRegionArgTypes() {
  return regionArgTypes(*this, kNumIndexArgs);
}

SmallVector<Type> AttentionOp::getTileRegionArgTypes() {
  return regionArgTypes(*this, kNumTileArgs);
}

SmallVector<Type> AttentionOp::getGradRegionArgTypes() {
  SmallVector<Type> types = getElementRegionArgTypes();
  types.insert(types.begin() + kNumIndexArgs, Float32Type::get(getContext()));
  return types;
}

bool AttentionOp::isGradRegion(Region &region) {
  return &region == &getScoreGrad() || &region == &getKeyBiasGrad() ||
         &region == &getQScaleGrad() || &region == &getRowBiasGrad();
}

unsigned AttentionOp::getNumLeadingArgs(Region &region) {
  if (&region == &getTileClass())
    return kNumTileArgs;
  return isGradRegion(region) ? kNumGradArgs : kNumIndexArgs;
}

Block &AttentionOp::createRegionBlock(Region &region) {
  assert(region.empty() && "region already has a block");
  SmallVector<Type> types = &region == &getTileClass() ? getTileRegionArgTypes()
                            : isGradRegion(region) ? getGradRegionArgTypes()
                                                   : getElementRegionArgTypes();
  SmallVector<Location> locs(types.size(), getLoc());
  return *OpBuilder(getContext()).createBlock(&region, {}, types, locs);
}

ValueRange AttentionOp::getYielded(Region &region) {
  return region.front().getTerminator()->getOperands();
}

void AttentionOp::getAsmBlockArgumentNames(Region &region,
                                           OpAsmSetValueNameFn setNameFn) {
  if (region.empty())
    return;
  static constexpr llvm::StringLiteral kElementNames[] = {"b", "h", "q_idx",
                                                         "kv_idx"};
  static constexpr llvm::StringLiteral kTileNames[] = {
      "b", "h", "q_lo", "q_hi", "kv_lo", "kv_hi"};
  static constexpr llvm::StringLiteral kGradNames[] = {"b", "h", "q_idx",
                                                      "kv_idx", "adjoint"};
  ArrayRef<llvm::StringLiteral> indexNames =
      &region == &getTileClass() ? ArrayRef(kTileNames)
      : isGradRegion(region)     ? ArrayRef(kGradNames)
                                 : ArrayRef(kElementNames);
  Block &block = region.front();
  unsigned position = 0;
  for (llvm::StringLiteral name : indexNames)
    if (position < block.getNumArguments())
      setNameFn(block.getArgument(position++), name);
  for (Attribute name :
       llvm::concat<const Attribute>(getParamNames(), getCaptureNames()))
    if (position < block.getNumArguments())
      if (auto text = dyn_cast<StringAttr>(name))
        setNameFn(block.getArgument(position++), text.getValue());
}

/// Two static sizes must agree; a dynamic one is checked at run time.
static bool sizesConflict(int64_t lhs, int64_t rhs) {
  return !ShapedType::isDynamic(lhs) && !ShapedType::isDynamic(rhs) &&
         lhs != rhs;
}

static std::string shapeString(ArrayRef<int64_t> shape) {
  std::string text;
  llvm::raw_string_ostream os(text);
  llvm::interleave(
      shape, os,
      [&](int64_t dim) {
        if (ShapedType::isDynamic(dim))
          os << '?';
        else
          os << dim;
      },
      "x");
  return text;
}

static std::string shapeString(ShapedType type) {
  return shapeString(type.getShape());
}

LogicalResult AttentionOp::verify() {
  auto queryType = cast<RankedTensorType>(getQuery().getType());
  auto keyType = cast<RankedTensorType>(getKey().getType());
  auto valueType = cast<RankedTensorType>(getValue().getType());
  auto outputType = cast<RankedTensorType>(getOutput().getType());
  ArrayRef<int64_t> q = queryType.getShape(), k = keyType.getShape(),
                    v = valueType.getShape(), o = outputType.getShape();

  if (queryType.getElementType() != keyType.getElementType() ||
      queryType.getElementType() != valueType.getElementType())
    return emitOpError("expects query, key and value of one element type, got ")
           << queryType.getElementType() << ", " << keyType.getElementType()
           << " and " << valueType.getElementType();
  if (outputType.getElementType() != queryType.getElementType())
    return emitOpError("expects the output element type to be the input's (")
           << queryType.getElementType() << "), got "
           << outputType.getElementType();
  // Layout is [batch, heads, length, head_dim] for every tensor.
  if (sizesConflict(q[3], k[3]))
    return emitOpError("expects query and key of one head dimension, got ")
           << q[3] << " and " << k[3];
  if (sizesConflict(q[0], k[0]) || sizesConflict(k[0], v[0]) ||
      sizesConflict(q[0], v[0]))
    return emitOpError("expects query, key and value of one batch size, got ")
           << shapeString(queryType) << ", " << shapeString(keyType) << ", "
           << shapeString(valueType);
  if (sizesConflict(k[1], v[1]) || sizesConflict(k[2], v[2]))
    return emitOpError("expects key and value of one shape up to the head "
                       "dimension, got ")
           << shapeString(keyType) << " and " << shapeString(valueType);
  if (!ShapedType::isDynamic(q[1]) && !ShapedType::isDynamic(k[1]) &&
      (k[1] == 0 || q[1] % k[1] != 0))
    return emitOpError("expects the query heads (")
           << q[1] << ") to be a multiple of the key/value heads (" << k[1]
           << ")";
  if (sizesConflict(o[0], q[0]) || sizesConflict(o[1], q[1]) ||
      sizesConflict(o[2], q[2]) || sizesConflict(o[3], v[3]))
    return emitOpError("expects the output shape [batch, heads, q_len, "
                       "value head_dim] = ")
           << shapeString({q[0], q[1], q[2], v[3]}) << ", got "
           << shapeString(outputType);
  if (Value lse = getLse()) {
    auto lseType = cast<RankedTensorType>(lse.getType());
    ArrayRef<int64_t> l = lseType.getShape();
    if (sizesConflict(l[0], q[0]) || sizesConflict(l[1], q[1]) ||
        sizesConflict(l[2], q[2]))
      return emitOpError("expects the lse shape [batch, heads, q_len], got ")
             << shapeString(lseType);
  }

  if (getParamNames().size() != getParams().size())
    return emitOpError("has ")
           << getParams().size() << " parameters but "
           << getParamNames().size() << " parameter names";
  if (getParamDefaults().size() != getParams().size())
    return emitOpError("has ")
           << getParams().size() << " parameters but "
           << getParamDefaults().size() << " parameter defaults";
  if (getCaptureNames().size() != getCaptures().size())
    return emitOpError("has ")
           << getCaptures().size() << " captures but "
           << getCaptureNames().size() << " capture names";
  llvm::StringSet<> names;
  for (Attribute name :
       llvm::concat<const Attribute>(getParamNames(), getCaptureNames()))
    if (!names.insert(cast<StringAttr>(name).getValue()).second)
      return emitOpError("has two parameters or captures named '")
             << cast<StringAttr>(name).getValue() << "'";
  for (auto [param, fallback, name] :
       llvm::zip(getParams(), getParamDefaults(), getParamNames())) {
    if (isa<UnitAttr>(fallback))
      continue;
    auto typed = dyn_cast<TypedAttr>(fallback);
    if (!typed || typed.getType() != param.getType())
      return emitOpError("expects the default of parameter '")
             << cast<StringAttr>(name).getValue() << "' to be a "
             << param.getType() << " constant or unit (no default), got "
             << fallback;
  }
  if (ArrayAttr smallPlans = getSmallPlansAttr()) {
    PlanAttr plan = getPlanAttr();
    if (!plan)
      return emitOpError("has small_plans but no plan: the small-problem "
                         "kernels are alternatives to the default one");
    PlanAttr previous;
    for (PlanAttr small : smallPlans.getAsRange<PlanAttr>()) {
      if (small.getArch() != plan.getArch())
        return emitOpError("has a small plan for ")
               << small.getArch() << " and a plan for " << plan.getArch();
      // The runtime looks at a small kernel only where the one before it
      // runs in one wave: with as many rows a block and as many blocks a
      // multiprocessor, the later one would take every such problem.
      auto blocksPerSM = [](PlanAttr p) {
        return std::max<int64_t>(p.getBlocksPerSm(), 1);
      };
      if (previous && (small.getTileM() > previous.getTileM() ||
                       (small.getTileM() == previous.getTileM() &&
                        blocksPerSM(small) >= blocksPerSM(previous))))
        return emitOpError("has a small plan with tile_m = ")
               << small.getTileM() << ", blocks_per_sm = " << blocksPerSM(small)
               << " after one with tile_m = " << previous.getTileM()
               << ", blocks_per_sm = " << blocksPerSM(previous)
               << ": each small plan takes fewer rows a block than the one "
                  "before it, or as many on fewer blocks a multiprocessor";
      previous = small;
    }
  }
  return success();
}

namespace {
/// What an element region may read, for the verifier's messages.
struct RegionRules {
  StringRef name;
  bool allowQueryIndex;
  bool allowKeyIndex;
  bool allowQuery;
  bool allowKey;
};
} // namespace

/// Checks the argument list and the yielded types of `region`.
static LogicalResult verifyRegionSignature(AttentionOp op, Region &region,
                                           StringRef name,
                                           ArrayRef<Type> expectedArgs,
                                           TypeRange expectedYield) {
  if (region.empty())
    return success();
  Block &block = region.front();
  if (block.getArgumentTypes() != TypeRange(expectedArgs)) {
    InFlightDiagnostic diag = op.emitOpError("expects the '")
                              << name << "' region to take (";
    llvm::interleaveComma(expectedArgs, diag);
    diag << ") but it takes (";
    llvm::interleaveComma(block.getArgumentTypes(), diag);
    return diag << ")";
  }
  Operation *terminator = block.getTerminator();
  if (terminator->getOperandTypes() != expectedYield) {
    InFlightDiagnostic diag = terminator->emitOpError("in the '")
                              << name << "' region must yield (";
    llvm::interleaveComma(expectedYield, diag);
    diag << ") but yields (";
    llvm::interleaveComma(terminator->getOperandTypes(), diag);
    return diag << ")";
  }
  return success();
}

/// Rejects reads of the query or key side that `rules` forbids.
static LogicalResult verifyRegionReads(Region &region, RegionRules rules,
                                       bool isTileRegion) {
  if (region.empty())
    return success();
  Block &block = region.front();
  auto forbidIndex = [&](unsigned first, unsigned count,
                         StringRef what) -> LogicalResult {
    for (unsigned i = first; i < first + count; ++i)
      for (Operation *user : block.getArgument(i).getUsers())
        return user->emitOpError("in the '")
               << rules.name << "' region may not use " << what;
    return success();
  };
  unsigned perSide = isTileRegion ? 2 : 1;
  if (!rules.allowQueryIndex &&
      failed(forbidIndex(2, perSide, "the query index")))
    return failure();
  if (!rules.allowKeyIndex &&
      failed(forbidIndex(2 + perSide, perSide, "the key index")))
    return failure();

  WalkResult result = region.walk([&](Operation *op) {
    bool readsQuery = false, readsKey = false;
    if (isa<DotOp, Dist2Op, ScaledDotOp>(op))
      readsQuery = readsKey = true;
    else if (isa<KeyBiasOp>(op))
      readsKey = true;
    else if (auto norm = dyn_cast<Norm2Op>(op))
      (norm.getVector() == Vector::q ? readsQuery : readsKey) = true;
    if ((readsQuery && !rules.allowQuery) || (readsKey && !rules.allowKey)) {
      op->emitOpError("in the '")
          << rules.name << "' region may not read the "
          << (readsQuery && !rules.allowQuery ? "query" : "key");
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(result.wasInterrupted());
}

/// Where each gradient accumulation op may appear: a gradient region adds
/// only to what its forward region reads.
static LogicalResult verifyGradRegions(AttentionOp op) {
  SmallVector<Type> gradArgs = op.getGradRegionArgTypes();
  struct GradRegion {
    Region &region, &forward;
    StringRef name, forwardName;
    RegionRules rules;
  };
  GradRegion regions[] = {
      {op.getScoreGrad(), op.getScore(), "score_grad", "score",
       {"score_grad", true, true, true, true}},
      {op.getKeyBiasGrad(), op.getKeyBias(), "key_bias_grad", "key_bias",
       {"key_bias_grad", false, true, false, true}},
      {op.getQScaleGrad(), op.getQScale(), "q_scale_grad", "q_scale",
       {"q_scale_grad", false, false, false, false}},
      {op.getRowBiasGrad(), op.getRowBias(), "row_bias_grad", "row_bias",
       {"row_bias_grad", true, false, true, false}},
  };
  for (GradRegion &grad : regions) {
    if (grad.region.empty())
      continue;
    if (grad.forward.empty())
      return op.emitOpError("has a '")
             << grad.name << "' region but no '" << grad.forwardName
             << "' region";
    if (op.getScoreGrad().empty())
      return op.emitOpError("has a '")
             << grad.name << "' region but no 'score_grad' region";
    if (failed(verifyRegionSignature(op, grad.region, grad.name, gradArgs,
                                     {})) ||
        failed(verifyRegionReads(grad.region, grad.rules, false)))
      return failure();
    bool isScore = &grad.region == &op.getScoreGrad();
    WalkResult result = grad.region.walk([&](Operation *inner) {
      auto misplaced = [&](StringRef why) {
        inner->emitOpError("in the '") << grad.name << "' region " << why;
        return WalkResult::interrupt();
      };
      if (isa<GradScaledDotOp, GradKeyBiasOp>(inner) && !isScore)
        return misplaced("has no such forward value (only 'score_grad' may "
                         "use it)");
      if (auto norm = dyn_cast<GradNorm2Op>(inner)) {
        bool query = norm.getVector() == Vector::q;
        if ((query && !grad.rules.allowQuery) ||
            (!query && !grad.rules.allowKey))
          return misplaced(query ? "may not add to the query's gradient"
                                 : "may not add to the key's gradient");
      }
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      return failure();
  }
  for (Region *region : {&op.getScore(), &op.getMask(), &op.getQScale(),
                         &op.getKeyBias(), &op.getRowBias(),
                         &op.getTileClass()}) {
    WalkResult result = region->walk([&](Operation *inner) {
      if (!isa<GradScaledDotOp, GradNorm2Op, GradKeyBiasOp, GradParamOp,
               GradCaptureOp>(inner))
        return WalkResult::advance();
      inner->emitOpError("may only appear in a gradient region");
      return WalkResult::interrupt();
    });
    if (result.wasInterrupted())
      return failure();
  }
  return success();
}

LogicalResult AttentionOp::verifyRegions() {
  Builder b(getContext());
  Type f32 = b.getF32Type(), i1 = b.getI1Type();
  SmallVector<Type> elementArgs = getElementRegionArgTypes();
  if (failed(verifyRegionSignature(*this, getScore(), "score", elementArgs,
                                   {f32})) ||
      failed(verifyRegionSignature(*this, getMask(), "mask", elementArgs,
                                   {i1})) ||
      failed(verifyRegionSignature(*this, getQScale(), "q_scale", elementArgs,
                                   {f32})) ||
      failed(verifyRegionSignature(*this, getKeyBias(), "key_bias",
                                   elementArgs, {f32})) ||
      failed(verifyRegionSignature(*this, getRowBias(), "row_bias",
                                   elementArgs, {f32})) ||
      failed(verifyRegionSignature(*this, getTileClass(), "tile_class",
                                   getTileRegionArgTypes(), {i1, i1})))
    return failure();

  // The mask and the tile classifier decide which tiles run before any
  // score exists: indices only. The canonical regions each see one side.
  if (failed(verifyRegionReads(getMask(), {"mask", true, true, false, false},
                               false)) ||
      failed(verifyRegionReads(getQScale(),
                               {"q_scale", false, false, false, false},
                               false)) ||
      failed(verifyRegionReads(getKeyBias(),
                               {"key_bias", false, true, false, true},
                               false)) ||
      failed(verifyRegionReads(getRowBias(),
                               {"row_bias", true, false, true, false},
                               false)) ||
      failed(verifyRegionReads(getTileClass(),
                               {"tile_class", true, true, false, false},
                               true)))
    return failure();

  if (!getRowBias().empty() && !isSoftmax())
    return emitOpError("has a 'row_bias' region, which only softmax "
                       "normalisation allows");
  if (failed(verifyGradRegions(*this)))
    return failure();
  for (Region *region : {&getScore(), &getKeyBias(), &getRowBias()}) {
    for (Operation &op : region->getOps()) {
      if (isa<ScaledDotOp>(op) && getQScale().empty())
        return op.emitOpError("needs the enclosing op to have a 'q_scale' "
                              "region");
      if (isa<KeyBiasOp>(op) && (region != &getScore() || getKeyBias().empty()))
        return op.emitOpError("may only appear in the 'score' region of an "
                              "op with a 'key_bias' region");
    }
  }
  return success();
}

//===----------------------------------------------------------------------===//
// LoadOp and LoadBoundOp
//===----------------------------------------------------------------------===//

static LogicalResult verifyIndexCount(Operation *op, Type captureType,
                                      size_t count, StringRef what) {
  int64_t rank = cast<RankedTensorType>(captureType).getRank();
  if (static_cast<int64_t>(count) != rank)
    return op->emitOpError("indexes a rank-")
           << rank << " capture with " << count << " " << what;
  return success();
}

LogicalResult LoadOp::verify() {
  return verifyIndexCount(*this, getCapture().getType(), getIndices().size(),
                          "indices");
}

LogicalResult LoadBoundOp::verify() {
  if (getLows().size() != getHighs().size())
    return emitOpError("has ") << getLows().size() << " lower bounds but "
                               << getHighs().size() << " upper bounds";
  return verifyIndexCount(*this, getCapture().getType(), getLows().size(),
                          "bounds");
}

//===----------------------------------------------------------------------===//
// GradParamOp and GradCaptureOp
//===----------------------------------------------------------------------===//

LogicalResult GradParamOp::verify() {
  auto arg = dyn_cast<BlockArgument>(getParam());
  auto op = (*this)->getParentOfType<AttentionOp>();
  Region *region = arg ? arg.getOwner()->getParent() : nullptr;
  if (!arg || region->getParentOp() != op.getOperation())
    return emitOpError("expects a parameter argument of the enclosing region");
  unsigned leading = op.getNumLeadingArgs(*region);
  if (arg.getArgNumber() < leading ||
      arg.getArgNumber() >= leading + op.getParams().size())
    return emitOpError("expects a parameter argument of the enclosing region");
  return success();
}

LogicalResult GradCaptureOp::verify() {
  if (!cast<RankedTensorType>(getCapture().getType()).getElementType().isF32())
    return emitOpError("expects an f32 capture: integer captures have no "
                       "gradient");
  return verifyIndexCount(*this, getCapture().getType(), getIndices().size(),
                          "indices");
}

//===----------------------------------------------------------------------===//
// SizeOp
//===----------------------------------------------------------------------===//

OpFoldResult SizeOp::fold(FoldAdaptor) {
  if (getSize() != Size::head_dim)
    return {};
  auto op = (*this)->getParentOfType<AttentionOp>();
  int64_t headDim = cast<RankedTensorType>(op.getQuery().getType()).getDimSize(3);
  if (ShapedType::isDynamic(headDim))
    return {};
  return IntegerAttr::get(IndexType::get(getContext()), headDim);
}
