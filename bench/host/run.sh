#!/usr/bin/env bash
# Host backend speed: rbfc's JIT kernel against a naive O(N^2)-memory
# attention (bench_host.cpp) and, where a venv with torch exists at
# bench/host/.venv, torch.nn.functional.scaled_dot_product_attention on CPU.
#   bench/host/run.sh [N ...]        (default: 1024 4096; B=1, H=8, D=64, fp32)
# Needs a built tree (build/lib/libRBFCCompiler.so).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${RBFC_BUILD_DIR:-$root/build}
llvm=/usr/lib/llvm-22
out=$build/bench_host
clang++-22 -O3 -march=native -std=c++17 -fno-exceptions \
  -I"$root/include" -I"$build/include" -I"$llvm/include" \
  "$root/bench/host/bench_host.cpp" -o "$out" \
  -L"$build/lib" -lRBFCCompiler -L"$llvm/lib" -lMLIR -lLLVM \
  -Wl,-rpath,"$build/lib" -Wl,-rpath,"$llvm/lib" -lpthread
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
"$out" "$root/examples" "$@"
if [ -x "$root/bench/host/.venv/bin/python" ]; then
  "$root/bench/host/.venv/bin/python" "$root/bench/host/torch_sdpa.py" "$@"
else
  echo "# torch: no venv at bench/host/.venv (see docs/host-backend.md)"
fi
