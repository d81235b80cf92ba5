#!/usr/bin/env python3
"""Draws a bench/host/run.sh result as rbfc's speed against torch's SDPA.

    python3 bench/host/plot.py bench/results/DATE-host-cpu-vs-torch-*.json \
        [-o docs/host-backend.png]

One panel per spec (softmax, causal, RBF); for every (N, threads) a bar for
the forward and one for forward+backward, each torch's time over rbfc's
(above 1: rbfc is faster), and, when the run timed a baseline build, the
baseline's bars beside them. Several files are merged, each measurement's
best time kept (run.sh's rounds already keep the best of each). Needs
matplotlib.
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPECS = ["softmax", "causal", "rbf"]
DIRECTIONS = ["fwd", "fwd+bwd"]


def best_times(paths):
    """{(impl, spec, n, threads, direction): ms}, the smallest over files."""
    best = {}
    header = None
    for path in paths:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or "records" not in data:
            raise ValueError(f"{path}: not a bench/host/run.sh result (no records)")
        header = header or data
        for record in data["records"]:
            key = (record["impl"], record["spec"], record["n"], record["threads"],
                   record["direction"])
            best[key] = min(best.get(key, float("inf")), float(record["ms"]))
    return best, header


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("-o", "--output", default=str(REPO / "docs" / "host-backend.png"))
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench/host/plot.py needs matplotlib (pip install matplotlib)",
              file=sys.stderr)
        return 1
    try:
        best, header = best_times(args.results)
    except (OSError, ValueError, KeyError) as error:
        print(f"bench/host/plot.py: {error}", file=sys.stderr)
        return 1

    impls = [impl for impl in ("rbfc", "rbfc-baseline")
             if any(key[0] == impl for key in best)]
    cases = sorted({(key[2], key[3]) for key in best if key[0] == "torch"})
    figure, axes = plt.subplots(1, len(SPECS), figsize=(4.2 * len(SPECS), 3.8),
                                sharey=True)
    width = 0.8 / (len(impls) * len(DIRECTIONS))
    colors = {("rbfc", "fwd"): "#1f77b4", ("rbfc", "fwd+bwd"): "#aec7e8",
              ("rbfc-baseline", "fwd"): "#7f7f7f",
              ("rbfc-baseline", "fwd+bwd"): "#c7c7c7"}
    for axis, spec in zip(axes, SPECS):
        bar = 0
        for impl in impls:
            for direction in DIRECTIONS:
                speeds = []
                for n, threads in cases:
                    torch = best.get(("torch", spec, n, threads, direction))
                    mine = best.get((impl, spec, n, threads, direction))
                    speeds.append(torch / mine if torch and mine else 0.0)
                positions = [i - 0.4 + width * (bar + 0.5) for i in range(len(cases))]
                label = f"{'baseline' if impl != 'rbfc' else 'rbfc'} {direction}"
                axis.bar(positions, speeds, width, label=label,
                         color=colors[(impl, direction)])
                bar += 1
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_title(spec)
        axis.set_xticks(range(len(cases)))
        axis.set_xticklabels([f"N={n}\n{t} thr" for n, t in cases], fontsize=8)
    axes[0].set_ylabel("torch SDPA time / rbfc time")
    axes[0].legend(fontsize=8)
    runs = (f"{len(args.results)} runs" if len(args.results) > 1
            else f"{header.get('rounds', 1)} rounds")
    figure.suptitle(f"rbfc host backend vs torch {header.get('torch', '')} SDPA on the "
                    f"CPU, {header.get('shape', '')}, {header.get('cpu', '')} "
                    f"({header.get('date', '')}, best of {runs})", fontsize=9)
    figure.tight_layout()
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
