#!/usr/bin/env bash
# Host backend speed against torch SDPA on the CPU, in one run: rbfc's JIT
# kernel (bench_host.cpp) and torch.nn.functional.scaled_dot_product_attention
# (torch_sdpa.py, run by the build's python venv, which has torch), softmax,
# causal and RBF, fp32, B=1, H=8, D=64, forward and forward+backward, 1 and
# 2 threads.
#   bench/host/run.sh [--json FILE] [--baseline TREE] [--split]
#                     [--rounds R] [N ...]      (default N: 1024 4096)
# Prints a table; --json also writes every measurement with the machine,
# torch's version and the load average before and after. --rounds runs
# every implementation R times in turn (rbfc, baseline, split, torch, then
# again), so that a busy spell of a shared machine hits them alike; the
# table shows each one's best round. --baseline times
# another build as well ("rbfc-baseline"): TREE holds include/,
# build/include/ and build/lib/libRBFCCompiler.so (a source tree and its
# build, or a copy of those). --split times this build's split backward
# schedule as well ("rbfc-split"; docs/host-backend.md, "Backward").
# RBFC_BENCH_TILING=TILE_M,TILE_N,ROWS_PER_STEP times rbfc (not the
# baseline) with another blocking (bench_host.cpp).
# Needs a built tree (build/lib/libRBFCCompiler.so, build/python-venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${RBFC_BUILD_DIR:-$root/build}
llvm=/usr/lib/llvm-22
python=$build/python-venv/bin/python
json= baseline= split= rounds=1
while [ $# -gt 0 ]; do
  case $1 in
    --json) json=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --split) split=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    *) break ;;
  esac
done
# bench_host.cpp against the headers and library of tree $1 (its build in
# $2), into $3.
build_bench() {
  clang++-22 -O3 -march=native -std=c++17 -fno-exceptions \
    -I"$1/include" -I"$2/include" -I"$llvm/include" \
    "$root/bench/host/bench_host.cpp" -o "$3" \
    -L"$2/lib" -lRBFCCompiler -L"$llvm/lib" -lMLIR -lLLVM \
    -Wl,-rpath,"$2/lib" -Wl,-rpath,"$llvm/lib" -lpthread
}
out=$build/bench_host
build_bench "$root" "$build" "$out"
records=$(mktemp)
trap 'rm -f "$records" "$records.baseline"' EXIT
if [ -n "$baseline" ]; then
  build_bench "$baseline" "$baseline/build" "$records.baseline"
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$rounds"); do
  "$out" "$root/examples" "$@" >>"$records"
  if [ -n "$split" ]; then
    RBFC_BENCH_IMPL=rbfc-split RBFC_BENCH_SCHEDULE=split "$out" \
      "$root/examples" "$@" >>"$records"
  fi
  if [ -n "$baseline" ]; then
    env -u RBFC_BENCH_TILING RBFC_BENCH_IMPL=rbfc-baseline "$records.baseline" "$root/examples" "$@" \
      >>"$records"
  fi
  "$python" "$root/bench/host/torch_sdpa.py" "$@" >>"$records" 2>/dev/null
  echo "# round $round of $rounds done, load $(cut -d' ' -f1-3 /proc/loadavg)"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
"$python" - "$records" "$json" "$load_before" "$load_after" "$rounds" <<'PY'
import json, platform, subprocess, sys, datetime
records_path, json_path, load_before, load_after = sys.argv[1:5]
rounds = int(sys.argv[5])
records = [json.loads(line) for line in open(records_path) if line.strip()]
ms = {}
for r in records:
    key = (r["impl"], r["spec"], r["n"], r["threads"], r["direction"])
    ms[key] = min(ms.get(key, float("inf")), r["ms"])
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
           if l.startswith("model name"))
print(f"# {cpu}, load average {load_before} before, {load_after} after, "
      f"best of {rounds} round(s)")
print(f"{'spec':8} {'N':>5} {'thr':>3} {'direction':9} {'rbfc ms':>9} "
      f"{'baseline':>9} {'split':>9} {'torch ms':>9} {'speed vs torch':>15}")
for (impl, spec, n, threads, direction), value in ms.items():
    if impl != "rbfc":
        continue
    key = (spec, n, threads, direction)
    baseline_ms = ms.get(("rbfc-baseline",) + key, float("nan"))
    split_ms = ms.get(("rbfc-split",) + key, float("nan"))
    torch_ms = ms.get(("torch",) + key, float("nan"))
    print(f"{spec:8} {n:5} {threads:3} {direction:9} {value:9.1f} "
          f"{baseline_ms:9.1f} {split_ms:9.1f} {torch_ms:9.1f} "
          f"{torch_ms / value:14.2f}x")
if json_path:
    import torch
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    json.dump({"date": datetime.date.today().isoformat(), "cpu": cpu,
               "cores": __import__("os").cpu_count(), "commit": commit,
               "torch": torch.__version__, "shape": "B=1 H=8 D=64 fp32",
               "load average before": load_before,
               "load average after": load_after, "rounds": rounds,
               "records": records},
              open(json_path, "w"), indent=1)
    print(f"# wrote {json_path}")
PY
