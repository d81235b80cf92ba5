#!/usr/bin/env python3
"""Forward+backward benchmark: rbfc against the peers a user would train with,
in one run.

    python3 bench/bench_fwdbwd.py [--only rbfc_rbf,sdpa_flash] [--reps MS]
                                  [--shapes 4x16x4096x64] [--no-learnable]

Run from the repo root on the GPU machine with the rbfc wheel installed (and
FlashAttention-4 on PYTHONPATH, ../shared/anchors/fa4_wheels.sh; the RBF
author's kernel as .peer/pisoni_rbf.py). bf16, B x H x N x D =
4x16x4096x{64,128} and 1x16x16384x128, causal and not. Each method's step is
o = f(q, k, v); o.backward(dO) on tensors that require grad:
  rbfc_dot     examples/softmax.attn, examples/causal.attn (the Python op)
  rbfc_rbf     examples/rbf.attn, examples/rbf_causal.attn
  rbfc_dot_mma, rbfc_rbf_mma
               the same compiled for sm_90 instead of sm_90a: the mma.sync
               kernels, forward and backward (wgmma needs sm_90a)
  sdpa_cudnn   F.scaled_dot_product_attention, cuDNN backend (dot)
  sdpa_flash   the same, flash backend (FlashAttention-2) (dot)
  fa4_dot      FlashAttention-4 (CuTe DSL, its sm90 path) (dot)
  flex_rbf     FlexAttention (Triton backend), score_mod 2*score - g||k||^2
               with the key norms computed in autograd, as
               ../shared/anchors/fa4_anchor.py fwdbwd does
  peer_rbf     the RBF author's fused Triton kernel (4rtemi5/rbf_attention)
Learnable captured tensors (--no-learnable skips them), causal ALiBi and a
relative-position table at 4x16x4096x64:
  rbfc_alibi / rbfc_alibi_frozen    slopes with / without a gradient
  flex_alibi                        FlexAttention Triton, slopes with one
  rbfc_relbias / rbfc_relbias_frozen
                                    the table with / without a gradient
  flex_relbias                      FlexAttention Triton, table with one
  flex_relbias_small                the same with smaller tiles (its default
                                    needs more shared memory than an H200's)
Times are medians of triton.testing.do_bench (CUDA events, warm-up first),
taken in --rounds rounds (3) that time every method of a shape in turn,
--reps split between them (bench/timing.py; the learnable rows: one
median each); FLOPs 3.5 x 4*B*H*N*N*D (backward = 2.5 x forward), halved when causal.
Writes bench/results/<date>-<gpu>-fwdbwd.json (and a copy under $OUT) and
prints TFLOP/s with the ratios the issue asks for.
"""
import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: E402

import rbfc  # noqa: E402
from peers import rbf_author  # noqa: E402
from results_file import write_result  # noqa: E402
from shapes import parse_shapes, result_suffix, shape_label, shape_of  # noqa: E402
from timing import add_timing_arguments, record_turns, time_in_turns  # noqa: E402

DEV = "cuda"
DT = torch.bfloat16
torch._dynamo.config.cache_size_limit = 64
torch._dynamo.config.recompile_limit = 64

PEER = rbf_author()
try:
    from flash_attn.cute.interface import flash_attn_func as fa4  # noqa: E402
except Exception as error:  # noqa: BLE001 - optional peer
    print("fa4 unavailable:", repr(error)[:200])
    fa4 = None

# --------------------------------------------------------------------------
# Methods: (q, k, v, causal) -> o, with autograd.

_block_masks = {}


def block_mask(n):
    if n not in _block_masks:
        _block_masks[n] = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None,
                                            n, n, device=DEV)
    return _block_masks[n]


def sdpa(backend):
    def run(q, k, v, causal):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def _flex_rbf(q, k, v, ksq, bm):
    return flex_attention(q, k, v, block_mask=bm,
                          score_mod=lambda s, b, h, qi, ki: 2.0 * s - ksq[b, h, ki])


_flex_rbf_c = torch.compile(_flex_rbf, dynamic=False)


def flex_rbf(q, k, v, causal):
    # The key norms take part in autograd; computing them inside the
    # compiled function fails in inductor (../shared/GPU-NOTES.md).
    kf = k.float()
    ksq = (kf * kf).sum(-1) * (1.0 / math.sqrt(q.shape[-1]))
    return _flex_rbf_c(q, k, v, ksq, block_mask(q.shape[-2]) if causal else None)


def fa4_dot(q, k, v, causal):
    # FA4 takes [B, N, H, D]: transposed views in, the output back.
    out = fa4(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
    return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)


def peer_rbf(q, k, v, causal):
    return PEER.run_triton_rbf(q, k, v, is_causal=causal)


_compiled = {}


def rbfc_spec(name, arch=None):
    if (name, arch) not in _compiled:
        _compiled[name, arch] = rbfc.compile(REPO / "examples" / f"{name}.attn",
                                             arch=arch)
    return _compiled[name, arch]


def rbfc_method(dot_spec, causal_spec, arch=None):
    def run(q, k, v, causal):
        return rbfc_spec(causal_spec if causal else dot_spec, arch)(q, k, v)
    return run


METHODS = {
    "rbfc_dot": (rbfc_method("softmax", "causal"), "dot"),
    "rbfc_rbf": (rbfc_method("rbf", "rbf_causal"), "rbf"),
    "rbfc_dot_mma": (rbfc_method("softmax", "causal", "sm_90"), "dot"),
    "rbfc_rbf_mma": (rbfc_method("rbf", "rbf_causal", "sm_90"), "rbf"),
    "sdpa_cudnn": (sdpa(SDPBackend.CUDNN_ATTENTION), "dot"),
    "sdpa_flash": (sdpa(SDPBackend.FLASH_ATTENTION), "dot"),
    "fa4_dot": (fa4_dot, "dot"),
    "flex_rbf": (flex_rbf, "rbf"),
    "peer_rbf": (peer_rbf, "rbf"),
}

# Learnable captured tensors: (q, k, v, table) -> o; causal ALiBi and a
# relative-position table, the table with or without requires_grad.


def slopes_for(heads):
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)],
                        device=DEV)


def _flex_alibi(q, k, v, slopes, bm):
    return flex_attention(
        q, k, v, block_mask=bm,
        score_mod=lambda s, b, h, qi, ki: s + slopes[h] * (ki - qi))


def _flex_relbias(q, k, v, bias, kernel_options=None):
    n = k.shape[-2]
    return flex_attention(
        q, k, v, score_mod=lambda s, b, h, qi, ki: s + bias[h, qi - ki + n - 1],
        kernel_options=kernel_options)


# Its default configuration asks for more shared memory than the H200 has
# when the table needs a gradient (2026-12-04): smaller tiles, one stage.
SMALL_FLEX_TILES = {"BLOCK_M": 64, "BLOCK_N": 64, "num_stages": 1,
                    "BLOCK_M1": 32, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 32}


_flex_alibi_c = torch.compile(_flex_alibi, dynamic=False)
_flex_relbias_c = torch.compile(_flex_relbias, dynamic=False)

LEARNABLE = {
    "rbfc_alibi": (lambda q, k, v, t: rbfc_spec("alibi")(q, k, v, captures={"slopes": t}),
                   "alibi", True),
    "rbfc_alibi_frozen": (lambda q, k, v, t: rbfc_spec("alibi")(
        q, k, v, captures={"slopes": t}), "alibi", False),
    "flex_alibi": (lambda q, k, v, t: _flex_alibi_c(q, k, v, t, block_mask(q.shape[-2])),
                   "alibi", True),
    "rbfc_relbias": (lambda q, k, v, t: rbfc_spec("relative_bias")(
        q, k, v, captures={"bias": t}), "relbias", True),
    "rbfc_relbias_frozen": (lambda q, k, v, t: rbfc_spec("relative_bias")(
        q, k, v, captures={"bias": t}), "relbias", False),
    "flex_relbias": (lambda q, k, v, t: _flex_relbias_c(q, k, v, t), "relbias", True),
    "flex_relbias_small": (lambda q, k, v, t: _flex_relbias_c(q, k, v, t, SMALL_FLEX_TILES),
                           "relbias", True),
}


def flops(B, H, N, D, causal):
    return 3.5 * 4.0 * B * H * N * N * D / (2 if causal else 1)


def run_shapes(args, methods, rows):
    for (B, H, KV, N, D) in parse_shapes(args.shapes):
        for causal in (False, True):
            torch.manual_seed(0)
            base = [torch.randn(B, heads, N, D, device=DEV, dtype=DT)
                    for heads in (H, KV, KV)]
            do = torch.randn(B, H, N, D, device=DEV, dtype=DT)
            steps, case_rows = {}, {}
            for name, (fn, kind) in methods.items():
                row = dict(B=B, H=H, KV=KV, N=N, D=D, causal=causal, method=name,
                           kind=kind, mode="fwdbwd")
                try:
                    q, k, v = (t.detach().clone().requires_grad_() for t in base)

                    def step(fn=fn, q=q, k=k, v=v, do=do):
                        q.grad = k.grad = v.grad = None
                        fn(q, k, v, causal).backward(do)
                    t0 = time.time()
                    step()  # compiles and warms up outside the timing
                    torch.cuda.synchronize()
                    row["first_call_s"] = round(time.time() - t0, 3)
                    steps[name] = step
                except Exception as error:  # noqa: BLE001 - peers must not stop the run
                    row["error"] = repr(error)[:300]
                case_rows[name] = row
            turns = time_in_turns(steps, args.rounds, args.warmup, args.reps)
            for name, row in case_rows.items():
                record_turns(row, turns.get(name), flops(B, H, N, D, causal))
                rows.append(row)
                print(json.dumps(row), flush=True)
            del base, do, steps
            torch.cuda.empty_cache()


def run_learnable(args, rows):
    B, H, N, D = 4, 16, 4096, 64
    torch.manual_seed(0)
    base = [torch.randn(B, H, N, D, device=DEV, dtype=DT) for _ in range(3)]
    do = torch.randn(B, H, N, D, device=DEV, dtype=DT)
    tables = {"alibi": slopes_for(H),
              "relbias": 0.1 * torch.randn(H, 2 * N - 1, device=DEV)}
    for name, (fn, kind, learn) in LEARNABLE.items():
        if args.only and name not in args.only.split(","):
            continue
        causal = kind == "alibi"
        row = dict(B=B, H=H, KV=H, N=N, D=D, causal=causal, method=name, kind=kind,
                   mode="fwdbwd", table_grad=learn)
        try:
            q, k, v = (t.detach().clone().requires_grad_() for t in base)
            table = tables[kind].detach().clone().requires_grad_(learn)

            def step():
                q.grad = k.grad = v.grad = table.grad = None
                fn(q, k, v, table).backward(do)
            step()  # compiles and warms up outside the timing
            torch.cuda.synchronize()
            row["ms"] = triton.testing.do_bench(step, warmup=args.warmup, rep=args.reps,
                                                return_mode="median")
            row["tflops"] = flops(B, H, N, D, causal) / row["ms"] / 1e9
        except Exception as error:  # noqa: BLE001
            row.update(ms=None, tflops=None, error=repr(error)[:300])
        rows.append(row)
        print(json.dumps(row), flush=True)


def print_table(rows):
    def tf(shape, causal, method):
        for r in rows:
            if (shape_of(r), r["causal"], r["method"]) == (shape, causal, method):
                return r["tflops"]
        return None

    def fmt(x, spec=".0f"):
        return format(x, spec) if x else "-"

    main = [r for r in rows if r["method"] in METHODS]
    methods = list(dict.fromkeys(r["method"] for r in main))
    shapes = list(dict.fromkeys(shape_of(r) for r in main))
    print("\nTFLOP/s (bf16 forward+backward, medians)")
    print(f"{'B x H x N x D':22s}" + "".join(f"{m:>11s}" for m in methods) +
          "".join(f"{c:>10s}" for c in ("rbf/FA2", "rbf/best", "rbf/cuDNN",
                                        "rbf/FA4", "dot/FA2")))
    for shape in shapes:
        for causal in (False, True):
            line = f"{shape_label(shape) + (' causal' if causal else ''):22s}"
            line += "".join(f"{fmt(tf(shape, causal, m)):>11s}" for m in methods)
            rbf = tf(shape, causal, "rbfc_rbf")
            other_rbf = [t for m in ("flex_rbf", "peer_rbf")
                         if (t := tf(shape, causal, m))]
            peers = [tf(shape, causal, "sdpa_flash"),
                     max(other_rbf) if other_rbf else None,
                     tf(shape, causal, "sdpa_cudnn"), tf(shape, causal, "fa4_dot")]
            for other in peers:
                line += f"{fmt(rbf / other if rbf and other else None, '.2f'):>10s}"
            dot = tf(shape, causal, "rbfc_dot")
            flash = tf(shape, causal, "sdpa_flash")
            line += f"{fmt(dot / flash if dot and flash else None, '.2f'):>10s}"
            print(line)
    learn = {r["method"]: r for r in rows if r["method"] in LEARNABLE}
    if learn:
        print("\nLearnable captured tensors, 4x16x4096x64 bf16 fwd+bwd, ms")
        for name, r in learn.items():
            print(f"  {name:22s} {fmt(r.get('ms'), '.3f'):>9s}  {r.get('error', '')[:120]}")

        def ratio(a, b):
            ra, rb = learn.get(a, {}).get("ms"), learn.get(b, {}).get("ms")
            return f"{ra / rb:.3f}" if ra and rb else "-"
        print(f"  slopes' gradient cost (rbfc_alibi / rbfc_alibi_frozen): "
              f"{ratio('rbfc_alibi', 'rbfc_alibi_frozen')}")
        print(f"  flex_alibi / rbfc_alibi (time): {ratio('flex_alibi', 'rbfc_alibi')}")
        print(f"  table's gradient cost (rbfc_relbias / rbfc_relbias_frozen): "
              f"{ratio('rbfc_relbias', 'rbfc_relbias_frozen')}")
        print(f"  flex_relbias / rbfc_relbias (time): "
              f"{ratio('flex_relbias', 'rbfc_relbias')}, with smaller tiles "
              f"{ratio('flex_relbias_small', 'rbfc_relbias')}")
    for r in rows:
        if r.get("error"):
            print(f"ERROR {r['method']} {shape_label(shape_of(r))} "
                  f"causal={r['causal']}: {r['error']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated method names")
    add_timing_arguments(ap)
    ap.add_argument("--shapes", default="", help="e.g. 4x16x4096x64,1x16x16384x128")
    ap.add_argument("--no-learnable", action="store_true")
    args = ap.parse_args()
    methods = dict(METHODS)
    if fa4 is None:
        methods.pop("fa4_dot")
    if PEER is None:
        methods.pop("peer_rbf")
    if args.only:
        methods = {k: v for k, v in methods.items() if k in args.only.split(",")}
    device = torch.cuda.get_device_name()
    print(f"device {device}  torch {torch.__version__}  triton {triton.__version__}",
          flush=True)
    rows = []
    t_start = time.time()
    run_shapes(args, methods, rows)
    if not args.no_learnable:
        run_learnable(args, rows)
    result = dict(device=device, torch=torch.__version__, triton=triton.__version__,
                  date=datetime.date.today().isoformat(), dtype="bf16",
                  timing="median of the rounds' triton.testing.do_bench medians "
                         "(CUDA events); the learnable rows one do_bench median",
                  warmup_ms=args.warmup, rep_ms=args.reps, rounds=args.rounds,
                  flops="3.5 x 4*B*H*N*N*D (backward 2.5 x forward), halved when "
                        "causal",
                  elapsed_s=round(time.time() - t_start, 1), rows=rows)
    write_result(result, "fwdbwd" + result_suffix(parse_shapes(args.shapes)))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
