"""The PyTorch custom ops over librbfc: rbfc::attention and its backward.

Both ops take the compiled spec as a string key into SPECS, the tensors in
the caller's layout (bhnd [B, H, N, D] or bnhd [B, N, H, D], passed to the
library as strided [B, H, N, D] views) and the params and captures as lists.
Each has a fake implementation (shapes only), so torch.compile traces them
without running them, and the forward has autograd through the backward op.
Kernels are specialised per (device, dtype, head dim, lse, backward) at
their first call and kept.

The C structs of a call are packed with `struct` in one step: filling
ctypes fields one by one cost several microseconds a call. A forward call
runs through rbfc._launcher (src/launcher.c), which fills in a packed
call's pointers and calls librbfc from C.
"""
import ctypes
import struct
import threading
from pathlib import Path
from typing import Optional

import torch

from . import _capi
from .errors import RbfcError

try:
    from . import _launcher
except ImportError as error:
    # A source tree whose C module was not built still serves rbfc.runtime
    # (the GPU test scripts import the package from the tree).
    _launcher, _LAUNCHER_MISSING = None, error

TORCH_DTYPES = {torch.bfloat16: "bf16", torch.float16: "f16",
                torch.float32: "f32", torch.int32: "i32", torch.int64: "i64"}
DTYPE_CODES = {dtype: _capi.DTYPES[name] for dtype, name in TORCH_DTYPES.items()}

# rbfc_tensor, rbfc_forward_args and rbfc_backward_args as struct formats
# (native alignment; '0q' pads each to its 8-byte alignment).
TENSOR = "Pi4q4qi0q"
FORWARD = struct.Struct("Q" + TENSOR * 5 + "PQPQPQi4q0q")
BACKWARD = struct.Struct("Q" + TENSOR * 10 + "PQPQPPiPQ4q0q")
assert FORWARD.size == ctypes.sizeof(_capi.ForwardArgs)
assert BACKWARD.size == ctypes.sizeof(_capi.BackwardArgs)
NO_TENSOR = (0,) * 11
# A call that is the whole sequence (rbfc_forward_args' q_offset,
# kv_offset, q_seq_len, kv_seq_len all 0).
NO_BLOCK = (0, 0, 0, 0)

# Compiled specs by key; the ops name them by key so that a traced graph
# holds a string, not the object.
SPECS = {}


def _to_bhnd(values, bnhd):
    """Sizes or strides of a 4-D tensor as its [B, H, N, D] view."""
    return (values[0], values[2], values[1], values[3]) if bnhd else tuple(values)


def _fields(sizes, strides, dtype, bnhd=False):
    """The fields of an rbfc_tensor after its pointer (a 4-D tensor in
    `bnhd` layout as its [B, H, N, D] view)."""
    if bnhd:
        sizes, strides = _to_bhnd(sizes, True), _to_bhnd(strides, True)
    rank = len(sizes)
    if rank > _capi.MAX_RANK:
        raise RbfcError(f"rbfc: a tensor of rank {rank}; at most "
                        f"{_capi.MAX_RANK} dimensions")
    padding = (0,) * (_capi.MAX_RANK - rank)
    return (rank, *sizes, *padding, *strides, *padding, DTYPE_CODES[dtype])


def _contiguous_fields(sizes, dtype, bnhd=False):
    """_fields of a contiguous tensor of `sizes`, without making one."""
    strides, stride = [], 1
    for size in reversed(sizes):
        strides.append(stride)
        stride *= size
    return _fields(tuple(sizes), tuple(reversed(strides)), dtype, bnhd)


def _words(tensor, bnhd=False):
    """The fields of the rbfc_tensor describing `tensor`."""
    return (tensor.data_ptr(),) + _fields(tuple(tensor.shape), tensor.stride(),
                                          tensor.dtype, bnhd)


def _tensor_array(tensors):
    """An rbfc_tensor array describing `tensors` (kept alive by the caller
    for the call), and its address (0 when empty)."""
    if not tensors:
        return None, 0
    words = [word for tensor in tensors for word in _words(tensor)]
    array = (_capi.Tensor * len(tensors)).from_buffer_copy(
        struct.pack(TENSOR * len(tensors), *words))
    return array, ctypes.addressof(array)


class Kernel:
    """One specialisation of a spec: a compiled rbfc_kernel."""

    def __init__(self, spec, device, dtype, head_dim, lse, backward):
        lib = _capi.lib()
        _configure_launcher(lib)
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
        self.key_terms = properties.info.key_terms > 0
        self.defaults = []
        for index in range(properties.info.num_params):
            param = _capi.ParamInfo()
            _capi.check(lib.rbfc_kernel_param(handle, index, ctypes.byref(param)))
            self.defaults.append(param.default_value if param.has_default else None)
        # Read-only for the library: one array of the defaults serves every
        # call that gives no param (a param without a default is always given).
        defaults = (ctypes.c_double * max(len(self.defaults), 1))(
            *(0.0 if d is None else d for d in self.defaults))
        self.default_array = defaults, ctypes.addressof(defaults)
        self.cuda = device.type == "cuda"
        self.num_threads = spec.num_threads
        self.workspace_bytes = {}
        self.stream_workspaces = {}

    def __del__(self):
        # At interpreter exit the module may already be torn down.
        if getattr(self, "handle", None) and getattr(_capi, "_LIB", None):
            _capi._LIB.rbfc_kernel_release(self.handle)

    def param_values(self, params, param_slots, tensor_params, tensor_param_slots):
        """Every param's value in declaration order (the given ones, else the
        defaults of this specialisation), or None when every one is its
        default."""
        if not self.defaults or (not params and not tensor_params):
            return None
        values = list(self.defaults)
        for value, slot in zip(params, param_slots):
            values[slot] = value
        for tensor, slot in zip(tensor_params, tensor_param_slots):
            values[slot] = tensor.item()
        return values

    def param_array(self, params, param_slots, tensor_params, tensor_param_slots):
        """param_values as a C array, and its address."""
        values = self.param_values(params, param_slots, tensor_params,
                                   tensor_param_slots)
        if values is None:
            return self.default_array if self.defaults else (None, 0)
        array = (ctypes.c_double * len(values))(*values)
        return array, ctypes.addressof(array)

    def forward_launch(self, q, k, v, captures, lse, bnhd):
        """A forward call's rbfc_forward_args but for its data, as the
        _launcher.Launch that runs calls with these tensors' shapes,
        strides, dtypes and devices."""
        q_words, k_words = _words(q, bnhd), _words(k, bnhd)
        lse_shape = _lse_shape(q, bnhd) if lse else None
        args = FORWARD.pack(
            FORWARD.size, 0, *q_words[1:], 0, *k_words[1:], 0, *_words(v, bnhd)[1:],
            0, *_contiguous_fields(tuple(q.shape), q.dtype, bnhd),
            *((0, *_contiguous_fields(lse_shape, torch.float32)) if lse
              else NO_TENSOR),
            0, len(self.defaults), 0, len(captures), 0,
            self.workspace_size(q_words, k_words), 0, *NO_BLOCK)
        capture_fields = struct.pack(
            TENSOR * len(captures), *(word for c in captures for word in (0, *_words(c)[1:])))
        return _launcher.Launch(
            self, self.handle.value, args, capture_fields,
            struct.pack(f"{len(self.defaults)}d", *(0.0 if d is None else d
                                                    for d in self.defaults)),
            lse_shape, self.cuda, self.num_threads,
            any(c.requires_grad for c in captures))

    def threads(self):
        return (self.num_threads if self.num_threads is not None
                else torch.get_num_threads())

    def workspace_size(self, q_words, k_words, backward=False):
        """The bytes of device workspace the forward's key-terms prologue,
        or the backward, needs for these q and k (0 on the host, and for a
        forward without key terms)."""
        if not self.cuda or not (backward or self.key_terms):
            return 0
        key = (backward, *q_words[2:5], *k_words[3:5])
        nbytes = self.workspace_bytes.get(key)
        if nbytes is None:
            size = ctypes.c_size_t()
            q_view = _capi.Tensor.from_buffer_copy(struct.pack(TENSOR, *q_words))
            k_view = _capi.Tensor.from_buffer_copy(struct.pack(TENSOR, *k_words))
            lib = _capi.lib()
            query = (lib.rbfc_kernel_backward_workspace_bytes if backward
                     else lib.rbfc_kernel_workspace_bytes)
            _capi.check(query(self.handle, ctypes.byref(q_view),
                              ctypes.byref(k_view), ctypes.byref(size)))
            nbytes = self.workspace_bytes[key] = size.value
        return nbytes

    def workspace(self, nbytes, device, stream):
        """A device workspace of at least `nbytes` for a launch on `stream`.
        Outside a CUDA graph capture one buffer per stream serves every call
        (the prologue writes it and the kernel reads it in stream order, so a
        later call on that stream cannot overtake an earlier one); under a
        capture each call takes its own from PyTorch's caching allocator,
        which keeps it for the graph."""
        # torch.cuda.is_current_stream_capturing's checks cost a
        # microsecond; the device is initialised (a kernel was built for it).
        if torch._C._cuda_isCurrentStreamCapturing():
            return torch.empty(nbytes, dtype=torch.uint8, device=device)
        workspace = self.stream_workspaces.get(stream)
        if workspace is None or workspace.numel() < nbytes:
            workspace = torch.empty(nbytes, dtype=torch.uint8, device=device)
            self.stream_workspaces[stream] = workspace
        return workspace

    def stream(self, device):
        """The current CUDA stream of `device` as a raw handle (torch's
        Stream objects cost microseconds to make)."""
        return torch._C._cuda_getCurrentRawStream(device.index)

    def call(self, function, packed, device, stream=None):
        """Runs rbfc_forward or rbfc_backward on `packed` arguments: for CUDA
        on `stream`, by default the current stream of `device`."""
        if not self.cuda:
            _capi.check(function(self.handle, packed, None))
            return
        if device.index != torch.cuda.current_device():
            with torch.cuda.device(device):
                return self.call(function, packed, device, stream)
        _capi.check(function(self.handle, packed,
                             stream if stream is not None else self.stream(device)))

    def backward(self, q, k, v, o, lse, grad_o, grad_lse, captures, param_array,
                 grads, capture_grads, param_grads, param_grad_slots, bnhd,
                 block):
        capture_array, capture_address = _tensor_array(captures)
        grad_words = [word for grad in capture_grads
                      for word in (_words(grad) if grad is not None else NO_TENSOR)]
        grad_array = ((_capi.Tensor * len(captures)).from_buffer_copy(
            struct.pack(TENSOR * len(captures), *grad_words)) if captures else None)
        pointers = (ctypes.c_void_p * max(len(self.defaults), 1))()
        for grad, slot in zip(param_grads, param_grad_slots):
            pointers[slot] = grad.data_ptr()
        q_words, k_words = _words(q, bnhd), _words(k, bnhd)
        # From PyTorch's caching allocator: the driver's stream-ordered pool
        # gives its memory back at every synchronisation, and the next call
        # pays for mapping it again.
        workspace_bytes = self.workspace_size(q_words, k_words, backward=True)
        workspace = (torch.empty(workspace_bytes, dtype=torch.uint8, device=q.device)
                     if workspace_bytes else None)
        packed = _capi.BackwardArgs.from_buffer_copy(BACKWARD.pack(
            BACKWARD.size, *q_words, *k_words, *_words(v, bnhd),
            *_words(o, bnhd), *_words(lse), *_words(grad_o, bnhd),
            *(_words(grad_lse) if grad_lse is not None else NO_TENSOR),
            *_words(grads[0], bnhd), *_words(grads[1], bnhd), *_words(grads[2], bnhd),
            param_array[1], len(self.defaults), capture_address, len(captures),
            ctypes.addressof(pointers) if param_grads else 0,
            ctypes.addressof(grad_array) if captures else 0,
            0 if self.cuda else self.threads(),
            workspace.data_ptr() if workspace is not None else 0, workspace_bytes,
            *block))
        self.call(_capi.lib().rbfc_backward, ctypes.byref(packed), q.device)


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


_LAUNCHER_CONFIGURED = False


def launcher():
    """The rbfc._launcher module, or None where it was not built (the
    package imported from a source tree)."""
    return _launcher


def _require_launcher():
    if _launcher is not None:
        return _launcher
    built = list(Path(__file__).parent.glob("_launcher*.so"))
    reason = (f"{built[0]} does not load: {_LAUNCHER_MISSING}" if built
              else "it was not built: this package was imported from a "
              "source tree")
    raise RbfcError(f"rbfc: the C module rbfc._launcher is missing ({reason}); "
                    "install the package (pip install ./python)")


def launcher_configuration(lib):
    """What _launcher.configure takes: rbfc_forward's and rbfc_last_error's
    addresses, RbfcError, and the torch objects a call uses."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode
    address = lambda function: ctypes.cast(function, ctypes.c_void_p).value
    # A torch built without CUDA lacks these; its kernels are all host ones.
    cuda = {name: getattr(torch._C, name, None) for name in (
        "_cuda_getDevice", "_cuda_getCurrentRawStream",
        "_cuda_isCurrentStreamCapturing")}
    return (address(lib.rbfc_forward), address(lib.rbfc_last_error), RbfcError, {
        "Tensor": torch.Tensor,
        "current_dispatch_mode": _get_current_dispatch_mode,
        "is_grad_enabled": torch.is_grad_enabled,
        "current_device": cuda["_cuda_getDevice"],
        "current_raw_stream": cuda["_cuda_getCurrentRawStream"],
        "is_stream_capturing": cuda["_cuda_isCurrentStreamCapturing"],
        "empty_like": torch.empty_like,
        "get_num_threads": torch.get_num_threads,
        "module_globals": torch.nn.modules.module,
        "contiguous_format": torch.contiguous_format,
        "float32": torch.float32})


def _configure_launcher(lib):
    """Configures _launcher once."""
    global _LAUNCHER_CONFIGURED
    if not _LAUNCHER_CONFIGURED:
        _require_launcher().configure(*launcher_configuration(lib))
        _LAUNCHER_CONFIGURED = True


def _lse_shape(q, bnhd):
    return (q.shape[0], q.shape[2], q.shape[1]) if bnhd else tuple(q.shape[:3])


def launch(spec, q, k, v, captures, lse, backward, bnhd):
    """The _launcher.Launch of a forward call (lse: return the log-sum-exp;
    backward: the kernel with a backward, which saves it)."""
    kernel = SPECS[spec].kernel(q, lse or backward, backward)
    if backward and not kernel.has_backward:
        raise RbfcError(f"rbfc: {SPECS[spec].name.decode()}: the {q.device.type} "
                        "kernel has no backward; call it under "
                        "torch.no_grad() or on tensors that do not require grad")
    return kernel.forward_launch(q, k, v, captures, lse or backward, bnhd)


def run(forward_launch, q, k, v, captures, param_values, block):
    """o (contiguous, in q's layout) and the lse (None unless asked) of a
    forward call; `block`: where q's and k's rows sit in the whole sequence
    (q_offset, kv_offset, q_seq_len, kv_seq_len; rbfc_forward_args)."""
    # torch._C._cuda_getDevice: torch.cuda.current_device without its
    # initialisation check, which a built kernel has passed.
    if forward_launch.cuda and q.device.index != torch._C._cuda_getDevice():
        with torch.cuda.device(q.device):
            return forward_launch.launch(q, k, v, captures, param_values, block)
    return forward_launch.launch(q, k, v, captures, param_values, block)


def forward(spec, q, k, v, captures, params, param_slots, tensor_params,
            tensor_param_slots, lse, backward, bnhd, block):
    """Runs the forward: o in q's layout (contiguous) and, with lse or
    backward, the log-sum-exp [B, H, Nq] f32 (else None)."""
    forward_launch = launch(spec, q, k, v, captures, lse, backward, bnhd)
    return run(forward_launch, q, k, v, captures, forward_launch.kernel.param_values(
        params, param_slots, tensor_params, tensor_param_slots), block)


@torch.library.custom_op("rbfc::attention", mutates_args=())
def attention(spec: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              captures: list[torch.Tensor], params: list[float],
              param_slots: list[int], tensor_params: list[torch.Tensor],
              tensor_param_slots: list[int], lse: bool, backward: bool,
              bnhd: bool, block: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """o (in q's layout, contiguous) and the log-sum-exp [B, H, Nq] f32 (an
    empty tensor unless lse or backward)."""
    o, lse_out = forward(spec, q, k, v, captures, params, param_slots, tensor_params,
                         tensor_param_slots, lse, backward, bnhd, block)
    if lse_out is None:
        lse_out = torch.empty((0,), dtype=torch.float32, device=q.device)
    return o, lse_out


@attention.register_fake
def _(spec, q, k, v, captures, params, param_slots, tensor_params,
      tensor_param_slots, lse, backward, bnhd, block):
    return (q.new_empty(q.shape),
            q.new_empty(_lse_shape(q, bnhd) if lse or backward else (0,),
                        dtype=torch.float32))


def backward(spec, q, k, v, o, lse, grad_o, grad_lse, captures, params,
             param_slots, tensor_params, tensor_param_slots, capture_grads,
             tensor_param_grads, bnhd, block):
    """Gradients of q, k, v, of the captures whose flag is set and of the
    tensor params whose flag is set (f32 scalars), in that order. With k
    and v a block of the keys (`block`, as in ForwardLaunch), o and lse are
    the rows' over every block and the gradients are this block's share."""
    kernel = SPECS[spec].kernel(q, True, True)
    param_array = kernel.param_array(params, param_slots, tensor_params,
                                     tensor_param_slots)
    grads = [torch.empty_like(t) for t in (q, k, v)]
    capture_out = [torch.empty_like(c) if want else None
                   for c, want in zip(captures, capture_grads)]
    param_out = [torch.empty((), dtype=torch.float32, device=q.device)
                 for want in tensor_param_grads if want]
    param_out_slots = [slot for slot, want in zip(tensor_param_slots,
                                                  tensor_param_grads) if want]
    # An unused output's gradient may arrive expanded (stride 0): the
    # kernels need a head_dim stride of 1.
    kernel.backward(q, k, v, o, lse, grad_o.contiguous(), grad_lse, captures,
                    param_array, grads, capture_out, param_out, param_out_slots,
                    bnhd, block)
    return (*grads, [g for g in capture_out if g is not None], param_out)


@torch.library.custom_op("rbfc::attention_backward", mutates_args=())
def attention_backward(
        spec: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        o: torch.Tensor, lse: torch.Tensor, grad_o: torch.Tensor,
        grad_lse: Optional[torch.Tensor], captures: list[torch.Tensor],
        params: list[float], param_slots: list[int],
        tensor_params: list[torch.Tensor], tensor_param_slots: list[int],
        capture_grads: list[bool], tensor_param_grads: list[bool], bnhd: bool,
        block: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor],
           list[torch.Tensor]]:
    """backward() as an op, for autograd of rbfc::attention."""
    return backward(spec, q, k, v, o, lse, grad_o, grad_lse, captures, params,
                    param_slots, tensor_params, tensor_param_slots, capture_grads,
                    tensor_param_grads, bnhd, block)


@attention_backward.register_fake
def _(spec, q, k, v, o, lse, grad_o, grad_lse, captures, params, param_slots,
      tensor_params, tensor_param_slots, capture_grads, tensor_param_grads, bnhd,
      block):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            [torch.empty_like(c) for c, want in zip(captures, capture_grads) if want],
            [q.new_empty((), dtype=torch.float32) for want in tensor_param_grads
             if want])


def _setup_context(ctx, inputs, output):
    (spec, q, k, v, captures, params, param_slots, tensor_params,
     tensor_param_slots, lse, backward, bnhd, block) = inputs
    o, lse_out = output
    ctx.save_for_backward(q, k, v, o, lse_out, *captures, *tensor_params)
    ctx.spec, ctx.bnhd = spec, bnhd
    ctx.block = block
    ctx.params, ctx.param_slots = params, param_slots
    ctx.tensor_param_slots = tensor_param_slots
    ctx.num_captures = len(captures)
    ctx.capture_grads = [c.requires_grad for c in captures]
    ctx.tensor_param_grads = [t.requires_grad for t in tensor_params]


def _gradients(ctx, grad_o, grad_lse, run_backward):
    """q's, k's and v's gradients, and a list with each capture's and each
    tensor param's (None where not required), from a context that
    _setup_context filled; `run_backward` is attention_backward or
    backward()."""
    q, k, v, o, lse, *rest = ctx.saved_tensors
    captures, tensor_params = rest[:ctx.num_captures], rest[ctx.num_captures:]
    grad_q, grad_k, grad_v, capture_grads, param_grads = run_backward(
        ctx.spec, q, k, v, o, lse, grad_o, grad_lse, list(captures), ctx.params,
        ctx.param_slots, list(tensor_params), ctx.tensor_param_slots,
        ctx.capture_grads, ctx.tensor_param_grads, ctx.bnhd, ctx.block)
    capture_grads, param_grads = iter(capture_grads), iter(param_grads)
    capture_out = [next(capture_grads) if want else None
                   for want in ctx.capture_grads]
    # A param given as a tensor of any float type and shape gets its
    # gradient in that type and shape.
    param_out = [next(param_grads).to(t.dtype).reshape(t.shape) if want else None
                 for t, want in zip(tensor_params, ctx.tensor_param_grads)]
    return grad_q, grad_k, grad_v, capture_out, param_out


def _backward(ctx, grad_o, grad_lse):
    grad_q, grad_k, grad_v, capture_out, param_out = _gradients(
        ctx, grad_o, grad_lse, attention_backward)
    return (None, grad_q, grad_k, grad_v, capture_out, _no_grad(ctx.params),
            _no_grad(ctx.param_slots), param_out, _no_grad(ctx.tensor_param_slots),
            None, None, None, None)


def _no_grad(values):
    """The gradient of a list of numbers as register_autograd compares
    structures: an empty list flattens as a list, any other as one leaf."""
    return [] if not values else None


attention.register_autograd(_backward, setup_context=_setup_context)


class EagerAttention(torch.autograd.Function):
    """rbfc::attention with its autograd for eager calls, without
    torch.library's dispatch (on the GPU machine about 60 us a call each
    way, more than the kernels of a small model's layer). Called as
    apply((spec, params, param_slots, tensor_param_slots, lse, bnhd,
    num_captures, block), q, k, v, *captures, *tensor_params):
    every tensor that may need a gradient is an argument of its own.
    Tracing, tensor subclasses and dispatch modes use the op. A second
    derivative (create_graph=True) raises RbfcError."""

    @staticmethod
    def forward(ctx, call, q, k, v, *tensors):
        (spec, params, param_slots, tensor_param_slots, lse, bnhd, num_captures,
         block) = call
        captures = list(tensors[:num_captures])
        tensor_params = list(tensors[num_captures:])
        inputs = (spec, q, k, v, captures, params, param_slots, tensor_params,
                  tensor_param_slots, lse, True, bnhd, block)
        output = forward(*inputs)
        _setup_context(ctx, inputs, output)
        ctx.set_materialize_grads(False)
        return output

    @staticmethod
    def backward(ctx, grad_o, grad_lse):
        # create_graph=True: the gradients would have to depend on q, k, v
        # and the captures through the backward, which has no derivative.
        # once_differentiable raises only when the incoming gradients
        # require grad, and would drop the term silently otherwise.
        if torch.is_grad_enabled():
            raise RbfcError(f"rbfc: {SPECS[ctx.spec].name.decode()}: the "
                            "attention's backward has no derivative; "
                            "backward(create_graph=True) through it is not "
                            "supported")
        q = ctx.saved_tensors[0]
        if grad_o is None:
            grad_o = torch.zeros_like(q)
        grad_q, grad_k, grad_v, capture_out, param_out = _gradients(
            ctx, grad_o, grad_lse, backward)
        return (None, grad_q, grad_k, grad_v, *capture_out, *param_out)
