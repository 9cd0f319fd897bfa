"""Launching the Numba-CUDA kernels, shared by every kernel module.

On NumPy arrays a kernel runs under Numba's CUDA simulator (the tests); on CuPy arrays it
runs on the GPU on CuPy's current stream, so it is ordered with the CuPy operations around
it. numba.cuda and CuPy are imported here only when a kernel is launched.
"""

from __future__ import annotations

import numpy as np


def array_module(x):
    """The array module of ``x``: NumPy for NumPy arrays (and anything else that is not a
    CuPy array), CuPy for CuPy arrays. CuPy is imported only when ``x`` is not a NumPy
    array, so the CPU path runs without it installed."""
    if isinstance(x, np.ndarray):
        return np
    try:
        import cupy
    except ImportError:
        return np
    return cupy.get_array_module(x)


def blocks_for(n_threads: int, threads_per_block: int, max_blocks: int) -> int:
    """Blocks covering ``n_threads`` threads, at least 1 and at most ``max_blocks`` (the
    kernels stride over whatever one grid does not cover)."""
    return max(1, min(max_blocks, -(-n_threads // threads_per_block)))


def launch(kernel, grid, block, *args) -> None:
    """``kernel[grid, block](*args)``: on CuPy's current stream when ``args[0]`` is a CuPy
    array, plainly (the simulator) when it is a NumPy array."""
    if isinstance(args[0], np.ndarray):
        kernel[grid, block](*args)
        return
    import cupy
    from numba import cuda

    stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    kernel[grid, block, stream](*args)
