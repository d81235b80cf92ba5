"""One sequence computed block by block: the test of the sequence-block
arguments that test_distributed.py (host) and test/gpu/run_sequence_blocks.py
(GPU) share."""
import torch

import rbfc


def merged_blocks(attn, q, k, v, q_cuts, kv_cuts, **kwargs):
    """attn over q, k, v ([B, H, N, D]) computed as one call per (q block,
    key block) between consecutive cuts, each with its offsets and the
    whole lengths, the key blocks of each q block merged through their lse:
    (o, lse) of the whole, differentiable."""
    q_len, kv_len = q.shape[2], k.shape[2]
    outs, lses = [], []
    for qa, qz in zip(q_cuts, q_cuts[1:]):
        parts = [attn(q[:, :, qa:qz], k[:, :, ka:kz], v[:, :, ka:kz],
                      return_lse=True, q_offset=qa, kv_offset=ka,
                      q_seq_len=q_len, kv_seq_len=kv_len, **kwargs)
                 for ka, kz in zip(kv_cuts, kv_cuts[1:])]
        o, lse = rbfc.merge_attention([p[0] for p in parts], [p[1] for p in parts])
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, 2), torch.cat(lses, 2)
