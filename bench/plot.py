#!/usr/bin/env python3
"""Draws a bench_fwd.py or bench_fwdbwd.py result as bars of TFLOP/s.

    python3 bench/plot.py [bench/results/DATE-GPU-fwd.json] [-o docs/benchmarks.png]
    python3 bench/plot.py bench/results/DATE-GPU-fwdbwd.json   # docs/benchmarks-fwdbwd.png

Without a path it takes the newest bench/results/*-fwd.json. Only the dot
and RBF rows are drawn (not bench_fwdbwd's learnable-capture ones). Needs
matplotlib.
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COLORS = {"rbfc_dot": "#1f77b4", "rbfc_rbf": "#d62728", "rbfc_dot_mma": "#aec7e8",
          "rbfc_rbf_mma": "#f4a582", "sdpa_cudnn": "#7f7f7f",
          "sdpa_flash": "#bcbd22", "flex_dot": "#9edae5", "flex_rbf": "#ff9896",
          "flex_rbf_flash": "#f7b6d2", "fa4_dot": "#2ca02c", "fa4_rbf": "#98df8a",
          "peer_rbf": "#9467bd"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("result", nargs="?")
    ap.add_argument("-o", "--output", help="default: docs/benchmarks.png, or "
                    "docs/benchmarks-fwdbwd.png for a forward+backward result")
    args = ap.parse_args()
    path = Path(args.result) if args.result else None
    if path is None:
        found = sorted((REPO / "bench" / "results").glob("*-fwd.json"))
        if not found:
            print("no bench/results/*-fwd.json: run bench/bench_fwd.py first", file=sys.stderr)
            return 1
        path = found[-1]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed", file=sys.stderr)
        return 1
    data = json.loads(path.read_text())
    rows = [r for r in data["rows"] if r.get("kind") in ("dot", "rbf")]
    backward = any(r.get("mode") == "fwdbwd" for r in rows)
    output = args.output or str(REPO / "docs" / ("benchmarks-fwdbwd.png" if backward
                                                  else "benchmarks.png"))
    groups, methods = [], []
    for r in rows:
        g = (r["B"], r["H"], r["N"], r["D"], r["causal"])
        if g not in groups:
            groups.append(g)
        if r["method"] not in methods:
            methods.append(r["method"])
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups)), 4.5))
    rows = [r for r in rows if r.get("tflops")]
    for i, m in enumerate(methods):
        xs, ys = [], []
        for j, g in enumerate(groups):
            for r in rows:
                if (r["B"], r["H"], r["N"], r["D"], r["causal"], r["method"]) == (*g, m):
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(r["tflops"])
        ax.bar(xs, ys, width, label=m, color=COLORS.get(m))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{B}x{H}x{N}x{D}" + ("\ncausal" if c else "")
                        for (B, H, N, D, c) in groups], fontsize=8)
    ax.set_ylabel("TFLOP/s")
    what = "Forward + backward" if backward else "Forward"
    ax.set_title(f"{what} attention, bf16, {data['device']} ({data['date']}, medians)")
    top = max((r["tflops"] for r in rows), default=1)
    ax.set_ylim(0, top * 1.3)  # room for the legend above the bars
    ax.legend(fontsize=8, ncol=min(len(methods), 5), loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    print(f"wrote {output} from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
