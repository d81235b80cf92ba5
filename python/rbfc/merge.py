"""Attention over the union of disjoint key blocks from each block's (out, lse).

    o1, lse1 = attn(q, k[:, :, :n], v[:, :, :n], return_lse=True)
    o2, lse2 = attn(q, k[:, :, n:], v[:, :, n:], return_lse=True)
    o, lse = rbfc.merge_attention([o1, o2], [lse1, lse2])   # = attn over all keys

Softmax attention over keys split into blocks is each block's attention
reweighted by its share of the row's total: lse = log(sum_i exp(lse_i)) and
o = sum_i exp(lse_i - lse) o_i. That is how split-KV decoding and ring
(context-parallel) attention combine partial results, in the interface
FlashAttention and torch's context parallelism use: o [B, H, N, D] (or
[B, N, H, D]), lse [B, H, N] float32, natural log. Written in torch ops, so
autograd carries the gradient of o and lse back to every block's o_i and
lse_i, and from there through rbfc's op (whose backward takes an lse
gradient) to q, k, v. Only for normalize = softmax specs: under `none` the
blocks' outputs simply add up.
"""
import torch

from .errors import RbfcError


def merge_attention(outs, lses, layout="bhnd"):
    """(o, lse) of attention over the union of the key blocks whose outputs
    are `outs` and log-sum-exps `lses` (same query rows, disjoint keys).

    A row that saw no key in a block (lse -inf, output 0) takes nothing from
    it; a row that saw no key in any block gets o = 0 and lse = -inf, and a
    zero gradient, never NaN. o comes back in the dtype of outs[0] (summed
    in float32), lse in float32.
    """
    if layout not in ("bhnd", "bnhd"):
        raise RbfcError(f"rbfc.merge_attention: layout: expected 'bhnd' or "
                        f"'bnhd', got {layout!r}")
    outs, lses = list(outs), list(lses)
    if not outs or len(outs) != len(lses):
        raise RbfcError(f"rbfc.merge_attention: {len(outs)} outputs and "
                        f"{len(lses)} log-sum-exps; expected one of each per "
                        "key block, at least one")
    for i, (o, lse) in enumerate(zip(outs, lses)):
        if o.dim() != 4 or o.shape != outs[0].shape:
            raise RbfcError(f"rbfc.merge_attention: outs[{i}]: shape "
                            f"{tuple(o.shape)}; every output must have the "
                            f"shape of outs[0], {tuple(outs[0].shape)}, 4-D")
        rows = (o.shape[0], o.shape[2], o.shape[1]) if layout == "bnhd" \
            else tuple(o.shape[:3])
        if lse.shape != rows or lse.dtype != torch.float32:
            raise RbfcError(f"rbfc.merge_attention: lses[{i}]: {lse.dtype} of "
                            f"shape {tuple(lse.shape)}; expected float32 "
                            f"{rows} ([batch, heads, rows]) for outs[{i}]")
        if o.device != outs[0].device or lse.device != outs[0].device:
            raise RbfcError(f"rbfc.merge_attention: block {i} is on "
                            f"{o.device}/{lse.device}, outs[0] on "
                            f"{outs[0].device}")
    stacked = torch.stack(lses)
    # The largest lse of each row as the shift, outside autograd: the
    # gradient of lse is then exactly the blocks' softmax.
    shift = stacked.amax(0).detach()
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.exp(stacked - shift).sum(0)
    seen = total > 0
    lse = torch.where(seen, shift + torch.log(torch.where(seen, total,
                                                          torch.ones_like(total))),
                      torch.full_like(total, float("-inf")))
    # exp(-inf) = 0 for blocks (and rows) that saw no key.
    weights = torch.exp(stacked - torch.where(seen, lse, torch.zeros_like(lse)))
    if layout == "bnhd":
        weights = weights.transpose(2, 3)
    o = sum(w.unsqueeze(-1) * out.float() for w, out in zip(weights, outs))
    return o.to(outs[0].dtype), lse
