"""Peers the benchmarks time when they are there (none is installed here).

The RBF author's kernel: `fetch` 4rtemi5/rbf_attention and save its
rbf_attention.py as .peer/pisoni_rbf.py (an ignored folder; carry it to the
GPU machine, never commit it).
"""
import contextlib
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What the author's module imports at its top for its plots and its
# nn.Module demo, module -> the names it takes from it; its kernels and their
# autograd wrappers use none of them, and the GPU machine (no network) may
# lack them.
DEMO_ONLY_IMPORTS = {"matplotlib": (), "matplotlib.pyplot": (), "einops": ("rearrange",)}


@contextlib.contextmanager
def stand_ins_for_demo_imports():
    """Empty modules in place of the missing DEMO_ONLY_IMPORTS while the
    author's module is imported, and gone again after it, so that nothing
    else in the benchmark finds them."""
    added = []
    for name, names in DEMO_ONLY_IMPORTS.items():
        try:
            __import__(name)
            continue
        except ModuleNotFoundError:
            pass
        module = types.ModuleType(name)
        for attribute in names:
            setattr(module, attribute, None)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        sys.modules[name] = module
        added.append(name)
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


def rbf_author():
    """The RBF author's fused Triton kernel module, or None (saying why)."""
    sys.path.insert(0, str(REPO / ".peer"))
    try:
        with stand_ins_for_demo_imports():
            import pisoni_rbf
    except Exception as error:  # noqa: BLE001 - optional peer
        print("peer_rbf unavailable:", repr(error)[:200])
        return None
    return pisoni_rbf
