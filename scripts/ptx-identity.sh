#!/usr/bin/env bash
# Emits the PTX, descriptor, diagnostics and exit status of every kernel the
# NVGPU backend can be asked for, one file set per combination, so that a
# refactoring of the kernel builder can show it changes no instruction:
#
#   scripts/ptx-identity.sh OUT_DIR [RBFC]           # write the set
#   scripts/ptx-identity.sh --compare REF_DIR [RBFC] # write a fresh set, diff
#
# The combinations: every examples/*.attn x head_dim {32, 64, 80, 96, 128,
# 256} x {bf16, f16} x {sm_80, sm_90a} x with and without --lse, and with
# --backward (the forward and the backward's kernels share the components),
# under the default plan; and, at head_dim 64 and 128, with and without
# --lse, the plans the lit tests and SelectPlan exercise (key_terms threads,
# bulk and global, stages 3, blocks_per_sm, 1, 2 and 4 atoms per warp, 16-
# and 32-key tiles, bulk on sm_80, which must fail). RBFC defaults to
# build/bin/rbfc; RBFC_JOBS (default 2) compilations run at once.
# `--emit=kernel` in RBFC_EMIT gives the kernel IR instead of PTX, a
# quicker, stricter check.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

compare=
if [[ ${1:-} == --compare ]]; then
  compare=1
  shift
fi
if [[ $# -lt 1 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
target=$1
rbfc=$(realpath "${2:-$root/build/bin/rbfc}")
emit=${RBFC_EMIT:---emit=ptx}

if [[ -n $compare ]]; then
  reference=$target
  target=$(mktemp -d)
  trap 'rm -rf "$target"' EXIT
fi
mkdir -p "$target"

plan() { # arch tile_m tile_n warps stages [extra fields]
  printf '#attn.plan<arch = "%s", kernel = "mma_sync", tile_m = %s, tile_n = %s, warps = %s, stages = %s%s>' \
    "$1" "$2" "$3" "$4" "$5" "${6:+, $6}"
}

# One line per combination: name, then rbfc's arguments.
combinations() {
  cd "$root"
  for spec in examples/*.attn; do
    local example
    example=$(basename "$spec" .attn)
    for dim in 32 64 80 96 128 256; do
      for dtype in bf16 f16; do
        for arch in sm_80 sm_90a; do
          for variant in "" --lse --backward; do
            local args="$spec --head-dim=$dim --dtype=$dtype --arch=$arch"
            echo "$example.d$dim.$dtype.$arch${variant:+.${variant#--}}" \
              "$args${variant:+ $variant}"
          done
        done
      done
    done
    for dim in 64 128; do
      for lse in "" --lse; do
        local variants=(
          "threads|sm_90a|$(plan sm_90a 128 64 4 2 'key_terms = "threads"')"
          "bulk|sm_90a|$(plan sm_90a 128 64 4 2 'key_terms = "bulk"')"
          "global|sm_90a|$(plan sm_90a 128 64 4 2 'key_terms = "global"')"
          "global32|sm_90a|$(plan sm_90a 128 32 4 2 'key_terms = "global"')"
          "stages3|sm_90a|$(plan sm_90a 64 32 4 3)"
          "blocks3|sm_90a|$(plan sm_90a 128 64 4 2 'blocks_per_sm = 3')"
          "m64n32w4|sm_90a|$(plan sm_90a 64 32 4 2)"
          "atoms2|sm_90a|$(plan sm_90a 64 32 2 2)"
          "atoms4|sm_90a|$(plan sm_90a 256 64 4 2)"
          "atoms1|sm_90a|$(plan sm_90a 128 64 8 2)"
          "n16|sm_90a|$(plan sm_90a 64 16 2 2)"
          "sm80global|sm_80|$(plan sm_80 128 64 4 2 'key_terms = "global"')"
          "sm80bulk|sm_80|$(plan sm_80 128 64 4 2 'key_terms = "bulk"')"
        )
        for variant in "${variants[@]}"; do
          IFS='|' read -r name arch text <<<"$variant"
          # The plan travels as one argument through xargs: quoted.
          echo "$example.d$dim.$name${lse:+.lse}" \
            "$spec --head-dim=$dim --arch=$arch${lse:+ $lse} '--plan=$text'"
        done
      done
    done
  done
}

emit_one() { # out rbfc emit name args...
  local out=$1 rbfc=$2 emit=$3 name=$4
  shift 4
  local status=0
  "$rbfc" "$@" "$emit" -o - --descriptor "$out/$name.json" \
    >"$out/$name.out" 2>"$out/$name.err" || status=$?
  echo "$status" >"$out/$name.status"
}
export -f emit_one

cd "$root"
# No line may end in a blank: xargs -L would join it to the next one.
combinations | xargs -P "${RBFC_JOBS:-2}" -L 1 \
  bash -c 'emit_one "$@"' _ "$target" "$rbfc" "$emit"
echo "$(ls "$target"/*.status | wc -l) combinations," \
  "$(grep -lv '^0$' "$target"/*.status | wc -l) of them failing, in $target"

if [[ -n $compare ]]; then
  diff -r "$reference" "$target" && echo "identical to $reference"
fi
