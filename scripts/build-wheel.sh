#!/usr/bin/env bash
# Packages python/rbfc with a librbfc.so into one wheel
# (rbfc-VERSION-cp39-abi3-linux_x86_64.whl: its C module uses Python's
# stable ABI) for machines without LLVM, MLIR,
# a compiler or a network, such as the GPU machine:
#   scripts/build-wheel.sh LIBRBFC OUT_DIR
# LIBRBFC must be self-contained, as an RBFC_STATIC_TOOLS build makes it
# (scripts/prepare-gpu.sh builds one and calls this): it may need only libc,
# libm, libz and libzstd. There the wheel installs with
#   pip install --no-index --no-deps OUT_DIR/rbfc-*.whl
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
library=$(realpath "$1")
out=$2

extra=$(ldd "$library" | grep -vE 'linux-vdso|ld-linux|/libc\.so|/libm\.so|/libz\.so|/libzstd\.so' || true)
if [[ -n $extra ]]; then
  echo "build-wheel: $library needs libraries a bare machine lacks:" >&2
  echo "$extra" >&2
  exit 1
fi
mkdir -p "$out"
rm -f "$out"/rbfc-*.whl
# setup.py copies the library into the package; the build's scratch folders
# stay out of the source tree.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r "$root/python/." "$scratch/"
rm -rf "$scratch/build" "$scratch"/*.egg-info
RBFC_LIBRARY=$library RBFC_INCLUDE=$root/include python3 -m pip wheel -q --disable-pip-version-check \
  --no-deps -w "$out" "$scratch"
ls -l "$out"/rbfc-*.whl
