"""torch.nn.functional.scaled_dot_product_attention on CPU in the shapes of
bench_host.cpp (B=1, H=8, D=64, fp32), best of 2-3 calls after a warm-up,
forward and forward+backward, on 1 and 2 threads; one JSON object per
measurement, the records bench_host prints.

RBF (score = -gamma ||q - k||^2, gamma = 1/sqrt(64)) runs in the augmented
head-dim form SDPA can take: under softmax the -gamma ||q||^2 term cancels,
so scale 1 with q' = [2 gamma q, 1] and k' = [k, -gamma ||k||^2] (head_dim
65) gives the same weights; the gradients flow through the augmentation."""
import json
import sys
import time

import torch
import torch.nn.functional as F

GAMMA = 64 ** -0.5


def attention(spec, q, k, v):
    if spec == "rbf":
        ones = torch.ones_like(q[..., :1])
        q_aug = torch.cat([2 * GAMMA * q, ones], dim=-1)
        k_aug = torch.cat([k, -GAMMA * (k * k).sum(-1, keepdim=True)], dim=-1)
        return F.scaled_dot_product_attention(q_aug, k_aug, v, scale=1.0)
    return F.scaled_dot_product_attention(q, k, v, is_causal=spec == "causal")


def best_seconds(repeats, call):
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    lengths = [int(n) for n in sys.argv[1:]] or [1024, 4096]
    for spec in ("softmax", "causal", "rbf"):
        for n in lengths:
            q, k, v, d_o = (torch.randn(1, 8, n, 64) for _ in range(4))
            for t in (q, k, v):
                t.requires_grad_(True)
            repeats = 2 if n > 2048 else 3
            for threads in (1, 2):
                torch.set_num_threads(threads)
                with torch.no_grad():
                    fwd = best_seconds(repeats, lambda: attention(spec, q, k, v))

                def forward_backward():
                    out = attention(spec, q, k, v)
                    torch.autograd.grad(out, (q, k, v), d_o)

                fwd_bwd = best_seconds(repeats, forward_backward)
                for direction, seconds in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                    print(json.dumps({"impl": "torch", "spec": spec, "n": n,
                                      "threads": threads,
                                      "direction": direction,
                                      "ms": round(1e3 * seconds, 2)}),
                          flush=True)


if __name__ == "__main__":
    main()
