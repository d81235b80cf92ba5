#!/usr/bin/env python3
"""What compiling and calling through librbfc costs (the Python package).

    python3 bench/bench_jit.py --device cuda     # on the GPU machine, wheel installed
    python3 bench/bench_jit.py --device cpu      # anywhere: host kernels, and
                                                 # CUDA compiles to PTX (no load)

Compile, for examples/rbf.attn (head_dim 64, bf16 on CUDA, f32 on the host),
each in a fresh process:
  cold      empty disk cache: spec text to a kernel that has run once (CUDA:
            compiled to PTX, loaded into the context, launched; host: compiled
            by the ORC JIT and run)
  disk hit  the same in a new process over the cache the cold run filled
            (CUDA only: host kernels are not cached on disk)
  import    `import rbfc` (torch included) in that process, for scale
and in this process:
  memory    rbfc_compile of a kernel already built (the C call through ctypes)
On --device cpu also `ptx cold` / `ptx disk hit`: the CUDA compile without a
GPU (spec text to PTX and descriptor; the module is not loaded).

Per call, on a tiny problem (CUDA 1x1x128x64, host 1x1x8x64, one thread)
so that the host side dominates,
mean over --calls back-to-back calls (CUDA: then one synchronisation),
median of 5 rounds:
  op        attn(q, k, v) under no_grad, as a model's layers call it: a
            signature seen before, so rbfc._launcher runs it from C (the
            signature, the output allocation, the pointers, the call)
  op direct torch.ops.rbfc.attention(...), the custom op through the
            dispatcher (what autograd and torch.compile call), without the
            module's checks
  bare      rbfc_forward through ctypes with arguments packed once: the
            library's own checks and the launch (host: the kernel run)
Writes bench/results/<date>-<device>-jit.json (and $OUT/ when set).
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "rbf.attn"


def child(kind, device):
    """Runs in a fresh process: prints the timings of one compile as JSON."""
    start = time.perf_counter()
    import torch

    import rbfc
    from rbfc import _capi
    imported = time.perf_counter()
    text = SPEC.read_text()
    if kind.startswith("ptx"):
        options = _capi.sized(_capi.CompileOptions)
        options.target, options.head_dim = _capi.TARGETS["cuda"], 64
        options.dtype, options.arch = _capi.DTYPES["bf16"], b"sm_90a"
        handle = ctypes.c_void_p()
        _capi.lib()
        begin = time.perf_counter()
        _capi.check(_capi.lib().rbfc_compile(text.encode(), b"rbf.attn",
                                             ctypes.byref(options),
                                             ctypes.byref(handle)))
    else:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        q = torch.randn(1, 1, 128, 64, device=device, dtype=dtype)
        _capi.lib()
        if device == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        rbfc.compile(text, name="rbf.attn")(q, q, q)
        if device == "cuda":
            torch.cuda.synchronize()
    end = time.perf_counter()
    print(json.dumps({"import_s": imported - start, "compile_s": end - begin,
                      "stats": _capi.cache_stats()}))


def fresh_process(kind, device, cache_dir):
    env = dict(os.environ, RBFC_CACHE_DIR=str(cache_dir))
    run = subprocess.run([sys.executable, __file__, "--child", kind, "--device", device],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def per_call(function, calls, synchronize):
    rounds = []
    for _ in range(5):
        synchronize()
        begin = time.perf_counter()
        for _ in range(calls):
            function()
        synchronize()
        rounds.append((time.perf_counter() - begin) / calls * 1e6)
    return statistics.median(rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.device)

    import torch

    import rbfc
    from rbfc import _capi, _ops
    result = {"date": datetime.date.today().isoformat(),
              "device": torch.cuda.get_device_name() if args.device == "cuda"
              else f"host CPU ({platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} threads) cpu",
              "torch": torch.__version__, "library": str(_capi.library_path()),
              "spec": "examples/rbf.attn", "head_dim": 64}
    compiles = [("cold", "compile")] + ([("disk hit", "compile")]
                                         if args.device == "cuda" else [])
    if args.device == "cpu":
        compiles += [("ptx cold", "ptx"), ("ptx disk hit", "ptx")]
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as ptx:
        for label, kind in compiles:
            measured = fresh_process(kind, args.device, ptx if kind == "ptx" else cache)
            result[f"{label} s"] = measured["compile_s"]
            result[f"{label} import s"] = measured["import_s"]
            result[f"{label} stats"] = measured["stats"]

    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    attn = rbfc.compile(SPEC, num_threads=1)
    q = torch.randn(1, 1, 128 if device == "cuda" else 8, 64, device=device,
                    dtype=dtype)
    attn(q, q, q)
    kernel = _ops.SPECS[attn._key].kernel(q, False, False)

    options = _capi.sized(_capi.CompileOptions)
    options.target = _capi.TARGETS["cuda" if device == "cuda" else "host"]
    options.head_dim, options.dtype = 64, _ops.DTYPE_CODES[dtype]
    handle = ctypes.c_void_p()
    text, lib = SPEC.read_text().encode(), _capi.lib()

    def compile_hit():
        lib.rbfc_compile(text, b"rbf.attn", ctypes.byref(options), ctypes.byref(handle))
        lib.rbfc_kernel_release(handle)

    result["memory hit us"] = per_call(compile_hit, args.calls, lambda: None)

    o = torch.empty_like(q)
    words = _ops._words(q)
    # The key-terms workspace, allocated once, as the op keeps one per
    # stream.
    workspace_bytes = kernel.workspace_size(words, words)
    workspace = (torch.empty(workspace_bytes, dtype=torch.uint8, device=device)
                 if workspace_bytes else None)
    packed = _capi.ForwardArgs.from_buffer_copy(_ops.FORWARD.pack(
        _ops.FORWARD.size, *words, *words, *words, *_ops._words(o), *_ops.NO_TENSOR,
        kernel.default_array[1], len(kernel.defaults), 0, 0,
        workspace.data_ptr() if workspace is not None else 0, workspace_bytes, 1,
        *_ops.NO_BLOCK))
    stream = torch.cuda.current_stream().cuda_stream if device == "cuda" else None

    def bare():
        lib.rbfc_forward(kernel.handle, ctypes.byref(packed), stream)

    _capi.check(lib.rbfc_forward(kernel.handle, ctypes.byref(packed), stream))

    def direct():
        _ops.attention(attn._key, q, q, q, [], [], [], [], [], False, False, False, [0, 0, 0, 0])

    with torch.no_grad():
        result["bare us"] = per_call(bare, args.calls, synchronize)
        result["op direct us"] = per_call(direct, args.calls, synchronize)
        result["op us"] = per_call(lambda: attn(q, q, q), args.calls, synchronize)
    result["op overhead us"] = result["op us"] - result["bare us"]
    for key, value in result.items():
        print(f"{key:24} {value:.4g}" if isinstance(value, float) else f"{key:24} {value}")
    sys.path.insert(0, str(REPO / "bench"))
    from results_file import write_result
    write_result(result, "jit")


if __name__ == "__main__":
    main()
