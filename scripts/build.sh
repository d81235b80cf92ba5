#!/usr/bin/env bash
# Configures (once) and builds rbfc into build/ with clang 22. Extra
# arguments go to the build, e.g. `scripts/build.sh rbfc`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${RBFC_BUILD_DIR:-$root/build}

if [[ ! -f $build/build.ninja ]]; then
  CC=clang-22 CXX=clang++-22 cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release -DRBFC_BUILD_TESTS=ON -DRBFC_BUILD_FUZZER=ON
fi
ninja -C "$build" -j"${RBFC_JOBS:-2}" "$@"
