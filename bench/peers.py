"""Peers the benchmarks time when they are there (none is installed here).

The RBF author's kernel: `fetch` 4rtemi5/rbf_attention and save its
rbf_attention.py as .peer/pisoni_rbf.py (an ignored folder; carry it to the
GPU machine, never commit it).
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rbf_author():
    """The RBF author's fused Triton kernel module, or None (saying why)."""
    sys.path.insert(0, str(REPO / ".peer"))
    try:
        import pisoni_rbf
    except Exception as error:  # noqa: BLE001 - optional peer
        print("peer_rbf unavailable:", repr(error)[:200])
        return None
    return pisoni_rbf
