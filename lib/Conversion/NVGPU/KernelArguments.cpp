//===- KernelArguments.cpp - kernel parameter lists of docs/abi.md --------===//
#include "rbfc/Conversion/NVGPU/KernelArguments.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-kernel-arguments"

using namespace mlir;
using namespace rbfc;

void KernelSignature::addBuffer(Type elementType, Value *bound) {
  // Tensors are flat views of device memory indexed with the strides the
  // caller passes. The bare-pointer convention only takes static shapes, so
  // the view claims 2^40 elements; every index is formed in bounds by the
  // kernel itself.
  auto globalSpace =
      gpu::AddressSpaceAttr::get(context, gpu::AddressSpace::Global);
  parameters.push_back(
      {MemRefType::get({int64_t(1) << 40}, elementType,
                       MemRefLayoutAttrInterface(), globalSpace),
       bound, /*isIndex=*/false});
}

void KernelSignature::addIndex(Value *bound) {
  parameters.push_back(
      {IntegerType::get(context, 64), bound, /*isIndex=*/true});
}

void KernelSignature::addScalar(Type type, Value *bound) {
  parameters.push_back({type, bound, /*isIndex=*/false});
}

void KernelSignature::addTensorMap(Value *bound) {
  parameters.push_back({LLVM::LLVMPointerType::get(context), bound,
                        /*isIndex=*/false, /*isTensorMap=*/true});
}

void KernelSignature::addSizes(ProblemSizes &sizes) {
  for (Value *size :
       {&sizes.batch, &sizes.heads, &sizes.kvHeads, &sizes.qLen, &sizes.kvLen,
        &sizes.qOffset, &sizes.kvOffset, &sizes.qSeqLen, &sizes.kvSeqLen})
    addIndex(size);
}

void KernelSignature::addStrides(TensorArgs &tensor) {
  for (Value &stride : tensor.strides)
    addIndex(&stride);
}

void KernelSignature::addParams(attn::AttentionOp op,
                                SmallVectorImpl<Value> &params) {
  params.assign(op.getParams().size(), Value());
  for (auto [param, bound] : llvm::zip(op.getParams(), params))
    addScalar(param.getType(), &bound);
}

void KernelSignature::addCaptures(attn::AttentionOp op,
                                  SmallVectorImpl<CaptureArgs> &captures) {
  captures.assign(op.getCaptures().size(), CaptureArgs());
  for (auto [capture, data] : llvm::zip(op.getCaptures(), captures)) {
    auto tensor = cast<RankedTensorType>(capture.getType());
    addBuffer(tensor.getElementType(), &data.data);
    data.sizes.resize(tensor.getRank());
    data.strides.resize(tensor.getRank());
    for (Value &size : data.sizes)
      addIndex(&size);
    for (Value &stride : data.strides)
      addIndex(&stride);
  }
}

gpu::GPUFuncOp KernelSignature::declare(ImplicitLocOpBuilder &b,
                                        gpu::GPUModuleOp module, StringRef name,
                                        int64_t threads) const {
  SmallVector<Type> types;
  for (const Parameter &parameter : parameters)
    types.push_back(parameter.type);
  b.setInsertionPointToEnd(module.getBody());
  auto func = gpu::GPUFuncOp::create(b, name, b.getFunctionType(types, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({int32_t(threads), 1, 1}));
  SmallVector<int64_t> tensorMaps;
  for (auto [index, parameter] : llvm::enumerate(parameters))
    if (parameter.isTensorMap)
      tensorMaps.push_back(index);
  if (!tensorMaps.empty())
    func->setAttr(kTensorMapArgsAttrName, b.getDenseI64ArrayAttr(tensorMaps));
  Block &entry = func.getBody().front();
  b.setInsertionPointToStart(&entry);
  for (auto [parameter, argument] : llvm::zip(parameters, entry.getArguments()))
    *parameter.bound =
        parameter.isIndex
            ? Value(arith::IndexCastOp::create(b, b.getIndexType(), argument))
            : Value(argument);
  LLVM_DEBUG(llvm::dbgs() << "declared " << name << " with "
                          << parameters.size() << " parameters\n");
  return func;
}

void ForwardArgs::addTo(KernelSignature &signature, attn::AttentionOp op,
                        bool hasLse, bool hasWorkspace, bool hasTensorMaps) {
  // 16-bit tensors are declared f16: the kernel moves their bits and
  // reinterprets them where it computes.
  MLIRContext *context = op.getContext();
  Type f16 = Float16Type::get(context), f32 = Float32Type::get(context);
  for (TensorArgs *tensor : {&q, &k, &v, &o})
    signature.addBuffer(f16, &tensor->data);
  if (hasLse)
    signature.addBuffer(f32, &lse);
  if (hasWorkspace)
    signature.addBuffer(f32, &workspace);
  signature.addSizes(sizes);
  for (TensorArgs *tensor : {&q, &k, &v, &o})
    signature.addStrides(*tensor);
  if (hasLse)
    for (Value &stride : lseStrides)
      signature.addIndex(&stride);
  signature.addParams(op, params);
  signature.addCaptures(op, captures);
  if (hasTensorMaps) {
    signature.addTensorMap(&keyMap);
    signature.addTensorMap(&valueMap);
  }
}

void BackwardArgs::addTo(KernelSignature &signature, attn::AttentionOp op) {
  MLIRContext *context = op.getContext();
  Type f16 = Float16Type::get(context), f32 = Float32Type::get(context);
  TensorArgs *tensors[] = {&q,         &k,          &v,       &o,
                           &outputGrad, &queryGrad, &keyGrad, &valueGrad};
  for (TensorArgs *tensor : tensors)
    signature.addBuffer(f16, &tensor->data);
  signature.addBuffer(f32, &lse);
  signature.addBuffer(f32, &lseGrad);
  signature.addBuffer(f32, &workspace);
  signature.addScalar(IntegerType::get(context, 64), &gradMask);
  signature.addSizes(sizes);
  for (TensorArgs *tensor : tensors)
    signature.addStrides(*tensor);
  for (Value &stride : lseStrides)
    signature.addIndex(&stride);
  for (Value &stride : lseGradStrides)
    signature.addIndex(&stride);
  signature.addParams(op, params);
  signature.addCaptures(op, captures);
  // Only f32 params and captures have a gradient, but every one has the
  // slot so that the list does not depend on which gradients a spec can
  // have. A capture's gradient has the capture's sizes.
  paramGrads.assign(op.getParams().size(), Value());
  for (Value &grad : paramGrads)
    signature.addBuffer(f32, &grad);
  captureGrads.assign(op.getCaptures().size(), CaptureArgs());
  for (auto [capture, grad] : llvm::zip(op.getCaptures(), captureGrads)) {
    auto tensor = cast<RankedTensorType>(capture.getType());
    signature.addBuffer(f32, &grad.data);
    grad.strides.resize(tensor.getRank());
    for (Value &stride : grad.strides)
      signature.addIndex(&stride);
  }
}
