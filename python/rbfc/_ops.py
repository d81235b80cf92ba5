"""The PyTorch custom ops over librbfc: rbfc::attention and its backward.

Both ops take the compiled spec as a string key into SPECS, the tensors in
the caller's layout (bhnd [B, H, N, D] or bnhd [B, N, H, D], passed to the
library as strided [B, H, N, D] views) and the params and captures as lists.
Each has a fake implementation (shapes only), so torch.compile traces them
without running them, and the forward has autograd through the backward op.
Kernels are specialised per (device, dtype, head dim, lse, backward) at
their first call and kept.
"""
import ctypes
import threading
from typing import Optional

import torch

from . import _capi
from .errors import RbfcError

TORCH_DTYPES = {torch.bfloat16: "bf16", torch.float16: "f16",
                torch.float32: "f32", torch.int32: "i32", torch.int64: "i64"}
DTYPE_CODES = {dtype: _capi.DTYPES[name] for dtype, name in TORCH_DTYPES.items()}

# Compiled specs by key; the ops name them by key so that a traced graph
# holds a string, not the object.
SPECS = {}


def _to_bhnd(values, bnhd):
    """Sizes or strides of a 4-D tensor as its [B, H, N, D] view."""
    return (values[0], values[2], values[1], values[3]) if bnhd else tuple(values)


def _fill(view, tensor, bnhd=False):
    """Points the C tensor `view` at `tensor` (4-D ones in `bnhd` layout are
    described as their [B, H, N, D] view)."""
    sizes, strides = tuple(tensor.shape), tensor.stride()
    if bnhd:
        sizes, strides = _to_bhnd(sizes, True), _to_bhnd(strides, True)
    rank = len(sizes)
    if rank > _capi.MAX_RANK:
        raise RbfcError(f"rbfc: a tensor of rank {rank}; at most "
                        f"{_capi.MAX_RANK} dimensions")
    view.data = tensor.data_ptr()
    view.rank = rank
    view.sizes[:rank] = sizes
    view.strides[:rank] = strides
    view.dtype = DTYPE_CODES[tensor.dtype]


class Kernel:
    """One specialisation of a spec: a compiled rbfc_kernel."""

    def __init__(self, spec, device, dtype, head_dim, lse, backward):
        lib = _capi.lib()
        options = _capi.sized(_capi.CompileOptions)
        options.target = _capi.TARGETS["cuda" if device.type == "cuda" else "host"]
        options.head_dim = head_dim
        options.dtype = DTYPE_CODES[dtype]
        options.lse = int(lse)
        options.backward = int(backward)
        options.arch = spec.arch.encode() if spec.arch else None
        options.plan = spec.plan.encode() if spec.plan else None
        options.cache_dir = (spec.cache_dir.encode() if spec.cache_dir is not None
                             else None)
        handle = ctypes.c_void_p()
        if device.type == "cuda":
            # The library takes the arch from the current device.
            with torch.cuda.device(device):
                status = lib.rbfc_compile(spec.text, spec.name, ctypes.byref(options),
                                          ctypes.byref(handle))
        else:
            status = lib.rbfc_compile(spec.text, spec.name, ctypes.byref(options),
                                      ctypes.byref(handle))
        _capi.check(status)
        self.handle = handle
        properties = _capi.sized(_capi.KernelProperties)
        _capi.check(lib.rbfc_kernel_get_properties(handle, ctypes.byref(properties)))
        self.has_backward = bool(properties.has_backward)
        self.defaults = []
        for index in range(properties.info.num_params):
            param = _capi.ParamInfo()
            _capi.check(lib.rbfc_kernel_param(handle, index, ctypes.byref(param)))
            self.defaults.append(param.default_value if param.has_default else None)
        self.cuda = device.type == "cuda"
        self.num_threads = spec.num_threads

    def __del__(self):
        if getattr(self, "handle", None) and _capi._LIB is not None:
            _capi._LIB.rbfc_kernel_release(self.handle)

    def param_array(self, params, param_slots, tensor_params, tensor_param_slots):
        values = list(self.defaults)
        for value, slot in zip(params, param_slots):
            values[slot] = value
        for tensor, slot in zip(tensor_params, tensor_param_slots):
            values[slot] = tensor.item()
        return (ctypes.c_double * max(len(values), 1))(*values), len(values)

    def forward(self, q, k, v, o, lse, captures, param_array, num_params, bnhd):
        args = _capi.sized(_capi.ForwardArgs)
        _fill(args.q, q, bnhd)
        _fill(args.k, k, bnhd)
        _fill(args.v, v, bnhd)
        _fill(args.o, o, bnhd)
        if lse.numel():
            _fill(args.lse, lse)
        args.params = param_array
        args.num_params = num_params
        views = (_capi.Tensor * max(len(captures), 1))()
        for view, capture in zip(views, captures):
            _fill(view, capture)
        args.captures = views
        args.num_captures = len(captures)
        lib = _capi.lib()
        if not self.cuda:
            args.num_threads = (self.num_threads if self.num_threads is not None
                                else torch.get_num_threads())
            _capi.check(lib.rbfc_forward(self.handle, ctypes.byref(args), None))
            return
        with torch.cuda.device(q.device):
            nbytes = ctypes.c_size_t()
            _capi.check(lib.rbfc_kernel_workspace_bytes(
                self.handle, ctypes.byref(args.q), ctypes.byref(args.k),
                ctypes.byref(nbytes)))
            # From PyTorch's caching allocator: no driver allocation on the
            # launch path, and safe inside a CUDA graph capture.
            workspace = (torch.empty(nbytes.value, dtype=torch.uint8, device=q.device)
                         if nbytes.value else None)
            if workspace is not None:
                args.workspace = workspace.data_ptr()
                args.workspace_bytes = nbytes.value
            stream = torch.cuda.current_stream(q.device).cuda_stream
            _capi.check(lib.rbfc_forward(self.handle, ctypes.byref(args), stream))

    def backward(self, q, k, v, o, lse, grad_o, grad_lse, captures, param_array,
                 num_params, grads, capture_grads, param_grads, param_grad_slots,
                 bnhd):
        args = _capi.sized(_capi.BackwardArgs)
        for name, tensor in (("q", q), ("k", k), ("v", v), ("o", o),
                             ("grad_o", grad_o), ("grad_q", grads[0]),
                             ("grad_k", grads[1]), ("grad_v", grads[2])):
            _fill(getattr(args, name), tensor, bnhd)
        _fill(args.lse, lse)
        if grad_lse is not None:
            _fill(args.grad_lse, grad_lse)
        args.params = param_array
        args.num_params = num_params
        views = (_capi.Tensor * max(len(captures), 1))()
        grad_views = (_capi.Tensor * max(len(captures), 1))()
        for view, grad_view, capture, grad in zip(views, grad_views, captures,
                                                  capture_grads):
            _fill(view, capture)
            if grad is not None:
                _fill(grad_view, grad)
        args.captures = views
        args.num_captures = len(captures)
        args.grad_captures = grad_views
        pointers = (ctypes.c_void_p * max(num_params, 1))()
        for grad, slot in zip(param_grads, param_grad_slots):
            pointers[slot] = grad.data_ptr()
        args.grad_params = pointers
        lib = _capi.lib()
        if not self.cuda:
            args.num_threads = (self.num_threads if self.num_threads is not None
                                else torch.get_num_threads())
            _capi.check(lib.rbfc_backward(self.handle, ctypes.byref(args), None))
            return
        with torch.cuda.device(q.device):
            stream = torch.cuda.current_stream(q.device).cuda_stream
            _capi.check(lib.rbfc_backward(self.handle, ctypes.byref(args), stream))


class Spec:
    """A spec and its compile options, and its kernels by specialisation."""

    def __init__(self, text, name, arch, plan, cache_dir, num_threads):
        self.text = text.encode()
        self.name = name.encode()
        self.arch, self.plan, self.cache_dir = arch, plan, cache_dir
        self.num_threads = num_threads
        self.kernels = {}
        self.lock = threading.Lock()

    def kernel(self, q, lse, backward):
        key = (q.device, q.dtype, q.shape[-1], lse, backward)
        kernel = self.kernels.get(key)
        if kernel is None:
            with self.lock:
                kernel = self.kernels.get(key)
                if kernel is None:
                    kernel = Kernel(self, q.device, q.dtype, q.shape[-1], lse,
                                    backward)
                    self.kernels[key] = kernel
        return kernel


def _lse_shape(q, bnhd):
    return (q.shape[0], q.shape[2], q.shape[1]) if bnhd else tuple(q.shape[:3])


@torch.library.custom_op("rbfc::attention", mutates_args=())
def attention(spec: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              captures: list[torch.Tensor], params: list[float],
              param_slots: list[int], tensor_params: list[torch.Tensor],
              tensor_param_slots: list[int], lse: bool, backward: bool,
              bnhd: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """o (in q's layout, contiguous) and the log-sum-exp [B, H, Nq] f32 (an
    empty tensor unless lse or backward)."""
    kernel = SPECS[spec].kernel(q, lse or backward, backward)
    if backward and not kernel.has_backward:
        raise RbfcError(f"rbfc: {SPECS[spec].name.decode()}: the {q.device.type} "
                        "target has no backward kernels yet; call it under "
                        "torch.no_grad() or on tensors that do not require grad")
    param_array, num_params = kernel.param_array(params, param_slots, tensor_params,
                                                 tensor_param_slots)
    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse_out = torch.empty(_lse_shape(q, bnhd) if lse or backward else (0,),
                          dtype=torch.float32, device=q.device)
    kernel.forward(q, k, v, o, lse_out, captures, param_array, num_params, bnhd)
    return o, lse_out


@attention.register_fake
def _(spec, q, k, v, captures, params, param_slots, tensor_params,
      tensor_param_slots, lse, backward, bnhd):
    return (q.new_empty(q.shape),
            q.new_empty(_lse_shape(q, bnhd) if lse or backward else (0,),
                        dtype=torch.float32))


@torch.library.custom_op("rbfc::attention_backward", mutates_args=())
def attention_backward(
        spec: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        o: torch.Tensor, lse: torch.Tensor, grad_o: torch.Tensor,
        grad_lse: Optional[torch.Tensor], captures: list[torch.Tensor],
        params: list[float], param_slots: list[int],
        tensor_params: list[torch.Tensor], tensor_param_slots: list[int],
        capture_grads: list[bool], tensor_param_grads: list[bool], bnhd: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor],
           list[torch.Tensor]]:
    """Gradients of q, k, v, of the captures whose flag is set and of the
    tensor params whose flag is set (f32 scalars), in that order."""
    kernel = SPECS[spec].kernel(q, True, True)
    param_array, num_params = kernel.param_array(params, param_slots, tensor_params,
                                                 tensor_param_slots)
    grads = [torch.empty_like(t) for t in (q, k, v)]
    capture_out = [torch.empty_like(c) if want else None
                   for c, want in zip(captures, capture_grads)]
    param_out = [torch.empty((), dtype=torch.float32, device=q.device)
                 for want in tensor_param_grads if want]
    param_out_slots = [slot for slot, want in zip(tensor_param_slots,
                                                  tensor_param_grads) if want]
    kernel.backward(q, k, v, o, lse, grad_o.contiguous(), grad_lse, captures,
                    param_array, num_params, grads, capture_out, param_out,
                    param_out_slots, bnhd)
    return (*grads, [g for g in capture_out if g is not None], param_out)


@attention_backward.register_fake
def _(spec, q, k, v, o, lse, grad_o, grad_lse, captures, params, param_slots,
      tensor_params, tensor_param_slots, capture_grads, tensor_param_grads, bnhd):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            [torch.empty_like(c) for c, want in zip(captures, capture_grads) if want],
            [q.new_empty((), dtype=torch.float32) for want in tensor_param_grads
             if want])


def _setup_context(ctx, inputs, output):
    (spec, q, k, v, captures, params, param_slots, tensor_params,
     tensor_param_slots, lse, backward, bnhd) = inputs
    o, lse_out = output
    ctx.save_for_backward(q, k, v, o, lse_out, *captures, *tensor_params)
    ctx.spec, ctx.bnhd = spec, bnhd
    ctx.params, ctx.param_slots = params, param_slots
    ctx.tensor_param_slots = tensor_param_slots
    ctx.num_captures = len(captures)
    ctx.capture_grads = [c.requires_grad for c in captures]
    ctx.tensor_param_grads = [t.requires_grad for t in tensor_params]


def _backward(ctx, grad_o, grad_lse):
    q, k, v, o, lse, *rest = ctx.saved_tensors
    captures, tensor_params = rest[:ctx.num_captures], rest[ctx.num_captures:]
    grad_q, grad_k, grad_v, capture_grads, param_grads = attention_backward(
        ctx.spec, q, k, v, o, lse, grad_o, grad_lse, list(captures), ctx.params,
        ctx.param_slots, list(tensor_params), ctx.tensor_param_slots,
        ctx.capture_grads, ctx.tensor_param_grads, ctx.bnhd)
    capture_grads, param_grads = iter(capture_grads), iter(param_grads)
    capture_out = [next(capture_grads) if want else None
                   for want in ctx.capture_grads]
    # A param given as a tensor of any float type and shape gets its
    # gradient in that type and shape.
    param_out = [next(param_grads).to(t.dtype).reshape(t.shape) if want else None
                 for t, want in zip(tensor_params, ctx.tensor_param_grads)]
    return (None, grad_q, grad_k, grad_v, capture_out, None, None, param_out, None,
            None, None, None)


attention.register_autograd(_backward, setup_context=_setup_context)
