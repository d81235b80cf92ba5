"""Context parallelism: rbfc attention over a sequence split across ranks.

    import torch.distributed as dist, rbfc, rbfc.distributed as cp
    attn = rbfc.compile("examples/alibi.attn")
    q = cp.shard(q_full, dist.get_rank(), dist.get_world_size(), balance=True)
    ...                                             # k, v likewise
    o = cp.ring_attention(q, k, v, attn, balance=True)   # this rank's rows

Ring attention (docs/distributed.md): each rank keeps its slice of q, k
and v; the K/V slices travel around the ring of ranks with torch.distributed
point-to-point sends (NCCL on GPUs, gloo on CPUs), each step's transfer
overlapped with the step's attention. Each step is one rbfc call per pair
of q and K/V chunks, with the chunks' places in the whole sequence (q_offset,
kv_offset and the whole lengths), so masks and position terms stay exact;
the partial (o, lse) merge through their log-sum-exps. The backward runs
the ring again with the merged o and lse: dQ stays, dK/dV travel with their
K/V slice and arrive back at its rank after the last step.

Chunks: `balance=False` gives rank r the r-th of world_size contiguous
slices (torch.tensor_split: lengths differ by at most one); `balance=True`
splits the sequence into 2 * world_size slices and gives rank r slices r
and 2 * world_size - 1 - r (the zigzag layout), which evens out causal work.

Gradients: q, k and v get this rank's slices' gradients. A captured tensor
or param that requires grad is replicated on every rank; each rank gets the
share of the gradient that its query rows contribute, so the sum over ranks
is the gradient of the whole sequence's loss — what data-parallel training
sums anyway (DDP/FSDP all-reduce the gradients of replicated parameters).
"""
import torch
import torch.distributed as dist

from . import _ops
from .attention import Attention
from .errors import RbfcError
from .merge import merge_attention

__all__ = ["ring_attention", "shard", "chunks"]


def chunks(length, world_size, balance=False):
    """[(start, length)] of the sequence slices rank r holds, for every rank:
    world_size contiguous slices, or with `balance` the zigzag pairs of
    2 * world_size slices (both as torch.tensor_split cuts them)."""
    parts = 2 * world_size if balance else world_size
    base, extra = divmod(length, parts)
    sizes = [base + (i < extra) for i in range(parts)]
    starts = [sum(sizes[:i]) for i in range(parts)]
    if not balance:
        return [[(starts[r], sizes[r])] for r in range(world_size)]
    return [[(starts[r], sizes[r]), (starts[parts - 1 - r], sizes[parts - 1 - r])]
            for r in range(world_size)]


def shard(x, rank, world_size, *, balance=False, layout="bhnd"):
    """Rank `rank`'s slice of the whole-sequence tensor `x` ([B, H, N, D] or,
    with layout "bnhd", [B, N, H, D]), as ring_attention expects it."""
    dim = _sequence_dim(layout, "rbfc.distributed.shard")
    pieces = [x.narrow(dim, start, length)
              for start, length in chunks(x.shape[dim], world_size, balance)[rank]]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)


def ring_attention(q, k, v, attn, group=None, *, params=None, captures=None,
                   layout="bhnd", balance=False, return_lse=False):
    """Attention of this rank's query rows over the whole sequence's keys.

    q, k, v: this rank's slices (shard() cuts them) in `layout`; attn: an
    rbfc.compile result; group: the torch.distributed process group (None:
    the default one); params, captures: as for attn(...), the same on every
    rank (captures indexed by q_idx or kv_idx cover the whole sequence).
    Returns this rank's rows of o (and of the lse with return_lse, which
    has no gradient). A softmax spec only: its blocks merge through the lse.
    """
    what = f"rbfc.distributed.ring_attention ({attn.spec_name})"
    if not isinstance(attn, Attention):
        raise RbfcError(f"rbfc.distributed.ring_attention: attn: expected an "
                        f"rbfc.compile result, got {type(attn).__name__}")
    if attn.normalization != "softmax":
        raise RbfcError(f"{what}: the spec normalizes with "
                        f"{attn.normalization!r}; ring attention merges blocks "
                        "through their log-sum-exp, which needs softmax")
    if not dist.is_available() or not dist.is_initialized():
        raise RbfcError(f"{what}: torch.distributed is not initialized "
                        "(call dist.init_process_group first)")
    dim = _sequence_dim(layout, what)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise RbfcError(f"{what}: {name}: expected a 4-D tensor")
    if k.shape != v.shape:
        raise RbfcError(f"{what}: v: shape {tuple(v.shape)} differs from k's "
                        f"{tuple(k.shape)}")
    ring = _Ring(q, k, group, dim, balance, what)
    param_values, param_slots, tensor_params, tensor_param_slots = (
        attn._check_params(params))
    capture_list = attn._check_captures(captures, q)
    call = (attn, ring, layout, param_values, param_slots, tensor_param_slots,
            len(capture_list))
    o, lse = _RingAttention.apply(call, q, k, v, *capture_list, *tensor_params)
    return (o, lse) if return_lse else o


def _sequence_dim(layout, what):
    if layout not in ("bhnd", "bnhd"):
        raise RbfcError(f"{what}: layout: expected 'bhnd' or 'bnhd', got {layout!r}")
    return 2 if layout == "bhnd" else 1


class _Ring:
    """The ranks of `group` in ring order and where every rank's chunks of
    q and of k, v sit in the whole sequence."""

    def __init__(self, q, k, group, dim, balance, what):
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.dim = dim
        nccl = dist.get_backend(group) == "nccl"
        lengths = torch.tensor([q.shape[dim], k.shape[dim]], dtype=torch.int64,
                               device=q.device if nccl else "cpu")
        gathered = [torch.empty_like(lengths) for _ in range(self.size)]
        dist.all_gather(gathered, lengths, group=group)
        q_lengths = [int(t[0]) for t in gathered]
        kv_lengths = [int(t[1]) for t in gathered]
        self.q_len, self.kv_len = sum(q_lengths), sum(kv_lengths)
        if balance and min(self.q_len, self.kv_len) < 2 * self.size:
            raise RbfcError(f"{what}: balance=True cuts the sequence into "
                            f"{2 * self.size} slices; q has {self.q_len} rows "
                            f"and k {self.kv_len} over all ranks")
        if not balance and min(q_lengths + kv_lengths) < 1:
            raise RbfcError(f"{what}: every rank needs at least one row of q "
                            f"and of k; the ranks hold {q_lengths} and "
                            f"{kv_lengths}")
        self.q_chunks = chunks(self.q_len, self.size, balance)
        self.kv_chunks = chunks(self.kv_len, self.size, balance)
        for name, held, expected in (("q", q_lengths, self.q_chunks),
                                     ("k", kv_lengths, self.kv_chunks)):
            want = [sum(n for _, n in pieces) for pieces in expected]
            if held != want:
                layout = "zigzag" if balance else "contiguous"
                raise RbfcError(f"{what}: {name}: the ranks hold {held} rows; "
                                f"the {layout} split of {sum(held)} rows "
                                f"(rbfc.distributed.shard) gives {want}")

    def peer(self, step):
        """The global rank `step` places after this one in the ring."""
        r = (self.rank + step) % self.size
        return dist.get_global_rank(self.group, r) if self.group is not None else r

    def pieces(self, x, chunk_list, dim=None):
        """x's rows (along `dim`, default the sequence dimension) cut as
        `chunk_list`: [(piece, global start)]."""
        local, out = 0, []
        for start, length in chunk_list:
            out.append((x.narrow(self.dim if dim is None else dim, local, length),
                        start))
            local += length
        return out

    def exchange(self, tensor, step):
        """Sends `tensor` ([2, ...]: K/V or dK/dV of the block held) to the
        next rank and receives, without waiting, the one arriving for `step`
        (the block of the rank `step` places before this one, whose length
        may differ): returns (received, requests)."""
        owner = (self.rank - step) % self.size
        shape = list(tensor.shape)
        shape[self.dim + 1] = sum(n for _, n in self.kv_chunks[owner])
        received = tensor.new_empty(shape)
        ops = [dist.P2POp(dist.isend, tensor, self.peer(1), self.group),
               dist.P2POp(dist.irecv, received, self.peer(-1), self.group)]
        return received, dist.batch_isend_irecv(ops)


def _wait(requests):
    for request in requests:
        request.wait()


class _RingAttention(torch.autograd.Function):
    """The ring's forward and backward; apply(call, q, k, v, *captures,
    *tensor_params) with call = (attn, ring, layout, param values, param
    slots, tensor param slots, number of captures)."""

    @staticmethod
    def forward(ctx, call, q, k, v, *tensors):
        attn, ring, layout, values, slots, tensor_slots, num_captures = call
        captures = list(tensors[:num_captures])
        tensor_params = list(tensors[num_captures:])
        params = {}
        names = list(attn.params)
        for value, slot in zip(values, slots):
            params[names[slot]] = value
        for t, slot in zip(tensor_params, tensor_slots):
            params[names[slot]] = t.detach()
        capture_dict = dict(zip(attn.captures, (c.detach() for c in captures)))
        q_pieces = ring.pieces(q, ring.q_chunks[ring.rank])
        merged = [None] * len(q_pieces)
        kv = torch.stack([k, v]).contiguous()
        for step in range(ring.size):
            owner = (ring.rank - step) % ring.size
            if step + 1 < ring.size:
                incoming, requests = ring.exchange(kv, step + 1)
            for i, (q_piece, q_start) in enumerate(q_pieces):
                for (k_piece, kv_start), (v_piece, _) in zip(
                        ring.pieces(kv[0], ring.kv_chunks[owner]),
                        ring.pieces(kv[1], ring.kv_chunks[owner])):
                    o, lse = attn(q_piece, k_piece, v_piece, params=params,
                                  captures=capture_dict, return_lse=True,
                                  layout=layout, q_offset=q_start,
                                  kv_offset=kv_start, q_seq_len=ring.q_len,
                                  kv_seq_len=ring.kv_len)
                    merged[i] = ((o.float(), lse) if merged[i] is None else
                                 merge_attention([merged[i][0], o], [merged[i][1], lse],
                                                 layout=layout))
            if step + 1 < ring.size:
                _wait(requests)
                kv = incoming
        o = torch.cat([m[0] for m in merged], ring.dim).to(q.dtype)
        lse = torch.cat([m[1] for m in merged], 2)
        ctx.save_for_backward(q, k, v, o, lse, *captures, *tensor_params)
        ctx.call, ctx.num_tensors = call, len(tensors)
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, grad_o, _grad_lse):
        attn, ring, layout, values, slots, tensor_slots, num_captures = ctx.call
        q, k, v, o, lse, *tensors = ctx.saved_tensors
        captures = [c.detach() for c in tensors[:num_captures]]
        tensor_params = [t.detach() for t in tensors[num_captures:]]
        capture_flags = [c.requires_grad for c in tensors[:num_captures]]
        param_flags = [t.requires_grad for t in tensors[num_captures:]]
        bnhd = layout == "bnhd"
        grad_o = (torch.zeros_like(o) if grad_o is None else grad_o).contiguous()
        q_chunks = ring.q_chunks[ring.rank]
        q_pieces = ring.pieces(q, q_chunks)
        o_pieces = ring.pieces(o, q_chunks)
        grad_o_pieces = ring.pieces(grad_o, q_chunks)
        lse_pieces = [piece for piece, _ in ring.pieces(lse, q_chunks, dim=2)]
        grad_q = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        grad_q_pieces = ring.pieces(grad_q, q_chunks)
        capture_grads = [torch.zeros_like(c, dtype=torch.float32) if want else None
                         for c, want in zip(captures, capture_flags)]
        param_grads = [torch.zeros((), dtype=torch.float32, device=q.device)
                       if want else None for want in param_flags]
        kv = torch.stack([k, v]).contiguous()
        grad_kv = torch.zeros(kv.shape, dtype=torch.float32, device=k.device)
        for step in range(ring.size):
            owner = (ring.rank - step) % ring.size
            if step + 1 < ring.size:
                incoming, requests = ring.exchange(kv, step + 1)
            for (q_piece, q_start), (o_piece, _), (g_piece, _), lse_piece, \
                    (dq_piece, _) in zip(q_pieces, o_pieces, grad_o_pieces,
                                         lse_pieces, grad_q_pieces):
                for (k_piece, kv_start), (v_piece, _), (dk_piece, _), (dv_piece, _) \
                        in zip(*(ring.pieces(t, ring.kv_chunks[owner])
                                 for t in (kv[0], kv[1], grad_kv[0], grad_kv[1]))):
                    dq, dk, dv, dcaptures, dparams = _ops.backward(
                        attn._key, q_piece, k_piece, v_piece, o_piece, lse_piece,
                        g_piece, None, captures, values, slots, tensor_params,
                        tensor_slots, capture_flags, param_flags, bnhd,
                        [q_start, kv_start, ring.q_len, ring.kv_len])
                    dq_piece += dq
                    dk_piece += dk
                    dv_piece += dv
                    for total, part in zip((g for g in capture_grads if g is not None),
                                           dcaptures):
                        total += part
                    for total, part in zip((g for g in param_grads if g is not None),
                                           dparams):
                        total += part
            # dK/dV of the block held travel on with it; after the last step
            # they go once more, back to the block's rank.
            grad_kv, grad_requests = (ring.exchange(grad_kv, step + 1)
                                      if ring.size > 1 else (grad_kv, []))
            if step + 1 < ring.size:
                _wait(requests)
                kv = incoming
            _wait(grad_requests)
        grad_k, grad_v = grad_kv[0].to(k.dtype), grad_kv[1].to(v.dtype)
        capture_out = [g.to(c.dtype) if g is not None else None
                       for g, c in zip(capture_grads, captures)]
        param_out = [g.to(t.dtype).reshape(t.shape) if g is not None else None
                     for g, t in zip(param_grads, tensor_params)]
        return (None, grad_q.to(q.dtype), grad_k, grad_v, *capture_out, *param_out)
