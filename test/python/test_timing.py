"""bench/timing.py's device time: a call's kernels found between the marker
kernels of a torch.profiler trace, their intervals merged."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import timing  # noqa: E402


def kernel(name, ts, dur):
    return {"cat": "kernel", "name": name, "ts": ts, "dur": dur}


def call(t0, method_kernels):
    """The marker and the L2 clear at t0, then the method's kernels
    (offset, duration) after them."""
    return [kernel("spin_kernel(long)", t0, 1.0),
            kernel("vectorized_elementwise_kernel<FillFunctor>", t0 + 2, 50.0)] + [
        kernel(f"method_{i}", t0 + 60 + offset, dur)
        for i, (offset, dur) in enumerate(method_kernels)]


def test_union_counts_overlap_once_and_skips_gaps():
    assert timing._union_length([(0, 10), (5, 12), (20, 25)]) == 17
    assert timing._union_length([(0, 10), (2, 3)]) == 10
    assert timing._union_length([]) == 0


def test_a_call_is_its_kernels_after_the_l2_clear():
    # A prologue overlapped with the main kernel (PDL), then a host gap of
    # 300 us before a third kernel: 14 + 6 us of device time, not 320.
    events = []
    for i in range(3):
        events += call(1000.0 * i, [(0, 10), (4, 10), (314, 6)])
    events.append({"cat": "cpu_op", "name": "aten::zero_", "ts": 5, "dur": 1})
    measured = timing._calls_kernel_time(events, 3)
    assert measured["kernels"] == 3
    assert abs(measured["device_ms"] - 20e-3) < 1e-9


def test_the_median_of_the_calls():
    events = call(0, [(0, 10)]) + call(1000, [(0, 30)]) + call(2000, [(0, 20)])
    assert abs(timing._calls_kernel_time(events, 3)["device_ms"] - 20e-3) < 1e-9


def test_a_missing_call_is_an_error_not_a_time():
    events = call(0, [(0, 10)]) + call(1000, [])
    assert "device_error" in timing._calls_kernel_time(events, 2)
    assert "device_error" in timing._calls_kernel_time(call(0, [(0, 10)]), 2)
