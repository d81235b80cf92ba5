"""Timing shared by the benchmarks."""
import triton


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
