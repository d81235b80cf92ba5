#!/usr/bin/env bash
# The first command on a fresh machine: installs the dependencies, builds
# rbfc and compiles the flagship spec, examples/rbf.attn.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" rbfc rbf-opt
"$root/build/bin/rbfc" "$root/examples/rbf.attn"
