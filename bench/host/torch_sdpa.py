"""torch.nn.functional.scaled_dot_product_attention on CPU, the shapes of
bench_host.cpp (B=1, H=8, D=64, fp32), best of 3 after a warm-up run."""
import sys
import time

import torch

lengths = [int(n) for n in sys.argv[1:]] or [1024, 4096]
print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
print(f"{'spec':8} {'N':>6} {'torch sdpa ms':>14}")
for causal in (False, True):
    for n in lengths:
        q, k, v = (torch.randn(1, 8, n, 64) for _ in range(3))
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
            best = min(best, time.perf_counter() - start)
        print(f"{'causal' if causal else 'softmax':8} {n:6} {1e3 * best:14.1f}")
