#!/usr/bin/env bash
# The second command: builds everything and runs the whole test suite (lit,
# unit tests with the algebra property test, a bounded fuzzing run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
cd "${RBFC_BUILD_DIR:-$root/build}"
# Two at a time: the longest ones (host-numeric: compiling; python: its
# venv and torch) each keep one core busy.
ctest --output-on-failure -j"${RBFC_JOBS:-2}"
