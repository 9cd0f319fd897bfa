"""The peer libraries the benchmarks compare against, imported only when present.

Peers are an optional extra (``pip install -e ".[peers]"``); the library never imports
them, and a benchmark row whose peer is absent is skipped with a line that says how to
install it.
"""

from __future__ import annotations

TORCH_VERSION = "2.13.0"


def import_torch():
    """PyTorch, or None when it is not installed (the peer rows are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch
