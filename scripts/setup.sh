#!/usr/bin/env bash
# The first command on a fresh machine: installs the dependencies, builds
# rbfc and librbfc (which `pip install ./python` packages) and compiles the
# flagship spec, examples/rbf.attn, to PTX for Hopper, sm_90a (build/rbf.ptx
# and its launch descriptor build/rbf.json).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" rbfc rbf-opt
# librbfc needs cuda.h (the driver's types; CMake says when it is missing).
if ninja -C "$root/build" -t query rbfc_library > /dev/null 2>&1; then
  "$root/scripts/build.sh" rbfc_library
fi
"$root/build/bin/rbfc" "$root/examples/rbf.attn" --emit=ptx --arch=sm_90a \
  --head-dim=128 -o "$root/build/rbf.ptx"
echo "wrote $root/build/rbf.ptx and $root/build/rbf.json:"
# The kernel's tensor-core instruction: wgmma on sm_90a, mma.sync before.
grep -m1 -oE '(wgmma\.mma_async|mma\.sync\.aligned)[^ ]*' "$root/build/rbf.ptx"
cat "$root/build/rbf.json"
