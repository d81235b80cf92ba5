"""The rbfc Python package on the host backend (CPU tensors): the op against
float64 PyTorch references, rbfc.sdpa against F.scaled_dot_product_attention,
every kind of bad argument, the caches, threads and processes compiling at
once, gradients of q, k, v, captures and params against autograd through
the references, the custom op's fake implementation and autograd
registration, and torch.compile(fullgraph=True) forward and backward.

Run by ctest ('python', test/python/run.sh) in a venv with torch from
PyPI; RBFC_TEST_SEED=N replays a run's random inputs.
"""
import ctypes
import importlib
import multiprocessing
import os
import random
import signal
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rbfc
from rbfc import _capi

sys.path.insert(0, str(Path(__file__).resolve().parent))
import references  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SEED = int(os.environ.get("RBFC_TEST_SEED", random.randrange(1 << 30)))
print(f"RBFC_TEST_SEED={SEED}")

# max|o - ref| / max|ref| (per tensor); lse within t * (1 + |lse|).
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(SEED)


def randn(generator, *shape, dtype=torch.float32, scale=1.0):
    return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype)


def relative_error(x, ref):
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item()


def check_lse(lse, ref, tolerance):
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(lse), finite)
    error = ((lse.double() - ref).abs() / (1 + ref.abs()))[finite]
    assert error.numel() == 0 or error.max().item() <= tolerance


# (B, H, KV heads, Nq, Nkv)
SHAPES = [(1, 2, 2, 1, 1), (2, 4, 1, 33, 70), (1, 8, 2, 45, 23), (2, 2, 2, 97, 130)]


@pytest.mark.parametrize("spec", sorted(references.SPECS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_examples_match_the_reference(spec, dtype, generator):
    attn = rbfc.compile(EXAMPLES / f"{spec}.attn", lse=True)
    scale = 0.25 if references.SPECS[spec][1] == "none" else 1.0
    # The second pass repeats each call's signature with new data: the calls
    # skip the checks and reuse the first pass's packing.
    for batch, heads, kv_heads, q_len, kv_len in SHAPES + SHAPES:
        q = randn(generator, batch, heads, q_len, 64, dtype=dtype, scale=scale)
        k = randn(generator, batch, kv_heads, kv_len, 64, dtype=dtype, scale=scale)
        v = randn(generator, batch, kv_heads, kv_len, 64, dtype=dtype)
        captures = references.make_captures(spec, batch, heads, q_len, kv_len,
                                            generator, "cpu")
        o, lse = attn(q, k, v, captures=captures)
        ref_o, ref_lse = references.attention(
            spec, q.double(), k.double(), v.double(),
            {name: t.double() if t.is_floating_point() else t
             for name, t in captures.items()})
        shape = (batch, heads, kv_heads, q_len, kv_len)
        assert o.dtype == dtype and o.shape == q.shape
        assert relative_error(o, ref_o) <= TOLERANCE[dtype], shape
        check_lse(lse, ref_lse, 1e-5)


def test_layouts_gqa_and_params(generator):
    """bnhd views of [B, N, H, D] buffers, GQA 4:1, params by name."""
    attn = rbfc.compile(EXAMPLES / "rbf.attn")
    q = randn(generator, 2, 50, 8, 64)
    k = randn(generator, 2, 70, 2, 64)
    v = randn(generator, 2, 70, 2, 64)
    for gamma in (0.05, 0.1):   # the second call takes the checked signature
        o = attn(q, k, v, params={"gamma": gamma}, layout="bnhd")
        assert o.shape == q.shape and o.is_contiguous()
        ref, _ = references.attention(
            "rbf", *(t.transpose(1, 2).double() for t in (q, k, v)),
            params={"gamma": gamma})
        assert relative_error(o.transpose(1, 2), ref) <= TOLERANCE[torch.float32]
    # Strided views of a fused QKV buffer, in the default layout.
    qkv = randn(generator, 2, 3, 8, 40, 64)
    o = attn(qkv[:, 0], qkv[:, 1], qkv[:, 2])
    ref, _ = references.attention("rbf", *(qkv[:, i].double() for i in range(3)))
    assert relative_error(o, ref) <= TOLERANCE[torch.float32]


def test_one_compile_serves_every_shape(generator):
    attn = rbfc.compile(EXAMPLES / "causal.attn", num_threads=2)
    attn(*(randn(generator, 1, 1, 5, 64) for _ in range(3)))
    before = rbfc.cache_stats()
    for batch, heads, kv_heads, q_len, kv_len in SHAPES:
        attn(randn(generator, batch, heads, q_len, 64),
             randn(generator, batch, kv_heads, kv_len, 64),
             randn(generator, batch, kv_heads, kv_len, 64))
    assert rbfc.cache_stats() == before


def test_compile_takes_text_or_a_path_and_reports_spec_errors(tmp_path):
    text = (EXAMPLES / "softcap.attn").read_text()
    assert rbfc.compile(text).spec_name == "softcap"
    assert rbfc.compile(str(EXAMPLES / "softcap.attn")).params == {"cap": ("f32", True)}
    bad = tmp_path / "typo.attn"
    bad.write_text("attention typo {\n  param gamma: f32 = 1.0;\n"
                   "  score = -gama * dist2(q, k);\n}\n")
    with pytest.raises(rbfc.RbfcError) as error:
        rbfc.compile(bad)
    assert str(error.value) == (
        f"{bad}:3:12: error: unknown name 'gama'; did you mean 'gamma'?\n"
        "  score = -gama * dist2(q, k);\n"
        "           ^")
    with pytest.raises(rbfc.RbfcError, match="spec: no file 'nowhere.attn'"):
        rbfc.compile("nowhere.attn")
    with pytest.raises(rbfc.RbfcError, match="spec: expected spec text or a path, "
                       "got int"):
        rbfc.compile(3)


# --------------------------------------------------------------------------
# rbfc.sdpa


@pytest.mark.parametrize("case", ["plain", "causal", "scale", "gqa", "bool_mask",
                                  "float_mask", "unbatched"])
def test_sdpa_matches_torch(case, generator):
    q = randn(generator, 2, 4, 37, 64)
    k = randn(generator, 2, 4, 45, 64)
    v = randn(generator, 2, 4, 45, 64)
    kwargs = {}
    if case == "causal":
        kwargs["is_causal"] = True
    elif case == "scale":
        kwargs["scale"] = 0.3
    elif case == "gqa":
        k, v, kwargs["enable_gqa"] = k[:, :2], v[:, :2], True
    elif case == "bool_mask":
        mask = torch.rand(37, 45, generator=generator) > 0.3
        mask[:, 0] = True
        kwargs["attn_mask"] = mask
    elif case == "float_mask":
        kwargs["attn_mask"] = randn(generator, 2, 1, 37, 45)
    elif case == "unbatched":
        q, k, v = q[0], k[0], v[0]
    o = rbfc.sdpa(q, k, v, **kwargs)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), **{
        name: value.double() if isinstance(value, torch.Tensor)
        and value.is_floating_point() else value for name, value in kwargs.items()})
    assert o.shape == ref.shape
    assert relative_error(o, ref) <= TOLERANCE[torch.float32]


def test_sdpa_specs_are_described_as_the_library_reads_them():
    # rbfc.sdpa is the function; its module holds the specs.
    sdpa = importlib.import_module("rbfc.sdpa")
    attention = importlib.import_module("rbfc.attention")
    for key, text in sdpa._SPECS.items():
        module = sdpa._ATTENTIONS[key]
        assert (module.spec_name, module.normalization, module.params,
                module.captures) == attention._inspect(text, "<spec>"), key


@pytest.mark.parametrize("kwargs", [{"is_causal": True}, {"attn_mask": "bool"},
                                    {"attn_mask": "float"}])
def test_sdpa_under_torch_compile(kwargs, generator):
    q = randn(generator, 1, 2, 16, 64)
    if kwargs.get("attn_mask") == "bool":
        kwargs = {"attn_mask": torch.rand(16, 16, generator=generator) > 0.2}
        kwargs["attn_mask"][:, 0] = True
    elif kwargs.get("attn_mask") == "float":
        kwargs = {"attn_mask": randn(generator, 16, 16)}
    compiled = torch.compile(lambda q: rbfc.sdpa(q, q, q, **kwargs), fullgraph=True,
                             backend="aot_eager")
    ref = F.scaled_dot_product_attention(q, q, q, **kwargs)
    assert relative_error(compiled(q), ref.double()) <= TOLERANCE[torch.float32]


def test_sdpa_refuses_what_it_does_not_do(generator):
    q = randn(generator, 1, 4, 8, 64)
    k = randn(generator, 1, 2, 8, 64)
    with pytest.raises(rbfc.RbfcError, match="dropout_p: rbfc has no dropout"):
        rbfc.sdpa(q, q, q, dropout_p=0.1)
    with pytest.raises(rbfc.RbfcError, match="enable_gqa=True"):
        rbfc.sdpa(q, k, k)
    with pytest.raises(rbfc.RbfcError, match="an attn_mask or is_causal"):
        rbfc.sdpa(q, q, q, attn_mask=torch.ones(8, 8, dtype=torch.bool), is_causal=True)
    with pytest.raises(rbfc.RbfcError, match="does not broadcast"):
        rbfc.sdpa(q, q, q, attn_mask=torch.ones(3, 8, dtype=torch.bool))
    with pytest.raises(rbfc.RbfcError, match="attn_mask: expected a tensor of 2 to 4"):
        rbfc.sdpa(q, q, q, attn_mask=torch.ones(8, dtype=torch.bool))
    with pytest.raises(rbfc.RbfcError, match="value: expected a 3- or 4-dimensional"):
        rbfc.sdpa(q, q, q[0, 0])


# --------------------------------------------------------------------------
# Bad arguments: RbfcError naming the argument, before anything compiles or
# runs.

ALIBI = EXAMPLES / "alibi.attn"


def bad_calls(generator):
    q = randn(generator, 2, 4, 16, 64)
    k = randn(generator, 2, 2, 24, 64)
    slopes = torch.ones(4)
    ok = {"captures": {"slopes": slopes}}
    window = rbfc.compile(EXAMPLES / "sliding_window.attn")
    free = rbfc.compile("attention free { param t; score = dot(q, k) * t; }")
    alibi = rbfc.compile(ALIBI)
    # A good call first: the bad ones that share its signature must still be
    # checked.
    alibi(q, k, k, **ok)
    yield "q: expected a torch.Tensor, got list", alibi, ([1.0], k, k), ok
    yield "q: expected 4 dimensions [batch, heads, seq, head_dim] (layout 'bhnd'), " \
          "got shape (4, 16, 64)", alibi, (q[0], k, k), ok
    yield "q: on meta; rbfc runs on cpu and cuda tensors", alibi, \
        (q.to("meta"), k.to("meta"), k.to("meta")), ok
    yield "k: dtype torch.bfloat16, but q is torch.float32", alibi, \
        (q, k.bfloat16(), k), ok
    yield "q: dtype torch.float64; on cpu rbfc takes torch.float32, " \
          "torch.bfloat16, torch.float16", alibi, (q.double(), k.double(), k.double()), ok
    yield "k: head_dim 32, but q's is 64", alibi, (q, k[..., :32], k[..., :32]), ok
    yield "v: shape (2, 2, 20, 64), but k is (2, 2, 24, 64)", alibi, (q, k, k[:, :, :20]), ok
    yield "k: batch 1, but q's is 2", alibi, (q, k[:1], k[:1]), ok
    yield "k: 3 heads; q's 4 heads must be a multiple of them (GQA)", alibi, \
        (q, randn(generator, 2, 3, 24, 64), randn(generator, 2, 3, 24, 64)), ok
    yield "q: the head_dim stride must be 1", alibi, \
        (q.transpose(2, 3).contiguous().transpose(2, 3), k, k), ok
    yield "layout: expected 'bhnd' or 'bnhd', got 'nhd'", alibi, (q, k, k), \
        dict(ok, layout="nhd")
    yield "captures: 'slopes' is missing (the spec captures f32 of rank 1)", alibi, \
        (q, k, k), {}
    yield "captures: unknown capture 'slope'", alibi, (q, k, k), \
        {"captures": {"slopes": slopes, "slope": slopes}}
    yield "captures['slopes']: dtype torch.float64; the spec declares f32", alibi, \
        (q, k, k), {"captures": {"slopes": slopes.double()}}
    yield "captures['slopes']: 2 dimensions; the spec declares rank 1", alibi, \
        (q, k, k), {"captures": {"slopes": slopes.view(2, 2)}}
    yield "captures['slopes']: shape (0,); every dimension must be >= 1", alibi, \
        (q, k, k), {"captures": {"slopes": slopes[:0]}}
    yield "captures['slopes']: on meta, but q is on cpu", alibi, \
        (q, k, k), {"captures": {"slopes": slopes.to("meta")}}
    yield "params: unknown param 'gamma'; the spec declares []", alibi, (q, k, k), \
        dict(ok, params={"gamma": 1.0})
    yield "params: 't' has no default; pass it", free, (q, k, k), {}
    yield "params['window']: an int param, got 2.5", window, (q, k, k), \
        {"params": {"window": 2.5}}
    yield "params['window']: a tensor must be a one-element float tensor for an " \
          "f32 param", window, (q, k, k), {"params": {"window": torch.tensor(2.0)}}
    yield "params['t']: expected a number, got str", free, (q, k, k), \
        {"params": {"t": "1"}}


def test_bad_arguments_raise_before_anything_runs(generator):
    for message, attn, args, kwargs in bad_calls(generator):
        before = rbfc.cache_stats()
        with pytest.raises(rbfc.RbfcError) as error:
            attn(*args, **kwargs)
        assert message in str(error.value), (message, str(error.value))
        assert str(error.value).startswith(f"rbfc: {attn.spec_name}: ")
        assert rbfc.cache_stats() == before, f"{message}: a kernel was compiled"


def test_library_checks_reach_python(generator):
    """What only the library checks (here: an int param out of 32-bit range)
    raises RbfcError with its message, from inside the op."""
    window = rbfc.compile(EXAMPLES / "sliding_window.attn")
    q = randn(generator, 1, 1, 8, 64)
    with pytest.raises(rbfc.RbfcError, match="param 'window' is an int parameter"):
        window(q, q, q, params={"window": 2 ** 40})
    # The same from a call whose signature a checked call had (its launch
    # runs from C).
    window(q, q, q, params={"window": 4})
    with pytest.raises(rbfc.RbfcError, match="param 'window' is an int parameter"):
        window(q, q, q, params={"window": 2 ** 40})


def test_repeated_signatures_run_from_c_and_match_the_checked_call(generator):
    """A call whose signature a checked call had runs its launch from C
    (rbfc._launcher): the same outputs as the checked path (forward, which
    C never takes), every way of passing the arguments; what the fast path
    does not take (a new signature, a wrong argument) still goes through
    the checks."""
    alibi = rbfc.compile(ALIBI, lse=True)
    q = randn(generator, 2, 4, 9, 64)
    k = randn(generator, 2, 2, 12, 64)
    slopes = torch.rand(4, generator=generator, dtype=torch.float64).float()
    captures = {"slopes": slopes}
    calls = alibi._calls
    assert calls.call((q, k, k), {"captures": captures}, alibi) is None
    checked_o, checked_lse = alibi(q, k, k, captures=captures)
    fast = calls.call((q, k, k), {"captures": captures}, alibi)
    assert fast is not None
    for o, lse in (fast, alibi(q, k, k, None, captures),
                   alibi(q, k, k, captures=captures, layout="bhnd"),
                   alibi.forward(q, k, k, captures=captures)):
        assert torch.equal(o, checked_o) and torch.equal(lse, checked_lse)
    # Fresh data with the same signature.
    q2 = randn(generator, 2, 4, 9, 64)
    o, _ = alibi(q2, k, k, captures=captures)
    assert torch.equal(o, alibi.forward(q2, k, k, captures=captures)[0])
    assert not torch.equal(o, checked_o)
    # return_lse=False is a signature of its own.
    assert calls.call((q, k, k), {"captures": captures, "return_lse": False},
                      alibi) is None
    assert torch.equal(alibi(q, k, k, captures=captures, return_lse=False),
                       checked_o)
    # A different capture tensor of the same signature is read, not cached.
    o, _ = alibi(q, k, k, captures={"slopes": slopes * 2})
    assert not torch.equal(o, checked_o)
    # Wrong arguments on a known signature raise what the checks raise.
    with pytest.raises(TypeError):
        alibi(q, k, k, captures=captures, window=3)
    with pytest.raises(TypeError):
        alibi(q, k)
    with pytest.raises(rbfc.RbfcError, match="captures: unknown capture 'x'"):
        alibi(q, k, k, captures={"slopes": slopes, "x": slopes})

    rbf = rbfc.compile(EXAMPLES / "rbf.attn")
    rbf(q, k, k)
    for gamma in (0.25, 1, torch.tensor(0.25)):
        want = rbf.forward(q, k, k, params={"gamma": gamma})
        assert torch.equal(rbf(q, k, k, params={"gamma": gamma}), want)
    with pytest.raises(rbfc.RbfcError, match=r"params\['gamma'\]: expected a number"):
        rbf(q, k, k, params={"gamma": "0.5"})
    with pytest.raises(rbfc.RbfcError, match=r"params\['gamma'\]: expected a number"):
        rbf(q, k, k, params={"gamma": True})
    with pytest.raises(rbfc.RbfcError, match="unknown param 'gama'"):
        rbf(q, k, k, params={"gama": 0.5})
    with pytest.raises(rbfc.RbfcError, match="params: expected a dict"):
        rbf(q, k, k, params=[0.5])
    # A tensor resized in place has a new signature: the checks run again.
    k3 = k.clone()
    rbf(q, k3, k3)
    k3.resize_(2, 2, 12, 32)
    with pytest.raises(rbfc.RbfcError, match="k: head_dim 32, but q's is 64"):
        rbf(q, k3, k3)


def test_the_cuda_branch_of_the_c_launch_path(generator):
    """rbfc._launcher's CUDA branch without a GPU: a Launch marked CUDA runs
    through a stand-in rbfc_forward (a ctypes callback) and stand-ins for
    torch's stream, device and capture queries. It must pass the current
    stream, take the key-terms workspace from the kernel once per stream
    (each call its own under a graph capture), and fill in each call's
    pointers, params and sequence block."""
    from rbfc import _launcher, _ops
    lib = _capi.lib()
    forward, last_error, error_type, objects = _ops.launcher_configuration(lib)
    calls = []

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p,
                      ctypes.POINTER(_capi.ForwardArgs), ctypes.c_void_p)
    def fake_forward(kernel, args, stream):
        a = args.contents
        calls.append(dict(kernel=kernel, stream=stream, q=a.q.data, k=a.k.data,
                          o=a.o.data, workspace=a.workspace,
                          workspace_bytes=a.workspace_bytes,
                          params=[a.params[i] for i in range(a.num_params)],
                          threads=a.num_threads,
                          block=(a.q_offset, a.kv_offset, a.q_seq_len,
                                 a.kv_seq_len)))
        return state["status"]

    state = {"stream": 1, "capturing": False, "status": 0}

    class FakeKernel:
        def __init__(self):
            self.requests = []

        def workspace(self, nbytes, device, stream):
            self.requests.append((nbytes, stream))
            return torch.empty(nbytes, dtype=torch.uint8)

    class OnDevice0(torch.Tensor):
        def get_device(self):
            return 0

    fake_objects = dict(objects, current_raw_stream=lambda device: 0x1000 + state["stream"],
                        is_stream_capturing=lambda: state["capturing"],
                        current_device=lambda: 0)
    kernel = FakeKernel()
    args = _ops.FORWARD.pack(_ops.FORWARD.size, *(0,) * (5 * len(_ops.NO_TENSOR)),
                             0, 1, 0, 0, 0, 4096, 0, *_ops.NO_BLOCK)
    _launcher.configure(ctypes.cast(fake_forward, ctypes.c_void_p).value, last_error,
                        error_type, fake_objects)
    try:
        launch = _launcher.Launch(kernel, 0xABC0, args, b"",
                                  struct.pack("d", 0.5), None, True, None, False)
        q = randn(generator, 1, 2, 8, 64).as_subclass(OnDevice0)
        k = randn(generator, 1, 2, 8, 64).as_subclass(OnDevice0)
        o, lse = launch.launch(q, k, k, [], None, None)
        assert lse is None and o.shape == q.shape and o.is_contiguous()
        call = calls[-1]
        assert (call["kernel"], call["stream"]) == (0xABC0, 0x1001)
        assert (call["q"], call["k"], call["o"]) == (q.data_ptr(), k.data_ptr(),
                                                     o.data_ptr())
        assert call["params"] == [0.5] and call["block"] == (0, 0, 0, 0)
        assert call["workspace_bytes"] == 4096 and call["workspace"]
        assert kernel.requests == [(4096, 0x1001)]
        launch.launch(q, k, k, [], [2.0], (1, 2, 30, 40))
        assert calls[-1]["params"] == [2.0] and calls[-1]["block"] == (1, 2, 30, 40)
        assert calls[-1]["workspace"] == call["workspace"]
        assert len(kernel.requests) == 1          # the stream's workspace again
        state["stream"] = 2
        launch.launch(q, k, k, [], None, None)
        assert calls[-1]["stream"] == 0x1002
        assert kernel.requests[-1] == (4096, 0x1002)
        state["capturing"] = True                 # each captured call its own
        launch.launch(q, k, k, [], None, None)
        launch.launch(q, k, k, [], None, None)
        assert len(kernel.requests) == 4
        state["capturing"] = False
        launch.launch(q, k, k, [], None, None)
        assert len(kernel.requests) == 4
        state["status"] = _capi.ERROR_INVALID_ARGUMENT
        with pytest.raises(rbfc.RbfcError) as raised:
            launch.launch(q, k, k, [], None, None)
        assert raised.value.status == _capi.ERROR_INVALID_ARGUMENT
        with pytest.raises(ValueError, match="params: not one per declared param"):
            launch.launch(q, k, k, [], [1.0, 2.0], None)
        with pytest.raises(ValueError, match="q: not a CUDA tensor"):
            launch.launch(q.as_subclass(torch.Tensor), k, k, [], None, None)
        # The host's threads: the compile's num_threads (0: the library's
        # one per hardware thread), else torch's count at each call.
        state["status"] = 0
        plain_q = q.as_subclass(torch.Tensor)
        for threads, want in ((0, 0), (3, 3), (None, torch.get_num_threads())):
            host = _launcher.Launch(kernel, 0xABC0, args, b"", struct.pack("d", 0.5),
                                    None, False, threads, False)
            host.launch(plain_q, plain_q, plain_q, [], None, None)
            assert calls[-1]["threads"] == want and calls[-1]["stream"] is None
    finally:
        _launcher.configure(forward, last_error, error_type, objects)


# --------------------------------------------------------------------------
# Caches, threads, processes


def test_memory_cache_hit_across_attention_objects(generator):
    text = "attention hits { score = dot(q, k) * 0.25; }"
    q = randn(generator, 1, 2, 8, 64)
    rbfc.compile(text, num_threads=1)(q, q, q)
    before = rbfc.cache_stats()
    rbfc.compile(text, num_threads=2)(q, q, q)   # a new Attention: its own kernels
    after = rbfc.cache_stats()
    assert after["memory_hits"] == before["memory_hits"] + 1
    assert after["compiles"] == before["compiles"]


def test_eight_threads_compile_one_kernel_once(generator):
    text = "attention eight { param c: f32 = 20.0; score = c * tanh(dot(q, k) / c); }"
    attn = rbfc.compile(text)
    q = randn(generator, 1, 2, 8, 64)
    ref, _ = references.attention("softmax", q.double(), q.double(), q.double())
    before = rbfc.cache_stats()
    results, errors = [None] * 8, []

    def call(i):
        try:
            results[i] = attn(q, q, q)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert rbfc.cache_stats()["compiles"] == before["compiles"] + 1
    for result in results[1:]:
        assert torch.equal(result, results[0])


CUDA_SPEC = "attention from_python { score = dot(q, k) * 0.5 + 1.0; }"


def compile_cuda_into(cache_dir):
    """Compiles CUDA_SPEC for sm_90a (PTX: no GPU needed) into `cache_dir`
    through the C API; returns what that did to the cache stats."""
    before = _capi.cache_stats()
    lib = _capi.lib()
    options = _capi.sized(_capi.CompileOptions)
    options.target = _capi.TARGETS["cuda"]
    options.head_dim = 64
    options.dtype = _capi.DTYPES["bf16"]
    options.arch = b"sm_90a"
    options.cache_dir = str(cache_dir).encode()
    handle = ctypes.c_void_p()
    _capi.check(lib.rbfc_compile(CUDA_SPEC.encode(), b"from_python", ctypes.byref(options),
                                 ctypes.byref(handle)))
    lib.rbfc_kernel_release(handle)
    return {name: count - before[name] for name, count in _capi.cache_stats().items()}


def test_a_forked_child_runs_parallel_kernels(generator, tmp_path):
    """A child of fork() (a DataLoader worker) inherits the host backend's
    worker pool but none of its threads: its parallel calls must neither
    hang nor give other bits."""
    attn = rbfc.compile(EXAMPLES / "causal.attn", num_threads=2)
    q = randn(generator, 1, 8, 64, 64)
    expected = attn(q, q, q)  # starts the pool in this process
    out = tmp_path / "o.pt"
    pid = os.fork()
    if pid == 0:
        try:
            torch.save(attn(q, q, q), out)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in a parallel call")
        time.sleep(0.05)
    assert torch.equal(torch.load(out), expected)


def test_four_processes_share_the_disk_cache(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        stats = pool.map(compile_cuda_into, [tmp_path] * 4)
    for s in stats:
        assert s["disk_rejected"] == 0, "a process read a partial entry"
        assert s["compiles"] + s["disk_hits"] == 1
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".kernel"
    _capi.clear_memory_cache()
    assert compile_cuda_into(tmp_path)["disk_hits"] == 1
    # A corrupted entry is rebuilt, not loaded.
    data = bytearray(entries[0].read_bytes())
    data[-5] ^= 0x20
    entries[0].write_bytes(bytes(data))
    _capi.clear_memory_cache()
    rebuilt = compile_cuda_into(tmp_path)
    assert rebuilt["disk_rejected"] == 1 and rebuilt["compiles"] == 1
    assert entries[0].read_bytes() != bytes(data)


# --------------------------------------------------------------------------
# The custom op: fake implementation, autograd, torch.compile

def op_args(attn, q, k, v, captures=(), lse=True, backward=False, bnhd=False,
            block=(0, 0, 0, 0)):
    return (attn._key, q, k, v, list(captures), [], [], [], [], lse, backward, bnhd,
            list(block))


def test_opcheck_forward(generator):
    attn = rbfc.compile(ALIBI)
    q = randn(generator, 2, 4, 9, 64)
    k = randn(generator, 2, 2, 11, 64)
    slopes = torch.rand(4, generator=generator)
    for bnhd in (False, True):
        args = op_args(attn, q.transpose(1, 2) if bnhd else q,
                       k.transpose(1, 2) if bnhd else k,
                       k.transpose(1, 2) if bnhd else k, [slopes], bnhd=bnhd,
                       block=(3, 5, 20, 0) if bnhd else (0, 0, 0, 0))
        torch.library.opcheck(torch.ops.rbfc.attention, args,
                              test_utils=("test_schema", "test_faketensor",
                                          "test_aot_dispatch_static"))


@pytest.mark.parametrize("spec", ["softmax", "causal", "alibi", "rbf", "rbf_head_gamma",
                                  "relative_bias", "softcap", "rbf_none"])
def test_gradients_match_the_reference(spec, generator):
    """Gradients of q, k, v and of every f32 capture against autograd through
    the float64 reference (GQA 2:1, Nq != Nkv, bnhd for one case)."""
    attn = rbfc.compile(EXAMPLES / f"{spec}.attn", lse=True)
    scale = 0.25 if references.SPECS[spec][1] == "none" else 1.0
    batch, heads, kv_heads, q_len, kv_len = 2, 4, 2, 19, 27
    q = randn(generator, batch, heads, q_len, 64, scale=scale)
    k = randn(generator, batch, kv_heads, kv_len, 64, scale=scale)
    v = randn(generator, batch, kv_heads, kv_len, 64)
    captures = references.make_captures(spec, batch, heads, q_len, kv_len, generator,
                                        "cpu")
    for t in [q, k, v, *captures.values()]:
        if t.is_floating_point():
            t.requires_grad_()
    grad_o = randn(generator, batch, heads, q_len, 64)
    grad_lse = randn(generator, batch, heads, q_len)
    o, lse = attn(q, k, v, captures=captures)
    torch.autograd.backward([o, lse], [grad_o, grad_lse])
    inputs = {"q": q, "k": k, "v": v, **captures}
    ref_inputs = {name: t.detach().double().requires_grad_(t.requires_grad)
                  for name, t in inputs.items()}
    ref_o, ref_lse = references.attention(
        spec, ref_inputs["q"], ref_inputs["k"], ref_inputs["v"],
        {name: ref_inputs[name] for name in captures})
    torch.autograd.backward([ref_o, ref_lse], [grad_o.double(), grad_lse.double()])
    for name, t in inputs.items():
        if t.requires_grad:
            assert t.grad is not None, name
            assert relative_error(t.grad, ref_inputs[name].grad) <= 1e-4, name


KEY_PADDING = """attention key_padding {
  capture keep: i32[?, ?];   # [batch, kv_len]
  score = dot(q, k) / sqrt(head_dim);
  mask = keep[b, kv_idx] != 0;
}"""


@pytest.mark.parametrize("spec", ["rbf", "softmax", "key_padding"])
@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
def test_merged_key_blocks_equal_the_whole(spec, layout, generator):
    """Attention over keys split into uneven blocks (one of them fully
    masked for key_padding), merged by rbfc.merge_attention, against one
    call over all keys: o, lse and the gradients of q, k, v through the
    blocks' lse gradients."""
    attn = rbfc.compile(KEY_PADDING if spec == "key_padding"
                        else EXAMPLES / f"{spec}.attn")
    batch, heads, kv_heads, q_len, kv_len = 2, 4, 2, 13, 27
    blocks = [(0, 10), (10, 11), (11, 27)]
    seq = 2
    q = randn(generator, batch, heads, q_len, 64)
    k = randn(generator, batch, kv_heads, kv_len, 64)
    v = randn(generator, batch, kv_heads, kv_len, 64)
    keep = torch.ones(batch, kv_len, dtype=torch.int32)
    keep[:, 11:27] = 0          # the last block sees no key
    keep[0, :11] = 0            # batch 0's rows see no key at all
    if layout == "bnhd":
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        seq = 1

    def call(keys):
        lo, hi = keys
        kb = k.narrow(seq, lo, hi - lo)
        vb = v.narrow(seq, lo, hi - lo)
        captures = ({"keep": keep[:, lo:hi].contiguous()} if spec == "key_padding"
                    else None)
        return attn(q, kb, vb, captures=captures, return_lse=True, layout=layout)

    for t in (q, k, v):
        t.requires_grad_()
    grad_o = randn(generator, *q.shape)
    grad_lse = randn(generator, batch, heads, q_len)
    o, lse = call((0, kv_len))
    whole = torch.autograd.grad([o, lse], [q, k, v], [grad_o, grad_lse])
    parts = [call(keys) for keys in blocks]
    merged_o, merged_lse = rbfc.merge_attention([p[0] for p in parts],
                                                [p[1] for p in parts], layout=layout)
    merged = torch.autograd.grad([merged_o, merged_lse], [q, k, v], [grad_o, grad_lse])
    assert relative_error(merged_o, o.double()) <= 1e-5
    assert torch.equal(torch.isfinite(merged_lse), torch.isfinite(lse))
    finite = torch.isfinite(lse)
    assert (merged_lse[finite] - lse[finite]).abs().max() <= 1e-5
    if spec == "key_padding":
        assert not finite[0].any() and (merged_o[0] == 0).all()
    for name, got, want in zip("qkv", merged, whole):
        assert not torch.isnan(got).any(), name
        assert relative_error(got, want.double()) <= 1e-4, name


def test_merge_attention_refuses_what_does_not_fit(generator):
    o = torch.zeros(1, 2, 3, 8)
    lse = torch.zeros(1, 2, 3)
    with pytest.raises(rbfc.RbfcError, match="2 outputs and 1 log-sum-exps"):
        rbfc.merge_attention([o, o], [lse])
    with pytest.raises(rbfc.RbfcError, match=r"lses\[1\]: torch.float64"):
        rbfc.merge_attention([o, o], [lse, lse.double()])
    with pytest.raises(rbfc.RbfcError, match=r"outs\[1\]: shape \(1, 2, 4, 8\)"):
        rbfc.merge_attention([o, torch.zeros(1, 2, 4, 8)], [lse, lse])
    with pytest.raises(rbfc.RbfcError, match="layout"):
        rbfc.merge_attention([o], [lse], layout="nhd")


def test_a_second_derivative_raises(generator):
    """The backward is not differentiable: asking for a second derivative
    is an error, not a silently missing term."""
    attn = rbfc.compile(EXAMPLES / "rbf.attn")
    q = randn(generator, 1, 2, 5, 64).requires_grad_()
    with pytest.raises(rbfc.RbfcError, match="backward has no derivative"):
        torch.autograd.grad(attn(q, q, q).sum(), q, create_graph=True)


def test_a_signature_seen_without_grad_still_gets_gradients(generator):
    """The checked-signature fast path is for calls without autograd: once
    q or a capture requires grad, the call records its backward."""
    attn = rbfc.compile(ALIBI)
    q = randn(generator, 1, 4, 9, 64)
    k = randn(generator, 1, 4, 12, 64)
    slopes = torch.rand(4, generator=generator, dtype=torch.float64).float()
    with torch.no_grad():
        attn(q, k, k, captures={"slopes": slopes})
    for grad_input in (q, slopes):
        grad_input.requires_grad_()
        o = attn(q, k, k, captures={"slopes": slopes})
        o.sum().backward()
        assert grad_input.grad is not None and grad_input.grad.abs().sum() > 0
        grad_input.requires_grad_(False)


def test_module_hooks_run(generator):
    """A call skips nn.Module's call machinery only when no hook would run."""
    attn = rbfc.compile(EXAMPLES / "rbf.attn")
    q = randn(generator, 1, 2, 5, 64)
    seen = []
    handle = attn.register_forward_hook(lambda module, args, out: seen.append(out))
    o = attn(q, q, q)
    handle.remove()
    assert len(seen) == 1 and seen[0] is o
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.append(module))
    try:
        attn(q, q, q)
    finally:
        handle.remove()
    assert seen[1] is attn
    attn(q, q, q)
    assert len(seen) == 2


def test_param_gradient_and_bnhd(generator):
    attn = rbfc.compile(EXAMPLES / "rbf.attn")
    q = randn(generator, 1, 21, 4, 64).requires_grad_()
    k = randn(generator, 1, 30, 2, 64).requires_grad_()
    v = randn(generator, 1, 30, 2, 64).requires_grad_()
    gamma = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    o = attn(q, k, v, params={"gamma": gamma}, layout="bnhd")
    grad_o = randn(generator, *o.shape)
    o.backward(grad_o)
    ref_q, ref_k, ref_v = (t.detach().transpose(1, 2).double().requires_grad_()
                           for t in (q, k, v))
    ref_gamma = gamma.detach().clone().requires_grad_()
    ref_o, _ = references.attention("rbf", ref_q, ref_k, ref_v, params={"gamma": ref_gamma})
    ref_o.backward(grad_o.transpose(1, 2).double())
    for t, ref in ((q, ref_q), (k, ref_k), (v, ref_v)):
        assert relative_error(t.grad.transpose(1, 2), ref.grad) <= 1e-4
    assert gamma.grad.dtype == torch.float64 and gamma.grad.shape == ()
    # gamma's gradient sums dS_ij ||q_i - k_j||^2 over every pair, terms of
    # both signs that can cancel to a small sum: float32 also leaves about
    # its epsilon (1e-7) of the terms' magnitude (seeds 0-39: the error
    # stayed within a tenth of this allowance; 1e-4 alone failed seed 25).
    magnitude = references.gradients(
        "rbf", *(t.detach() for t in (ref_q, ref_k, ref_v)), {}, {"gamma": gamma.detach()},
        grad_o.transpose(1, 2), torch.zeros(ref_o.shape[:3], dtype=torch.float64),
        torch.float32, ())["gamma"]["noise"].item() / references.FLOAT32_NOISE
    error = abs(gamma.grad.item() - ref_gamma.grad.item())
    allowed = 1e-4 * abs(ref_gamma.grad.item()) + 1e-7 * magnitude
    assert error <= allowed, f"gamma: error {error:.3g}, allowed {allowed:.3g} (seed {SEED})"


def test_opcheck_autograd(generator):
    attn = rbfc.compile(ALIBI)
    q = randn(generator, 1, 2, 9, 64).requires_grad_()
    slopes = torch.rand(2, generator=generator).requires_grad_()
    torch.library.opcheck(torch.ops.rbfc.attention,
                          op_args(attn, q, q, q, [slopes], backward=True,
                                  block=(4, 2, 0, 30)))


class Block(torch.nn.Module):
    """A projection, rbfc attention and a projection: what torch.compile sees
    in a model."""

    def __init__(self, spec):
        super().__init__()
        self.qkv = torch.nn.Linear(64, 3 * 64)
        self.out = torch.nn.Linear(64, 64)
        self.attn = rbfc.compile(spec)

    def forward(self, x, slopes):
        batch, seq, _ = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, 1, 64).unbind(2)
        o = self.attn(q, k, v, captures={"slopes": slopes}, layout="bnhd")
        return self.out(o.reshape(batch, seq, 64))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend, generator):
    torch.manual_seed(SEED)
    block = Block(ALIBI)
    x = randn(generator, 2, 33, 64)
    slopes = torch.tensor([0.5])
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    with torch.no_grad():
        eager = block(x, slopes)
        assert torch.allclose(compiled(x, slopes), eager, rtol=1e-5, atol=1e-6)
        before = rbfc.cache_stats()
        compiled(randn(generator, 3, 50, 64), slopes)   # new lengths, same kernel
        assert rbfc.cache_stats()["compiles"] == before["compiles"]
    x.requires_grad_()
    compiled(x, slopes).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    block(x, slopes).sum().backward()
    assert torch.allclose(grad, x.grad, rtol=1e-4, atol=1e-6)
