#!/usr/bin/env python3
"""GPU tests of rbfc's backward kernels (run on the GPU machine, from the repo
root, with the wheel of scripts/build-wheel.sh installed):

    python3 test/gpu/run_gpu_backward.py [--quick] [--seed N] [--only rbf,alibi] [--dims 64,128]

For every example spec, through the Python op (rbfc.compile(...)(q, k, v)
with autograd): the gradients of q, k, v, of the f32 params (gamma, cap, as
tensors that require grad) and of the captures the GPU backward gives a
gradient (ALiBi's slopes, RBF's per-head gammas, the relative-position
table) against float32 PyTorch autograd of the independent references of
test/python/references.py, on the
forward test's shapes (N=1, odd lengths, Nq != Nkv, GQA, the bnhd layout),
half of them with a gradient of the log-sum-exp too. The caching allocator's
free blocks are poisoned with NaN first: a gradient the kernels leave
unwritten shows. Then: two runs give bitwise-equal gradients; asking for a
gradient the GPU does not compute (a table read along anti-diagonals)
raises RbfcError before anything runs; compute-sanitizer memcheck on a small
case of each kernel structure and racecheck on one.

Tolerances (references.gradients): a gradient passes when |g - exact| <=
tol * max|exact| + 2 |exact - rounded| + noise for every element, where
`rounded` takes D = rowsum(dO O) from the kernel's bf16/f16 output (as
FlashAttention's backward and rbfc's do; for a gradient that sums many dS of
both signs, a parameter's, that moves it by more than its value) and `noise`
is what a float32 rounding of every dS would move it by (where dS cancels
exactly, as in a row with one key, both sides are noise).
Prints one line per case, with the largest share of its allowance a
passing gradient used (references.allowance_used: 1 is the tolerance);
exits non-zero on any failure. `--device cpu`
runs the gallery on the host backend (bf16 there too): a dry run of this
script on a machine without a GPU.
"""
import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "python"))
import references  # noqa: E402
import sanitizer  # noqa: E402

import rbfc  # noqa: E402

DEV = "cuda"
TORCH_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}
TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 1e-2}

# (B, H, KV heads, Nq, Nkv, layout): the forward test's shapes.
FULL_SHAPES = [
    (1, 2, 2, 1, 1, "bhnd"),
    (2, 4, 4, 17, 17, "bhnd"),
    (1, 4, 1, 300, 200, "bhnd"),
    (2, 8, 1, 1000, 1000, "bhnd"),
    (1, 2, 2, 64, 333, "bhnd"),
    (1, 2, 2, 300, 77, "bhnd"),
    (2, 4, 2, 128, 128, "bnhd"),
    (1, 4, 4, 200, 1000, "bnhd"),
]
QUICK_SHAPES = [(2, 4, 4, 17, 17, "bhnd"), (1, 4, 1, 300, 200, "bhnd"),
                (1, 2, 2, 64, 333, "bnhd")]
F16_SUBSET = ["softmax", "causal", "rbf", "softcap", "alibi"]
# Besides 64, 80, 96 and 128 for every spec, these run at 32 and at 48 and
# 112, the other rows of 2-chunk swizzle groups.
OTHER_DIMS_SUBSET = ["softmax", "causal", "rbf", "rbf_causal", "alibi"]
# These also run the dK/dV kernel of 64-key tiles (sm_86's at 128).
NARROW_KEY_TILE_SUBSET = ["softmax", "causal", "rbf", "rbf_causal", "alibi",
                          "document_mask", "sliding_window", "softcap"]
# f32 params whose gradients are checked (passed as tensors).
PARAMS = {"rbf": ["gamma"], "rbf_causal": ["gamma"], "rbf_none": ["gamma"],
          "softcap": ["cap"]}
# Captures the GPU backward gives a gradient: per-head values, and the
# relative-position table (read at q_idx - kv_idx, summed per diagonal).
GRAD_CAPTURES = {"alibi": ["slopes"], "rbf_head_gamma": ["gammas"],
                 "relative_bias": ["bias"]}
PARAM_VALUES = {"gamma": lambda d: d ** -0.5, "cap": lambda d: 2.0}

RESULTS = []


def record(name, problem, note=""):
    RESULTS.append((name, problem))
    status = "ok  " if problem is None else "FAIL"
    print(f"{status} {name:60s} {note} {problem or ''}", flush=True)


def poison():
    if DEV != "cuda":
        return
    free = torch.cuda.mem_get_info()[0]
    block = torch.full((min(free // 8, 1 << 30) // 4,), float("nan"), device=DEV)
    del block


def make_case(spec, dtype, shape, dim, g):
    B, H, KVH, NQ, NKV, layout = shape
    scale = 0.25 if references.SPECS[spec][1] == "none" else 1.0
    q = (scale * torch.randn(B, H, NQ, dim, generator=g)).to(DEV, dtype)
    k = (scale * torch.randn(B, KVH, NKV, dim, generator=g)).to(DEV, dtype)
    v = torch.randn(B, KVH, NKV, dim, generator=g).to(DEV, dtype)
    captures = references.make_captures(spec, B, H, NQ, NKV, g, DEV)
    params = {name: torch.tensor(PARAM_VALUES[name](dim), device=DEV)
              for name in PARAMS.get(spec, [])}
    grad_o = torch.randn(B, H, NQ, dim, generator=g).to(DEV, dtype)
    grad_lse = torch.randn(B, H, NQ, generator=g).to(DEV)
    return q, k, v, captures, params, grad_o, grad_lse


def run_case(attn, spec, dtype, shape, dim, g, with_lse_grad):
    q, k, v, captures, params, grad_o, grad_lse = make_case(spec, dtype, shape,
                                                            dim, g)
    if not with_lse_grad:
        grad_lse = torch.zeros_like(grad_lse)
    layout = shape[5]
    leaves = {"q": q, "k": k, "v": v}
    if layout == "bnhd":
        leaves = {n: t.transpose(1, 2).contiguous() for n, t in leaves.items()}
    leaves = {n: t.detach().requires_grad_() for n, t in leaves.items()}
    caps = dict(captures)
    for name in GRAD_CAPTURES.get(spec, []):
        caps[name] = caps[name].detach().clone().requires_grad_()
    prm = {n: t.detach().clone().requires_grad_() for n, t in params.items()}
    poison()
    o, lse = attn(leaves["q"], leaves["k"], leaves["v"], params=prm,
                  captures=caps, return_lse=True, layout=layout)
    if layout == "bnhd":
        o = o.transpose(1, 2)
    # The reference's `rounded` D reads the kernel's output, as its backward
    # does.
    ref = references.gradients(spec, q, k, v, captures, params, grad_o, grad_lse,
                               dtype, GRAD_CAPTURES.get(spec, []), output=o)
    loss = (o.float() * grad_o.float()).sum()
    if with_lse_grad:
        finite = torch.isfinite(lse)
        loss = loss + (lse[finite] * grad_lse[finite]).sum()
    loss.backward()
    got = {n: t.grad for n, t in leaves.items()}
    if layout == "bnhd":
        got = {n: t.transpose(1, 2) for n, t in got.items()}
    got.update({n: caps[n].grad for n in GRAD_CAPTURES.get(spec, [])})
    got.update({n: t.grad for n, t in prm.items()})
    worst = 0.0
    for name, grads in ref.items():
        problem = references.check_gradient(name, got.get(name), grads,
                                            TOLERANCE[dtype])
        if problem:
            return problem, worst
        worst = max(worst, references.allowance_used(got[name], grads,
                                                     TOLERANCE[dtype]))
    return None, worst


def gallery(args, specs, g):
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    for spec in specs:
        # (dtype, head dim, arch): the device's arch builds the wgmma
        # kernels at head dims 64 and 128 on sm_90; "sm_90" the mma.sync
        # ones there; "sm_86" the dK/dV kernel of 64-key tiles, whose
        # 128-key one does not fit there (PTX the driver compiles for this
        # card).
        dims = [int(d) for d in args.dims.split(",")] if args.dims else (
            [64] if args.quick else [64, 80, 96, 128])
        configs = [("bf16", dim, None) for dim in dims]
        hopper = DEV == "cuda" and torch.cuda.get_device_capability() == (9, 0)
        # One row of 12 chunks (4-chunk swizzle groups), key terms, a mask.
        if args.quick and spec == "rbf_causal":
            configs.append(("bf16", 96, None))
            if hopper:
                configs.append(("bf16", 64, "sm_90"))
        if DEV == "cuda" and (args.quick and spec in ("rbf_causal", "alibi")
                              or not args.quick and spec in NARROW_KEY_TILE_SUBSET):
            configs.append(("bf16", 128, "sm_86"))
        if DEV == "cuda" and not args.quick and spec == "relative_bias":
            configs.append(("bf16", 128, "sm_80"))
        if not args.quick and spec in F16_SUBSET:
            configs += [("f16", 64, None), ("f16", 96, None), ("f16", 128, None)]
        if not args.quick and spec in OTHER_DIMS_SUBSET:
            configs += [("bf16", dim, None) for dim in (32, 48, 112)]
        if not args.quick and hopper:
            configs += [("bf16", dim, "sm_90") for dim in (64, 128)]
        for dtype_name, dim, arch in configs:
            attn = rbfc.compile(REPO / "examples" / f"{spec}.attn", arch=arch)
            suffix = {None: "", "sm_90": "/mma"}.get(arch, f"/{arch}")
            label = f"{spec}{suffix} {dtype_name} d{dim}"
            dtype = TORCH_DTYPES[dtype_name]
            worst, problem = 0.0, None
            t0 = time.time()
            for index, shape in enumerate(shapes):
                try:
                    problem, case_worst = run_case(attn, spec, dtype, shape, dim, g,
                                                   with_lse_grad=index % 2 == 1)
                except rbfc.RbfcError as error:
                    problem = f"RbfcError: {str(error).strip()[:300]}"
                except RuntimeError as error:
                    problem = f"CUDA fault: {str(error).strip()[:300]}"
                    record(label, f"{shape}: {problem}")
                    return True
                if problem:
                    problem = f"{shape}: {problem}"
                    break
                worst = max(worst, case_worst)
            record(label, problem,
                   f"{worst:.2f} of the allowance ({time.time() - t0:.1f} s)")
    return False


def determinism(g):
    """Two runs, the same bits: q, k, v and the captures' gradients."""
    for spec in ("alibi", "rbf_head_gamma", "relative_bias", "rbf"):
        attn = rbfc.compile(REPO / "examples" / f"{spec}.attn")
        case = make_case(spec, torch.bfloat16, (2, 8, 2, 700, 900, "bhnd"), 64, g)
        runs = []
        for _ in range(2):
            q, k, v = (t.detach().clone().requires_grad_() for t in case[:3])
            caps = dict(case[3])
            for name in GRAD_CAPTURES.get(spec, []):
                caps[name] = caps[name].detach().clone().requires_grad_()
            prm = {n: t.detach().clone().requires_grad_() for n, t in case[4].items()}
            o = attn(q, k, v, params=prm, captures=caps)
            o.backward(case[5])
            grads = [q.grad, k.grad, v.grad]
            grads += [caps[n].grad for n in GRAD_CAPTURES.get(spec, [])]
            grads += [t.grad for t in prm.values()]
            runs.append(grads)
        same = all(torch.equal(a, b) for a, b in zip(*runs))
        record(f"{spec} bitwise-equal gradients over two runs",
               None if same else "the gradients differ between runs")


def unsupported_gradient():
    # Read along anti-diagonals: no fixed-order sum of its gradient here.
    attn = rbfc.compile("""attention antidiagonal {
      capture table: f32[?, ?];
      score = dot(q, k) + table[h, q_idx + kv_idx];
    }""")
    q = torch.randn(1, 2, 16, 64, device=DEV, dtype=torch.bfloat16)
    table = torch.randn(2, 31, device=DEV, requires_grad=True)
    name = "antidiagonal: a table gradient on the GPU raises"
    try:
        attn(q, q, q, captures={"table": table}).sum().backward()
        record(name, "no error raised")
    except rbfc.RbfcError as error:
        ok = "batch and head only" in str(error)
        record(name, None if ok else f"unexpected message: {error}")


def sanitize(args, tool):
    # relative_bias: its table's diagonal sums through a shared tile;
    # rbf_head_gamma: the partial sums' scratch.
    extra = ["--only", "rbf_head_gamma,relative_bias"] if tool == "racecheck" else []
    return sanitizer.run_child(__file__, tool, args.seed, extra, args.sanitizer_timeout)


def sanitize_child(args, specs, g):
    # One small case per kernel structure: every mask kind, key terms, both
    # head dims (and 80, 96: rows copied in runs of 2 and 4 chunks);
    # exact-size allocations so that an overrun is caught.
    for spec in specs:
        attn = rbfc.compile(REPO / "examples" / f"{spec}.attn")
        for dim in (64, 80, 96, 128):
            q, k, v, captures, params, grad_o, grad_lse = make_case(
                spec, torch.bfloat16, (1, 2, 1, 17, 33, "bhnd"), dim, g)
            q, k, v = (t.requires_grad_() for t in (q, k, v))
            for name in GRAD_CAPTURES.get(spec, []):
                captures[name].requires_grad_()
            params = {n: t.requires_grad_() for n, t in params.items()}
            o, lse = attn(q, k, v, params=params, captures=captures,
                          return_lse=True)
            ((o.float() * grad_o.float()).sum() + (lse * grad_lse).sum()).backward()
            torch.cuda.synchronize()
            print(f"sanitized {spec} d{dim}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", default="")
    ap.add_argument("--dims", default="",
                    help="bf16 head dims of the gallery, e.g. 64,128 (default: "
                         "64 with --quick, else 64,80,96,128)")
    ap.add_argument("--no-sanitizer", action="store_true")
    ap.add_argument("--sanitizer-timeout", type=int, default=800)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--sanitize-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global DEV
    DEV = args.device
    if DEV == "cpu":
        args.no_sanitizer = True
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    specs = [s for s in sorted(references.SPECS)
             if not args.only or s in args.only.split(",")]
    g = torch.Generator().manual_seed(args.seed)
    if args.sanitize_child:
        sanitize_child(args, specs, g)
        return 0
    device = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    print(f"seed {args.seed}  device {device}  torch {torch.__version__}",
          flush=True)
    t0 = time.time()
    fatal = gallery(args, specs, g)
    if not fatal:
        determinism(g)
        if DEV == "cuda":
            unsupported_gradient()
    if not args.no_sanitizer:
        for tool in ("memcheck", "racecheck"):
            problem = sanitize(args, tool)
            record(f"compute-sanitizer {tool}", problem)
    fails = [r for r in RESULTS if r[1] is not None]
    print(f"\nseed {args.seed}: {len(RESULTS)} cases, {len(fails)} failed; "
          f"{time.time() - t0:.0f} s")
    for name, problem in fails[:30]:
        print(f"FAILED {name}: {problem}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
