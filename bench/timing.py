"""Timing shared by the benchmarks."""
import argparse
import statistics

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
