#!/usr/bin/env python3
"""Random plans against the NVGPU backend: every plan rbfc accepts must give
PTX that ptxas assembles, and every plan it refuses a located one-line
error, never an IR dump, a verifier failure of an upstream op or a crash.

    scripts/plan-sweep.py [--seed N] [--count N] [--rbfc PATH] [--jobs N]

Each case takes an example spec, an arch (sm_80 or sm_90a), a head_dim, a
dtype and optionally --lse or --backward, starts from the default plan
rbfc picks for them (its descriptor) and changes one or two fields
(kernel, tile_m, tile_n, warps, stages, key_terms, copy, overlap,
blocks_per_sm) to another value the plan syntax takes. Prints each bad
case with its command line; exits 1 if there was one. Needs ptxas (PTXAS,
else on the PATH, else /usr/local/cuda/bin/ptxas). About a second a case
on two cores.
"""
import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What a user must never see from a plan: MLIR's generic form or an
# upstream op's verifier, a crash, LLVM's fatal errors.
BAD_OUTPUT = ["see current operation", "operand #", "'scf.", "'llvm.", "'nvvm.",
              "'arith.", "'memref.", "'vector.", "'gpu.", "'nvgpu.",
              "failed to legalize", "PLEASE submit", "Stack dump", "Assertion",
              "LLVM ERROR", "Segmentation"]
FIELD_VALUES = {
    "kernel": ['"mma_sync"', '"wgmma"', '"wgmma_cooperative"'],
    "tile_m": [64, 128, 192],
    "tile_n": [32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
    "warps": [4, 8, 12],
    "stages": [1, 2, 3, 4],
    "key_terms": ['"threads"', '"bulk"', '"global"', '"product"'],
    "copy": ['"cp_async"', '"tma"'],
    "overlap": ["true", "false"],
    "blocks_per_sm": [0, 1, 2, 3],
}
SPECS = sorted(path.stem for path in (REPO / "examples").glob("*.attn"))


def run(command, timeout=600):
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def default_plan(rbfc, work, spec, arch, head_dim, flags):
    ptx = work / f"default-{spec}-{arch}-{head_dim}-{'-'.join(flags)}.ptx"
    result = run([rbfc, str(REPO / "examples" / f"{spec}.attn"), "--emit=ptx",
                  f"--arch={arch}", f"--head-dim={head_dim}", "-o", str(ptx), *flags])
    if result.returncode != 0:
        return None
    return json.loads(ptx.with_suffix(".json").read_text())["plan"]


def check(rbfc, ptxas, work, index, spec, arch, head_dim, dtype, flags, plan):
    """The problem with one case, or None."""
    ptx = work / f"case{index}.ptx"
    command = [rbfc, str(REPO / "examples" / f"{spec}.attn"), "--emit=ptx",
               f"--arch={arch}", f"--head-dim={head_dim}", f"--dtype={dtype}",
               f"--plan={plan}", "-o", str(ptx), *flags]
    result = run(command)
    output = result.stdout + result.stderr
    problem = None
    if result.returncode < 0:
        problem = f"killed by signal {-result.returncode}"
    elif any(marker in output for marker in BAD_OUTPUT):
        problem = "internal output: " + " | ".join(output.strip().splitlines()[:3])
    elif result.returncode == 0:
        assembled = run([ptxas, f"-arch={arch}", str(ptx), "-o", os.devnull])
        if assembled.returncode != 0:
            problem = "ptxas refused the PTX: " + assembled.stderr.strip()[:400]
    elif len(output.strip().splitlines()) > 3 or ": error: " not in output:
        problem = "not a located error: " + output.strip()[:400]
    for path in (ptx, ptx.with_suffix(".json")):
        path.unlink(missing_ok=True)
    return problem and (problem, " ".join(command[1:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rbfc", default=str(REPO / "build" / "bin" / "rbfc"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    ptxas = (os.environ.get("PTXAS") or shutil.which("ptxas")
             or "/usr/local/cuda/bin/ptxas")
    if not Path(ptxas).is_file():
        sys.exit(f"plan-sweep: no ptxas at {ptxas} (set PTXAS)")
    generator = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="plan-sweep-") as folder:
        work = Path(folder)
        cases, defaults = [], {}
        for index in range(args.count):
            spec = generator.choice(SPECS)
            arch = generator.choice(["sm_80", "sm_90a", "sm_90a"])
            head_dim = generator.choice([32, 48, 64, 80, 96, 112, 128, 160, 192, 256])
            flags = generator.choice([[], [], ["--lse"], ["--backward"]])
            key = (spec, arch, head_dim, tuple(flags))
            if key not in defaults:
                defaults[key] = default_plan(args.rbfc, work, *key[:3], flags)
            if defaults[key] is None:
                continue
            fields = dict(re.findall(r'(\w+) = ("[^"]*"|\w+)', defaults[key]))
            for name in generator.sample(sorted(FIELD_VALUES), generator.choice([1, 1, 2])):
                fields[name] = str(generator.choice(FIELD_VALUES[name]))
            plan = "#attn.plan<" + ", ".join(f"{k} = {v}" for k, v in fields.items()) + ">"
            cases.append((index, spec, arch, head_dim,
                          generator.choice(["bf16", "f16"]), flags, plan))
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            problems = [p for p in pool.map(lambda case: check(
                args.rbfc, ptxas, work, *case), cases) if p]
    for problem, command in problems:
        print(f"BAD {problem}\n    rbfc {command}")
    print(f"plan-sweep: {len(cases)} cases, {len(problems)} bad")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
