#!/usr/bin/env bash
# Installs what rbfc builds with: LLVM/MLIR 22 from Debian, clang 22 (with
# libFuzzer), CLI11, GoogleTest, CMake and Ninja, and python3-venv and
# python3-dev for the Python package's venv and its C module. Safe to run
# again.
set -euo pipefail

packages=(libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools clang-22
          libclang-rt-22-dev libcli11-dev libgtest-dev cmake ninja-build
          python3-venv python3-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
    missing+=("$package")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q \
    --no-install-recommends "${missing[@]}"
fi
