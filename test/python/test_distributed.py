"""Sequence blocks and ring attention on the host backend (CPU tensors).

One process: a spec called on blocks of the sequence (q_offset, kv_offset
and the whole lengths) and merged with rbfc.merge_attention equals the call
on the whole sequence, forward and gradients. Several processes (gloo):
rbfc.distributed.ring_attention on each rank's slice equals one process on
the whole sequence, for 2 and 4 ranks, zigzag balance on and off, lengths
that are not multiples of the ranks. RBFC_TEST_SEED=N replays a run.
"""
import os
import random
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rbfc
import rbfc.distributed as cp

import blocks

sys.path.insert(0, str(Path(__file__).resolve().parent))
import references  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEED = int(os.environ.get("RBFC_TEST_SEED", random.randrange(1 << 30)))
print(f"RBFC_TEST_SEED={SEED}")
# Each block is exact; merging reorders float32 sums.
TOLERANCE = 2e-5

SPECS = ["causal", "rbf_causal", "alibi", "relative_bias", "document_mask",
         "sliding_window", "softcap"]


def inputs(spec, batch, heads, kv_heads, q_len, kv_len, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, 64, generator=generator).to(dtype)
    k = torch.randn(batch, kv_heads, kv_len, 64, generator=generator).to(dtype)
    v = torch.randn(batch, kv_heads, kv_len, 64, generator=generator).to(dtype)
    grad_o = torch.randn(batch, heads, q_len, 64, generator=generator).to(dtype)
    captures = references.make_captures(spec, batch, heads, q_len, kv_len,
                                        generator, "cpu")
    params = {"window": 9} if spec == "sliding_window" else None
    return q, k, v, grad_o, captures, params


def relative_error(x, ref):
    return ((x.double() - ref.double()).abs().max()
            / ref.double().abs().max().clamp(min=1e-30)).item()


def learnable(captures):
    """The f32 captures as leaves that require grad."""
    return {name: t.clone().requires_grad_(t.dtype == torch.float32)
            for name, t in captures.items()}


def whole(attn, q, k, v, grad_o, captures, params):
    """o, lse and the gradients of q, k, v and the f32 captures, in one call."""
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    captures = learnable(captures)
    o, lse = attn(q, k, v, captures=captures, params=params, return_lse=True)
    o.backward(grad_o)
    return o.detach(), lse, (q.grad, k.grad, v.grad), {
        name: t.grad for name, t in captures.items() if t.requires_grad}


@pytest.mark.parametrize("spec", SPECS)
def test_blocks_merge_to_the_whole_sequence(spec):
    """Query blocks x key blocks with their offsets, merged per query block."""
    attn = rbfc.compile(EXAMPLES / f"{spec}.attn")
    q, k, v, grad_o, captures, params = inputs(spec, 2, 4, 2, 45, 45, SEED)
    ref_o, ref_lse, ref_grads, ref_capture_grads = whole(attn, q, k, v, grad_o,
                                                         captures, params)
    q_cuts, kv_cuts = [0, 7, 30, 45], [0, 16, 17, 40, 45]
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    captures = learnable(captures)
    o, lse = blocks.merged_blocks(attn, qg, kg, vg, q_cuts, kv_cuts,
                                  captures=captures, params=params)
    o.backward(grad_o)
    where = f"{spec} seed {SEED}"
    assert relative_error(o.detach(), ref_o) <= TOLERANCE, where
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), where
    assert torch.allclose(lse[finite], ref_lse[finite], atol=1e-4), where
    for name, got, ref in zip("qkv", (qg.grad, kg.grad, vg.grad), ref_grads):
        assert relative_error(got, ref) <= 1e-4, f"d{name}: {where}"
    for name, ref in ref_capture_grads.items():
        assert relative_error(captures[name].grad, ref) <= 1e-4, f"d{name}: {where}"


def test_sequence_block_errors():
    attn = rbfc.compile(EXAMPLES / "causal.attn")
    q = torch.randn(1, 2, 8, 64)
    with pytest.raises(rbfc.RbfcError, match="q_offset: expected an int >= 0"):
        attn(q, q, q, q_offset=-3)
    with pytest.raises(rbfc.RbfcError, match="kv_seq_len: expected an int >= 1"):
        attn(q, q, q, kv_seq_len=0)
    with pytest.raises(rbfc.RbfcError, match="q_seq_len is 9; the whole sequence "
                       "holds the call's rows"):
        attn(q, q, q, q_offset=2, q_seq_len=9)
    with pytest.raises(rbfc.RbfcError, match="kv_offset is 2147483645"):
        attn(q, q, q, kv_offset=2 ** 31 - 3)


def test_without_offsets_the_block_is_the_whole_sequence():
    """Offsets 0 and lengths None are the plain call, bit for bit."""
    attn = rbfc.compile(EXAMPLES / "relative_bias.attn")
    q, k, v, _, captures, _ = inputs("relative_bias", 1, 2, 2, 20, 20, SEED)
    plain = attn(q, k, v, captures=captures)
    explicit = attn(q, k, v, captures=captures, q_offset=0, kv_offset=0,
                    q_seq_len=20, kv_seq_len=20)
    assert torch.equal(plain, explicit)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RING_SPECS = ["causal", "rbf_causal", "alibi", "relative_bias", "document_mask",
              "sliding_window"]
RING_LENGTH = 37  # not a multiple of 2, 4 or 8


def ring_layout(spec):
    return "bnhd" if spec == "alibi" else "bhnd"


def ring_worker(rank, world, port, balance, seed, results, gathered):
    """Every spec of RING_SPECS through ring_attention on this rank's slices.
    The tensors go through `results` as shared-memory handles that this
    process serves: it stays until the parent sets `gathered`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for spec in RING_SPECS:
            layout = ring_layout(spec)
            attn = rbfc.compile(EXAMPLES / f"{spec}.attn", num_threads=1)
            q, k, v, grad_o, captures, params = inputs(spec, 2, 4, 2, RING_LENGTH,
                                                       RING_LENGTH, seed)
            if layout == "bnhd":
                q, k, v, grad_o = (t.transpose(1, 2).contiguous()
                                   for t in (q, k, v, grad_o))
            local = [cp.shard(t, rank, world, balance=balance, layout=layout)
                     .clone().requires_grad_() for t in (q, k, v)]
            captures = learnable(captures)
            o, lse = cp.ring_attention(*local, attn, params=params,
                                       captures=captures, layout=layout,
                                       balance=balance, return_lse=True)
            o.backward(cp.shard(grad_o, rank, world, balance=balance, layout=layout))
            results.put((spec, rank, o.detach(), lse, [t.grad for t in local],
                         {n: t.grad for n, t in captures.items() if t.requires_grad}))
        gathered.wait(timeout=600)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("balance", [False, True])
def test_ring_attention_equals_one_process(balance, world):
    context = mp.get_context("spawn")
    results, received = context.Queue(), context.Event()
    port = free_port()
    processes = [context.Process(target=ring_worker,
                                 args=(rank, world, port, balance, SEED, results,
                                       received))
                 for rank in range(world)]
    for p in processes:
        p.start()
    gathered = {}
    for _ in range(world * len(RING_SPECS)):
        spec, rank, *rest = results.get(timeout=300)
        gathered.setdefault(spec, {})[rank] = rest
    received.set()
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0

    for spec in RING_SPECS:
        layout = ring_layout(spec)
        attn = rbfc.compile(EXAMPLES / f"{spec}.attn")
        q, k, v, grad_o, captures, params = inputs(spec, 2, 4, 2, RING_LENGTH,
                                                   RING_LENGTH, SEED)
        ref_o, ref_lse, ref_grads, ref_capture_grads = whole(attn, q, k, v, grad_o,
                                                             captures, params)
        if layout == "bnhd":
            ref_o = ref_o.transpose(1, 2)
            ref_grads = [g.transpose(1, 2) for g in ref_grads]
        where = f"{spec} world {world} balance {balance} seed {SEED}"
        for rank, (o, lse, grads, _) in sorted(gathered[spec].items()):
            def mine(t, layout=layout):
                return cp.shard(t, rank, world, balance=balance, layout=layout)
            assert relative_error(o, mine(ref_o)) <= TOLERANCE, where
            ref_rank_lse = mine(ref_lse.unsqueeze(-1), "bhnd").squeeze(-1)
            assert torch.allclose(lse, ref_rank_lse, atol=1e-4), where
            for name, got, ref in zip("qkv", grads, ref_grads):
                assert relative_error(got, mine(ref)) <= 1e-4, \
                    f"d{name} rank {rank}: {where}"
        # Replicated captures: the ranks' shares sum to the whole gradient.
        for name, ref in ref_capture_grads.items():
            total = sum(r[3][name] for r in gathered[spec].values())
            assert relative_error(total, ref) <= 1e-4, f"d{name}: {where}"


def test_ring_attention_errors():
    attn = rbfc.compile(EXAMPLES / "rbf_none.attn")
    q = torch.randn(1, 2, 8, 64)
    with pytest.raises(rbfc.RbfcError, match="needs softmax"):
        cp.ring_attention(q, q, q, attn)
    with pytest.raises(rbfc.RbfcError, match="torch.distributed is not initialized"):
        cp.ring_attention(q, q, q, rbfc.compile(EXAMPLES / "causal.attn"))
    with pytest.raises(rbfc.RbfcError, match="layout: expected"):
        cp.shard(q, 0, 2, layout="nhd")
