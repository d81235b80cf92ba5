#!/usr/bin/env python3
"""Forward benchmark: rbfc against the peers a user would pick, in one run.

    python3 bench/bench_fwd.py [--only rbfc_dot,sdpa_flash] [--reps MS]
                               [--shapes 4x16x4096x64,4x32/8x4096x128]

Run from the repo root on the GPU machine after scripts/prepare-gpu.sh.
Methods, bf16, B x H x N x D = 4x16x4096x{64,128}, 1x16x16384x128 and the
small 1x8x512x64 and 1x16x1024x64, causal and not (--shapes picks others;
BxH/KVxNxD has KV key/value heads, grouped-query attention):
  rbfc_dot    examples/softmax.attn, examples/causal.attn
  rbfc_rbf    examples/rbf.attn, examples/rbf_causal.attn
  rbfc_dot_mma, rbfc_rbf_mma
              the same compiled for sm_90 instead of sm_90a: the mma.sync
              kernel structure (wgmma needs sm_90a), to compare the two
  rbfc_dot_LABEL, rbfc_rbf_LABEL
              with --baseline-rbfc LABEL=PATH: the default kernels of another
              rbfc binary (an earlier build), for a before/after in one run
  rbfc_dot_LABEL, rbfc_rbf_LABEL
              with --baseline-plan LABEL=FIELD=VALUE: this build's default
              kernels with those fields of their plans changed (tile_n=128:
              128-key tiles wherever the default has others)
  rbfc_dot_tma, rbfc_rbf_tma
              the warp-specialised wgmma kernel whose producer brings K
              and V by TMA (plan copy = "tma"; TMA_PLANS, or --tma-plan-d64
              and --tma-plan-d128)
  sdpa_cudnn  F.scaled_dot_product_attention, cuDNN backend (dot)
  sdpa_flash  the same, flash backend (FlashAttention-2) (dot)
  flex_dot    FlexAttention, Triton backend (dot)
  flex_rbf    FlexAttention with score_mod 2*score - gamma*||k||^2, the key
              norms computed outside the compiled function (as
              ../shared/anchors/anchors.py does); flex_rbf_flash the same
              on its FLASH backend (kernel_options BACKEND=FLASH)
  fa4_dot     FlashAttention-4 (CuTe DSL, its sm90 path), when importable
              (../shared/anchors/fa4_wheels.sh; bench_fwdbwd.py's header)
  fa4_rbf     the same with softmax_scale 2*gamma and a score_mod that
              subtracts gamma*||k||^2 read from an aux tensor
  peer_rbf    the RBF author's fused Triton kernel (4rtemi5/rbf_attention),
              when .peer/pisoni_rbf.py is there (bench/peers.py)
Times are medians of triton.testing.do_bench (CUDA events, warm-up first) on
random inputs, taken in --rounds rounds (3) that time every method of a
case in turn, --reps split between them: a method's time is the median of
its rounds' (row field ms_turns holds them), so that a slow stretch of the
run falls on all methods alike (one run on 2026-12-06 saw two identical
kernels' single medians 13% apart); FLOPs 4*B*H*N*N*D, halved when causal. Each method's device time
(row fields device_ms, device_tflops, kernels) is measured too: the union
of one call's kernel intervals in torch.profiler's trace, the median of
--device-calls calls (30; 0 skips it), launch and host time left out. The
events time host-bound calls by their host path (FA4 and FlexAttention
took 67-430 us a call at 512-1024 keys on the H100 against rbfc's 10-20
us kernels), so the small shapes rank kernels by device time only; a
second table prints it. Writes
bench/results/<date>-<gpu>-fwd.json (-fwd-<shapes>.json for other shapes; a
copy under $OUT when set) and
prints TFLOP/s and the ratios rbfc/FA2, rbfc/cuDNN, rbfc-rbf/rbfc-dot and
rbfc-rbf/Flex-rbf. The RBF tax is also measured on its own: rbfc_rbf and
rbfc_dot called alternately, the median of the per-pair time ratios
(row field over_rbfc_dot_interleaved, table column "(paired)", the same
orientation as rbf/dot); so is each --baseline-rbfc or --baseline-plan
LABEL against this build's defaults (rbfc_dot's and rbfc_rbf's field
over_LABEL_interleaved: the defaults' time over LABEL's). bench/plot.py
draws docs/benchmarks.png from the JSON.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: E402

from rbfc import Kernel  # noqa: E402
try:
    import cutlass  # noqa: E402
    import cutlass.cute as cute  # noqa: E402
    from flash_attn.cute.interface import flash_attn_func as fa4  # noqa: E402
except Exception as error:  # noqa: BLE001 - optional peer
    print("fa4 unavailable:", repr(error)[:200])
    fa4 = None
from peers import rbf_author  # noqa: E402
from results_file import write_result  # noqa: E402
from shapes import (FORWARD_SHAPES, RBFC_SPECS, parse_shapes, result_suffix,  # noqa: E402
                    shape_label, shape_of)
from timing import (add_timing_arguments, kernel_time, l2_clear_buffer,  # noqa: E402
                    record_kernel_time, record_turns, time_in_turns)

DEV = "cuda"
DT = torch.bfloat16
torch._dynamo.config.cache_size_limit = 64
PEER = rbf_author()

# --------------------------------------------------------------------------
# Peers


def sdpa(backend):
    def run(q, k, v, causal):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                  enable_gqa=k.shape[1] != q.shape[1])
    return run


def causal_mask(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


_block_masks = {}


def block_mask(n):
    if n not in _block_masks:
        _block_masks[n] = create_block_mask(causal_mask, None, None, n, n, device=DEV)
    return _block_masks[n]


def _flex_rbf(q, k, v, ksq, bm, kernel_options):
    group = q.shape[1] // k.shape[1]

    def score_mod(score, b, h, q_idx, kv_idx):
        return 2.0 * score - ksq[b, h // group, kv_idx]
    return flex_attention(q, k, v, score_mod=score_mod, block_mask=bm,
                          enable_gqa=group > 1, kernel_options=kernel_options)


def _flex_dot(q, k, v, bm):
    return flex_attention(q, k, v, block_mask=bm, enable_gqa=k.shape[1] != q.shape[1])


_flex_rbf_c = torch.compile(_flex_rbf, dynamic=False)
_flex_dot_c = torch.compile(_flex_dot, dynamic=False)


def key_norms(k):
    """gamma * ||k||^2 per key, gamma = 1/sqrt(D) (examples/rbf.attn)."""
    return (k.float() * k.float()).sum(-1) * (1.0 / math.sqrt(k.shape[-1]))


def flex_rbf(kernel_options=None):
    def run(q, k, v, causal):
        # FlexAttention scales q.k by 1/sqrt(D) = gamma: 2*score = 2*gamma*q.k.
        # Computing the norms inside the compiled function fails in inductor.
        return _flex_rbf_c(q, k, v, key_norms(k),
                           block_mask(q.shape[-2]) if causal else None, kernel_options)
    return run


def fa4_dot(q, k, v, causal):
    # FA4 takes [B, N, H, D]: transposed views in, the output back.
    out = fa4(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
    return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)


_fa4_score_mods = {}


def fa4_rbf_score_mod(heads, keys):
    """FA4's score_mod subtracting gamma*||k||^2, read from aux_tensors[0]
    (float32, flattened [B, H, N]) at the key's flat index."""
    if (heads, keys) not in _fa4_score_mods:
        @cute.jit
        def subtract_key_norm(scores, b, h, q_idx, kv_idx, seqlen_info, aux_tensors):
            index = cute.make_rmem_tensor(1, cutlass.Int32)
            index.store((b * cute.full_like(b, heads) + h) * cute.full_like(h, keys)
                        + kv_idx)
            norm = cute.make_rmem_tensor(1, cutlass.Float32)
            norm[0] = aux_tensors[0][index[0]]
            return scores - norm.load()
        _fa4_score_mods[(heads, keys)] = subtract_key_norm
    return _fa4_score_mods[(heads, keys)]


def fa4_rbf(q, k, v, causal):
    # softmax_scale scales q.k before the score_mod: 2*gamma*q.k - gamma*||k||^2.
    heads, keys = q.shape[1], k.shape[2]
    norms = key_norms(k).repeat_interleave(heads // k.shape[1], dim=1).reshape(-1)
    out = fa4(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
              softmax_scale=2.0 / math.sqrt(q.shape[-1]), causal=causal,
              score_mod=fa4_rbf_score_mod(heads, keys), aux_tensors=[norms])
    return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)


def flex_dot(q, k, v, causal):
    return _flex_dot_c(q, k, v, block_mask(q.shape[-2]) if causal else None)


# --------------------------------------------------------------------------
# rbfc

_kernels = {}

# The warp-specialised kernel with TMA copies: four stages at head dim 64
# (the cp.async producer could not keep up there with fewer), two at 128
# (shared memory); the key terms by bulk copies of the same thread.
TMA_PLANS = {
    64: '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, '
        'warps = 8, stages = 4, key_terms = "bulk", copy = "tma">',
    128: '#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, '
         'warps = 8, stages = 2, key_terms = "bulk", copy = "tma">',
}


def rbfc_kernel(variant, causal, D, workdir, plan, arch, binary=None):
    spec = RBFC_SPECS[(variant, causal)]
    key = (spec, D, arch, plan, binary)
    if key not in _kernels:
        t0 = time.time()
        saved = os.environ.get("RBFC_BIN")
        if binary:
            os.environ["RBFC_BIN"] = binary
        try:
            _kernels[key] = Kernel(REPO / "examples" / spec, head_dim=D, dtype="bf16",
                                   out_dir=tempfile.mkdtemp(dir=workdir), plan=plan,
                                   arch=arch)
        finally:
            if saved is None:
                os.environ.pop("RBFC_BIN", None)
            else:
                os.environ["RBFC_BIN"] = saved
        print(f"compiled {spec} D={D} in {time.time() - t0:.2f} s: {_kernels[key].info['plan']}",
              flush=True)
    return _kernels[key]


def edited_plan(plan, edits):
    """`plan` (an #attn.plan<...> string) with the fields of `edits`
    ({field: value}) set; a field the plan lacks is added."""
    for field, value in edits.items():
        value = value if re.fullmatch(r"-?\d+|true|false", value) else f'"{value}"'
        plan, found = re.subn(rf"\b{field} = [^,>]+", f"{field} = {value}", plan)
        if not found:
            plan = plan[:-1] + f", {field} = {value}>"
    return plan


def rbfc_method(variant, workdir, plans, arch="sm_90a", binary=None, edits=None):
    """The kernel of each spec and head dim, compiled by `binary` (RBFC_BIN
    when None); with `edits` ({field: value}), the default kernel's plan with
    those fields changed, compiled again."""
    def prepare(q, k, v, causal):
        D = q.shape[-1]
        # A plan names its arch: the overrides are for sm_90a only.
        plan = plans.get(D) if arch == "sm_90a" else None
        if edits:
            default = rbfc_kernel(variant, causal, D, workdir, plan, arch, binary)
            plan = edited_plan(default.info["plan"], edits)
        kern = rbfc_kernel(variant, causal, D, workdir, plan, arch, binary)
        launch, o, _ = kern.launcher(q, k, v)
        return launch, o
    return prepare


def plain_method(fn):
    def prepare(q, k, v, causal):
        o = fn(q, k, v, causal)  # compiles / warms up outside the timing
        return (lambda: fn(q, k, v, causal)), o
    return prepare


# --------------------------------------------------------------------------


def interleaved_ratio(fn_a, fn_b, rep_ms):
    """fn_b's time over fn_a's, from calls that alternate (a b, then b a),
    each after the 256 MB write with which do_bench clears the L2 and timed
    alone by CUDA events: the median of the per-pair ratios, about 2 rep_ms
    of calls and at least 25 pairs. Two methods timed one after the other
    see the clock drift between them; a pair sees almost none."""
    cache = l2_clear_buffer()

    def timed(fn):
        cache.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        return start, end

    def pair(swap):
        first, second = (fn_b, fn_a) if swap else (fn_a, fn_b)
        events = [timed(first), timed(second)]
        torch.cuda.synchronize()
        t_first, t_second = (s.elapsed_time(e) for s, e in events)
        return t_first / t_second if swap else t_second / t_first

    for swap in (False, True):  # warm-up
        pair(swap)
    start = time.time()
    pair(False)
    per_pair_ms = (time.time() - start) * 1e3
    pairs = max(25, math.ceil(2 * rep_ms / per_pair_ms))
    return statistics.median(pair(i % 2 == 1) for i in range(pairs)), pairs


def flops(B, H, N, D, causal):
    f = 4.0 * B * H * N * N * D
    return f / 2 if causal else f


def rel_err(a, b):
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated method names")
    add_timing_arguments(ap)
    ap.add_argument("--device-calls", type=int, default=30,
                    help="calls a method's device time (kernel_time) is the median "
                         "of; 0 skips it")
    ap.add_argument("--plan-d64", default=None, help="--plan for rbfc kernels at D=64")
    ap.add_argument("--plan-d128", default=None, help="--plan for rbfc kernels at D=128")
    ap.add_argument("--tma-plan-d64", default=TMA_PLANS[64],
                    help="the plan of rbfc_*_tma at D=64")
    ap.add_argument("--tma-plan-d128", default=TMA_PLANS[128],
                    help="the plan of rbfc_*_tma at D=128")
    ap.add_argument("--shapes", default="", help="e.g. 4x16x4096x64,1x16x16384x128")
    ap.add_argument("--baseline-plan", action="append", default=[],
                    metavar="LABEL=FIELD=VALUE[,FIELD=VALUE]",
                    help="rbfc_dot_LABEL and rbfc_rbf_LABEL: this build's default "
                         "kernels with those plan fields changed (e.g. k128=tile_n=128), "
                         "paired against the defaults like --baseline-rbfc")
    ap.add_argument("--baseline-rbfc", action="append", default=[],
                    metavar="LABEL=PATH",
                    help="another rbfc binary (an earlier build): its default "
                         "kernels as rbfc_dot_LABEL and rbfc_rbf_LABEL; repeatable")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: run this on the GPU machine", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="rbfc-bench-")
    plans = {64: args.plan_d64, 128: args.plan_d128}
    tma_plans = {64: args.tma_plan_d64, 128: args.tma_plan_d128}
    methods = {
        "rbfc_dot": (rbfc_method("dot", workdir, plans), "dot"),
        "rbfc_rbf": (rbfc_method("rbf", workdir, plans), "rbf"),
        "rbfc_dot_mma": (rbfc_method("dot", workdir, plans, "sm_90"), "dot"),
        "rbfc_rbf_mma": (rbfc_method("rbf", workdir, plans, "sm_90"), "rbf"),
        "rbfc_dot_tma": (rbfc_method("dot", workdir, tma_plans), "dot"),
        "rbfc_rbf_tma": (rbfc_method("rbf", workdir, tma_plans), "rbf"),
        "sdpa_cudnn": (plain_method(sdpa(SDPBackend.CUDNN_ATTENTION)), "dot"),
        "sdpa_flash": (plain_method(sdpa(SDPBackend.FLASH_ATTENTION)), "dot"),
        "flex_dot": (plain_method(flex_dot), "dot"),
        "flex_rbf": (plain_method(flex_rbf()), "rbf"),
        "flex_rbf_flash": (plain_method(flex_rbf({"BACKEND": "FLASH"})), "rbf"),
    }
    # label -> the method of a variant ("dot", "rbf") under that label
    baselines = {}
    for baseline in args.baseline_rbfc:
        label, _, binary = baseline.partition("=")
        if not label or not binary or label in baselines:
            print(f"--baseline-rbfc wants LABEL=PATH with a label of its own, "
                  f"not {baseline!r}", file=sys.stderr)
            return 2
        baselines[label] = lambda variant, binary=binary: rbfc_method(
            variant, workdir, plans, binary=binary)
    for baseline in args.baseline_plan:
        label, _, fields = baseline.partition("=")
        try:
            edits = dict(field.split("=", 1) for field in fields.split(","))
        except ValueError:
            edits = {}
        if not label or label in baselines or not edits or not all(
                re.fullmatch(r"[a-z_]+", f) and v for f, v in edits.items()):
            print(f"--baseline-plan wants LABEL=FIELD=VALUE[,FIELD=VALUE] with a label "
                  f"of its own, not {baseline!r}", file=sys.stderr)
            return 2
        baselines[label] = lambda variant, edits=edits: rbfc_method(
            variant, workdir, plans, edits=edits)
    for label, method in baselines.items():
        for variant in ("dot", "rbf"):
            methods[f"rbfc_{variant}_{label}"] = (method(variant), variant)
    if fa4 is not None:
        methods["fa4_dot"] = (plain_method(fa4_dot), "dot")
        methods["fa4_rbf"] = (plain_method(fa4_rbf), "rbf")
    if PEER is not None:
        methods["peer_rbf"] = (plain_method(
            lambda q, k, v, causal: PEER.run_triton_rbf(q, k, v, is_causal=causal)), "rbf")
    if args.only:
        unknown = set(args.only.split(",")) - set(methods)
        if unknown:
            print(f"unknown method(s) {sorted(unknown)}; known: {list(methods)}", file=sys.stderr)
            return 2
        methods = {k: v for k, v in methods.items() if k in args.only.split(",")}
    shapes = parse_shapes(args.shapes, FORWARD_SHAPES)

    device = torch.cuda.get_device_name()
    print(f"device {device}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    rows = []
    t_start = time.time()
    for (B, H, KV, N, D) in shapes:
        for causal in (False, True):
            torch.manual_seed(0)
            q = torch.randn(B, H, N, D, device=DEV, dtype=DT)
            k = torch.randn(B, KV, N, D, device=DEV, dtype=DT)
            v = torch.randn(B, KV, N, D, device=DEV, dtype=DT)
            outputs, timed_fns, case_rows = {}, {}, {}
            for name, (prepare, kind) in methods.items():
                row = dict(B=B, H=H, KV=KV, N=N, D=D, causal=causal, method=name, kind=kind)
                try:
                    with torch.no_grad():
                        t0 = time.time()
                        fn, o = prepare(q, k, v, causal)
                        fn()
                        torch.cuda.synchronize()
                        row["first_call_s"] = round(time.time() - t0, 3)
                        outputs[name] = o.clone()
                    timed_fns[name] = fn
                except Exception as e:  # a failing method must not stop the peers
                    row["error"] = repr(e)[:300]
                case_rows[name] = row
            with torch.no_grad():
                turns = time_in_turns(timed_fns, args.rounds, args.warmup, args.reps)
                spans = kernel_time(timed_fns, args.device_calls) if args.device_calls else {}
            for name, row in case_rows.items():
                record_kernel_time(row, spans.get(name), flops(B, H, N, D, causal))
                if not record_turns(row, turns.get(name), flops(B, H, N, D, causal)):
                    timed_fns.pop(name, None)
                rows.append(row)
                print(json.dumps(row), flush=True)
            # The RBF tax, from interleaved calls (interleaved_ratio).
            if "rbfc_dot" in timed_fns and "rbfc_rbf" in timed_fns:
                with torch.no_grad():
                    rbf_over_dot, pairs = interleaved_ratio(
                        timed_fns["rbfc_dot"], timed_fns["rbfc_rbf"], args.reps)
                for r in rows[-len(methods):]:
                    if r["method"] == "rbfc_rbf":
                        r["over_rbfc_dot_interleaved"] = rbf_over_dot
                        r["interleaved_pairs"] = pairs
                print(f"rbfc_rbf / rbfc_dot, interleaved: {rbf_over_dot:.4f} "
                      f"({pairs} pairs)", flush=True)
            # This build's defaults against each --baseline-rbfc build and
            # --baseline-plan variant, from interleaved calls too: time over
            # the baseline's, so below 1 is faster.
            for label in baselines:
                for variant in ("dot", "rbf"):
                    new, base = f"rbfc_{variant}", f"rbfc_{variant}_{label}"
                    if new in timed_fns and base in timed_fns:
                        with torch.no_grad():
                            ratio, pairs = interleaved_ratio(
                                timed_fns[base], timed_fns[new], args.reps)
                        for r in rows[-len(methods):]:
                            if r["method"] == new:
                                r[f"over_{label}_interleaved"] = ratio
                        print(f"{new} / {base} time, interleaved: {ratio:.4f} "
                              f"({pairs} pairs)", flush=True)
            # Same function, different kernels: the outputs must agree,
            # each baseline's with this build's defaults too.
            same_function = [("rbfc_dot", "sdpa_flash"), ("rbfc_dot", "sdpa_cudnn"),
                             ("rbfc_dot", "fa4_dot"), ("rbfc_rbf", "flex_rbf"),
                             ("rbfc_rbf", "flex_rbf_flash"), ("rbfc_rbf", "fa4_rbf"),
                             ("rbfc_rbf", "peer_rbf")]
            same_function += [(f"rbfc_{variant}_{label}", f"rbfc_{variant}")
                              for label in baselines for variant in ("dot", "rbf")]
            for a, b in same_function:
                if a in outputs and b in outputs:
                    err = rel_err(outputs[a], outputs[b])
                    for r in rows[-len(methods):]:
                        if r["method"] == a:
                            r.setdefault("rel_err_vs", {})[b] = err
            del q, k, v, outputs
            torch.cuda.empty_cache()

    result = dict(device=device, torch=torch.__version__, triton=triton.__version__,
                  date=datetime.date.today().isoformat(), dtype="bf16",
                  timing="median of the rounds' triton.testing.do_bench medians "
                         "(CUDA events)",
                  device_timing="device_ms: median over device_calls calls of the "
                                "union of a call's kernel intervals (torch.profiler), "
                                "the L2 cleared before each",
                  device_calls=args.device_calls,
                  warmup_ms=args.warmup, rep_ms=args.reps, rounds=args.rounds,
                  flops="4*B*H*N*N*D, halved when causal",
                  plans={str(d): p for d, p in plans.items() if p},
                  rbfc_plans=[dict(spec=s, head_dim=d, arch=a, plan=k.info["plan"],
                                   **({"binary": binary} if binary else {}))
                              for (s, d, a, _, binary), k in _kernels.items()],
                  elapsed_s=round(time.time() - t_start, 1), rows=rows)
    write_result(result, "fwd" + result_suffix(shapes, FORWARD_SHAPES))
    print_table(rows, "tflops", "CUDA events around each call, do_bench medians")
    if args.device_calls:
        print_table(rows, "device_tflops",
                    "the calls' kernels alone: launch and host time left out")
    return 0


def print_table(rows, key, timing):
    def tf(shape, causal, method):
        for r in rows:
            if (shape_of(r), r["causal"], r["method"]) == (shape, causal, method):
                return r.get(key)
        return None

    def rbf_time_ratio(shape, causal):
        for r in rows:
            if (shape_of(r), r["causal"], r["method"]) == (shape, causal, "rbfc_rbf"):
                return r.get("over_rbfc_dot_interleaved")
        return None

    def fmt(x, spec):
        return format(x, spec) if x is not None else "-"

    def ratio(a, b):
        return a / b if a and b else None

    methods = []
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    head = f"{'B x H x N x D':22s}" + "".join(f"{m:>11s}" for m in methods)
    head += (f"{'dot/FA2':>9s}{'dot/cuDNN':>10s}{'dot/FA4':>8s}{'rbf/dot':>8s}"
             f"{'(paired)':>10s}{'rbf/Flex':>9s}{'rbf/FA4':>8s}{'rbf/best':>9s}")
    print(f"\nTFLOP/s (bf16 forward; {timing})\n" + head)
    shapes = []
    for r in rows:
        if shape_of(r) not in shapes:
            shapes.append(shape_of(r))
    for shape in shapes:
        for causal in (False, True):
            label = shape_label(shape) + (" causal" if causal else "")
            line = f"{label:22s}" + "".join(f"{fmt(tf(shape, causal, m), '.0f'):>11s}" for m in methods)
            dot, rbf = tf(shape, causal, "rbfc_dot"), tf(shape, causal, "rbfc_rbf")
            line += f"{fmt(ratio(dot, tf(shape, causal, 'sdpa_flash')), '.2f'):>9s}"
            line += f"{fmt(ratio(dot, tf(shape, causal, 'sdpa_cudnn')), '.2f'):>10s}"
            line += f"{fmt(ratio(dot, tf(shape, causal, 'fa4_dot')), '.2f'):>8s}"
            line += f"{fmt(ratio(rbf, dot), '.2f'):>8s}"
            paired = rbf_time_ratio(shape, causal)
            line += f"{fmt(1 / paired if paired else None, '.3f'):>10s}"
            line += f"{fmt(ratio(rbf, tf(shape, causal, 'flex_rbf')), '.2f'):>9s}"
            line += f"{fmt(ratio(rbf, tf(shape, causal, 'fa4_rbf')), '.2f'):>8s}"
            # rbfc's RBF over the fastest other RBF path in the run.
            other_rbf = [t for m in ("flex_rbf", "flex_rbf_flash", "fa4_rbf", "peer_rbf")
                         if (t := tf(shape, causal, m))]
            line += f"{fmt(ratio(rbf, max(other_rbf) if other_rbf else None), '.2f'):>9s}"
            print(line)
    if key != "tflops":
        for r in rows:
            if r.get("device_error"):
                print(f"NO DEVICE TIME {r['method']} {shape_label(shape_of(r))} "
                      f"causal={r['causal']}: {r['device_error']}")
        return
    errors = [r for r in rows if r.get("error")]
    for r in errors:
        print(f"ERROR {r['method']} {shape_label(shape_of(r))} causal={r['causal']}: {r['error']}")
    for r in rows:
        for peer, err in r.get("rel_err_vs", {}).items():
            if err > 2e-2:
                print(f"MISMATCH {r['method']} vs {peer} {shape_label(shape_of(r))} "
                      f"causal={r['causal']}: relative error {err:.2e}")


if __name__ == "__main__":
    sys.exit(main())
