#!/usr/bin/env python3
"""GPU tests of the rbfc Python package (run on the GPU machine, from the repo
root, with the wheel of scripts/build-wheel.sh installed):

    pip install --no-index --no-deps .carry/wheels/rbfc-*.whl
    python3 test/gpu/run_python_tests.py [--quick] [--seed N]

The op (rbfc.compile(...)(q, k, v)) on CUDA tensors against the float32
PyTorch references of test/python/references.py (each shape twice: checked,
then through the launch path of a known signature), for every example spec,
bf16 and f16, head dims 64 and 128, GQA, Nq != Nkv and the bnhd layout, with
the caching allocator's free blocks poisoned with NaN first (the outputs are
allocated inside the op); ALiBi's gradients (q, k, v, slopes), eager and
under torch.compile; rbfc.sdpa against F.scaled_dot_product_attention; the op
under torch.compile(fullgraph=True) and inside a CUDA graph capture, forward
alone and forward with backward (a capture fails on any host
synchronisation); the CUDA-only argument checks; and the
C example (examples/c) on the GPU when its binary is given (--c-example).
Prints one line per case; exits non-zero on any failure. docs/gpu-testing.md
explains it. `--device cpu` runs the checks that do not need CUDA on the host
backend: a dry run of this script on a machine without a GPU.
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

import rbfc

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test" / "python"))
import references  # noqa: E402

DEV = "cuda"
TORCH_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}
# max|o - ref| / max|ref|; as test/gpu/run_gpu_tests.py.
TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 5e-3}
LSE_TOLERANCE = 5e-4
GRAD_TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 1e-2}

RESULTS = []


def case(name):
    """Runs the decorated check now, recording pass or failure."""
    def run(check):
        try:
            note = check()
            RESULTS.append((name, True, note or ""))
            print(f"PASS  {name}  {note or ''}", flush=True)
        except Exception as error:  # noqa: BLE001 - every failure is reported
            RESULTS.append((name, False, str(error).splitlines()[0]))
            print(f"FAIL  {name}\n{traceback.format_exc()}", flush=True)
        return check
    return run


def poison():
    """Fills the allocator's free blocks with NaN, so that an output the op
    allocates and does not fully write shows."""
    if DEV != "cuda":
        return
    free = torch.cuda.mem_get_info()[0]
    block = torch.full((min(free // 8, 1 << 30) // 4,), float("nan"), device=DEV)
    del block


def relative_error(x, ref):
    return ((x.float() - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item()


def check_lse(lse, ref):
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(lse), finite), "lse: -inf where it should not be"
    error = ((lse - ref).abs() / (1 + ref.abs()))[finite]
    assert error.numel() == 0 or error.max().item() <= LSE_TOLERANCE, \
        f"lse error {error.max().item():.3g}"


def inputs(spec, dtype, batch, heads, kv_heads, q_len, kv_len, dim, g):
    scale = 0.25 if references.SPECS[spec][1] == "none" else 1.0
    q = (scale * torch.randn(batch, heads, q_len, dim, generator=g)).to(DEV, dtype)
    k = (scale * torch.randn(batch, kv_heads, kv_len, dim, generator=g)).to(DEV, dtype)
    v = torch.randn(batch, kv_heads, kv_len, dim, generator=g).to(DEV, dtype)
    captures = references.make_captures(spec, batch, heads, q_len, kv_len, g, DEV)
    return q, k, v, captures


def forward_cases(quick, g):
    shapes = [(1, 2, 2, 1, 1), (2, 4, 1, 200, 200), (2, 8, 2, 64, 333),
              (1, 4, 4, 300, 77)]
    dims = [64] if quick else [64, 128]
    for spec in sorted(references.SPECS):
        attn = rbfc.compile(REPO / "examples" / f"{spec}.attn", lse=True)
        for dtype_name, dim, layout in [(d, dim, lay) for d in TORCH_DTYPES
                                        for dim in dims
                                        for lay in ("bhnd", "bnhd")]:
            dtype = TORCH_DTYPES[dtype_name]

            @case(f"forward {spec} {dtype_name} d{dim} {layout}")
            def _():
                worst = 0.0
                # The second pass has new data in the first pass's
                # signatures: those calls run from rbfc._launcher's C path.
                for shape in shapes + shapes:
                    q, k, v, captures = inputs(spec, dtype, *shape, dim, g)
                    ref_o, ref_lse = references.attention(
                        spec, q.float(), k.float(), v.float(),
                        {n: c.float() if c.is_floating_point() else c
                         for n, c in captures.items()})
                    if layout == "bnhd":
                        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
                    poison()
                    o, lse = attn(q, k, v, captures=captures, layout=layout)
                    if layout == "bnhd":
                        o = o.transpose(1, 2)
                    assert not o.isnan().any(), f"{shape}: NaN left in o"
                    error = relative_error(o, ref_o)
                    assert error <= TOLERANCE[dtype], f"{shape}: error {error:.3g}"
                    check_lse(lse, ref_lse)
                    worst = max(worst, error)
                return f"worst {worst:.2e}"


def gradient_cases(g):
    """ALiBi's gradients (q, k, v, slopes) against float32 autograd, eager and
    under torch.compile(fullgraph=True, backend="aot_eager")."""
    attn = rbfc.compile(REPO / "examples" / "alibi.attn")
    q, k, v, captures = inputs("alibi", torch.bfloat16, 2, 4, 2, 100, 130, 64, g)
    grad_o = torch.randn(q.shape, generator=g).to(DEV, q.dtype)
    reference = references.gradients("alibi", q, k, v, captures, {}, grad_o,
                                     torch.zeros(q.shape[:3], device=DEV),
                                     torch.bfloat16, ["slopes"])

    def call(q, k, v, slopes):
        return attn(q, k, v, captures={"slopes": slopes})

    for mode, function in (("eager", call),
                           ("torch.compile", torch.compile(call, fullgraph=True,
                                                           backend="aot_eager"))):
        @case(f"gradients alibi bf16 (q, k, v, slopes), {mode}")
        def _():
            inputs_ = [t.detach().clone().requires_grad_()
                       for t in (q, k, v, captures["slopes"])]
            function(*inputs_).backward(grad_o)
            return check_gradients(zip(("q", "k", "v", "slopes"), inputs_),
                                   reference)


def check_gradients(named_leaves, reference):
    worst = 0.0
    for name, leaf in named_leaves:
        problem = references.check_gradient(name, leaf.grad, reference[name],
                                            GRAD_TOLERANCE[torch.bfloat16])
        assert problem is None, problem
        worst = max(worst, references.allowance_used(
            leaf.grad, reference[name], GRAD_TOLERANCE[torch.bfloat16]))
    return f"{worst:.2f} of the allowance"


def sdpa_cases(g):
    q = torch.randn(2, 8, 300, 128, generator=g).to(DEV, torch.bfloat16)
    k = torch.randn(2, 2, 250, 128, generator=g).to(DEV, torch.bfloat16)
    v = torch.randn(2, 2, 250, 128, generator=g).to(DEV, torch.bfloat16)
    mask = torch.rand(300, 250, generator=g).to(DEV) > 0.2
    mask[:, 0] = True
    for name, kwargs in (("causal", {"is_causal": True}), ("scale", {"scale": 0.05}),
                         ("bool mask", {"attn_mask": mask}),
                         ("float mask", {"attn_mask": torch.randn(
                             1, 8, 300, 1, generator=g).to(DEV)})):
        @case(f"sdpa {name} bf16 d128 GQA 4:1")
        def _():
            o = rbfc.sdpa(q, k, v, enable_gqa=True, **kwargs)
            ref = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), enable_gqa=True,
                **{n: x.float() if isinstance(x, torch.Tensor) and x.is_floating_point()
                   else x for n, x in kwargs.items()})
            error = relative_error(o, ref)
            assert error <= TOLERANCE[torch.bfloat16], f"error {error:.3g}"
            return f"error {error:.2e}"


def compiled_and_graph_cases(g):
    attn = rbfc.compile(REPO / "examples" / "rbf.attn")
    q, k, v, _ = inputs("rbf", torch.bfloat16, 2, 8, 2, 256, 256, 64, g)
    ref, _ = references.attention("rbf", q.float(), k.float(), v.float())

    def model(q, k, v):
        return attn(q * 1.0, k, v) + 0.0

    backends = ["aot_eager"]
    if shutil.which("cc") or shutil.which("gcc"):
        backends.append("inductor")
    for backend in backends:
        @case(f"torch.compile(fullgraph=True, backend={backend!r})")
        def _():
            compiled = torch.compile(model, fullgraph=True, backend=backend)
            error = relative_error(compiled(q, k, v), ref)
            assert error <= TOLERANCE[torch.bfloat16], f"error {error:.3g}"
            return f"error {error:.2e}"

    @case("CUDA graph capture and replay")
    def _():
        static_q = q.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm up: the kernel is compiled and loaded
            attn(static_q, k, v)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_o = attn(static_q, k, v)
        fresh = torch.randn(q.shape, generator=g).to(DEV, q.dtype)
        static_q.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        ref_fresh, _ = references.attention("rbf", fresh.float(), k.float(), v.float())
        error = relative_error(static_o, ref_fresh)
        assert error <= TOLERANCE[torch.bfloat16], f"error {error:.3g}"
        return f"replayed on new q: error {error:.2e}"

    @case("CUDA graph capture and replay of forward and backward")
    def _():
        static_q, static_k, static_v = (t.detach().clone().requires_grad_()
                                        for t in (q, k, v))
        grad_o = torch.randn(q.shape, generator=g).to(DEV, q.dtype)

        def step():
            for t in (static_q, static_k, static_v):
                t.grad = None
            attn(static_q, static_k, static_v).backward(grad_o)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm up: both kernels compiled and loaded
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        fresh = torch.randn(q.shape, generator=g).to(DEV, q.dtype)
        with torch.no_grad():
            static_q.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        reference = references.gradients("rbf", fresh, k, v, {}, {}, grad_o,
                                         torch.zeros(q.shape[:3], device=DEV),
                                         torch.bfloat16, [])
        return "replayed on new q: " + check_gradients(
            zip("qkv", (static_q, static_k, static_v)), reference)


def error_cases():
    attn = rbfc.compile(REPO / "examples" / "alibi.attn")
    q = torch.randn(1, 4, 64, 64, device=DEV, dtype=torch.bfloat16)
    slopes = torch.ones(4, device=DEV)
    bad = [
        ("k: on cpu, but q is on cuda:0", (q, q.cpu(), q), {"slopes": slopes}),
        ("q: dtype torch.float32; on cuda rbfc takes", (q.float(),) * 3,
         {"slopes": slopes}),
        ("multiples of 8 elements (16 bytes)",
         (torch.randn(1, 4, 64, 68, device=DEV, dtype=torch.bfloat16)[..., :64], q, q),
         {"slopes": slopes}),
        ("data pointer is not 16-byte aligned",
         (torch.empty(4 * 64 * 64 + 1, device=DEV, dtype=torch.bfloat16)[1:]
          .view(1, 4, 64, 64), q, q), {"slopes": slopes}),
        ("captures['slopes']: on cpu, but q is on cuda:0", (q, q, q),
         {"slopes": slopes.cpu()}),
    ]
    for message, args, captures in bad:
        @case(f"error: {message}")
        def _():
            try:
                attn(*args, captures=captures)
            except rbfc.RbfcError as error:
                assert message in str(error), str(error)
                return ""
            raise AssertionError("no RbfcError")


def c_example_case(binary):
    @case("C example (examples/c/rbf_attention.c) on the GPU")
    def _():
        library = rbfc._capi.library_path()
        env = dict(os.environ, LD_LIBRARY_PATH=str(library.parent))
        run = subprocess.run([binary, str(REPO / "examples" / "rbf.attn"), "cuda"],
                             capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="head dim 64 only")
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    parser.add_argument("--c-example", help="the rbfc-c-example binary to run")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a dry run on the host backend")
    args = parser.parse_args()
    global DEV
    DEV = args.device
    print(f"seed {args.seed}; rbfc from {rbfc._capi.library_path()}; "
          f"{torch.cuda.get_device_name() if DEV == 'cuda' else 'cpu'}", flush=True)
    g = torch.Generator().manual_seed(args.seed)
    forward_cases(args.quick, g)
    gradient_cases(g)
    sdpa_cases(g)
    if DEV == "cuda":
        compiled_and_graph_cases(g)
        error_cases()
    if args.c_example:
        c_example_case(args.c_example)
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"\n{len(RESULTS)} cases, {len(failed)} failed (seed {args.seed})")
    for name in failed:
        print(f"  FAILED {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
