"""compute-sanitizer over a GPU test script's own `--sanitize-child` run,
shared by run_gpu_tests.py and run_gpu_backward.py."""
import glob
import os
import shutil
import subprocess
import sys
import time


def run_child(script, tool, seed, extra_args, timeout):
    """Runs `script --sanitize-child --seed SEED EXTRA_ARGS...` under
    compute-sanitizer `tool` (memcheck or racecheck) and prints the end of
    its output: None when it is clean, else what went wrong."""
    sanitizer = shutil.which("compute-sanitizer") or next(
        iter(sorted(glob.glob("/usr/local/cuda*/bin/compute-sanitizer"))), None)
    if not sanitizer:
        return "compute-sanitizer not found"
    cmd = [sanitizer, "--tool", tool, "--error-exitcode", "99", "--print-limit", "20",
           sys.executable, str(script), "--sanitize-child", "--seed", str(seed),
           *extra_args]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.time()
    # Without the caching allocator every tensor is its own allocation, so
    # memcheck sees a write past one (the allocator carves tensors out of
    # larger blocks, where an overrun lands in bytes it owns).
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{tool} timed out after {timeout} s"
    # The sanitizer's own lines (=========) name the kernel and the accesses
    # of each error; the child's line after them, the case that made them
    # (it prints once its kernel has completed). Then the child's tail.
    lines = (run.stdout + run.stderr).strip().splitlines()
    shown, in_report = [], False
    for line in lines:
        reported = line.startswith("=========")
        if reported or in_report:
            shown.append(line)
        in_report = reported
    print("\n".join(shown[:80]))
    if len(shown) > 80:
        print(f"... {len(shown) - 80} more lines of sanitizer reports")
    print("\n".join(line for line in lines[-8:] if not line.startswith("=========")))
    print(f"compute-sanitizer {tool}: exit {run.returncode} in {time.time() - t0:.0f} s")
    return None if run.returncode == 0 else f"{tool} exit {run.returncode}"
