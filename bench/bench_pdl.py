#!/usr/bin/env python3
"""The RBF launch with and without programmatic dependent launch, in one run.

    python3 bench/bench_pdl.py [--shapes 4x16x4096x64,2x16x1024x64] [--rounds 3]

Run from the repo root on the GPU machine after scripts/prepare-gpu.sh.
Compiles examples/rbf.attn and examples/rbf_causal.attn once per shape and
launches the same image twice over: with its descriptor (sm_90:
key_terms.programmatic_launch, the flash kernel launched through
cuLaunchKernelEx with programmatic stream serialization) and with that flag
cleared (plain stream order). Times the whole launch (key-terms prologue and
flash kernel) by CUDA events over 20 back-to-back launches a sample, 15
samples a median, the two variants interleaved round by round; checks that
the outputs are bitwise equal. Writes bench/results/<date>-<gpu>-pdl.json
(a copy under $OUT when set).
"""
import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402

from rbfc import Kernel  # noqa: E402
from rbfc.runtime import compile_spec  # noqa: E402
from results_file import write_result  # noqa: E402
from shapes import parse_shapes, shape_label  # noqa: E402

DEFAULT_SHAPES = "4x16x4096x64,4x16x4096x128,1x16x16384x128,2x16x1024x64,1x16x1024x128,1x8x512x128"
SAMPLES, LAUNCHES = 15, 20


def time_launch(launch, stream):
    for _ in range(3):
        launch()
    torch.cuda.synchronize()
    samples = []
    for _ in range(SAMPLES):
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        torch.cuda._sleep(3_000_000)  # the GPU waits while the CPU enqueues
        start.record(stream)
        for _ in range(LAUNCHES):
            launch()
        end.record(stream)
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / LAUNCHES)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: run this on the GPU machine", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="rbfc-pdl-"))
    stream = torch.cuda.current_stream()
    torch.manual_seed(0)
    rows = []
    for (B, H, KV, N, D) in parse_shapes(args.shapes):
        q = torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(B, KV, N, D, device="cuda", dtype=torch.bfloat16)
                for _ in range(2))
        for spec in ("rbf", "rbf_causal"):
            image, descriptor = compile_spec(REPO / "examples" / f"{spec}.attn",
                                             workdir / f"{spec}_{D}", head_dim=D)
            plain = json.loads(Path(descriptor).read_text())
            if not plain["key_terms"].get("programmatic_launch"):
                print(f"{spec}: the kernel does not use programmatic launch", file=sys.stderr)
                return 2
            plain["key_terms"]["programmatic_launch"] = False
            plain_path = Path(descriptor).with_name(f"{spec}_plain.json")
            plain_path.write_text(json.dumps(plain))
            variants = {}
            for name, path in (("programmatic", descriptor), ("plain", plain_path)):
                kernel = Kernel(image=image, descriptor=path)
                launch, o, _ = kernel.launcher(q, k, v)
                variants[name] = (launch, o)
            times = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, (launch, _) in variants.items():
                    times[name].append(time_launch(launch, stream))
            same = torch.equal(variants["programmatic"][1], variants["plain"][1])
            row = dict(B=B, H=H, KV=KV, N=N, D=D, spec=spec,
                       programmatic_us=round(statistics.median(times["programmatic"]), 1),
                       plain_us=round(statistics.median(times["plain"]), 1),
                       outputs_equal=same)
            row["ratio"] = round(row["programmatic_us"] / row["plain_us"], 4)
            rows.append(row)
            print(f"{shape_label((B, H, KV, N, D)):18s} {spec:11s} programmatic "
                  f"{row['programmatic_us']:8.1f} us  plain {row['plain_us']:8.1f} us  "
                  f"ratio {row['ratio']:.3f}  outputs equal: {same}", flush=True)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                  date=datetime.date.today().isoformat(), dtype="bf16",
                  timing=f"CUDA events, {LAUNCHES} launches a sample, median of {SAMPLES} "
                         f"samples, median over {args.rounds} interleaved rounds",
                  rows=rows)
    write_result(result, "pdl")
    return 0 if all(r["outputs_equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
