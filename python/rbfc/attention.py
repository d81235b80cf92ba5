"""rbfc.compile: an attention spec as a callable PyTorch module.

    attn = rbfc.compile("examples/alibi.attn")          # a path or spec text
    o = attn(q, k, v, captures={"slopes": slopes})      # [B, H, N, D] tensors
    o, lse = attn(q, k, v, captures=..., return_lse=True, layout="bnhd")

One compile serves every batch size, head count and sequence length: the
kernels are specialised per (device, dtype, head dim) at first use, compiled
by librbfc (CPU tensors: the host backend; CUDA tensors: the GPU kernels on
the current stream) and cached in memory and on disk. Arguments are checked
here, before anything runs, and a mismatch raises RbfcError naming the
argument; the checks read only shapes, strides, types and devices, so they
trace under torch.compile and cost nothing in the compiled graph.
"""
import ctypes
import os
from pathlib import Path

import torch
import torch.nn.modules.module as _module
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import _capi, _ops
from .errors import RbfcError

CAPTURE_DTYPES = {"f32": torch.float32, "i32": torch.int32, "i64": torch.int64}
LAYOUTS = {"bhnd": "[batch, heads, seq, head_dim]",
           "bnhd": "[batch, seq, heads, head_dim]"}
DEVICE_DTYPES = {"cpu": (torch.float32, torch.bfloat16, torch.float16),
                 "cuda": (torch.bfloat16, torch.float16)}

_COMPILED = {}
# Signatures whose launches a module keeps (a model calls one with a few).
MAX_LAUNCHES = 64


def _spec_text(spec, name):
    """(text, name for diagnostics) of `spec`: spec text, or a path to it."""
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and "{" not in spec
                                         and "\n" not in spec):
        path = Path(spec)
        if not path.is_file():
            raise RbfcError(f"rbfc.compile: spec: no file {str(path)!r} (pass a "
                            "path to an .attn file or the spec's text)")
        return path.read_text(), name or str(path)
    if not isinstance(spec, str):
        raise RbfcError(f"rbfc.compile: spec: expected spec text or a path, got "
                        f"{type(spec).__name__}")
    return spec, name or "<spec>"


def _inspect(text, name):
    """Name, normalization, params {name: (type, has_default)} and captures
    {name: (type, rank)} of the spec; raises with its diagnostics."""
    lib = _capi.lib()
    handle = ctypes.c_void_p()
    _capi.check(lib.rbfc_spec_parse(text.encode(), name.encode(),
                                    ctypes.byref(handle)))
    try:
        info = _capi.sized(_capi.SpecInfo)
        _capi.check(lib.rbfc_spec_get_info(handle, ctypes.byref(info)))
        params, captures = {}, {}
        for index in range(info.num_params):
            param = _capi.ParamInfo()
            _capi.check(lib.rbfc_spec_param(handle, index, ctypes.byref(param)))
            params[param.name.decode()] = (_capi.DTYPE_NAMES[param.type],
                                           bool(param.has_default))
        for index in range(info.num_captures):
            capture = _capi.CaptureInfo()
            _capi.check(lib.rbfc_spec_capture(handle, index, ctypes.byref(capture)))
            captures[capture.name.decode()] = (_capi.DTYPE_NAMES[capture.type],
                                               capture.rank)
        return info.name.decode(), info.normalization.decode(), params, captures
    finally:
        lib.rbfc_spec_release(handle)


def compile(spec, *, lse=False, name=None, arch=None, plan=None, cache_dir=None,
            num_threads=None):
    """Parses and checks `spec` (.attn text, or a path to a file) and returns an
    Attention module. Raises RbfcError with the spec's diagnostics if it does
    not compile.

    lse:         whether calls return (o, lse) by default (see return_lse).
    name:        the spec's name in diagnostics (default: the path, or
                 "<spec>").
    arch, plan:  CUDA kernels: the arch (default: the device's) and a plan
                 overriding the chosen one (docs/kernel.md).
    cache_dir:   the disk cache folder ("" for none; default $RBFC_CACHE_DIR,
                 else $XDG_CACHE_HOME/rbfc, else ~/.cache/rbfc).
    num_threads: host kernels' threads (default: torch.get_num_threads()).
    """
    text, spec_name = _spec_text(spec, name)
    key = (text, spec_name, lse, arch, plan, cache_dir, num_threads)
    if key not in _COMPILED:
        _COMPILED[key] = Attention(text, spec_name, lse, arch, plan, cache_dir,
                                   num_threads)
    return _COMPILED[key]


class Attention(torch.nn.Module):
    """A compiled spec; call it on q, k, v (see __call__/forward)."""

    def __init__(self, text, spec_name, lse, arch, plan, cache_dir, num_threads,
                 description=None):
        """`description` is what _inspect would say of `text`, for specs
        whose params and captures are known without the library (rbfc.sdpa's:
        then no library call happens before the first call of the module)."""
        super().__init__()
        (self.spec_name, self.normalization, self.params,
         self.captures) = description or _inspect(text, spec_name)
        self.lse = lse
        self._key = f"{self.spec_name}#{len(_ops.SPECS)}"
        _ops.SPECS[self._key] = _ops.Spec(text, spec_name, arch, plan, cache_dir,
                                          num_threads)
        self._what = f"rbfc: {self.spec_name}"
        # Without the C module (a source tree's package) the first call
        # raises, when it builds a kernel.
        launcher = _ops.launcher()
        self._calls = launcher and launcher.Calls(
            tuple(self.captures),
            {name: (slot, kind == "i32", has_default)
             for slot, (name, (kind, has_default)) in enumerate(self.params.items())},
            MAX_LAUNCHES, lse)
        self._no_params = None

    def __call__(self, *args, **kwargs):
        # A call whose signature a checked call had runs from C, skipping
        # nn.Module's call machinery (about 2 us a call even without hooks)
        # when no hook would run: the launch overhead is what a model
        # serving small batches pays every layer. torch.compile traces the
        # usual path (it cannot trace into C).
        if self._calls and not torch.compiler.is_compiling():
            result = self._calls.call(args, kwargs, self)
            if result is not None:
                return result
        if (self._forward_hooks or self._forward_pre_hooks
                or self._backward_hooks or self._backward_pre_hooks
                or _module._global_forward_hooks
                or _module._global_forward_pre_hooks
                or _module._global_backward_hooks
                or _module._global_backward_pre_hooks
                or torch.compiler.is_compiling()):
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)

    def extra_repr(self):
        return (f"{self.spec_name}, normalize={self.normalization}, "
                f"params={list(self.params)}, captures={list(self.captures)}")

    def _fail(self, message):
        raise RbfcError(f"{self._what}: {message}")

    def forward(self, q, k, v, params=None, captures=None, return_lse=None,
                layout="bhnd", q_offset=0, kv_offset=0, q_seq_len=None,
                kv_seq_len=None):
        """Attention of q over k, v. q is [B, H, Nq, D] and k, v [B, Hkv, Nkv, D]
        with layout "bhnd", or [B, Nq, H, D] and [B, Nkv, Hkv, D] with "bnhd"
        (strided views are fine; the head_dim stride must be 1); H a multiple of
        Hkv (GQA: query head h reads key/value head h // (H // Hkv)).

        params:     {name: value} for the spec's params; a missing one takes
                    its default. An f32 param may be a one-element float
                    tensor, which gets a gradient when it requires one (it is
                    read on the host: a device synchronisation for a CUDA
                    tensor).
        captures:   {name: tensor} for every captured tensor of the spec, on
                    q's device; f32 captures that require grad get one.
        return_lse: also return the log-sum-exp [B, H, Nq] (float32); default:
                    the lse given to rbfc.compile.
        q_offset, kv_offset, q_seq_len, kv_seq_len: for q and k, v that are
                    blocks of a longer sequence (split over calls or ranks):
                    where their rows start in it (ints >= 0) and its lengths
                    (None: offset + the block's length). The spec sees
                    q_idx + q_offset, kv_idx + kv_offset and the whole
                    lengths as q_len and kv_len, so each block gets its
                    exact part of every mask, position term and capture
                    read; rbfc.merge_attention combines the key blocks'
                    (o, lse), and rbfc.distributed.ring_attention does both.
        Returns o in q's layout (contiguous), or (o, lse).
        """
        block = self._sequence_block(q_offset, kv_offset, q_seq_len, kv_seq_len)
        if return_lse is None:
            return_lse = self.lse
        if layout not in LAYOUTS:
            self._fail(f"layout: expected 'bhnd' or 'bnhd', got {layout!r}")
        bnhd = layout == "bnhd"
        self._check_tensors(q, k, v, layout)
        param_values, param_slots, tensor_params, tensor_param_slots = (
            self._check_params(params))
        capture_list = self._check_captures(captures, q)
        backward = torch.is_grad_enabled() and bool(
            q.requires_grad or k.requires_grad or v.requires_grad
            or (tensor_params and any(t.requires_grad for t in tensor_params))
            or (capture_list and any(c.requires_grad for c in capture_list)))
        args = (self._key, q, k, v, capture_list, param_values, param_slots,
                tensor_params, tensor_param_slots, bool(return_lse), backward, bnhd,
                list(block))
        # Eager calls skip the dispatcher (about 35 us a call on the host,
        # 60 on the GPU machine, each way): with autograd through
        # EagerAttention, without it straight to the kernel. Tracing, tensor
        # subclasses and dispatch modes go through the custom op.
        if (torch.compiler.is_compiling()
                or _get_current_dispatch_mode() is not None
                or type(q) is not torch.Tensor or type(k) is not torch.Tensor
                or type(v) is not torch.Tensor):
            o, lse = _ops.attention(*args)
        elif backward:
            o, lse = _ops.EagerAttention.apply(
                (self._key, param_values, param_slots, tensor_param_slots,
                 bool(return_lse), bnhd, len(capture_list), block),
                q, k, v, *capture_list, *tensor_params)
        else:
            forward_launch = _ops.launch(self._key, q, k, v, capture_list,
                                         bool(return_lse), False, bnhd)
            o, lse = _ops.run(forward_launch, q, k, v, capture_list,
                              forward_launch.kernel.param_values(
                                  param_values, param_slots, tensor_params,
                                  tensor_param_slots), block)
            # An eager call without autograd on plain tensors: later calls
            # with its signature take its launch.
            signature = self._calls.signature(q, k, v, captures, layout,
                                              return_lse)
            if signature is not None:
                self._calls.add(signature, forward_launch)
        return (o, lse) if return_lse else o

    def _sequence_block(self, q_offset, kv_offset, q_seq_len, kv_seq_len):
        """(q_offset, kv_offset, q_seq_len, kv_seq_len) as the library takes
        them (a whole length of 0: offset + the block's length), NO_BLOCK
        for a call that is the whole sequence; the library checks them
        against the lengths."""
        if not (q_offset or kv_offset or q_seq_len is not None
                or kv_seq_len is not None):
            return _ops.NO_BLOCK
        block = []
        for name, value in (("q_offset", q_offset), ("kv_offset", kv_offset),
                            ("q_seq_len", q_seq_len), ("kv_seq_len", kv_seq_len)):
            if value is None and name.endswith("seq_len"):
                value = 0
            elif (isinstance(value, bool) or not isinstance(value, int)
                  or value < (0 if name.endswith("offset") else 1)):
                self._fail(f"{name}: expected an int >= "
                           f"{0 if name.endswith('offset') else 1}"
                           f"{' or None' if name.endswith('seq_len') else ''}, "
                           f"got {value!r}")
            block.append(value)
        return tuple(block)

    def _check_tensors(self, q, k, v, layout):
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor):
                self._fail(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 4:
                self._fail(f"{name}: expected 4 dimensions {LAYOUTS[layout]} "
                           f"(layout {layout!r}), got shape {tuple(t.shape)}")
        device = q.device
        if device.type not in DEVICE_DTYPES:
            self._fail(f"q: on {device}; rbfc runs on cpu and cuda tensors")
        for name, t in (("k", k), ("v", v)):
            if t.device != device:
                self._fail(f"{name}: on {t.device}, but q is on {device}")
            if t.dtype != q.dtype:
                self._fail(f"{name}: dtype {t.dtype}, but q is {q.dtype}")
        if q.dtype not in DEVICE_DTYPES[device.type]:
            self._fail(f"q: dtype {q.dtype}; on {device.type} rbfc takes "
                       + ", ".join(str(d) for d in DEVICE_DTYPES[device.type]))
        heads_dim = 2 if layout == "bnhd" else 1
        batch, heads, head_dim = q.shape[0], q.shape[heads_dim], q.shape[3]
        kv_heads = k.shape[heads_dim]
        if v.shape != k.shape:
            self._fail(f"v: shape {tuple(v.shape)}, but k is {tuple(k.shape)}")
        if k.shape[0] != batch:
            self._fail(f"k: batch {k.shape[0]}, but q's is {batch}")
        if k.shape[3] != head_dim:
            self._fail(f"k: head_dim {k.shape[3]}, but q's is {head_dim}")
        if kv_heads < 1 or heads % kv_heads != 0:
            self._fail(f"k: {kv_heads} heads; q's {heads} heads must be a multiple "
                       "of them (GQA)")
        cuda = device.type == "cuda"
        for name, t in (("q", q), ("k", k), ("v", v)):
            strides = t.stride()
            # head_dim is the last dimension in both layouts.
            if head_dim > 1 and strides[3] != 1:
                self._fail(f"{name}: the head_dim stride must be 1, got strides "
                           f"{strides}; pass {name}.contiguous()")
            # CUDA kernels copy rows in 16-byte chunks (docs/abi.md).
            if cuda and (strides[0] % 8 or strides[1] % 8 or strides[2] % 8):
                self._fail(f"{name}: strides {strides} must be multiples of 8 "
                           f"elements (16 bytes) but the last; pass "
                           f"{name}.contiguous()")

    def _check_params(self, params):
        if params is None:
            # What no params give is the same at every call.
            if self._no_params is None:
                self._no_params = self._check_params({})
            return self._no_params
        if not isinstance(params, dict):
            self._fail(f"params: expected a dict {{name: value}}, got "
                       f"{type(params).__name__}")
        names = list(self.params)
        for name in params:
            if name not in self.params:
                self._fail(f"params: unknown param {name!r}; the spec declares "
                           f"{names}")
        values, slots, tensors, tensor_slots = [], [], [], []
        for slot, (name, (kind, has_default)) in enumerate(self.params.items()):
            if name not in params:
                if not has_default:
                    self._fail(f"params: {name!r} has no default; pass it")
                continue
            value = params[name]
            if isinstance(value, torch.Tensor):
                if kind != "f32" or not value.is_floating_point() or value.numel() != 1:
                    self._fail(f"params[{name!r}]: a tensor must be a one-element "
                               f"float tensor for an f32 param; got {value.dtype} "
                               f"of shape {tuple(value.shape)} for a {kind} param")
                tensors.append(value)
                tensor_slots.append(slot)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self._fail(f"params[{name!r}]: expected a number, got "
                           f"{type(value).__name__}")
            if kind == "i32" and value != int(value):
                self._fail(f"params[{name!r}]: an int param, got {value}")
            values.append(float(value))
            slots.append(slot)
        return values, slots, tensors, tensor_slots

    def _check_captures(self, captures, q):
        captures = {} if captures is None else captures
        if not isinstance(captures, dict):
            self._fail(f"captures: expected a dict {{name: tensor}}, got "
                       f"{type(captures).__name__}")
        for name in captures:
            if name not in self.captures:
                self._fail(f"captures: unknown capture {name!r}; the spec "
                           f"declares {list(self.captures)}")
        tensors = []
        for name, (kind, rank) in self.captures.items():
            if name not in captures:
                self._fail(f"captures: {name!r} is missing (the spec captures "
                           f"{kind} of rank {rank})")
            t = captures[name]
            what = f"captures[{name!r}]"
            if not isinstance(t, torch.Tensor):
                self._fail(f"{what}: expected a torch.Tensor, got {type(t).__name__}")
            if t.dtype != CAPTURE_DTYPES[kind]:
                self._fail(f"{what}: dtype {t.dtype}; the spec declares {kind} "
                           f"({CAPTURE_DTYPES[kind]})")
            if t.dim() != rank:
                self._fail(f"{what}: {t.dim()} dimensions; the spec declares "
                           f"rank {rank}")
            if t.device != q.device:
                self._fail(f"{what}: on {t.device}, but q is on {q.device}")
            if any(size < 1 for size in t.shape):
                self._fail(f"{what}: shape {tuple(t.shape)}; every dimension must "
                           "be >= 1 (indices are clamped into it)")
            tensors.append(t)
        return tensors
