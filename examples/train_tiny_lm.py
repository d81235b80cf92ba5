#!/usr/bin/env python3
"""A tiny causal language model trained twice: with SDPA, and with rbfc's RBF
attention plus zero-initialised register tokens (the RBF attention author's
recipe: learnable key/value slots every query can fall back on).

    python3 examples/train_tiny_lm.py                  # GPU, both runs, ~3.2M params
    python3 examples/train_tiny_lm.py --smoke          # CPU (host backend), a few steps
    python3 examples/train_tiny_lm.py --plot LOG.json  # draw a log's curves

The text is the Python source of PyPI's torch wheel (torch/**/*.py as its
RECORD lists them, in path order, the first 32 MB: code, docstrings and
comments), so it is on every machine that has torch and needs no download;
3000 steps of 32 x 256 bytes at random offsets read 24.6 MB, each byte
about once on average, so the validation loss measures generalisation, not
memory. The model reads bytes (vocabulary 256); 90% of the text trains, the
last 10% validates. Both runs share the seed, the initial weights of
everything but the registers, the batches and the steps; they differ only
in the attention: F.scaled_dot_product_attention (causal, scale
1/sqrt(head_dim)) against RBF attention (score -gamma ||q - k||^2, gamma =
1/sqrt(head_dim), causal as examples/rbf_causal.attn) over R register keys
and values in front of every sequence's (zero at initialisation, learned;
the spec's mask lets query i see them and keys 0..i). On CUDA both run in
bf16 autocast; --smoke runs f32 on the CPU, where rbfc's host backend
computes forward and backward, and exits 1 unless the loss went down.

Writes the losses as JSON (--log, default train_tiny_lm.json) and, when
matplotlib is there, the curves as a PNG beside it (or to --out).
"""
import argparse
import importlib.metadata
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# RBF attention (examples/rbf_causal.attn) over keys that start with
# `registers` register slots: query i sees the registers and keys 0..i.
RBF_REGISTERS = """
attention rbf_registers {
  param gamma: f32 = 1.0 / sqrt(head_dim);
  param registers: int = 4;
  score = -gamma * dist2(q, k);
  mask = kv_idx <= q_idx + registers;
}
"""


TEXT_BYTES = 32 << 20


def text_bytes():
    """The first TEXT_BYTES of torch's Python sources, in path order."""
    sources = sorted((file for file in importlib.metadata.files("torch") or []
                      if file.parts[0] == "torch" and file.suffix == ".py"), key=str)
    chunks, size = [], 0
    for file in sources:
        chunks.append(Path(file.locate()).read_bytes())
        size += len(chunks[-1])
        if size >= TEXT_BYTES:
            break
    if not chunks:
        raise SystemExit("torch's wheel lists no Python sources to train on")
    return b"".join(chunks)[:TEXT_BYTES]


class Attention(torch.nn.Module):
    def __init__(self, dim, heads, kind, registers):
        super().__init__()
        self.heads, self.kind = heads, kind
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.out = torch.nn.Linear(dim, dim, bias=False)
        if kind == "rbf":
            import rbfc
            self.attn = rbfc.compile(RBF_REGISTERS)
            self.registers = registers
            # Zero-initialised key and value slots, one set per layer and head,
            # in front of every sequence: under the causal mask every query
            # sees them.
            self.register_k = torch.nn.Parameter(torch.zeros(heads, registers,
                                                             dim // heads))
            self.register_v = torch.nn.Parameter(torch.zeros(heads, registers,
                                                             dim // heads))

    def forward(self, x):
        batch, seq, dim = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.heads, -1).unbind(2)
        if self.kind == "sdpa":
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True)
            o = o.transpose(1, 2)
        else:
            # The registers take the first key and value positions.
            rk = self.register_k.to(k.dtype).transpose(0, 1).expand(batch, -1, -1, -1)
            rv = self.register_v.to(v.dtype).transpose(0, 1).expand(batch, -1, -1, -1)
            o = self.attn(q, torch.cat([rk, k], dim=1), torch.cat([rv, v], dim=1),
                          params={"registers": self.registers}, layout="bnhd")
        return self.out(o.reshape(batch, seq, dim))


class Block(torch.nn.Module):
    def __init__(self, dim, heads, kind, registers):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, kind, registers)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(),
                                       torch.nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyLM(torch.nn.Module):
    def __init__(self, dim, layers, heads, seq, kind, registers):
        super().__init__()
        self.embed = torch.nn.Embedding(256, dim)
        self.position = torch.nn.Parameter(0.02 * torch.randn(seq, dim))
        self.blocks = torch.nn.ModuleList(Block(dim, heads, kind, registers)
                                          for _ in range(layers))
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, 256, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def batches(data, steps, batch, seq, seed):
    """The same random crops for every run: `steps` batches of seq+1 bytes."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - seq - 1, (steps, batch), generator=generator)
    for row in starts:
        yield torch.stack([data[s: s + seq + 1] for s in row.tolist()])


def evaluate(model, data, batch, seq, device, autocast):
    model.eval()
    with torch.no_grad(), autocast():
        losses = [F.cross_entropy(model(x[:, :-1].to(device)).float().flatten(0, 1),
                                  x[:, 1:].to(device).flatten())
                  for x in batches(data, 4, batch, seq, seed=1234)]
    model.train()
    return torch.stack(losses).mean().item()


def train(kind, config, data, device):
    torch.manual_seed(config["seed"])
    model = TinyLM(config["dim"], config["layers"], config["heads"], config["seq"], kind,
                   config["registers"]).to(device)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.1)
    steps = config["steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    train_data, val_data = data
    log = {"kind": kind, "params": params, "step": [], "train_loss": [],
           "val_step": [], "val_loss": []}
    start = time.perf_counter()
    for step, x in enumerate(batches(train_data, steps, config["batch"], config["seq"],
                                     config["seed"])):
        x = x.to(device)
        with autocast():
            logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        log["step"].append(step)
        log["train_loss"].append(loss.item())
        if step % config["eval_every"] == 0 or step == steps - 1:
            log["val_step"].append(step)
            log["val_loss"].append(evaluate(model, val_data, config["batch"],
                                            config["seq"], device, autocast))
            print(f"{kind:5} step {step:5}  train {loss.item():.4f}  "
                  f"val {log['val_loss'][-1]:.4f}  {time.perf_counter() - start:6.1f} s",
                  flush=True)
    log["seconds"] = time.perf_counter() - start
    return log


def plot(log_path, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = json.loads(Path(log_path).read_text())
    figure, axis = plt.subplots(figsize=(7, 4))
    for run in runs["runs"]:
        label = {"sdpa": "SDPA", "rbf": f"rbfc RBF + {runs['config']['registers']} "
                 "registers"}[run["kind"]]
        window = 25
        smooth = [sum(run["train_loss"][max(0, i - window + 1): i + 1]) /
                  (i + 1 - max(0, i - window + 1)) for i in range(len(run["train_loss"]))]
        line, = axis.plot(run["step"], smooth, label=f"{label}: train", alpha=0.8)
        axis.plot(run["val_step"], run["val_loss"], "o--", color=line.get_color(),
                  label=f"{label}: validation", markersize=3)
    axis.set_xlabel("step")
    axis.set_ylabel("loss (nats per byte)")
    axis.set_title(f"Tiny LM ({runs['runs'][0]['params'] / 1e6:.1f}M params) on "
                   f"torch's Python sources, {runs['device']}")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, a tiny model, a few steps; exit 1 unless the loss falls")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--log", default="train_tiny_lm.json")
    parser.add_argument("--out", help="the plot (default: the log's name, .png)")
    parser.add_argument("--plot", metavar="LOG", help="only draw LOG's curves")
    args = parser.parse_args()
    if args.plot:
        return plot(args.plot, args.out or str(Path(args.plot).with_suffix(".png")))

    if args.smoke:
        config = dict(dim=64, layers=2, heads=2, seq=64, batch=8, steps=40, lr=3e-3,
                      registers=4, eval_every=20, seed=0)
        device = "cpu"
    else:
        config = dict(dim=256, layers=4, heads=4, seq=256, batch=32, steps=3000, lr=2e-3,
                      registers=4, eval_every=100, seed=0)
        device = "cuda"
    if args.steps:
        config["steps"] = args.steps
    raw = torch.frombuffer(bytearray(text_bytes()), dtype=torch.uint8).long()
    split = int(0.9 * len(raw))
    data = raw[:split], raw[split:]
    print(f"{len(raw)} bytes of text; config {config}", flush=True)
    kinds = ["rbf"] if args.smoke else ["sdpa", "rbf"]
    runs = [train(kind, config, data, device) for kind in kinds]
    result = {"config": config, "device": torch.cuda.get_device_name()
              if device == "cuda" else "cpu", "torch": torch.__version__, "runs": runs}
    Path(args.log).write_text(json.dumps(result) + "\n")
    for run in runs:
        print(f"{run['kind']}: {run['params']} params, final val loss "
              f"{run['val_loss'][-1]:.4f}, {run['seconds']:.1f} s")
    if args.smoke:
        losses = runs[0]["train_loss"]
        first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
        print(f"smoke: mean train loss of the first 5 steps {first:.3f}, "
              f"of the last 5 {last:.3f}")
        return 0 if last < first - 0.5 else 1
    try:
        plot(args.log, args.out or str(Path(args.log).with_suffix(".png")))
    except ImportError:
        print("no matplotlib: draw the curves elsewhere with --plot", args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
