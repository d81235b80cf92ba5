#!/usr/bin/env python3
"""Per-kernel times behind the plan's key_terms default, in one run.

    python3 bench/bench_key_terms.py [--rounds 7] [--shapes 4x16x4096x32,4x32/8x4096x128]

Run from the repo root on the GPU machine after scripts/prepare-gpu.sh.
For B x H x N x D = 4x16x4096x{64,128} and 1x16x16384x128 (or --shapes;
BxH/KVxNxD has KV key/value heads), bf16, unmasked
(rbf against softmax) and causal (rbf_causal against causal), it compiles
the dot-product kernel with its default plan and the RBF kernel once per
key_terms (threads, bulk, global; the default plan otherwise), then times
every kernel by CUPTI (torch.profiler): rounds of 10 launches, the kernels
interleaved round by round, medians per kernel. The RBF kernels' key-terms
prologue is timed apart from the flash kernel. Prints per shape the flash
kernel / dot, (prologue + flash kernel) / dot and the error against the
first variant, and writes bench/results/<date>-<gpu>-key-terms.json
(-key-terms-<shapes>.json for other shapes; a copy under $OUT when set).
"""
import argparse
import datetime
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from rbfc import Kernel  # noqa: E402
from results_file import write_result  # noqa: E402
from shapes import parse_shapes, result_suffix, shape_label, shape_of  # noqa: E402

PAIRS = [("rbf", "softmax"), ("rbf_causal", "causal")]
KEY_TERMS = ["threads", "bulk", "global"]
LAUNCHES_PER_ROUND = 10
KEY_TERMS_FIELD = re.compile(r'key_terms = "\w+"')


def with_key_terms(plan, key_terms):
    """The plan attribute `plan` with its key_terms set; its other fields
    (blocks_per_sm included) kept."""
    field = f'key_terms = "{key_terms}"'
    if KEY_TERMS_FIELD.search(plan):
        return KEY_TERMS_FIELD.sub(field, plan)
    return f"{plan[:-1]}, {field}>"


def time_kernels(launchers, rounds):
    """CUPTI medians (us) per launcher name: {'main': t, 'prologue': t}."""
    for launch in launchers.values():
        for _ in range(3):
            launch()
    torch.cuda.synchronize()
    samples = {name: {} for name in launchers}
    for _ in range(rounds):
        for name, launch in launchers.items():
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(LAUNCHES_PER_ROUND):
                    launch()
                torch.cuda.synchronize()
            for event in prof.events():
                if event.device_type.name != "CUDA":
                    continue
                kind = "prologue" if event.name.endswith("_key_terms") else "main"
                samples[name].setdefault(kind, []).append(event.device_time_total)
    return {name: {kind: statistics.median(ts) for kind, ts in kinds.items()}
            for name, kinds in samples.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--shapes", default="",
                    help="comma-separated BxHxNxD or BxH/KVxNxD (default: the "
                         "forward benchmark's)")
    args = ap.parse_args()
    shapes = parse_shapes(args.shapes)
    if not torch.cuda.is_available():
        print("no CUDA device: run this on the GPU machine", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name()
    workdir = tempfile.mkdtemp(prefix="rbfc-key-terms-")
    torch.manual_seed(0)
    rows = []
    for (B, H, KV, N, D) in shapes:
        q = torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(B, KV, N, D, device="cuda", dtype=torch.bfloat16)
                for _ in range(2))
        for rbf_spec, dot_spec in PAIRS:
            def compile_kernel(spec, plan=None):
                # A directory each: the image and descriptor are named by spec.
                return Kernel(REPO / "examples" / f"{spec}.attn", head_dim=D, plan=plan,
                              out_dir=tempfile.mkdtemp(dir=workdir))
            kernels = {"dot": compile_kernel(dot_spec)}
            default = compile_kernel(rbf_spec)
            for key_terms in KEY_TERMS:
                kernels[key_terms] = compile_kernel(
                    rbf_spec, with_key_terms(default.info["plan"], key_terms))
            launchers, outputs = {}, {}
            for name, kern in kernels.items():
                launch, o, _ = kern.launcher(q, k, v)
                launchers[name], outputs[name] = launch, o
            times = time_kernels(launchers, args.rounds)
            ref = outputs[KEY_TERMS[0]].float()
            dot = times["dot"]["main"]
            for name, kern in kernels.items():
                row = dict(B=B, H=H, KV=KV, N=N, D=D,
                           spec=dot_spec if name == "dot" else rbf_spec,
                           key_terms=None if name == "dot" else name,
                           default=name != "dot" and kern.info["plan"] == default.info["plan"],
                           plan=kern.info["plan"], main_us=round(times[name]["main"], 1),
                           prologue_us=round(times[name].get("prologue", 0.0), 1))
                if name != "dot":
                    err = ((outputs[name].float() - ref).abs().max() / ref.abs().max()).item()
                    row.update(main_over_dot=round(row["main_us"] / dot, 4),
                               total_over_dot=round((row["main_us"] + row["prologue_us"]) / dot, 4),
                               max_rel_diff=err)
                rows.append(row)
                print(json.dumps(row), flush=True)
            del kernels, launchers, outputs, default
            torch.cuda.empty_cache()
        del q, k, v

    result = dict(device=device, torch=torch.__version__,
                  date=datetime.date.today().isoformat(), dtype="bf16",
                  timing=f"CUPTI (torch.profiler) per-kernel medians over {args.rounds} "
                         f"rounds of {LAUNCHES_PER_ROUND} launches, kernels interleaved",
                  rows=rows)
    write_result(result, "key-terms" + result_suffix(shapes))
    print_table(rows)
    return 0


def print_table(rows):
    print("\nflash kernel / dot, (prologue + flash kernel) / dot; * = default plan")
    print(f"{'B x H x N x D':22s} {'spec':11s} " +
          " ".join(f"{kt:>15s}" for kt in KEY_TERMS) + "   dot us")
    for r in rows:
        if r["key_terms"] is not None:
            continue
        shape = shape_of(r)
        cells = []
        for kt in KEY_TERMS:
            v = next(x for x in rows if shape_of(x) == shape
                     and x["key_terms"] == kt and x["spec"] != r["spec"]
                     and (x["spec"] == "rbf_causal") == (r["spec"] == "causal"))
            mark = "*" if v["default"] else " "
            cells.append(f"{v['main_over_dot']:.3f}/{v['total_over_dot']:.3f}{mark}")
        print(f"{shape_label(shape):22s} {r['spec']:11s} " +
              " ".join(f"{c:>15s}" for c in cells) + f"  {r['main_us']:7.1f}")


if __name__ == "__main__":
    sys.exit(main())
