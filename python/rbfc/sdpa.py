"""rbfc.sdpa: torch.nn.functional.scaled_dot_product_attention's common
arguments on rbfc's kernels, so that swapping one for the other is one line:

    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    o = rbfc.sdpa(q, k, v, is_causal=True)

q is [B, H, L, E] (or [B, L, E]), k and v [B, Hkv, S, E]; an attn_mask
(boolean: True takes part; or float: added to the scores) broadcasts to
[B, H, L, S] as SDPA's does. dropout is not supported. Under the hood each
variant is a spec (below) compiled once.
"""

import torch

from .attention import Attention
from .errors import RbfcError

_SPECS = {
    # (is_causal, mask kind): spec text
    (False, None): """attention sdpa {
  param scale: f32 = 1.0 / sqrt(head_dim);
  score = dot(q, k) * scale;
}""",
    (True, None): """attention sdpa_causal {
  param scale: f32 = 1.0 / sqrt(head_dim);
  score = dot(q, k) * scale;
  mask = kv_idx <= q_idx;
}""",
    (False, "bool"): """attention sdpa_bool_mask {
  param scale: f32 = 1.0 / sqrt(head_dim);
  capture keep: i32[?, ?, ?, ?];
  score = dot(q, k) * scale;
  mask = keep[b, h, q_idx, kv_idx] != 0;
}""",
    (False, "float"): """attention sdpa_float_mask {
  param scale: f32 = 1.0 / sqrt(head_dim);
  capture bias: f32[?, ?, ?, ?];
  score = dot(q, k) * scale + bias[b, h, q_idx, kv_idx];
}""",
}


def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
         scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention on rbfc's kernels (see the module)."""
    if dropout_p != 0.0:
        raise RbfcError(f"rbfc.sdpa: dropout_p: rbfc has no dropout, got "
                        f"{dropout_p}; pass 0.0")
    if attn_mask is not None and is_causal:
        raise RbfcError("rbfc.sdpa: attn_mask: give an attn_mask or is_causal, "
                        "not both (as F.scaled_dot_product_attention)")
    unbatched = isinstance(query, torch.Tensor) and query.dim() == 3
    if unbatched:
        query, key, value = (t.unsqueeze(1) if isinstance(t, torch.Tensor) else t
                             for t in (query, key, value))
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise RbfcError(f"rbfc.sdpa: {name}: expected a 3- or 4-dimensional "
                            "tensor [batch, heads, seq, head_dim]")
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads != kv_heads and not enable_gqa:
        raise RbfcError(f"rbfc.sdpa: key: {kv_heads} heads, query {heads}; pass "
                        "enable_gqa=True for grouped-query attention")
    captures = {}
    kind = None
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor) or not 2 <= attn_mask.dim() <= 4:
            raise RbfcError("rbfc.sdpa: attn_mask: expected a tensor of 2 to 4 "
                            "dimensions broadcasting to [batch, heads, L, S]")
        mask = attn_mask
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        for dim, (size, full) in enumerate(zip(mask.shape, (
                query.shape[0], heads, query.shape[2], key.shape[2]))):
            if size not in (1, full):
                raise RbfcError(f"rbfc.sdpa: attn_mask: shape "
                                f"{tuple(attn_mask.shape)} does not broadcast to "
                                f"{(query.shape[0], heads, query.shape[2], key.shape[2])}")
        # A size-1 dimension broadcasts: captured indices are clamped into it.
        if mask.dtype == torch.bool:
            kind, captures = "bool", {"keep": mask.to(torch.int32)}
        else:
            kind, captures = "float", {"bias": mask.to(torch.float32)}
    attention = _ATTENTIONS[(bool(is_causal), kind)]
    params = {} if scale is None else {"scale": float(scale)}
    o = attention(query, key, value, params=params, captures=captures)
    return o.squeeze(1) if unbatched else o


def _attention(key, text):
    """The module of one variant, described here: made at import, without a
    library call, so that a first rbfc.sdpa inside torch.compile traces."""
    name = text.split()[1]
    captures = ({"keep": ("i32", 4)} if key[1] == "bool" else
                {"bias": ("f32", 4)} if key[1] == "float" else {})
    return Attention(text, name, False, None, None, None, None,
                     description=(name, "softmax", {"scale": ("f32", True)},
                                  captures))


_ATTENTIONS = {key: _attention(key, text) for key, text in _SPECS.items()}
