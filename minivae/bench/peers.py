"""The peer libraries the benchmarks compare against, imported only when present.

Peers are an optional extra (``pip install -e ".[peers]"``); the library never imports
them, and a benchmark row whose peer is absent is skipped with a line that says how to
install it.
"""

from __future__ import annotations

import importlib

TORCH_VERSION = "2.13.0"
INSTALL_HINT = 'pip install -e ".[peers]"'


def _import(name: str):
    """The module ``name``, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def import_torch():
    """PyTorch, or None when it is not installed (the peer rows are then skipped)."""
    return _import("torch")


def import_jax():
    """JAX (its CPU backend), or None when it is not installed."""
    return _import("jax")


def import_gpytorch():
    """GPyTorch, or None when it or PyTorch is not installed."""
    return None if import_torch() is None else _import("gpytorch")


def missing(name: str) -> str:
    """The skip line of a row whose peer ``name`` is not installed."""
    return f"{name} is not installed ({INSTALL_HINT})"


def version(name: str):
    """The installed version of distribution ``name``, or None (nothing is imported)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
