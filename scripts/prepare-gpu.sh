#!/usr/bin/env bash
# Prepares .carry/ (git-ignored) for the GPU machine, which has no LLVM, no
# MLIR and no network:
#   .carry/bin/rbfc.xz               static, stripped compiler (build-static/),
#                                    xz-compressed to fit the 64 MiB a call
#                                    carries; python/rbfc unpacks it there
#   .carry/lib/librbfc_runtime.so    the CUDA runtime (links only libc)
#   .carry/wheels/rbfc-*.whl         the Python package with the static
#                                    librbfc (scripts/build-wheel.sh)
#   .carry/bin/rbfc-c-example        examples/c/rbf_attention.c, linked
#                                    against that librbfc
#   .carry/anchors/                  the peer scripts of ../shared/anchors
# Then a device call names ".carry" in `carry` and runs, from the repo root,
#   python3 test/gpu/run_gpu_tests.py      and     python3 bench/bench_fwd.py
# and, with the wheel installed (pip install --no-index --no-deps
# .carry/wheels/rbfc-*.whl),  python3 test/gpu/run_python_tests.py
# (docs/gpu-testing.md). Environment: RBFC_STATIC_BUILD_DIR (build-static),
# RBFC_ANCHORS_DIR (../shared/anchors), RBFC_JOBS (2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RBFC_STATIC_BUILD_DIR:-$root/build-static}
anchors=${RBFC_ANCHORS_DIR:-$root/../shared/anchors}
carry=$root/.carry
limit=$((64 * 1024 * 1024))

if [[ ! -f $build/build.ninja ]]; then
  CC=clang-22 CXX=clang++-22 cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release -DRBFC_BUILD_TESTS=OFF \
    -DRBFC_STATIC_TOOLS=ON -DLLVM_USE_LINKER=lld
fi
# Other builds share this machine's two cores: one build at a time.
flock /tmp/rbfc-build.lock ninja -C "$build" -j"${RBFC_JOBS:-2}" rbfc rbfc_runtime \
  rbfc_library rbfc-c-example

if [[ ! -f $build/lib/librbfc_runtime.so ]]; then
  echo "prepare-gpu: $build/lib/librbfc_runtime.so was not built (is cuda.h missing?)" >&2
  exit 1
fi
# The GPU machine has neither libLLVM nor libMLIR: the binary must not need them.
if ldd "$build/bin/rbfc" | grep -E 'libLLVM|libMLIR|libstdc\+\+|libz3'; then
  echo "prepare-gpu: $build/bin/rbfc links a library the GPU machine lacks (above)" >&2
  exit 1
fi
"$build/bin/rbfc" "$root/examples/rbf.attn" > /dev/null

# xz takes a minute or more: reuse the archive while the binary is unchanged.
mkdir -p "$carry/bin"
if [[ ! -f $carry/bin/rbfc.xz || $build/bin/rbfc -nt $carry/bin/rbfc.xz ]]; then
  xz -9 -T2 -c "$build/bin/rbfc" > "$carry/bin/rbfc.xz.tmp"
  mv "$carry/bin/rbfc.xz.tmp" "$carry/bin/rbfc.xz"
fi
rm -rf "$carry/bin/rbfc" "$carry/bin/rbfc-c-example" "$carry/lib" "$carry/anchors"
mkdir -p "$carry/lib"
install -m 755 "$build/lib/librbfc_runtime.so" "$carry/lib/librbfc_runtime.so"
strip --strip-unneeded "$carry/lib/librbfc_runtime.so"
"$root/scripts/build-wheel.sh" "$build/lib/librbfc.so" "$carry/wheels"
install -m 755 "$build/bin/rbfc-c-example" "$carry/bin/rbfc-c-example"
if [[ -d $anchors ]]; then
  mkdir -p "$carry/anchors"
  cp "$anchors"/*.py "$anchors"/README.md "$carry/anchors/"
else
  echo "prepare-gpu: no anchors at $anchors; bench/bench_fwd.py does not need them" >&2
fi

# What travels: tracked and untracked-not-ignored files, plus .carry.
tree=$(cd "$root" && git ls-files -z --cached --others --exclude-standard |
  xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carried=$(du -sb "$carry" | cut -f1)
total=$((tree + carried))
echo "prepare-gpu: rbfc $(stat -c %s "$build/bin/rbfc") bytes" \
  "($(stat -c %s "$carry/bin/rbfc.xz") as .xz)," \
  "librbfc_runtime.so $(stat -c %s "$carry/lib/librbfc_runtime.so") bytes," \
  "the wheel $(stat -c %s "$carry"/wheels/rbfc-*.whl) bytes"
echo "prepare-gpu: .carry $carried bytes + working tree $tree bytes = $total of $limit"
if ((total >= limit)); then
  echo "prepare-gpu: over the 64 MiB a device call carries" >&2
  exit 1
fi
