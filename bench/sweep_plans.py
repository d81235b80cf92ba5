#!/usr/bin/env python3
"""Plan sweep: rbfc forward kernels under several plans (and compilers), one run.

    python3 bench/sweep_plans.py [--dims 64,128] [--plan LABEL=PLAN ...]
                                 [--compiler LABEL=PATH ...] [--name NAME]
                                 [--specs alibi,sliding_window,...]

Run from the repo root on the GPU machine after scripts/prepare-gpu.sh. For
every head dim, dot and RBF (examples/softmax, causal, rbf, rbf_causal) and
causal or not, B x H x N = 4 x 16 x 4096, bf16: the default plan of each
compiler (--compiler, default the one rbfc.runtime finds; a second one
compares two builds, e.g. two kernel structures), then every --plan (a
plan's tile sizes name its head dim only through --dims) compiled by the
first compiler. --specs sweeps those examples instead (captures as the GPU
tests make them, causal as the spec says). Times are medians of
triton.testing.do_bench on random inputs. Writes bench/results/<date>-<gpu>-plan-sweep[-NAME].json (rows: D,
kind, causal, label, plan, ms, tflops) and prints one line per kernel.
attn-select-plan's sm_90a choices come from these sweeps (bench/NOTES.md).
"""
import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "test" / "python"))

import torch  # noqa: E402
import triton  # noqa: E402

from rbfc import Kernel  # noqa: E402
from rbfc.runtime import rbfc_binary  # noqa: E402
from results_file import write_result  # noqa: E402
from references import make_captures  # noqa: E402
from shapes import RBFC_SPECS  # noqa: E402


def labelled(items, what):
    pairs = []
    for item in items:
        label, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--{what} expects LABEL=VALUE, not {item!r}")
        pairs.append((label, value))
    return pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--plan", action="append", default=[], help="LABEL=#attn.plan<...>")
    ap.add_argument("--compiler", action="append", default=[], help="LABEL=path to rbfc")
    ap.add_argument("--name", default="", help="suffix of the result file")
    ap.add_argument("--reps", type=int, default=60, help="do_bench rep, ms")
    ap.add_argument("--specs", default="",
                    help="comma-separated examples to sweep instead of dot and RBF")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: run this on the GPU machine", file=sys.stderr)
        return 2
    compilers = labelled(args.compiler, "compiler") or [("default", str(rbfc_binary()))]
    plans = labelled(args.plan, "plan")
    B, H, N = 4, 16, 4096
    rows = []
    for D in (int(d) for d in args.dims.split(",")):
        q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        runs = [(label, path, None) for label, path in compilers]
        runs += [(label, compilers[0][1], plan) for label, plan in plans]
        # (kind, causal, example): causal halves the FLOP count; a --specs
        # example counts them all, masked or not (its plans compare alike).
        cases = [(kind, causal, RBFC_SPECS[(kind, causal)])
                 for kind in ("dot", "rbf") for causal in (False, True)]
        if args.specs:
            cases = [(spec, False, spec + ".attn") for spec in args.specs.split(",")]
        for kind, causal, example in cases:
            captures = make_captures(kind, B, H, N, N, torch.Generator().manual_seed(0),
                                     "cuda") if args.specs else {}
            for label, compiler, plan in runs:
                os.environ["RBFC_BIN"] = compiler
                try:
                    kern = Kernel(REPO / "examples" / example, head_dim=D,
                                  dtype="bf16", out_dir=tempfile.mkdtemp(), plan=plan)
                    launch, _, _ = kern.launcher(q, k, v, captures=captures)
                    ms = triton.testing.do_bench(launch, warmup=25, rep=args.reps)
                except Exception as error:  # noqa: BLE001 - reported, the sweep goes on
                    print(f"error D={D} {kind} causal={causal} {label}: {str(error)[-300:]}")
                    continue
                tflops = 4 * B * H * N * N * D / (2 if causal else 1) / ms / 1e9
                rows.append(dict(D=D, kind=kind, causal=causal, label=label,
                                 plan=kern.info["plan"], ms=ms, tflops=tflops))
                print(f"D={D} {kind} causal={int(causal)} {label:12s} {tflops:6.0f}  "
                      f"{kern.info['plan']}", flush=True)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                  date=datetime.date.today().isoformat(), dtype="bf16",
                  shape=f"{B}x{H}x{N}", timing="triton.testing.do_bench median (CUDA events)",
                  compilers=dict(compilers), rows=rows)
    write_result(result, "plan-sweep" + (f"-{args.name}" if args.name else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
