"""rbfc from Python: attention variants written as score expressions, compiled
in-process by librbfc and run as a PyTorch op (autograd and torch.compile
included).

    import rbfc
    attn = rbfc.compile("examples/rbf.attn")     # a path or spec text
    o = attn(q, k, v)                            # CPU or CUDA tensors
    o = rbfc.sdpa(q, k, v, is_causal=True)       # F.scaled_dot_product_attention's swap

docs/python.md describes the package. rbfc.runtime (Kernel, compile_spec) is
the older path through the rbfc binary and librbfc_runtime.so that the GPU
test scripts use.
"""
from ._capi import cache_stats, clear_memory_cache
from .attention import Attention, compile
from .errors import RbfcError
from .merge import merge_attention
from .runtime import Kernel, compile_spec, rbfc_binary, runtime_library
from .sdpa import sdpa

__version__ = "0.1.0"

__all__ = ["Attention", "Kernel", "RbfcError", "cache_stats", "clear_memory_cache",
           "compile", "compile_spec", "merge_attention", "rbfc_binary",
           "runtime_library", "sdpa"]
