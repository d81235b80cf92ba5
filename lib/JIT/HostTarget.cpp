//===- HostTarget.cpp - rbfc.h's host target over HostKernel -------------===//
//
// The C API's tensors and positional params and captures become the named
// arguments of rbfc::host::HostKernel, which checks shapes and types and
// runs the kernel on its thread pool (docs/host-backend.md).
//
//===----------------------------------------------------------------------===//
#include "rbfc/JIT/Kernel.h"

#include "rbfc/Host/HostKernel.h"
#include "rbfc/Runtime/Launch.h"
#include "rbfc/Runtime/Status.h"


using namespace rbfc;
using namespace rbfc::jit;

namespace {

std::optional<host::ElementType> hostType(rbfc_dtype dtype) {
  switch (dtype) {
  case RBFC_DTYPE_BF16:
    return host::ElementType::bf16;
  case RBFC_DTYPE_F16:
    return host::ElementType::f16;
  case RBFC_DTYPE_F32:
    return host::ElementType::f32;
  case RBFC_DTYPE_I32:
    return host::ElementType::i32;
  case RBFC_DTYPE_I64:
    return host::ElementType::i64;
  }
  return std::nullopt;
}

/// The view `tensor` describes; fails on a rank or element type no tensor
/// of the C API can have.
bool hostTensor(const rbfc_tensor &tensor, const std::string &what,
                host::TensorRef &ref, std::string &error) {
  if (tensor.rank < 0 || tensor.rank > RBFC_MAX_RANK) {
    error = what + ": rank " + std::to_string(tensor.rank) +
            " is outside [0, " + std::to_string(RBFC_MAX_RANK) + "]";
    return false;
  }
  std::optional<host::ElementType> type = hostType(tensor.dtype);
  if (!type) {
    error = what + ": unknown element type code " +
            std::to_string(int(tensor.dtype));
    return false;
  }
  ref.data = tensor.data;
  ref.type = *type;
  ref.sizes.assign(tensor.sizes, tensor.sizes + tensor.rank);
  ref.strides.assign(tensor.strides, tensor.strides + tensor.rank);
  return true;
}

class HostTargetKernel : public Kernel {
public:
  HostTargetKernel(std::unique_ptr<host::HostKernel> kernel,
                   runtime::Descriptor descriptor)
      : Kernel(RBFC_TARGET_HOST, std::move(descriptor)),
        kernel(std::move(kernel)) {}

  bool hasBackward() const override {
    return kernel->options().withBackward;
  }

  rbfc_status forward(const rbfc_forward_args &a, void *) const override {
    host::HostKernelArgs args;
    std::string error;
    if (!forwardArguments(a, args, error) ||
        (a.lse.data && !hostTensor(a.lse, "lse", args.lse, error)))
      return fail(RBFC_ERROR_INVALID_ARGUMENT, error);
    if (llvm::Error failure = kernel->run(args))
      return fail(RBFC_ERROR_INVALID_ARGUMENT,
                  llvm::toString(std::move(failure)));
    return RBFC_OK;
  }

  rbfc_status backward(const rbfc_backward_args &a, void *) const override {
    if (!hasBackward())
      return fail(RBFC_ERROR_UNSUPPORTED,
                  "the kernel was compiled without a backward (set "
                  "rbfc_compile_options.backward)");
    host::HostBackwardArgs args;
    std::string error;
    if (!forwardArguments(a, args, error) ||
        !hostTensor(a.lse, "lse", args.lse, error) ||
        !hostTensor(a.grad_o, "grad_o", args.outputGrad, error) ||
        (a.grad_lse.data &&
         !hostTensor(a.grad_lse, "grad_lse", args.lseGrad, error)) ||
        !hostTensor(a.grad_q, "grad_q", args.queryGrad, error) ||
        !hostTensor(a.grad_k, "grad_k", args.keyGrad, error) ||
        !hostTensor(a.grad_v, "grad_v", args.valueGrad, error))
      return fail(RBFC_ERROR_INVALID_ARGUMENT, error);
    const runtime::Descriptor &d = descriptor();
    for (size_t i = 0; a.grad_params && i < d.params.size(); ++i)
      if (a.grad_params[i])
        args.paramGrads[d.params[i].name] = a.grad_params[i];
    for (size_t i = 0; a.grad_captures && i < d.captures.size(); ++i)
      if (a.grad_captures[i].data &&
          !hostTensor(a.grad_captures[i],
                      "grad_captures['" + d.captures[i].name + "']",
                      args.captureGrads[d.captures[i].name], error))
        return fail(RBFC_ERROR_INVALID_ARGUMENT, error);
    if (llvm::Error failure = kernel->backward(args))
      return fail(RBFC_ERROR_INVALID_ARGUMENT,
                  llvm::toString(std::move(failure)));
    return RBFC_OK;
  }

  rbfc_status workspaceBytes(const rbfc_tensor *, const rbfc_tensor *,
                             size_t &bytes) const override {
    bytes = 0;
    return RBFC_OK;
  }

  rbfc_status backwardWorkspaceBytes(const rbfc_tensor *, const rbfc_tensor *,
                                     size_t &bytes) const override {
    bytes = 0;
    return RBFC_OK;
  }

private:
  /// What a forward and a backward call share, from either's C arguments
  /// (rbfc_forward_args, rbfc_backward_args): q, k, v and o, the parameters
  /// and captures, the threads and the sequence block. lse is the caller's:
  /// optional in the forward, required in the backward.
  template <typename CallArgs>
  bool forwardArguments(const CallArgs &a, host::HostKernelArgs &args,
                        std::string &error) const {
    if (!hostTensor(a.q, "q", args.query, error) ||
        !hostTensor(a.k, "k", args.key, error) ||
        !hostTensor(a.v, "v", args.value, error) ||
        !hostTensor(a.o, "o", args.output, error) ||
        !namedArguments(a.params, a.num_params, a.captures, a.num_captures,
                        args.params, args.captures, error) ||
        !threads(a.num_threads, args.numThreads, error))
      return false;
    args.qOffset = a.q_offset;
    args.kvOffset = a.kv_offset;
    args.qSeqLen = a.q_seq_len;
    args.kvSeqLen = a.kv_seq_len;
    return true;
  }

  /// Params and captures by name, as HostKernel takes them.
  bool namedArguments(const double *params, size_t numParams,
                      const rbfc_tensor *captures, size_t numCaptures,
                      std::map<std::string, double> &namedParams,
                      std::map<std::string, host::TensorRef> &namedCaptures,
                      std::string &error) const {
    const runtime::Descriptor &d = descriptor();
    std::vector<double> values;
    if (!runtime::resolveParams(d, params, numParams, values, error))
      return false;
    for (auto [param, value] : llvm::zip(d.params, values))
      namedParams[param.name] = value;
    if (numCaptures != d.captures.size() || (numCaptures && !captures)) {
      error = "captures: the kernel takes " +
              std::to_string(d.captures.size()) + " captured tensor(s), got " +
              std::to_string(captures ? numCaptures : 0);
      return false;
    }
    for (size_t i = 0; i < numCaptures; ++i)
      if (!hostTensor(captures[i], "capture '" + d.captures[i].name + "'",
                      namedCaptures[d.captures[i].name], error))
        return false;
    return true;
  }

  static bool threads(int32_t requested, unsigned &numThreads,
                      std::string &error) {
    if (requested < 0) {
      error = "num_threads is " + std::to_string(requested) +
              "; give 0 (one per hardware thread) or more";
      return false;
    }
    numThreads = unsigned(requested);
    return true;
  }

  std::unique_ptr<host::HostKernel> kernel;
};

} // namespace

rbfc_status rbfc::jit::buildHostKernel(llvm::StringRef spec,
                                       llvm::StringRef specName,
                                       const CompileOptions &options,
                                       runtime::Descriptor description,
                                       std::shared_ptr<const Kernel> &kernel) {
  host::HostKernelOptions hostOptions;
  hostOptions.headDim = options.headDim;
  hostOptions.dtype = runtime::dtypeName(options.dtype);
  hostOptions.withLse = options.lse;
  hostOptions.withBackward = options.backward;
  auto compiled = host::HostKernel::compile(spec, specName, hostOptions);
  if (!compiled)
    return runtime::setLastError(RBFC_ERROR_COMPILE,
                                 "rbfc: the host backend failed: " +
                                     llvm::toString(compiled.takeError()));
  description.dtype = options.dtype;
  description.headDim = int(options.headDim);
  description.hasLse = options.lse;
  description.tileM = int((*compiled)->tileM());
  description.tileN = int(hostOptions.tiling.tileN);
  kernel = std::make_shared<HostTargetKernel>(std::move(*compiled),
                                              std::move(description));
  return RBFC_OK;
}
