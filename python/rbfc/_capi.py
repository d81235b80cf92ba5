"""ctypes declarations of librbfc's C API (include/rbfc/rbfc.h and runtime.h).

The library is found at $RBFC_LIBRARY, else in this package (rbfc/lib/, where
`pip install ./python` and the wheel put it), else in the source tree's
build/lib/ (running from a checkout).
"""
import ctypes
import os
from pathlib import Path

from .errors import RbfcError

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parents[1]

API_VERSION = 2
MAX_RANK = 4
DTYPES = {"bf16": 0, "f16": 1, "f32": 2, "i32": 3, "i64": 4}
DTYPE_NAMES = {code: name for name, code in DTYPES.items()}
TARGETS = {"host": 0, "cuda": 1}

OK = 0
ERROR_INVALID_ARGUMENT = 1
ERROR_SPEC = 6
ERROR_UNSUPPORTED = 7


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("rank", ctypes.c_int32),
                ("sizes", ctypes.c_int64 * MAX_RANK),
                ("strides", ctypes.c_int64 * MAX_RANK), ("dtype", ctypes.c_int)]


class KernelInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("entry", ctypes.c_char_p),
                ("arch", ctypes.c_char_p), ("normalization", ctypes.c_char_p),
                ("plan", ctypes.c_char_p), ("dtype", ctypes.c_int),
                ("head_dim", ctypes.c_int32), ("has_lse", ctypes.c_int32),
                ("tile_m", ctypes.c_int32), ("tile_n", ctypes.c_int32),
                ("warps", ctypes.c_int32), ("stages", ctypes.c_int32),
                ("shared_memory_bytes", ctypes.c_int64),
                ("num_params", ctypes.c_int32), ("num_captures", ctypes.c_int32),
                ("key_terms", ctypes.c_int32)]


class ParamInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("type", ctypes.c_int),
                ("has_default", ctypes.c_int32), ("default_value", ctypes.c_double)]


class CaptureInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("type", ctypes.c_int),
                ("rank", ctypes.c_int32)]


class SpecInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("name", ctypes.c_char_p),
                ("normalization", ctypes.c_char_p), ("num_params", ctypes.c_int32),
                ("num_captures", ctypes.c_int32)]


class CompileOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("target", ctypes.c_int),
                ("head_dim", ctypes.c_int32), ("dtype", ctypes.c_int),
                ("lse", ctypes.c_int32), ("backward", ctypes.c_int32),
                ("arch", ctypes.c_char_p), ("plan", ctypes.c_char_p),
                ("cache_dir", ctypes.c_char_p)]


class KernelProperties(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("target", ctypes.c_int),
                ("has_backward", ctypes.c_int32), ("info", KernelInfo)]


class ForwardArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("q", Tensor), ("k", Tensor),
                ("v", Tensor), ("o", Tensor), ("lse", Tensor),
                ("params", ctypes.POINTER(ctypes.c_double)),
                ("num_params", ctypes.c_size_t),
                ("captures", ctypes.POINTER(Tensor)),
                ("num_captures", ctypes.c_size_t), ("workspace", ctypes.c_void_p),
                ("workspace_bytes", ctypes.c_size_t),
                ("num_threads", ctypes.c_int32),
                ("q_offset", ctypes.c_int64), ("kv_offset", ctypes.c_int64),
                ("q_seq_len", ctypes.c_int64), ("kv_seq_len", ctypes.c_int64)]


class BackwardArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("q", Tensor), ("k", Tensor),
                ("v", Tensor), ("o", Tensor), ("lse", Tensor), ("grad_o", Tensor),
                ("grad_lse", Tensor), ("grad_q", Tensor), ("grad_k", Tensor),
                ("grad_v", Tensor), ("params", ctypes.POINTER(ctypes.c_double)),
                ("num_params", ctypes.c_size_t),
                ("captures", ctypes.POINTER(Tensor)),
                ("num_captures", ctypes.c_size_t),
                ("grad_params", ctypes.POINTER(ctypes.c_void_p)),
                ("grad_captures", ctypes.POINTER(Tensor)),
                ("num_threads", ctypes.c_int32),
                ("workspace", ctypes.c_void_p),
                ("workspace_bytes", ctypes.c_size_t),
                ("q_offset", ctypes.c_int64), ("kv_offset", ctypes.c_int64),
                ("q_seq_len", ctypes.c_int64), ("kv_seq_len", ctypes.c_int64)]


class CacheStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("compiles", ctypes.c_uint64),
                ("memory_hits", ctypes.c_uint64), ("disk_hits", ctypes.c_uint64),
                ("disk_rejected", ctypes.c_uint64),
                ("disk_write_failures", ctypes.c_uint64)]


def library_path():
    """Where librbfc.so is: $RBFC_LIBRARY, this package, or build/lib."""
    if os.environ.get("RBFC_LIBRARY"):
        path = Path(os.environ["RBFC_LIBRARY"])
        if not path.is_file():
            raise RbfcError(f"RBFC_LIBRARY={path} does not exist")
        return path
    for path in (PACKAGE / "lib" / "librbfc.so", REPO / "build" / "lib" / "librbfc.so"):
        if path.is_file():
            return path
    raise RbfcError("librbfc.so not found: install the package (pip install "
                    "./python after scripts/build.sh rbfc_library), or set "
                    "RBFC_LIBRARY")


_LIB = None


def lib():
    """The loaded library, with every function's signature declared."""
    global _LIB
    if _LIB is not None:
        return _LIB
    handle = ctypes.CDLL(str(library_path()))
    P = ctypes.POINTER
    c_void_p, c_char_p, c_int32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32
    signatures = {
        "rbfc_api_version": ([], c_int32),
        "rbfc_last_error": ([], c_char_p),
        "rbfc_spec_parse": ([c_char_p, c_char_p, P(c_void_p)], ctypes.c_int),
        "rbfc_spec_release": ([c_void_p], None),
        "rbfc_spec_get_info": ([c_void_p, P(SpecInfo)], ctypes.c_int),
        "rbfc_spec_param": ([c_void_p, c_int32, P(ParamInfo)], ctypes.c_int),
        "rbfc_spec_capture": ([c_void_p, c_int32, P(CaptureInfo)], ctypes.c_int),
        "rbfc_compile": ([c_char_p, c_char_p, P(CompileOptions), P(c_void_p)],
                         ctypes.c_int),
        "rbfc_kernel_release": ([c_void_p], None),
        "rbfc_kernel_get_properties": ([c_void_p, P(KernelProperties)], ctypes.c_int),
        "rbfc_kernel_param": ([c_void_p, c_int32, P(ParamInfo)], ctypes.c_int),
        "rbfc_kernel_backward_workspace_bytes": ([c_void_p, P(Tensor), P(Tensor),
                                                  P(ctypes.c_size_t)], ctypes.c_int),
        "rbfc_kernel_workspace_bytes": ([c_void_p, P(Tensor), P(Tensor),
                                         P(ctypes.c_size_t)], ctypes.c_int),
        "rbfc_forward": ([c_void_p, P(ForwardArgs), c_void_p], ctypes.c_int),
        "rbfc_backward": ([c_void_p, P(BackwardArgs), c_void_p], ctypes.c_int),
        "rbfc_cache_get_stats": ([P(CacheStats)], ctypes.c_int),
        "rbfc_cache_clear_memory": ([], None),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(handle, name)
        function.argtypes = argtypes
        function.restype = restype
    if handle.rbfc_api_version() != API_VERSION:
        raise RbfcError(f"{library_path()} has API version "
                        f"{handle.rbfc_api_version()}; this package reads "
                        f"version {API_VERSION}")
    _LIB = handle
    return handle


def last_error():
    return lib().rbfc_last_error().decode(errors="replace")


def check(status):
    """Raises RbfcError with the library's message unless `status` is OK."""
    if status != OK:
        raise RbfcError(last_error(), status=status)


def sized(struct_type):
    """An instance of a versioned struct with its struct_size set."""
    value = struct_type()
    value.struct_size = ctypes.sizeof(struct_type)
    return value


def cache_stats():
    """rbfc_cache_stats as a dict."""
    stats = sized(CacheStats)
    check(lib().rbfc_cache_get_stats(ctypes.byref(stats)))
    return {name: getattr(stats, name) for name, _ in CacheStats._fields_[1:]}


def clear_memory_cache():
    lib().rbfc_cache_clear_memory()
