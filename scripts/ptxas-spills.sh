#!/usr/bin/env bash
# Compiles every example spec's kernels (mma.sync, and wgmma where the default
# plan picks it) with `ptxas -v` and prints
# the registers and spill bytes of each kernel, and whether ptxas serialized
# its wgmma ("Potential Performance Loss: wgmma.mma_async instructions are
# serialized", C7514-C7520: every wgmma then waits for the one before, in
# the whole function) and, with nvdisasm, how many placeholder wgmma its SASS
# has (`HGMMA.64x8x16.F16 RZ, gdesc[URZ], ...`: ptxas's mark of a commit
# group that may be empty, which a wait then counts on every path, so that
# waiting for all groups but one waited for the product before it too,
# bench/NOTES.md step 19): every examples/*.attn x
# every head_dim the kernels take (multiples of 16 from 32 to 256 forward,
# to 128 backward) x {sm_80, sm_90a} x forward and --backward (whose PTX
# holds the forward with an LSE output and the backward's kernels), under
# the default plan. Exits 1 when a kernel spills, is serialized, has a
# placeholder wgmma or fails to compile.
#
#   scripts/ptxas-spills.sh [RBFC]
#
# RBFC defaults to build/bin/rbfc; PTXAS to ptxas on the PATH or
# /usr/local/cuda/bin/ptxas; DTYPES (default "bf16 f16"), ARCHS (default
# "sm_80 sm_90a") and EXAMPLES (default every examples/*.attn) narrow the
# set; RBFC_JOBS (default 2) combinations run at once. NVDISASM defaults to
# nvdisasm on the PATH; without it the placeholders column reads "-" (PyPI's
# nvidia-cuda-nvdisasm wheel carries one that runs here).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rbfc=$(realpath "${1:-$root/build/bin/rbfc}")
ptxas=${PTXAS:-$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)}
if [[ ! -x $ptxas ]]; then
  echo "ptxas not found (set PTXAS)" >&2
  exit 2
fi
nvdisasm=${NVDISASM:-$(command -v nvdisasm || true)}

combinations() {
  cd "$root"
  for spec in ${EXAMPLES:-examples/*.attn}; do
    for dtype in ${DTYPES:-bf16 f16}; do
      for arch in ${ARCHS:-sm_80 sm_90a}; do
        for dim in $(seq 32 16 256); do
          echo "$spec $dim $dtype $arch forward"
          if ((dim <= 128)); then
            echo "$spec $dim $dtype $arch backward"
          fi
        done
      done
    done
  done
}

# One line per kernel: example dim dtype arch direction entry registers
# spill-store-bytes spill-load-bytes serialized (yes/no) placeholders.
compile_one() { # rbfc ptxas nvdisasm spec dim dtype arch direction
  local rbfc=$1 ptxas=$2 nvdisasm=$3 spec=$4 dim=$5 dtype=$6 arch=$7
  local direction=$8 name ptx
  name="$(basename "$spec" .attn) $dim $dtype $arch $direction"
  ptx=$(mktemp --suffix=.ptx)
  local flags=()
  [[ $direction == backward ]] && flags=(--backward)
  if ! "$rbfc" "$spec" --emit=ptx --head-dim="$dim" --dtype="$dtype" \
    --arch="$arch" "${flags[@]}" -o "$ptx" 2>/dev/null; then
    echo "$name - FAILED-rbfc - - - -"
  elif ! "$ptxas" -arch="$arch" -v "$ptx" -o "$ptx.cubin" 2>"$ptx.log"; then
    echo "$name - FAILED-ptxas - - - -"
  else
    # nvdisasm heads each function's SASS with a .text.<function> line.
    if [[ -n $nvdisasm ]]; then
      "$nvdisasm" -c "$ptx.cubin" | awk '
        /^[ \t]*\/\/-+ \.text\./ { function_name = $2; sub(/^\.text\./, "", function_name) }
        /HGMMA[^;]* RZ, gdesc\[URZ\]/ { print function_name }
      ' >"$ptx.placeholders"
    fi
    # ptxas names a serialized function at the end of its warning, before
    # the function's own report. Without nvdisasm there is no count.
    awk -v name="$name" -v placeholders="${nvdisasm:+$ptx.placeholders}" '
      BEGIN {
        while (placeholders != "" && (getline line < placeholders) > 0)
          count[line]++
      }
      /wgmma.mma_async instructions are serialized/ {
        function_name = $NF; gsub(/\047/, "", function_name)
        serialized[function_name] = 1
      }
      /Compiling entry function/ { entry = $7; gsub(/\047/, "", entry) }
      /bytes spill stores/ { stores = $5; loads = $9 }
      /Used [0-9]+ registers/ {
        print name, entry, $5, stores, loads, (entry in serialized) ? "yes" : "no",
              (placeholders != "" ? count[entry] + 0 : "-")
      }
    ' "$ptx.log"
  fi
  rm -f "$ptx" "$ptx.log" "$ptx.cubin" "$ptx.placeholders"
}
export -f compile_one

results=$(combinations | xargs -P "${RBFC_JOBS:-2}" -L 1 \
  bash -c 'compile_one "$@"' _ "$rbfc" "$ptxas" "$nvdisasm" | sort -k1,1 -k4,4 -k3,3 -k2,2n -k5,5 -k6,6)
{
  echo "example head_dim dtype arch direction kernel registers spill_stores spill_loads serialized placeholders"
  echo "$results"
} | column -t
failing=$(awk '$7 ~ /FAILED/ || $8 > 0 || $9 > 0 || $10 == "yes" || $11 ~ /^[1-9]/' <<<"$results")
if [[ -n $failing ]]; then
  echo
  echo "$(wc -l <<<"$failing") kernels spill, are serialized, have a placeholder wgmma or fail to compile:"
  column -t <<<"$failing"
  exit 1
fi
echo
echo "no kernel spills, is serialized or has a placeholder wgmma"
