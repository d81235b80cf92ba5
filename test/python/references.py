"""PyTorch references of the example specs (examples/*.attn), written here
from the specs' formulas and independent of the compiler: scores and masks
[B, H, Nq, Nkv] on any device and float type, and the attention output and
log-sum-exp they give. Autograd runs through them, so they also give the
reference gradients of q, k, v, captured tensors and params (pass params as
tensors to get theirs); gradients() and check_gradient() are the GPU tests'
float32 reference gradients and their tolerance.

Used by test/python (CPU, float64), test/gpu/run_python_tests.py and
test/gpu/run_gpu_backward.py (CUDA).
"""
import math

import torch


def indices(q, k):
    """q_idx [Nq, 1] and kv_idx [1, Nkv] on q's device."""
    qi = torch.arange(q.shape[2], device=q.device).view(-1, 1)
    ki = torch.arange(k.shape[2], device=q.device).view(1, -1)
    return qi, ki


def dot_scaled(q, k):
    return (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])


def dist2(q, k):
    return ((q * q).sum(-1, keepdim=True) + (k * k).sum(-1).unsqueeze(-2)
            - 2.0 * (q @ k.transpose(-1, -2)))


def softmax(q, k, c, p):
    return dot_scaled(q, k), None


def causal(q, k, c, p):
    qi, ki = indices(q, k)
    return dot_scaled(q, k), ki <= qi


def alibi(q, k, c, p):
    qi, ki = indices(q, k)
    slopes = c["slopes"].view(1, -1, 1, 1).to(q.dtype)
    return dot_scaled(q, k) + slopes * (ki - qi).to(q.dtype), ki <= qi


def document_mask(q, k, c, p):
    doc = c["doc"]
    dq = doc[:, : q.shape[2]].reshape(doc.shape[0], 1, -1, 1)
    dk = doc[:, : k.shape[2]].reshape(doc.shape[0], 1, 1, -1)
    return dot_scaled(q, k), dq == dk


def prefix_lm(q, k, c, p):
    qi, ki = indices(q, k)
    return dot_scaled(q, k), (ki < p.get("prefix", 128)) | (ki <= qi)


def rbf_gamma(q, p):
    return p.get("gamma", 1.0 / math.sqrt(q.shape[-1]))


def rbf(q, k, c, p):
    return -rbf_gamma(q, p) * dist2(q, k), None


def rbf_head_gamma(q, k, c, p):
    return -c["gammas"].view(1, -1, 1, 1).to(q.dtype) * dist2(q, k), None


def rbf_causal(q, k, c, p):
    return rbf(q, k, c, p)[0], causal(q, k, c, p)[1]


def relative_bias(q, k, c, p):
    qi, ki = indices(q, k)
    offset = qi - ki + k.shape[2] - 1
    return dot_scaled(q, k) + c["bias"][:, offset].unsqueeze(0).to(q.dtype), None


def sliding_window(q, k, c, p):
    qi, ki = indices(q, k)
    return dot_scaled(q, k), (ki <= qi) & (qi - ki < p.get("window", 256))


def softcap(q, k, c, p):
    cap = p.get("cap", 50.0)
    return cap * torch.tanh(dot_scaled(q, k) / cap), None


# example name: (score and mask, normalization)
SPECS = {
    "softmax": (softmax, "softmax"),
    "causal": (causal, "softmax"),
    "alibi": (alibi, "softmax"),
    "document_mask": (document_mask, "softmax"),
    "prefix_lm": (prefix_lm, "softmax"),
    "rbf": (rbf, "softmax"),
    "rbf_causal": (rbf_causal, "softmax"),
    "rbf_head_gamma": (rbf_head_gamma, "softmax"),
    "rbf_none": (rbf, "none"),
    "relative_bias": (relative_bias, "softmax"),
    "sliding_window": (sliding_window, "softmax"),
    "softcap": (softcap, "softmax"),
}


def make_captures(spec, batch, heads, q_len, kv_len, generator, device):
    """Captured tensors for `spec` as the examples describe them."""
    if spec == "alibi":
        return {"slopes": torch.tensor([2.0 ** (-8.0 * (h + 1) / heads)
                                        for h in range(heads)], device=device)}
    if spec == "document_mask":
        n = max(q_len, kv_len)
        doc = torch.empty(batch, n, dtype=torch.int32)
        for b in range(batch):
            cuts = torch.sort(torch.randint(0, n, (min(4, n),),
                                            generator=generator)).values
            doc[b] = torch.bucketize(torch.arange(n), cuts, right=True).int()
        return {"doc": doc.to(device)}
    if spec == "rbf_head_gamma":
        # Distinct per query head, so that a GQA group sharing one head's key
        # terms would show.
        return {"gammas": (0.05 + 0.15 * torch.rand(heads, generator=generator))
                .to(device)}
    if spec == "relative_bias":
        return {"bias": torch.randn(heads, q_len + kv_len - 1,
                                    generator=generator).to(device)}
    return {}


def attention(spec, q, k, v, captures=None, params=None):
    """Output and natural-log LSE of `spec` in q's dtype, for [B, H, N, D]
    tensors (k, v with kv_heads heads). A fully masked row has output 0 and
    lse -inf."""
    score, normalization = SPECS[spec]
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s, mask = score(q, k, captures or {}, params or {})
    if mask is not None:
        s = s.masked_fill(~mask.expand_as(s), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    if normalization == "softmax":
        # A fully masked row has lse -inf: the clamp keeps its weights 0.
        w = torch.exp(s - lse.unsqueeze(-1).clamp(min=-1e30))
    else:
        w = torch.exp(s)
    return w @ v, lse


# The relative error of one dS_ij that float32 arithmetic may leave: dP_ij
# and D_i are sums of head_dim products, computed in different orders by a
# kernel and by this reference.
FLOAT32_NOISE = 1e-4


def gradients(spec, q, k, v, captures, params, grad_o, grad_lse, dtype,
              grad_captures, output=None):
    """Float32 reference gradients of q, k, v, the params (given as tensors)
    and the captures named in `grad_captures`, for the loss
    sum(o * grad_o) + sum(lse * grad_lse), as {name: {which: tensor}}:

      exact    float32 autograd;
      rounded  the same with D = rowsum(dO * O) read from the output rounded
               to `dtype`, as FlashAttention's backward (and rbfc's) does:
               that moves every dS_ij by P_ij (D_i - D'_i), which for a
               gradient summing many dS of both signs (a parameter's) can
               exceed its value. With `output` (the kernel's own forward
               output, [B, H, N, D], checked against the reference by the
               forward tests) D reads that instead: the kernels' P V takes
               P rounded to `dtype`, which moves O, and so D, further than
               the rounding of the exact output (RBF's per-head gammas at
               64 x 333: -180.7 against the float32 -209.4, 28.6 apart,
               where the exact output rounded allowed 20.2);
      noise    what FLOAT32_NOISE of every dS's magnitude P (|dP| + |D| +
               |dlse|) would move the gradient by: where the terms of dS
               cancel (a row with one key: dS = 0 exactly) the gradient is
               rounding noise on both sides.
    """
    leaves = {"q": q.float(), "k": k.float(), "v": v.float()}
    leaves.update({n: c.float() for n, c in captures.items() if n in grad_captures})
    leaves.update({n: t.float() for n, t in params.items()})
    leaves = {n: t.detach().requires_grad_() for n, t in leaves.items()}
    caps = {n: leaves.get(n, c) for n, c in captures.items()}
    prm = {n: leaves[n] for n in params}
    score, normalization = SPECS[spec]
    group = q.shape[1] // k.shape[1]
    kk = leaves["k"].repeat_interleave(group, dim=1)
    vv = leaves["v"].repeat_interleave(group, dim=1)
    s, mask = score(leaves["q"], kk, caps, prm)
    if mask is not None:
        s = s.masked_fill(~mask.expand_as(s), float("-inf"))
    with torch.no_grad():
        lse = torch.logsumexp(s, -1)
        empty = torch.isinf(lse)
        p = torch.exp(s - lse.masked_fill(empty, 0).unsqueeze(-1))
        w = p if normalization == "softmax" else torch.exp(s)
        o = w @ vv
        do = grad_o.float()
        dlse = grad_lse.masked_fill(empty, 0).unsqueeze(-1)
        dp = do @ vv.transpose(-1, -2)
        def per_kv_head(x):
            return x.view(q.shape[0], k.shape[1], group, *x.shape[2:]).sum(2)
        grad_v = per_kv_head(w.transpose(-1, -2) @ do)
        d = {which: (do * out).sum(-1, keepdim=True)
             for which, out in (("exact", o),
                                ("rounded", o.to(dtype).float() if output is None
                                 else output.detach().float()))}
        if normalization == "softmax":
            ds = {which: p * (dp - d_ + dlse) for which, d_ in d.items()}
            ds["noise"] = FLOAT32_NOISE * p * (dp.abs() + d["exact"].abs() + dlse.abs())
        else:
            ds = {"exact": w * dp + dlse * p}
            ds["rounded"] = ds["exact"]
            ds["noise"] = FLOAT32_NOISE * (w * dp.abs() + dlse.abs() * p)
    out = {"v": {"exact": grad_v, "rounded": grad_v,
                 "noise": FLOAT32_NOISE * per_kv_head(w.transpose(-1, -2) @ do.abs())}}
    names = [n for n in leaves if n != "v"]
    for which, ds_ in ds.items():
        ds_ = ds_.masked_fill(~torch.isfinite(s), 0)
        grads = torch.autograd.grad(s, [leaves[n] for n in names], ds_,
                                    retain_graph=True, allow_unused=True)
        for name, grad in zip(names, grads):
            grad = grad if grad is not None else torch.zeros_like(leaves[name])
            if which == "noise":
                grad = grad.abs()
                if grad.dim() == 4:
                    # An element whose exact derivative vanishes (q_d = k_d,
                    # frequent in bf16) still carries its row's rounding: the
                    # kernels sum the canonical form's terms separately.
                    grad = grad + grad.mean(-1, keepdim=True)
            out.setdefault(name, {})[which] = grad
    return out


def gradient_allowance(reference, tol):
    """What check_gradient lets each element of a gradient differ from
    `reference`'s exact one by: tol * max|exact| + 2 |exact - rounded| +
    noise."""
    exact = reference["exact"]
    return (tol * exact.abs().max() + 2 * (exact - reference["rounded"]).abs()
            + reference["noise"])


def check_gradient(name, got, reference, tol):
    """None when `got` is within gradient_allowance() of the `reference`
    from gradients() everywhere, else what is wrong, at the worst element."""
    if got is None:
        return f"{name}: no gradient"
    got = got.float()
    if torch.isnan(got).any():
        return f"{name}: {int(torch.isnan(got).sum())} NaN (unwritten?)"
    exact = reference["exact"]
    allowed = gradient_allowance(reference, tol)
    excess = (got - exact).abs() - allowed
    if (excess > 0).any():
        i = int(excess.flatten().argmax())
        return (f"{name}: got {got.flatten()[i].item():.5g}, float32 "
                f"{exact.flatten()[i].item():.5g} (allowed "
                f"{allowed.flatten()[i].item():.3g})")
    return None


def allowance_used(got, reference, tol):
    """The largest |got - exact| / allowance over the elements: how close a
    passing gradient came to its tolerance (at most 1 when it passes; an
    element allowed nothing counts only if it differs)."""
    error = (got.float() - reference["exact"]).abs()
    allowed = gradient_allowance(reference, tol)
    share = torch.where(allowed > 0, error / allowed.clamp(min=1e-30),
                        torch.where(error > 0, torch.full_like(error, float("inf")),
                                    torch.zeros_like(error)))
    return share.max().item()
