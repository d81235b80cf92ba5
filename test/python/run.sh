#!/usr/bin/env bash
# Runs Python with the rbfc package installed, for ctest ('python',
# 'train-smoke'): makes (once) a venv under the build folder with torch (the
# CPU-capable wheel from PyPI, about a minute) and pytest, installs python/
# with this build's librbfc the way the README says (pip install ./python),
# and runs that venv's python with the given arguments from the build folder
# (so that `import rbfc` finds the installed package, not python/rbfc).
#   test/python/run.sh BUILD_DIR PYTHON_ARGUMENTS...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd)
shift
venv=$build/python-venv
if ! "$venv/bin/python" -c "import torch, pytest" 2>/dev/null; then
  python3 -m venv "$venv"
  # The GPU machine runs torch 2.11: test against the same.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "torch==2.11.*" pytest
fi
RBFC_LIBRARY=$build/lib/librbfc.so "$venv/bin/python" -m pip install -q \
  --disable-pip-version-check --no-deps --force-reinstall "$root/python"
cd "$build"
exec "$venv/bin/python" "$@"
