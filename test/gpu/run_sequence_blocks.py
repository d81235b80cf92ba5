#!/usr/bin/env python3
"""Sequence blocks on the GPU kernels: one sequence split into query and key
blocks (q_offset, kv_offset and the whole lengths), each block one rbfc call
on the H200, the key blocks merged with rbfc.merge_attention, equals the
call on the whole sequence — forward, lse and the gradients of q, k, v (and
of ALiBi's slopes), bf16, head dims 64 and 128, cuts that are not multiples
of the tiles. What ring attention does on each rank, without the ranks.

    python3 test/gpu/run_sequence_blocks.py [--seed N] [--device cpu]
        [--only SPEC,..] [--q-cuts 0,300,1000] [--kv-cuts 0,128,1000]

Needs the rbfc wheel (docs/gpu-testing.md). Exits 1 on any failure.
"""
import argparse
import random
import sys
from pathlib import Path

import torch

import rbfc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import blocks  # noqa: E402
import references  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPECS = ["causal", "rbf_causal", "alibi", "relative_bias", "document_mask",
         "sliding_window", "softcap"]
# q cuts and key cuts of a 1000-row sequence.
Q_CUTS = [0, 300, 301, 777, 1000]
KV_CUTS = [0, 128, 500, 999, 1000]


def relative_error(x, ref):
    return ((x.double() - ref.double()).abs().max()
            / ref.double().abs().max().clamp(min=1e-30)).item()


def run_case(spec, head_dim, device, dtype, generator, q_cuts, kv_cuts):
    n, batch, heads, kv_heads = q_cuts[-1], 2, 8, 2
    attn = rbfc.compile(EXAMPLES / f"{spec}.attn")
    q, k, v, grad_o = (torch.randn(batch, h, n, head_dim, generator=generator)
                       .to(device=device, dtype=dtype)
                       for h in (heads, kv_heads, kv_heads, heads))
    captures = references.make_captures(spec, batch, heads, n, n, generator, device)
    # The GPU backward computes gradients of captures indexed by (b, h) only.
    learnable = {"slopes"} if spec == "alibi" else set()
    params = {"window": 100} if spec == "sliding_window" else None

    def leaves():
        return ([t.clone().requires_grad_() for t in (q, k, v)],
                {name: t.clone().requires_grad_(name in learnable)
                 for name, t in captures.items()})

    (qw, kw, vw), cw = leaves()
    ref_o, ref_lse = attn(qw, kw, vw, captures=cw, params=params, return_lse=True)
    ref_o.backward(grad_o)

    (qb, kb, vb), cb = leaves()
    o, lse = blocks.merged_blocks(attn, qb, kb, vb, q_cuts, kv_cuts,
                                  captures=cb, params=params)
    o.backward(grad_o)

    finite = torch.isfinite(ref_lse)
    errors = {"o": relative_error(o.detach(), ref_o.detach()),
              "lse": ((lse - ref_lse).abs() / (1 + ref_lse.abs()))[finite].max().item()
              if finite.any() else 0.0}
    for name, got, ref in zip(("dq", "dk", "dv"), (qb.grad, kb.grad, vb.grad),
                              (qw.grad, kw.grad, vw.grad)):
        errors[name] = relative_error(got, ref)
    for name in learnable:
        errors[f"d{name}"] = relative_error(cb[name].grad, cw[name].grad)
    masks_agree = torch.equal(torch.isfinite(lse), finite)
    # Blocks round their outputs to bf16 before the merge, and their dQ
    # shares before the sum: a few bf16 ulps.
    limit = 2e-2 if dtype != torch.float32 else 1e-4
    ok = masks_agree and all(e <= limit for e in errors.values())
    return ok, errors, masks_agree


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--only", default="", help="comma-separated specs")
    parser.add_argument("--q-cuts", default=",".join(map(str, Q_CUTS)))
    parser.add_argument("--kv-cuts", default=",".join(map(str, KV_CUTS)))
    args = parser.parse_args()
    q_cuts = [int(c) for c in args.q_cuts.split(",")]
    kv_cuts = [int(c) for c in args.kv_cuts.split(",")]
    if q_cuts[0] != 0 or kv_cuts[0] != 0 or q_cuts[-1] != kv_cuts[-1] or any(
            b <= a for cuts in (q_cuts, kv_cuts) for a, b in zip(cuts, cuts[1:])):
        parser.error("cuts rise strictly from 0 to one common length")
    specs = args.only.split(",") if args.only else SPECS
    generator = torch.Generator().manual_seed(args.seed)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    failed = 0
    cases = [(spec, d) for spec in specs for d in (64, 128)]
    for spec, head_dim in cases:
        ok, errors, masks_agree = run_case(spec, head_dim, args.device, dtype,
                                           generator, q_cuts, kv_cuts)
        failed += not ok
        detail = "  ".join(f"{k} {v:.1e}" for k, v in errors.items())
        print(f"{'ok  ' if ok else 'FAIL'} {spec:15} d{head_dim:<4} {detail}"
              f"{'' if masks_agree else '  (fully masked rows differ)'}", flush=True)
    print(f"\nseed {args.seed}: {len(cases)} cases, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
