"""ctypes bindings of include/rbfc/runtime.h and a small Kernel class.

    from rbfc import Kernel
    attn = Kernel("examples/rbf.attn", head_dim=128, dtype="bf16", lse=True)
    o, lse = attn(q, k, v, lse=True)            # q, k, v: torch CUDA tensors

The rbfc binary comes from $RBFC_BIN, else .carry/bin/rbfc (unpacked from
.carry/bin/rbfc.xz when only that is there, see scripts/prepare-gpu.sh),
else build/bin/rbfc; the runtime from $RBFC_RUNTIME, else
.carry/lib/librbfc_runtime.so, else build/lib/librbfc_runtime.so.
"""
import ctypes
import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ._capi import (DTYPE_NAMES, MAX_RANK, CaptureInfo, KernelInfo, ParamInfo,
                    Tensor)
from .errors import RbfcError

REPO = Path(__file__).resolve().parents[2]



def _first_existing(paths):
    for p in paths:
        if p and Path(p).is_file():
            return Path(p)
    return None


def _env_path(name):
    """The file environment variable `name` names; None when it is unset."""
    if not os.environ.get(name):
        return None
    path = Path(os.environ[name])
    if not path.is_file():
        raise RbfcError(f"{name}={path} does not exist")
    return path


def rbfc_binary():
    """Path of the rbfc compiler binary."""
    path = _env_path("RBFC_BIN")
    if path:
        return path
    carried = REPO / ".carry" / "bin" / "rbfc"
    packed = carried.with_name("rbfc.xz")
    if not carried.is_file() and packed.is_file():
        # Unpacked outside the tree (it would not fit a device call's 64 MiB),
        # once per archive.
        stat = packed.stat()
        carried = (Path(tempfile.gettempdir()) /
                   f"rbfc-{stat.st_size}-{int(stat.st_mtime)}" / "rbfc")
        if not carried.is_file():
            carried.parent.mkdir(parents=True, exist_ok=True)
            tmp = carried.with_name(f"rbfc.tmp{os.getpid()}")
            with lzma.open(packed) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp.chmod(0o755)
            os.replace(tmp, carried)
    path = _first_existing([carried, REPO / "build" / "bin" / "rbfc"])
    if path is None:
        raise RbfcError("no rbfc binary: set RBFC_BIN, run scripts/prepare-gpu.sh "
                        "(.carry/bin/rbfc) or build build/bin/rbfc")
    return path


def runtime_library():
    """Path of librbfc_runtime.so."""
    path = _env_path("RBFC_RUNTIME")
    if path:
        return path
    path = _first_existing([REPO / ".carry" / "lib" / "librbfc_runtime.so",
                            REPO / "build" / "lib" / "librbfc_runtime.so"])
    if path is None:
        raise RbfcError("no librbfc_runtime.so: set RBFC_RUNTIME or run "
                        "scripts/prepare-gpu.sh")
    return path


_LIB = None


def _lib():
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(runtime_library()))
        P = ctypes.POINTER
        lib.rbfc_module_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                         P(ctypes.c_void_p)]
        lib.rbfc_module_destroy.argtypes = [ctypes.c_void_p]
        lib.rbfc_module_destroy.restype = None
        lib.rbfc_module_info.argtypes = [ctypes.c_void_p, P(KernelInfo)]
        lib.rbfc_module_param.argtypes = [ctypes.c_void_p, ctypes.c_int32, P(ParamInfo)]
        lib.rbfc_module_capture.argtypes = [ctypes.c_void_p, ctypes.c_int32,
                                            P(CaptureInfo)]
        launch_args = [ctypes.c_void_p] + [P(Tensor)] * 5 + [
            P(ctypes.c_double), ctypes.c_size_t, P(Tensor), ctypes.c_size_t]
        lib.rbfc_launch.argtypes = launch_args + [ctypes.c_void_p]
        lib.rbfc_launch_with_workspace.argtypes = launch_args + [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        lib.rbfc_workspace_bytes.argtypes = [ctypes.c_void_p, P(Tensor), P(Tensor),
                                             P(ctypes.c_size_t)]
        lib.rbfc_last_error.restype = ctypes.c_char_p
        for fn in ("rbfc_module_load", "rbfc_module_info", "rbfc_module_param",
                   "rbfc_module_capture", "rbfc_launch", "rbfc_launch_with_workspace",
                   "rbfc_workspace_bytes"):
            getattr(lib, fn).restype = ctypes.c_int
        _LIB = lib
    return _LIB


def _check(status):
    if status != 0:
        raise RbfcError(_lib().rbfc_last_error().decode(errors="replace"))


def compile_spec(spec, out_dir, head_dim=64, dtype="bf16", lse=False,
                 arch="sm_90a", plan=None, emit="ptx"):
    """Runs `rbfc SPEC --emit=ptx|cubin ...`; returns (image, descriptor) paths."""
    spec = Path(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.stem}_d{head_dim}_{dtype}{'_lse' if lse else ''}"
    image = out_dir / f"{stem}.{emit}"
    cmd = [str(rbfc_binary()), str(spec), f"--emit={emit}", f"--arch={arch}",
           f"--head-dim={head_dim}", f"--dtype={dtype}", "-o", str(image)]
    if lse:
        cmd.append("--lse")
    if plan:
        cmd.append(f"--plan={plan}")
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RbfcError(f"{' '.join(cmd)} failed ({run.returncode}):\n"
                        f"{run.stderr.strip()}")
    return image, image.with_suffix(".json")


def _torch_dtype_code(t):
    import torch
    codes = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2,
             torch.int32: 3, torch.int64: 4}
    if t.dtype not in codes:
        raise RbfcError(f"unsupported tensor dtype {t.dtype}")
    return codes[t.dtype]


def _view(t, what):
    if not t.is_cuda:
        raise RbfcError(f"{what}: expected a CUDA tensor, got one on {t.device}")
    if t.dim() > MAX_RANK:
        raise RbfcError(f"{what}: rank {t.dim()} > {MAX_RANK}")
    view = Tensor()
    view.data = t.data_ptr()
    view.rank = t.dim()
    for i, (size, stride) in enumerate(zip(t.shape, t.stride())):
        view.sizes[i] = size
        view.strides[i] = stride
    view.dtype = _torch_dtype_code(t)
    return view


class Kernel:
    """One compiled spec, loaded into the current CUDA context."""

    def __init__(self, spec=None, head_dim=64, dtype="bf16", lse=False,
                 arch="sm_90a", plan=None, emit="ptx", out_dir=None,
                 image=None, descriptor=None):
        if image is None:
            if spec is None:
                raise RbfcError("Kernel needs a spec or an image and descriptor")
            out_dir = out_dir or tempfile.mkdtemp(prefix="rbfc-")
            image, descriptor = compile_spec(spec, out_dir, head_dim, dtype, lse,
                                             arch, plan, emit)
        self.image, self.descriptor = Path(image), Path(descriptor)
        lib = _lib()
        handle = ctypes.c_void_p()
        _check(lib.rbfc_module_load(str(self.image).encode(),
                                    str(self.descriptor).encode(),
                                    ctypes.byref(handle)))
        self._handle = handle
        info = KernelInfo()
        _check(lib.rbfc_module_info(handle, ctypes.byref(info)))
        self.info = {name: getattr(info, name) for name, _ in KernelInfo._fields_}
        for key in ("name", "entry", "arch", "normalization", "plan"):
            self.info[key] = self.info[key].decode()
        self.info["dtype"] = DTYPE_NAMES[info.dtype]
        self.params = []
        for i in range(info.num_params):
            p = ParamInfo()
            _check(lib.rbfc_module_param(handle, i, ctypes.byref(p)))
            self.params.append((p.name.decode(), DTYPE_NAMES[p.type],
                                p.default_value if p.has_default else None))
        self.captures = []
        for i in range(info.num_captures):
            c = CaptureInfo()
            _check(lib.rbfc_module_capture(handle, i, ctypes.byref(c)))
            self.captures.append((c.name.decode(), DTYPE_NAMES[c.type], c.rank))

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle and _LIB is not None:
            _LIB.rbfc_module_destroy(handle)
            self._handle = None

    def param_values(self, params):
        """The values of every param in declaration order: `params` is None, a
        dict by name (the rest take their defaults) or a full sequence."""
        if params is None:
            params = {}
        if isinstance(params, dict):
            known = {name for name, _, _ in self.params}
            unknown = set(params) - known
            if unknown:
                raise RbfcError(f"unknown param(s) {sorted(unknown)}; the spec "
                                f"declares {sorted(known)}")
            values = []
            for name, _, default in self.params:
                if name in params:
                    values.append(float(params[name]))
                elif default is None:
                    raise RbfcError(f"param '{name}' has no default; pass it")
                else:
                    values.append(default)
            return values
        values = [float(x) for x in params]
        if len(values) != len(self.params):
            raise RbfcError(f"the spec declares {len(self.params)} param(s), "
                            f"got {len(values)}")
        return values

    def launcher(self, q, k, v, params=None, captures=(), out=None, lse_out=None):
        """Checks and packs the arguments once; returns (launch, o, lse) where
        launch() runs the kernel on the current stream (for benchmarks: no
        per-call Python work beyond the ctypes call). `out`/`lse_out` are
        written in place when given (any strides the ABI allows).

        A kernel with key terms gets its workspace here, once, from PyTorch's
        caching allocator, so that launch() allocates nothing; launches of one
        launcher share it, so run them on one stream."""
        import torch
        o = out if out is not None else torch.empty_like(
            q, memory_format=torch.contiguous_format)
        lse_t = lse_out
        if lse_t is None and self.info["has_lse"]:
            lse_t = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
        values = self.param_values(params)
        if isinstance(captures, dict):
            names = [name for name, _, _ in self.captures]
            if set(captures) != set(names):
                raise RbfcError(f"captures {sorted(captures)} do not match the "
                                f"spec's {names}")
            captures = [captures[name] for name in names]
        if len(captures) != len(self.captures):
            raise RbfcError(f"the spec declares {len(self.captures)} capture(s), "
                            f"got {len(captures)}")
        views = [_view(t, f"capture '{name}'") for t, (name, _, _) in
                 zip(captures, self.captures)]
        qv, kv, vv, ov = (_view(t, n) for t, n in ((q, "q"), (k, "k"), (v, "v"), (o, "o")))
        lv = _view(lse_t, "lse") if lse_t is not None else None
        param_array = (ctypes.c_double * max(len(values), 1))(*values)
        capture_array = (Tensor * max(len(views), 1))(*views)
        lib, handle, device = _lib(), self._handle, q.device
        nbytes = ctypes.c_size_t()
        _check(lib.rbfc_workspace_bytes(handle, ctypes.byref(qv), ctypes.byref(kv),
                                        ctypes.byref(nbytes)))
        workspace = (torch.empty(nbytes.value, device=device, dtype=torch.uint8)
                     if nbytes.value else None)
        args = (ctypes.byref(qv), ctypes.byref(kv), ctypes.byref(vv), ctypes.byref(ov),
                ctypes.byref(lv) if lv is not None else None, param_array, len(values),
                capture_array, len(views),
                ctypes.c_void_p(workspace.data_ptr() if workspace is not None else None),
                nbytes.value)

        def launch():
            stream = torch.cuda.current_stream(device).cuda_stream
            _check(lib.rbfc_launch_with_workspace(handle, *args, ctypes.c_void_p(stream)))

        # The device memory the packed pointers name, and the module whose
        # functions it launches, must outlive the launcher.
        launch.tensors = (q, k, v, o, lse_t, captures, workspace)
        launch.kernel = self
        return launch, o, lse_t

    def __call__(self, q, k, v, params=None, captures=(), lse=False, out=None,
                 lse_out=None):
        """Runs the kernel on the current stream; returns o, or (o, lse)."""
        import torch
        if lse and not self.info["has_lse"]:
            raise RbfcError("lse=True needs a kernel compiled with lse=True (--lse)")
        launch, o, lse_t = self.launcher(q, k, v, params, captures, out, lse_out)
        with torch.cuda.device(q.device):
            launch()
        return (o, lse_t) if lse else o
