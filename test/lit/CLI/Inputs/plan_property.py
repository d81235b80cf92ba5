"""Random plans over every example: each one either compiles to PTX or is
refused with one located error (the message, at most the source line and
its caret), never a crash, an assertion or an IR dump. The plans are valid
ones (the defaults and the GPU tests' structures) with one or two fields
changed, so that most reach the kernel builders' own checks.

    plan_property.py RBFC EXAMPLES_DIR SEED COUNT WORKDIR
"""
import os
import random
import subprocess
import sys

VALID = [
    'arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 3',
    'arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 4, '
    'key_terms = "bulk", copy = "tma"',
    'arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 4, '
    'key_terms = "producer", copy = "tma"',
    'arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 160, warps = 8, stages = 2, '
    'key_terms = "product", copy = "tma", overlap = true',
    'arch = "sm_90a", kernel = "wgmma", tile_m = 192, tile_n = 128, warps = 12, stages = 2, '
    'key_terms = "global", copy = "tma", overlap = true',
    'arch = "sm_90a", kernel = "wgmma_cooperative", tile_m = 128, tile_n = 128, warps = 8, '
    'stages = 2, key_terms = "product", blocks_per_sm = 2',
    'arch = "sm_90a", kernel = "wgmma_cooperative", tile_m = 192, tile_n = 96, warps = 12, stages = 2',
    'arch = "sm_90", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2',
    'arch = "sm_80", kernel = "mma_sync", tile_m = 64, tile_n = 32, warps = 4, stages = 2, '
    'key_terms = "global"',
]
CHANGES = {
    "kernel": ['"mma_sync"', '"wgmma"', '"wgmma_cooperative"', '"tiled"'],
    "tile_m": [0, 16, 64, 96, 128, 192, 256, 1024],
    "tile_n": [8, 16, 48, 64, 96, 112, 144, 160, 176, 192, 256, 512],
    "warps": [1, 4, 8, 12, 16],
    "stages": [0, 1, 2, 3, 4, 6],
    "key_terms": ['"threads"', '"bulk"', '"global"', '"product"', '"producer"', '"none"'],
    "copy": ['"cp_async"', '"tma"'],
    "overlap": ["true", "false"],
    "blocks_per_sm": [0, 1, 2, 3],
}
CRASH_MARKS = ("Assertion", "Stack dump", "LLVM ERROR", "PLEASE submit", "UNREACHABLE")


def main():
    rbfc, examples, seed, count, workdir = sys.argv[1:6]
    rng = random.Random(int(seed))
    specs = sorted(f for f in os.listdir(examples) if f.endswith(".attn"))
    os.makedirs(workdir, exist_ok=True)
    ptx = os.path.join(workdir, "plan.ptx")
    compiled = refused = 0
    bad = []
    for _ in range(int(count)):
        fields = dict(f.split(" = ") for f in rng.choice(VALID).split(", "))
        for name in rng.sample(sorted(CHANGES), rng.choice([1, 1, 2])):
            fields[name] = str(rng.choice(CHANGES[name]))
        plan = "#attn.plan<" + ", ".join(f"{k} = {v}" for k, v in fields.items()) + ">"
        arch = fields["arch"].strip('"')
        flags = rng.choice([[], ["--lse"], ["--backward"], ["--dtype=f16"]])
        cmd = [rbfc, os.path.join(examples, rng.choice(specs)), "--emit=ptx",
               f"--arch={arch}", f"--head-dim={rng.choice([32, 64, 80, 96, 128, 192, 256])}",
               f"--plan={plan}", "-o", ptx] + flags
        if os.path.exists(ptx):
            os.remove(ptx)
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        output = (run.stdout + run.stderr).strip()
        lines = output.splitlines()
        if run.returncode == 0 and os.path.exists(ptx) and os.path.getsize(ptx) > 0:
            compiled += 1
            continue
        if (run.returncode == 1 and "error:" in output and len(lines) <= 3
                and not any(mark in output for mark in CRASH_MARKS)):
            refused += 1
            continue
        bad.append(f"exit {run.returncode}: {' '.join(cmd[1:])}\n  " +
                   "\n  ".join(lines[:12]))
    print(f"{count} plans: {compiled} compiled, {refused} refused, {len(bad)} bad")
    for case in bad:
        print("BAD", case)
    # Both outcomes must occur, or the property says nothing.
    return 1 if bad or not compiled or not refused else 0


if __name__ == "__main__":
    sys.exit(main())
