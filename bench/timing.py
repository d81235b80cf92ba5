"""Timing shared by the benchmarks."""
import argparse
import json
import os
import statistics
import tempfile

import torch
import triton


def add_timing_arguments(parser):
    """--reps, --warmup and --rounds, what time_in_turns takes."""
    def at_least_one(text):
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
        return value
    parser.add_argument("--reps", type=int, default=100, help="do_bench rep, ms")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warmup, ms")
    parser.add_argument("--rounds", type=at_least_one, default=3,
                        help="rounds over the methods of a shape, --reps split "
                             "between them")


def time_in_turns(fns, rounds, warmup_ms, rep_ms):
    """{name: {"ms": [one do_bench median a round]} or {"error": ...}} for
    the functions `fns` ({name: fn}), timed in `rounds` rounds that each
    take every function in turn with rep_ms / rounds of repetitions, so
    that a slow stretch of the run (the clocks drift over seconds) falls
    on every method of a case alike, not on whichever ran then."""
    turns = {name: {"ms": []} for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if "error" in turns[name]:
                continue
            try:
                turns[name]["ms"].append(triton.testing.do_bench(
                    fn, warmup=warmup_ms, rep=rep_ms / rounds, return_mode="median"))
            except Exception as e:  # a failing method must not stop the peers
                turns[name] = {"error": repr(e)[:300]}
    return turns


def record_turns(row, timed, flop_count):
    """Sets the result row `row` from `timed`, a method's entry of
    time_in_turns (None when it never got that far): ms, the median of its
    rounds, ms_turns and tflops; or ms and tflops None and the error.
    Returns whether the method was timed."""
    if timed and "ms" in timed:
        row.update(ms=statistics.median(timed["ms"]), ms_turns=timed["ms"])
        row["tflops"] = flop_count / row["ms"] / 1e9
        return True
    row.update(ms=None, tflops=None)
    row.setdefault("error", (timed or {}).get("error"))
    return False


def l2_clear_buffer():
    """A 256 MB buffer whose zero_() before a call evicts the L2, as
    triton.testing.do_bench does between its calls."""
    return torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")


# torch.cuda._sleep's kernel: no method launches it, so it marks where a
# call begins in the profiler's trace.
_MARKER_KERNEL = "spin_kernel"


def kernel_time(fns, calls):
    """{name: {"device_ms": ..., "kernels": ...} or {"device_error": ...}}:
    the time the GPU spends in one call's kernels, the median over `calls`
    calls of the union of their intervals in torch.profiler's CUDA activity
    (launch gaps and host work left out, overlapping kernels counted once),
    with the L2 cleared before each call as do_bench does; "kernels" is how
    many a call ran. A call's CUDA events (time_in_turns) start before its
    host work: at a few microseconds of kernels a method whose host path
    takes longer is timed by that path, and the events rank host code, not
    kernels."""
    from torch.profiler import ProfilerActivity, profile
    cache = l2_clear_buffer()
    results = {}
    for name, fn in fns.items():
        try:
            fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(calls):
                    torch.cuda._sleep(1000)
                    cache.zero_()
                    fn()
                torch.cuda.synchronize()
            with tempfile.TemporaryDirectory() as tmp:
                trace = os.path.join(tmp, "trace.json")
                prof.export_chrome_trace(trace)
                with open(trace) as f:
                    events = json.load(f).get("traceEvents", [])
            results[name] = _calls_kernel_time(events, calls)
        except Exception as e:  # a failing method must not stop the peers
            results[name] = {"device_error": repr(e)[:300]}
    return results


def _calls_kernel_time(events, calls):
    kernels = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), e["name"])
                     for e in events if e.get("cat") == "kernel")
    per_call, current = [], None
    for start, end, name in kernels:
        if _MARKER_KERNEL in name:
            current = []
            per_call.append(current)
        elif current is not None:
            current.append((start, end))
    # Each call: the marker, the L2 clear, then the method's kernels.
    per_call = [spans[1:] for spans in per_call]
    if len(per_call) != calls or not all(per_call):
        return {"device_error": f"the trace held {len(per_call)} of {calls} calls, "
                                f"{sum(map(len, per_call))} kernels"}
    counts = {len(spans) for spans in per_call}
    return {"device_ms": statistics.median(_union_length(s) for s in per_call) / 1e3,
            "kernels": max(counts) if len(counts) == 1 else sorted(counts)}


def _union_length(spans):
    """Total length of the union of the intervals `spans` (sorted by start)."""
    total, open_start, open_end = 0.0, None, None
    for start, end in spans:
        if open_end is None or start > open_end:
            if open_end is not None:
                total += open_end - open_start
            open_start, open_end = start, end
        else:
            open_end = max(open_end, end)
    return total + (open_end - open_start if open_end is not None else 0.0)


def record_kernel_time(row, measured, flop_count):
    """Sets device_ms, device_tflops and kernels of the result row `row` from
    a method's entry of kernel_time, or device_error."""
    if measured and "device_ms" in measured:
        row.update(device_ms=measured["device_ms"], kernels=measured["kernels"],
                   device_tflops=flop_count / measured["device_ms"] / 1e9)
    elif measured:
        row["device_error"] = measured["device_error"]
