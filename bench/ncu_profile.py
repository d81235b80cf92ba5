#!/usr/bin/env python3
"""Nsight Compute profiles of rbfc's forward kernels beside SDPA's, and what
they say, side by side.

On the GPU machine (ncu at /usr/local/cuda/bin/ncu, or NCU=...):
    python3 bench/ncu_profile.py run --out DIR [--shape 4x16x4096x128]
        [--causal] [--methods rbfc_dot,rbfc_rbf,sdpa_cudnn]
        [--baseline-rbfc LABEL=PATH]...
profiles one call of each method (after three warm-up calls, between
cudaProfilerStart and Stop) and writes, per method M, DIR/details-M.txt
(ncu's details page), DIR/source-M.csv (per-SASS-instruction stall samples)
and DIR/raw-M.csv (every metric), then prints the summary. Anywhere:
    python3 bench/ncu_profile.py summarize DIR [--top 12]
reads those files: duration, tensor-pipe activity, issue-slot use, the
stall reasons over all samples, the instructions executed by opcode, the
opcodes that collect the most samples and with what reasons, and the
longest run of back-to-back MUFU (the
exponentials; bench/NOTES.md step 24 found rbfc's 80 a tile in one run).

Methods: rbfc_dot and rbfc_rbf (examples/softmax.attn and rbf.attn, their
causal forms with --causal), rbfc_dot_LABEL and rbfc_rbf_LABEL with
--baseline-rbfc LABEL=PATH (another rbfc binary), rbfc-NAME (any
examples/NAME.attn at its default plan, with the captures the GPU tests
make for it, e.g. rbfc-relative_bias), sdpa_cudnn, sdpa_flash and fa4_dot
(FlashAttention-4, where it is installed).
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from shapes import RBFC_SPECS, parse_shape  # noqa: E402

SECTIONS = ["SpeedOfLight", "ComputeWorkloadAnalysis", "WarpStateStats",
            "SchedulerStats", "InstructionStats", "Occupancy", "LaunchStats",
            "SourceCounters"]
TENSOR_ACTIVE = "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"
SAMPLES = "Warp Stall Sampling (All Samples)"
# What profiled_call runs; rbfc_dot_LABEL and rbfc_rbf_LABEL besides, one
# pair for each --baseline-rbfc.
METHODS = ("rbfc_dot", "rbfc_rbf", "sdpa_cudnn", "sdpa_flash", "fa4_dot")
EXECUTED = "Instructions Executed"
# rbfc-NAME profiles examples/NAME.attn.
EXAMPLE_PREFIX = "rbfc-"


def example_spec(method):
    """The spec of the method rbfc-NAME: examples/NAME.attn."""
    return REPO / "examples" / f"{method.removeprefix(EXAMPLE_PREFIX)}.attn"


# --------------------------------------------------------------------------
# Profiling (GPU machine)


def profiled_call(method, shape, causal, binaries):
    """The `one` subcommand, run under ncu: a single profiled call."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, H, KV, N, D = shape
    g = torch.Generator().manual_seed(5)
    q = torch.randn(B, H, N, D, generator=g).to("cuda", torch.bfloat16)
    k, v = (torch.randn(B, KV, N, D, generator=g).to("cuda", torch.bfloat16)
            for _ in range(2))
    if method.startswith("sdpa_"):
        backend = {"sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
                   "sdpa_flash": SDPBackend.FLASH_ATTENTION}[method]

        def call():
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                      enable_gqa=KV != H)
    elif method == "fa4_dot":
        # FlashAttention-4 (CuTe DSL; its sm90 forward on Hopper) takes
        # [B, N, H, D]; the warm-up calls below compile it outside the
        # profiled range. Installed as bench_fwd.py's peer is (docs/gpu-testing.md).
        from flash_attn.cute.interface import flash_attn_func
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))

        def call():
            return flash_attn_func(qt, kt, vt, causal=causal)
    elif method.startswith("rbfc_"):
        variant, _, label = method.removeprefix("rbfc_").partition("_")
        if label:
            os.environ["RBFC_BIN"] = binaries[label]
        sys.path.insert(0, str(REPO / "python"))
        from rbfc import Kernel
        kernel = Kernel(REPO / "examples" / RBFC_SPECS[(variant, causal)], head_dim=D,
                        dtype="bf16", out_dir=tempfile.mkdtemp())
        call = lambda: kernel(q, k, v)  # noqa: E731
    elif method.startswith(EXAMPLE_PREFIX):
        sys.path.insert(0, str(REPO / "python"))
        sys.path.insert(0, str(REPO / "test" / "python"))
        from rbfc import Kernel
        from references import make_captures
        captures = make_captures(method.removeprefix(EXAMPLE_PREFIX), B, H, N, N,
                                 g, "cuda")
        kernel = Kernel(example_spec(method), head_dim=D, dtype="bf16",
                        out_dir=tempfile.mkdtemp())
        call = lambda: kernel(q, k, v, captures=captures)  # noqa: E731
    else:
        raise SystemExit(f"unknown method {method!r}: {', '.join(METHODS)}, "
                         f"rbfc_dot_LABEL, rbfc_rbf_LABEL, {EXAMPLE_PREFIX}NAME")
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    call()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


def profile(args):
    ncu = os.environ.get("NCU", "/usr/local/cuda/bin/ncu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    baselines = []
    for baseline in args.baseline_rbfc:
        baselines += ["--baseline-rbfc", baseline]
    for method in args.methods.split(","):
        report = out / f"{method}.ncu-rep"
        command = [ncu, "--profile-from-start", "off", "-f", "-o", str(report.with_suffix(""))]
        for section in SECTIONS:
            command += ["--section", section]
        command += [sys.executable, __file__, "one", method, "--shape", args.shape]
        command += ["--causal"] * args.causal + baselines
        run = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        if run.returncode != 0 or not report.is_file():
            print(f"{method}: ncu failed ({run.returncode})\n{run.stdout[-2000:]}"
                  f"{run.stderr[-2000:]}", file=sys.stderr)
            return 1
        pages = {"details": (["--page", "details", "--print-units", "base"], "txt"),
                 "source": (["--page", "source", "--csv", "--print-source", "sass"], "csv"),
                 "raw": (["--page", "raw", "--csv"], "csv")}
        for page, (flags, suffix) in pages.items():
            with open(out / f"{page}-{method}.{suffix}", "w") as f:
                subprocess.run([ncu, "-i", str(report)] + flags, stdout=f, check=True)
        report.unlink()
        print(f"profiled {method}", flush=True)
    print(summary(out, args.top))
    return 0


# --------------------------------------------------------------------------
# Reading the reports


def read_source(path):
    """Kernel name -> its per-instruction rows, from a `--page source --csv
    --print-source sass` export (per kernel a "Kernel Name" line, then the
    header, then a row per SASS instruction)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kernels, names, name = {}, None, None
    for row in rows:
        if row[:1] == ["Kernel Name"]:
            name, names = row[1], None
            kernels[name] = []
        elif name is not None and names is None and "Source" in row and SAMPLES in row:
            names = row
        elif names is not None and len(row) == len(names):
            kernels[name].append(dict(zip(names, row)))
    kernels = {k: v for k, v in kernels.items() if v}
    if not kernels:
        raise ValueError(f"{path}: no SASS source table (a header with Source and {SAMPLES!r})")
    return kernels


def hot_kernel(kernels):
    """The kernel with the most stall samples (the flash kernel, not the
    key-terms prologue launched before it)."""
    return max(kernels, key=lambda k: sum(count(r[SAMPLES]) for r in kernels[k]))


def opcode(sass):
    """The opcode of a SASS line without its predicate and modifiers:
    '@!P2 MUFU.EX2 R1, R2' -> 'MUFU'."""
    words = sass.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def count(value):
    return int(value.replace(",", "") or 0) if value else 0


def stall_profile(rows):
    """Samples by stall reason, and by opcode with each opcode's reasons."""
    reasons = [name for name in rows[0] if name.startswith("stall_") and "Not Issued" not in name]
    total, by_opcode = Counter(), defaultdict(Counter)
    for row in rows:
        op = opcode(row["Source"])
        for reason in reasons:
            samples = count(row[reason])
            total[reason] += samples
            by_opcode[op][reason] += samples
    return total, by_opcode


def executed_by_opcode(rows):
    """Warp instructions executed, by opcode."""
    executed = Counter()
    for row in rows:
        executed[opcode(row["Source"])] += count(row.get(EXECUTED, ""))
    return executed


def longest_run(rows, op):
    """The most `op` instructions in a row in the SASS."""
    best = current = 0
    for row in rows:
        current = current + 1 if opcode(row["Source"]) == op else 0
        best = max(best, current)
    return best


def read_metric(raw_path, name, kernel):
    """One metric of `kernel` in a `--page raw --csv` export (names, units,
    then a row per profiled kernel)."""
    with open(raw_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or name not in rows[0] or "Kernel Name" not in rows[0]:
        return None
    column, kernel_column = rows[0].index(name), rows[0].index("Kernel Name")
    values = [row[column] for row in rows[2:] if row[kernel_column] == kernel]
    return float(values[-1].replace(",", "")) if values else None


def read_detail(details_path, label, kernel):
    """A value of `kernel`'s part of the details page, e.g. 'Duration' or
    'Issue Slots Busy' (each kernel's part starts with a line
    '  NAME (grid)x(block), ...')."""
    inside = False
    for line in Path(details_path).read_text().splitlines():
        if re.match(r"  \S", line):
            inside = line.strip().startswith(kernel + " (")
            continue
        match = inside and re.match(rf"\s+{re.escape(label)}\s+\S+\s+([\d,.]+)\s*$", line)
        if match:
            return float(match.group(1).replace(",", ""))
    return None


def methods_in(directory):
    return sorted(path.name[len("source-"):-len(".csv")]
                  for path in Path(directory).glob("source-*.csv"))


def summary(directory, top=12):
    directory = Path(directory)
    methods = methods_in(directory)
    if not methods:
        raise ValueError(f"{directory}: no source-*.csv")
    lines = []
    head = f"{'':34s}" + "".join(f"{m:>16s}" for m in methods)
    lines.append(head)
    kernels = {m: read_source(directory / f"source-{m}.csv") for m in methods}
    hot = {m: hot_kernel(kernels[m]) for m in methods}
    profiles = {m: kernels[m][hot[m]] for m in methods}
    stalls = {m: stall_profile(profiles[m]) for m in methods}
    lines.append(f"{'kernel':34s}" + "".join(f"{hot[m][-15:]:>16s}" for m in methods))

    def row(label, values, fmt="{:16.1f}"):
        lines.append(f"{label:34s}" + "".join(
            f"{'-':>16s}" if v is None else fmt.format(v) for v in values))

    def detail(m, label):
        path = directory / f"details-{m}.txt"
        return read_detail(path, label, hot[m]) if path.is_file() else None

    def metric(m, name):
        path = directory / f"raw-{m}.csv"
        return read_metric(path, name, hot[m]) if path.is_file() else None

    durations = [detail(m, "Duration") for m in methods]
    row("duration (us)", [None if ns is None else ns / 1e3 for ns in durations])
    row("tensor pipe active (%)", [metric(m, TENSOR_ACTIVE) for m in methods])
    row("issue slots busy (%)", [detail(m, "Issue Slots Busy") for m in methods])
    row("longest MUFU run", [longest_run(profiles[m], "MUFU") for m in methods], "{:16d}")
    reasons = Counter()
    for total, _ in stalls.values():
        reasons.update(total)
    lines.append("stall reasons, % of samples:")
    for reason, _ in reasons.most_common(top):
        row("  " + reason, [100 * stalls[m][0][reason] / max(1, sum(stalls[m][0].values()))
                            for m in methods])
    # What each kernel executes around its exponentials (step 26: cuDNN
    # spends more instructions on the same MUFU and stalls less).
    executed = {m: executed_by_opcode(profiles[m]) for m in methods}
    overall = Counter()
    for counter in executed.values():
        overall.update(counter)
    lines.append("instructions executed (millions of warp instructions):")
    row("  all", [sum(executed[m].values()) / 1e6 for m in methods])
    for op, _ in overall.most_common(top):
        row("  " + op, [executed[m][op] / 1e6 for m in methods])
    for m in methods:
        total, by_opcode = stalls[m]
        all_samples = max(1, sum(total.values()))
        lines.append(f"{m}: opcodes by samples (% of all; top reasons)")
        ranked = sorted(by_opcode.items(), key=lambda item: -sum(item[1].values()))
        for op, counter in ranked[:top]:
            share = 100 * sum(counter.values()) / all_samples
            why = ", ".join(f"{reason[6:]} {100 * n / all_samples:.1f}"
                            for reason, n in counter.most_common(3))
            lines.append(f"  {op:12s} {share:5.1f}   {why}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="profile each method (GPU machine)")
    run.add_argument("--out", required=True)
    run.add_argument("--methods", default="rbfc_dot,rbfc_rbf,sdpa_cudnn")
    run.add_argument("--timeout", type=int, default=180, help="seconds a method")
    one = sub.add_parser("one", help=argparse.SUPPRESS)
    one.add_argument("method")
    for parser in (run, one):
        parser.add_argument("--shape", default="4x16x4096x128", help="BxHxNxD or BxH/KVxNxD")
        parser.add_argument("--causal", action="store_true")
        parser.add_argument("--baseline-rbfc", action="append", default=[],
                            metavar="LABEL=PATH")
    run.add_argument("--top", type=int, default=12)
    summarize = sub.add_parser("summarize", help="read a run's files")
    summarize.add_argument("directory")
    summarize.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    if args.command == "summarize":
        try:
            print(summary(args.directory, args.top))
        except (OSError, ValueError) as error:
            print(f"ncu_profile: {error}", file=sys.stderr)
            return 1
        return 0
    binaries = {}
    for baseline in args.baseline_rbfc:
        label, _, path = baseline.partition("=")
        if not label or not path or "_" in label:
            print(f"--baseline-rbfc wants LABEL=PATH (a label without '_'), not {baseline!r}",
                  file=sys.stderr)
            return 2
        binaries[label] = path
    shape = parse_shape(args.shape)
    if args.command == "one":
        profiled_call(args.method, shape, args.causal, binaries)
        return 0
    known = set(METHODS)
    known |= {f"rbfc_{v}_{label}" for v in ("dot", "rbf") for label in binaries}
    known |= {method for method in args.methods.split(",")
              if method.startswith(EXAMPLE_PREFIX) and example_spec(method).is_file()}
    unknown = set(args.methods.split(",")) - known
    if unknown:
        print(f"unknown method(s) {sorted(unknown)}; known: {sorted(known)}", file=sys.stderr)
        return 2
    return profile(args)


if __name__ == "__main__":
    sys.exit(main())
