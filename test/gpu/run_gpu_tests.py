#!/usr/bin/env python3
"""GPU tests of rbfc's forward kernels (run on the GPU machine, from the repo root).

    python3 test/gpu/run_gpu_tests.py [--quick] [--seed N] [--only softmax,rbf]

Compiles every examples/*.attn with .carry/bin/rbfc (scripts/prepare-gpu.sh),
launches it through librbfc_runtime.so on fresh random inputs with NaN-poisoned
outputs, and compares with a float32 PyTorch reference written here per example,
independent of the compiler. Also runs a hand-written kernel with the ABI's
parameter list (abi_fixture.cu, when nvcc is there) to test the runtime alone,
and one small case per kernel and head dim (64, 80, 96, 128) under compute-sanitizer
memcheck, and racecheck on those of RACECHECK_SPECS. On sm_90 the default target (sm_90a) builds the wgmma kernels at head dims
64 (cooperative) and 128 (warp-specialised): the mma.sync kernel runs at both too
(compiled for sm_90, rows "<example>/mma"), and the warp-specialised kernel at 64 (by
its plan, rows "<example>/wgmma"), and sm_80's kernels at 64, 80 and 128 as PTX
the driver compiles for the card (rows "<example>/sm80").
Prints a table; exits non-zero on any failure. docs/gpu-testing.md explains it.
"""
import argparse
import gc
import glob
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "test" / "python"))

import torch  # noqa: E402

import references  # noqa: E402
import sanitizer  # noqa: E402

from rbfc import Kernel, RbfcError  # noqa: E402

DEV = "cuda"
TORCH_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}
# max|o - ref| / max|ref| per (batch, head); bf16 keeps 8 bits of mantissa.
TOLERANCE = {"bf16": 1e-2, "f16": 5e-3}
# With an LSE output the kernel's row sums add the f32 weights before they
# are rounded for P*V (FlashKernel.cpp, sumsUnroundedWeights), so the lse
# is off only by f32 arithmetic and the approximate exp2/log2: up to 1.1e-6
# (relative to 1 + |lse|) for every spec but alibi, whose key term slope *
# kv_idx and row term -slope * q_idx reach several hundred at 1000 keys and
# cancel in the lse (up to 2.6e-4, session 10). Summing the rounded weights
# instead (the kernels before session 10) gave up to ln(1 + 2^-8) = 3.9e-3
# in bf16.
LSE_TOLERANCE = 5e-4  # both element types: the sums are f32
NEG_INF = float("-inf")

# The examples: spec file and input scale. Their references (score, mask,
# normalisation) and captures are test/python/references.py's, shared with
# the backward and Python tests.
SPECS = {
    "softmax": ("softmax.attn", 1.0),
    "causal": ("causal.attn", 1.0),
    "alibi": ("alibi.attn", 1.0),
    "document_mask": ("document_mask.attn", 1.0),
    "prefix_lm": ("prefix_lm.attn", 1.0),
    "rbf": ("rbf.attn", 1.0),
    "rbf_causal": ("rbf_causal.attn", 1.0),
    "rbf_head_gamma": ("rbf_head_gamma.attn", 1.0),
    # Without softmax the weights are exp(score) themselves: inputs scaled so
    # that scores stay near -1 and sums over 1000 keys stay moderate.
    "rbf_none": ("rbf_none.attn", 0.25),
    "relative_bias": ("relative_bias.attn", 1.0),
    "sliding_window": ("sliding_window.attn", 1.0),
    "softcap": ("softcap.attn", 1.0),
}
assert set(SPECS) == set(references.SPECS)


def make_captures(spec, B, H, Nq, Nkv, g):
    return references.make_captures(spec, B, H, Nq, Nkv, g, DEV)


F16_SUBSET = ["softmax", "causal", "rbf", "softcap", "alibi"]
# Head dims 32 and 256 have their own plans (256: 64 x 32 tiles): these
# specs cover the score without and with key terms, with and without a mask.
OTHER_DIMS_SUBSET = ["softmax", "causal", "rbf", "rbf_causal", "alibi"]
# Every spec runs at 64, 128 and the released models' 80 and 96, whose rows
# are not a power of two of 16-byte chunks (swizzled in groups of 2 and 4
# chunks, copied in runs of 2 and 4). The subset adds 32, 256 and one head
# dim of each other row layout: 48 and 112 (groups of 2 under the 128-row
# plan), 160 and 240 (groups of 4 and 2 under the 64 x 32 one).
MAIN_DIMS = [64, 80, 96, 128]
OTHER_DIMS = [32, 48, 112, 160, 240, 256]
# On sm_90 the default target, sm_90a, builds the warp-specialised wgmma
# kernel at head dim 128, the cooperative wgmma kernel at 64 (the mma.sync
# kernel for specs that gather captures per element) and the mma.sync
# kernel elsewhere. The other structures run too, under the example's name
# with a suffix: the mma.sync kernel at 64 and 128 (compiled for sm_90:
# sm_80's kernel and the fallback) and the warp-specialised kernel at 64,
# by its plan, with TMA copies (copy = "tma") at 64 and 128, and with its
# consumers' softmax overlapped with the products (overlap = true; the
# default at 128 under a mask and for dot's scores) at 64 and with 160-key
# tiles at 128, and
# with three consumer warpgroups (192-row query tiles, FlashAttention-3's
# head_dim 64 structure) at 64 with either copy engine and with the
# overlap, whose last query tile of 17, 8, 108 or 40 rows (Nq = 17, 200,
# 300, 1000) leaves whole warpgroups past q_len; and the cooperative
# kernel with three warpgroups (96-key tiles: its 384 threads copy 48 rows
# a pass). And sm_80's kernels (PTX the driver compiles for this card) at
# 64, 80 and 128, whose plans differ from sm_90's where a gather per element
# or a key bias under a mask takes narrower tiles.
# (suffix, head dim, arch or None, plan or None)
STRUCTURES = [
    ("/mma", 64, "sm_90", None),
    ("/mma", 128, "sm_90", None),
    ("/wgmma", 64, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, '
                         'tile_n = 128, warps = 8, stages = 3>'),
    ("/tma", 64, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, '
                       'tile_n = 128, warps = 8, stages = 4, key_terms = "bulk", '
                       'copy = "tma">'),
    ("/tma", 128, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, '
                        'tile_n = 128, warps = 8, stages = 2, key_terms = "bulk", '
                        'copy = "tma">'),
    # The key terms computed by the producer's idle warps (the small-problem
    # kernel's at 64) at 128, and beside three consumer warpgroups.
    ("/producer", 128, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, '
                             'tile_n = 128, warps = 8, stages = 2, key_terms = "producer", '
                             'copy = "tma">'),
    ("/producer3", 64, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 192, '
                             'tile_n = 128, warps = 12, stages = 2, key_terms = "producer", '
                             'copy = "tma">'),
    ("/overlap", 64, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, '
                           'tile_n = 128, warps = 8, stages = 4, key_terms = "bulk", '
                           'copy = "tma", overlap = true>'),
    ("/overlap", 128, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, '
                            'tile_n = 160, warps = 8, stages = 2, key_terms = "bulk", '
                            'copy = "tma", overlap = true>'),
    ("/wg3", 64, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 192, '
                       'tile_n = 128, warps = 12, stages = 2, key_terms = "global", '
                       'copy = "tma">'),
    ("/wg3overlap", 64, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", '
                              'tile_m = 192, tile_n = 128, warps = 12, stages = 2, '
                              'key_terms = "global", copy = "tma", overlap = true>'),
    ("/wg3cp", 64, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 192, '
                         'tile_n = 128, warps = 12, stages = 2, copy = "cp_async">'),
    ("/coop3", 64, None, '#attn.plan<arch = "sm_90a", kernel = "wgmma_cooperative", '
                         'tile_m = 192, tile_n = 96, warps = 12, stages = 2, '
                         'key_terms = "global", blocks_per_sm = 1>'),
    ("/sm80", 64, "sm_80", None),
    ("/sm80", 80, "sm_80", None),
    ("/sm80", 128, "sm_80", None),
]


def has_wgmma():
    return torch.cuda.get_device_capability() == (9, 0)


def reference(spec, q, k, v, captures, params):
    """float32 output and natural-log LSE; fully masked rows give 0 and -inf."""
    return references.attention(spec, q.float(), k.float(), v.float(), captures,
                                params)


# --------------------------------------------------------------------------
# Shapes: (B, H, KV heads, Nq, Nkv, layout). "bnhd": q/k/v/o are transposed
# views of [B, N, H, D] buffers (a projection's layout) with o padded by 8
# elements a row, to check strides and that nothing is written out of place.
# At head_dim 64 on sm_90a an artifact holds three forward kernels and the
# runtime launches a small-problem one when its blocks, one a
# multiprocessor, fit in one wave (docs/abi.md, "Small problems"): the
# shapes marked "default" have more than 132 query tiles of 128 rows (the
# H100's and H200's multiprocessors), those marked "small" at most that but
# more than 132 of 64 rows, and the others (the 64-row small kernel) at most
# 132 of 64 rows.

FULL_SHAPES = [
    (1, 2, 2, 1, 1, "bhnd"),
    (2, 4, 4, 17, 17, "bhnd"),
    (1, 4, 1, 200, 200, "bhnd"),      # GQA 4:1
    (2, 8, 1, 1000, 1000, "bhnd"),    # GQA 8:1, B > 1; small
    (1, 2, 2, 64, 333, "bhnd"),       # Nq < Nkv
    (1, 2, 2, 300, 77, "bhnd"),       # Nq > Nkv
    (2, 4, 2, 128, 128, "bnhd"),      # whole tiles, strided views
    (1, 4, 4, 200, 1000, "bnhd"),
    (2, 16, 4, 1100, 1100, "bhnd"),   # default
    (1, 136, 4, 17, 33, "bnhd"),      # default
    # Under a mask the blocks go over groups of heads whose K and V fit in
    # L2 (BlockOrder::longestFirst): at D=64 two heads of 30000 keys, so
    # nine (batch, head) pairs end on a group of one.
    (3, 3, 1, 300, 30000, "bhnd"),
]
QUICK_SHAPES = [
    (2, 4, 4, 17, 17, "bhnd"),
    (1, 4, 1, 200, 200, "bhnd"),
    (1, 2, 2, 64, 333, "bnhd"),
    (1, 40, 8, 300, 300, "bhnd"),     # small
    (1, 136, 4, 17, 33, "bhnd"),      # default
    (3, 3, 1, 300, 30000, "bhnd"),    # a last group of heads of one
]
# What the sanitizer runs: one problem for each kernel.
SANITIZER_SHAPES = [(1, 2, 1, 17, 33), (1, 68, 4, 100, 33), (1, 136, 4, 17, 33)]
# Enough keys that every stage of a K/V ring (up to four of 128 keys) is
# filled again, which racecheck needs to see a stage rewritten before its
# readers are done; the shapes above fill each stage once.
STAGE_REUSE_SHAPE = (1, 2, 1, 150, 700)


def make_inputs(B, H, Hkv, Nq, Nkv, D, dtype, layout, scale, g):
    def rnd(b, h, n):
        x = (torch.randn(b, h, n, D, generator=g) * scale).to(DEV, dtype)
        if layout == "bnhd":
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
        return x
    q, k, v = rnd(B, H, Nq), rnd(B, Hkv, Nkv), rnd(B, Hkv, Nkv)
    if layout == "bnhd":
        buf = torch.full((B, Nq, H, D + 8), float("nan"), device=DEV, dtype=dtype)
        o = buf[..., :D].transpose(1, 2)
    else:
        buf = torch.full((B, H, Nq, D), float("nan"), device=DEV, dtype=dtype)
        o = buf
    return q, k, v, o, buf


def check(o, buf, lse, ref, ref_lse, dtype, D):
    """(error, lse error, problem or None)."""
    of = o.float()
    if torch.isnan(of).any():
        return None, None, f"{int(torch.isnan(of).sum())} output elements left unwritten (NaN)"
    if buf is not o and not torch.isnan(buf[..., D:].float()).all():
        return None, None, "wrote into the padding after head_dim"
    diff = (of - ref).abs().amax(dim=(2, 3))
    scale = ref.abs().amax(dim=(2, 3)).clamp(min=1e-20)
    err = float((diff / scale).max())
    lse_err = None
    if lse is not None:
        if torch.isnan(lse).any():
            return err, None, f"{int(torch.isnan(lse).sum())} lse elements NaN/unwritten"
        inf_ref = torch.isinf(ref_lse)
        if not torch.equal(torch.isinf(lse) & (lse < 0), inf_ref):
            return err, None, "lse: -inf where the reference is finite or the reverse"
        fin = ~inf_ref
        lse_err = float(((lse[fin] - ref_lse[fin]).abs() /
                         (1.0 + ref_lse[fin].abs())).max()) if fin.any() else 0.0
    problem = None
    if not math.isfinite(err) or err > TOLERANCE[dtype]:
        problem = f"error {err:.2e} > {TOLERANCE[dtype]:.0e}"
    elif lse_err is not None and lse_err > LSE_TOLERANCE:
        problem = f"lse error {lse_err:.2e} > {LSE_TOLERANCE:.0e}"
    return err, lse_err, problem


# --------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.rows = []

    def add(self, name, dtype, D, lse, shape, err, lse_err, problem):
        self.rows.append((name, dtype, D, lse, shape, err, lse_err, problem))
        status = "ok" if problem is None else "FAIL"
        e = f"{err:.1e}" if err is not None else "-"
        le = f"{lse_err:.1e}" if lse_err is not None else "-"
        print(f"{status:4s} {name:18s} {dtype:4s} D={D:<3d} lse={int(lse)} {shape:24s} "
              f"err={e:8s} lse_err={le:8s} {problem or ''}", flush=True)

    @property
    def failures(self):
        return [r for r in self.rows if r[7] is not None]


def run_kernel_case(kern, spec, B, H, Hkv, Nq, Nkv, D, dtype, layout, lse, g):
    scale = SPECS[spec][1]
    q, k, v, o, buf = make_inputs(B, H, Hkv, Nq, Nkv, D, TORCH_DTYPES[dtype], layout, scale, g)
    captures = make_captures(spec, B, H, Nq, Nkv, g)
    lse_t = torch.full((B, H, Nq), float("nan"), device=DEV) if lse else None
    kern(q, k, v, captures=captures, out=o, lse_out=lse_t)
    torch.cuda.synchronize()
    ref, ref_lse = reference(spec, q, k, v, captures, {})
    return check(o, buf, lse_t, ref, ref_lse if lse else None, dtype, D)


def compile_kernel(spec, D, dtype, lse, workdir, structure=None):
    file = REPO / "examples" / SPECS[spec][0]
    if not file.is_file():
        raise RbfcError(f"{file} does not exist")
    if structure is None:
        return Kernel(file, head_dim=D, dtype=dtype, lse=lse, out_dir=workdir)
    _, _, arch, plan = structure
    options = {"arch": arch} if arch else {"plan": plan}
    # Another structure's kernel of the same spec writes files of the same
    # names: its own folder.
    folder = Path(workdir) / structure[0].strip("/")
    folder.mkdir(exist_ok=True)
    return Kernel(file, head_dim=D, dtype=dtype, lse=lse, out_dir=folder, **options)


def run_fixture(results, workdir, g):
    """The runtime alone: a hand-written kernel with every ABI slot used."""
    nvcc = shutil.which("nvcc") or next(iter(sorted(glob.glob("/usr/local/cuda*/bin/nvcc"))), None)
    if not nvcc:
        print("skip abi_fixture: no nvcc on this machine")
        return
    ptx = Path(workdir) / "abi_fixture.ptx"
    subprocess.run([nvcc, "-arch=sm_90a", "-ptx", str(REPO / "test/gpu/abi_fixture.cu"),
                    "-o", str(ptx)], check=True)
    kern = Kernel(image=ptx, descriptor=REPO / "test/gpu/abi_fixture.json")
    for (B, H, Hkv, Nq, Nkv, layout) in [(2, 4, 2, 100, 77, "bnhd"), (1, 2, 1, 1, 5, "bhnd")]:
        q, k, v, o, buf = make_inputs(B, H, Hkv, Nq, Nkv, 64, torch.bfloat16, layout, 1.0, g)
        # A strided capture: every other element of a longer buffer.
        bias_buf = torch.randn(2 * Nkv, generator=g).to(DEV)
        bias = bias_buf[::2]
        lse_t = torch.full((B, H, Nq + 3), float("nan"), device=DEV)[..., :Nq]
        scale, shift = 0.2, 5
        kern(q, k, v, params={"scale": scale, "shift": shift}, captures=[bias], out=o,
             lse_out=lse_t)
        torch.cuda.synchronize()
        qf = q.float()
        kf = k.float().repeat_interleave(H // Hkv, 1)
        vf = v.float().repeat_interleave(H // Hkv, 1)
        s = scale * (qf @ kf.transpose(-1, -2)) + bias.view(1, 1, 1, -1)
        qi, ki = references.indices(qf, kf)
        s = s.masked_fill(~(ki <= qi + shift).expand_as(s), NEG_INF)
        ref_lse = torch.logsumexp(s, -1)
        ref = torch.softmax(s, -1) @ vf
        err, lse_err, problem = check(o, buf, lse_t, ref, ref_lse, "bf16", 64)
        shape = f"{B}x{H}/{Hkv}x{Nq}x{Nkv} {layout}"
        results.add("abi_fixture", "bf16", 64, True, shape, err, lse_err, problem)


def run_launcher_lifetime(results, workdir, g):
    """A launcher keeps its Kernel's module loaded when the Kernel itself is
    dropped (the Python wrapper, not the kernels, is under test)."""
    B, H, Hkv, N, D = 1, 2, 1, 100, 64
    q, k, v, o, buf = make_inputs(B, H, Hkv, N, N, D, torch.bfloat16, "bhnd", 1.0, g)
    launch, _, _ = compile_kernel("rbf", D, "bf16", False, workdir).launcher(q, k, v, out=o)
    gc.collect()
    launch()
    torch.cuda.synchronize()
    ref, _ = reference("rbf", q, k, v, {}, {})
    err, lse_err, problem = check(o, buf, None, ref, None, "bf16", D)
    results.add("launcher", "bf16", D, False, f"{B}x{H}/{Hkv}x{N}x{N} bhnd", err, lse_err,
                problem)


# The examples whose kernels' stages carry term planes that a producer
# writes and the consumers read with ordinary loads, which only racecheck
# orders (bench/NOTES.md steps 29 and 31), and whose warps stage a table's
# diagonals in shared memory between warp barriers (DiagonalStaging.h):
# racecheck runs the sanitizer child's kernels of these too.
RACECHECK_SPECS = ("rbf", "rbf_head_gamma", "relative_bias")


def sanitize(args, specs, tool):
    """The sanitizer child's cases of `specs` under compute-sanitizer `tool`."""
    extra = ["--only", ",".join(specs)]
    for plan in args.plan:
        extra += ["--plan", plan]
    return sanitizer.run_child(__file__, tool, args.seed, extra, args.sanitizer_timeout)


def sanitize_child(args, specs, workdir):
    g = torch.Generator().manual_seed(args.seed)
    # Both head dims: their default plans bring the key terms differently
    # (on sm_90: lanes load them from the workspace at 64; cp.async.bulk at
    # 128 without a mask, per-thread cp.async under one). 80 and 96: rows
    # copied in runs of 2 and 4 chunks, the threads past a tile idle.
    structures = [(D, None) for D in (64, 80, 96, 128)]
    if has_wgmma():
        structures += [(s[1], s) for s in STRUCTURES]
    for spec in specs:
        for D, structure in structures:
            label = spec + (structure[0] if structure else "")
            try:
                kern = compile_kernel(spec, D, "bf16", True, workdir, structure)
            except RbfcError as e:  # reported by the main run already
                print(f"not sanitized {label} D={D}: {str(e).strip().splitlines()[-1]}",
                      flush=True)
                continue
            # A default kernel at 64 is two: one problem for each.
            shapes = SANITIZER_SHAPES if structure is None and D == 64 else SANITIZER_SHAPES[:1]
            shapes = shapes + [STAGE_REUSE_SHAPE]
            for B, H, Hkv, Nq, Nkv in shapes:
                # Exact-size allocations (no padding) so an overrun is caught.
                q = torch.randn(B, H, Nq, D, generator=g).to(DEV, torch.bfloat16)
                k = torch.randn(B, Hkv, Nkv, D, generator=g).to(DEV, torch.bfloat16)
                v = torch.randn(B, Hkv, Nkv, D, generator=g).to(DEV, torch.bfloat16)
                captures = make_captures(spec, B, H, Nq, Nkv, g)
                o, lse = kern(q, k, v, captures=captures, lse=True)
                torch.cuda.synchronize()
                print(f"sanitized {label} D={D} {B}x{H}/{Hkv}x{Nq}x{Nkv}: "
                      f"finite={bool(torch.isfinite(o.float()).all())}", flush=True)


def run_workspace_reuse(results, workdir, g):
    """A launcher's second launch, on new keys, reuses the workspace that holds
    the first launch's key terms: a flash block launched early (programmatic
    launch) that read them before its own prologue wrote the new ones would
    be off by far more than the tolerance (the RBF key bias moves with
    ||k||^2). At head_dim 64 both forward kernels: the default at 2048
    queries, the small-problem one at 1024 queries of one batch."""
    for spec, D, B, H, Hkv, N in (("rbf", 64, 2, 16, 8, 2048), ("rbf", 64, 1, 16, 8, 1024),
                                  ("rbf_causal", 128, 2, 16, 8, 2048)):
        q, k, v, o, buf = make_inputs(B, H, Hkv, N, N, D, torch.bfloat16, "bhnd", 1.0, g)
        launch, _, _ = compile_kernel(spec, D, "bf16", False, workdir).launcher(q, k, v, out=o)
        launch()
        k.copy_(2 * torch.randn(k.shape, generator=g).to(k))
        o.fill_(float("nan"))
        launch()
        torch.cuda.synchronize()
        ref, _ = reference(spec, q, k, v, {}, {})
        err, lse_err, problem = check(o, buf, None, ref, None, "bf16", D)
        results.add(f"{spec} reused workspace", "bf16", D, False,
                    f"{B}x{H}/{Hkv}x{N}x{N} bhnd", err, lse_err, problem)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="D=64 (and one D=96 case), a few shapes, no fp16")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated example names")
    ap.add_argument("--no-sanitizer", action="store_true")
    ap.add_argument("--sanitizer-timeout", type=int, default=300, help="seconds")
    ap.add_argument("--plan", action="append", default=[], metavar="D:PLAN",
                    help="also run every example at head dim D with this plan "
                         "(rows <example>/plan), e.g. a candidate default")
    ap.add_argument("--sanitize-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for extra in args.plan:
        dim, _, plan = extra.partition(":")
        STRUCTURES.append(("/plan", int(dim), None, plan))
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    if not torch.cuda.is_available():
        print("no CUDA device: run this on the GPU machine", file=sys.stderr)
        return 2
    specs = [s for s in SPECS if not args.only or s in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - set(SPECS)
    if unknown:
        print(f"unknown example(s) {sorted(unknown)}; known: {sorted(SPECS)}", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="rbfc-gpu-tests-")
    if args.sanitize_child:
        sanitize_child(args, specs, workdir)
        return 0

    print(f"seed {args.seed}  device {torch.cuda.get_device_name()}  torch {torch.__version__}")
    t0 = time.time()
    g = torch.Generator().manual_seed(args.seed)
    results = Results()
    try:
        run_fixture(results, workdir, g)
    except (RbfcError, subprocess.CalledProcessError) as e:
        results.add("abi_fixture", "bf16", 64, True, "-", None, None, f"error: {e}")
    try:
        run_launcher_lifetime(results, workdir, g)
    except RbfcError as e:
        results.add("launcher", "bf16", 64, False, "-", None, None, f"error: {e}")
    try:
        run_workspace_reuse(results, workdir, g)
    except RbfcError as e:
        results.add("reused workspace", "bf16", 64, False, "-", None, None, f"error: {e}")

    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    configs = []  # (spec, dtype, D, lse, structure: None for the default)
    for spec in specs:
        for D in ([64] if args.quick else MAIN_DIMS):
            configs.append((spec, "bf16", D, True, None))
            if not args.quick and spec in F16_SUBSET:
                configs.append((spec, "f16", D, True, None))
        if not args.quick and spec in OTHER_DIMS_SUBSET:
            configs += [(spec, "bf16", D, True, None) for D in OTHER_DIMS]
        if has_wgmma():
            configs += [(spec, "bf16", s[1], True, s) for s in STRUCTURES]
    # One row of 12 chunks (4-chunk swizzle groups) with key terms and a mask.
    if args.quick and "rbf_causal" in specs:
        configs.append(("rbf_causal", "bf16", 96, True, None))
    # The ABI without the lse pointer and strides.
    for spec in ("softmax", "rbf", "alibi"):
        if spec in specs:
            configs.append((spec, "bf16", 64, False, None))

    fatal = None
    for spec, dtype, D, lse, structure in configs:
        label = spec + (structure[0] if structure else "")
        try:
            kern = compile_kernel(spec, D, dtype, lse, workdir, structure)
        except RbfcError as e:
            lines = str(e).strip().splitlines()
            why = next((line for line in lines if "error" in line), lines[-1] if lines else "?")
            results.add(label, dtype, D, lse, "compile", None, None, "compile: " + why[:200])
            continue
        for (B, H, Hkv, Nq, Nkv, layout) in shapes:
            shape = f"{B}x{H}/{Hkv}x{Nq}x{Nkv} {layout}"
            try:
                err, lse_err, problem = run_kernel_case(kern, spec, B, H, Hkv, Nq, Nkv, D,
                                                        dtype, layout, lse, g)
            except RbfcError as e:
                err, lse_err, problem = None, None, f"error: {str(e).strip()[:300]}"
            except RuntimeError as e:
                # A fault in a kernel (illegal address, ...) poisons the CUDA
                # context: every later case would fail the same way.
                results.add(label, dtype, D, lse, shape, None, None,
                            f"CUDA fault: {str(e).strip()[:300]}")
                fatal = f"stopped after a CUDA fault in {label} {dtype} D={D} {shape}"
                break
            results.add(label, dtype, D, lse, shape, err, lse_err, problem)
        if fatal:
            break

    if fatal:
        print(fatal + "; the sanitizer below shows where (--only narrows the run)")
    sanitizers = {}
    if not args.no_sanitizer:
        sanitizers["memcheck"] = sanitize(args, specs, "memcheck")
        raced = [spec for spec in specs if spec in RACECHECK_SPECS]
        if raced:
            sanitizers["racecheck"] = sanitize(args, raced, "racecheck")
    fails = results.failures
    print()
    print(f"{'example':18s} {'dtype':5s} {'D':>4s} {'lse':>3s} {'cases':>5s} {'fail':>4s} {'max err':>8s}")
    keys = []
    for r in results.rows:
        if r[:4] not in keys:
            keys.append(r[:4])
    for key in keys:
        rows = [r for r in results.rows if r[:4] == key]
        errs = [r[5] for r in rows if r[5] is not None]
        nf = sum(r[7] is not None for r in rows)
        me = f"{max(errs):.1e}" if errs else "-"
        print(f"{key[0]:18s} {key[1]:5s} {key[2]:4d} {int(key[3]):3d} {len(rows):5d} {nf:4d} {me:>8s}")
    for r in fails[:30]:
        print(f"FAILED {r[0]} {r[1]} D={r[2]} lse={int(r[3])} {r[4]}: {r[7]}")
    checked = "; ".join(problem or f"{tool}: clean"
                        for tool, problem in sanitizers.items()) or "sanitizers: skipped"
    print(f"\nseed {args.seed}: {len(results.rows)} cases, {len(fails)} failed; "
          f"{checked}; {time.time() - t0:.0f} s")
    return 1 if fails or any(sanitizers.values()) or fatal else 0


if __name__ == "__main__":
    sys.exit(main())
