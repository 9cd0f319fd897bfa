"""The reparameterisation trick (Kingma & Welling 2014, Sec. 2.4) and its backward.

Forward: ``z[l] = mu + exp(logvar / 2) * eps[l]`` for each of L samples.
Backward: ``dmu = sum_l dz[l]``, ``dlogvar = 0.5 * exp(logvar / 2) * sum_l dz[l] * eps[l]``
(docs/derivations.md, "Reparameterisation").

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba, parallel over rows, one pass over memory) and ``cuda`` (Numba-CUDA,
a grid-stride loop over the ``n * k`` entries of ``mu``; each thread loops over the L
samples so ``exp(logvar / 2)`` is computed once per entry).
"""

from __future__ import annotations

import math

import numpy as np

_THREADS_PER_BLOCK = 128
_MAX_BLOCKS = 1024


def reparam_forward_reference(mu, logvar, eps):
    """Samples ``z = mu + exp(logvar/2) * eps``.

    Parameters
    ----------
    mu, logvar : (n, k) arrays
    eps : (L, n, k) array of standard-normal draws

    Returns
    -------
    z : (L, n, k) array
    """
    return mu[None] + np.exp(0.5 * logvar)[None] * eps


def reparam_backward_reference(dz, logvar, eps):
    """Gradients of the loss with respect to mu and logvar, given ``dz`` of shape (L, n, k).

    Returns
    -------
    dmu, dlogvar : (n, k) arrays
    """
    dmu = dz.sum(axis=0)
    dlogvar = 0.5 * np.exp(0.5 * logvar) * (dz * eps).sum(axis=0)
    return dmu, dlogvar


# ---- cpu: Numba ------------------------------------------------------------------------

_CPU = {}
_PARALLEL_MIN_ENTRIES = 1 << 15  # below this, waking the thread pool costs more than it saves


def _cpu_kernel_bodies(numba, loop_range):
    """The cpu forward and backward, with rows looped by ``loop_range`` (range or prange)."""

    def forward(mu, logvar, eps, z):
        n_samples, n, k = eps.shape
        for i in loop_range(n):
            for j in range(k):
                std = np.exp(0.5 * logvar[i, j])
                for sample in range(n_samples):
                    z[sample, i, j] = mu[i, j] + std * eps[sample, i, j]

    def backward(dz, logvar, eps, dmu, dlogvar):
        n_samples, n, k = eps.shape
        for i in loop_range(n):
            for j in range(k):
                sum_dz = dz[0, i, j]
                sum_dz_eps = dz[0, i, j] * eps[0, i, j]
                for sample in range(1, n_samples):
                    sum_dz += dz[sample, i, j]
                    sum_dz_eps += dz[sample, i, j] * eps[sample, i, j]
                dmu[i, j] = sum_dz
                dlogvar[i, j] = 0.5 * np.exp(0.5 * logvar[i, j]) * sum_dz_eps

    return forward, backward


def _cpu_kernels(parallel: bool):
    """The Numba cpu kernels (compiled, or loaded from the cache, on first use).

    ``parallel=True`` spreads rows over threads with ``prange``; small inputs use the
    serial build, for which the thread pool's start-up costs more than the work.
    """
    if not _CPU:
        import numba

        serial = _cpu_kernel_bodies(numba, range)
        threaded = _cpu_kernel_bodies(numba, numba.prange)
        _CPU[False] = tuple(numba.njit(cache=True)(f) for f in serial)
        _CPU[True] = tuple(numba.njit(parallel=True, cache=True)(f) for f in threaded)
    return _CPU[parallel]


# ---- cuda: Numba-CUDA ------------------------------------------------------------------

_CUDA = {}
cuda = None  # numba.cuda, bound on first use (a module global so the simulator can swap it)


def _cuda_kernels():
    """Compile the Numba-CUDA kernels on first use (imports numba.cuda lazily)."""
    global cuda
    if not _CUDA:
        from numba import cuda

        @cuda.jit
        def forward(mu, logvar, eps, z):
            n_samples, n, k = eps.shape
            start = cuda.grid(1)
            stride = cuda.gridsize(1)
            for flat in range(start, n * k, stride):
                i = flat // k
                j = flat - i * k
                std = math.exp(0.5 * logvar[i, j])
                for sample in range(n_samples):
                    z[sample, i, j] = mu[i, j] + std * eps[sample, i, j]

        @cuda.jit
        def backward(dz, logvar, eps, dmu, dlogvar):
            n_samples, n, k = eps.shape
            start = cuda.grid(1)
            stride = cuda.gridsize(1)
            for flat in range(start, n * k, stride):
                i = flat // k
                j = flat - i * k
                sum_dz = dz[0, i, j]
                sum_dz_eps = dz[0, i, j] * eps[0, i, j]
                for sample in range(1, n_samples):
                    sum_dz += dz[sample, i, j]
                    sum_dz_eps += dz[sample, i, j] * eps[sample, i, j]
                dmu[i, j] = sum_dz
                dlogvar[i, j] = 0.5 * math.exp(0.5 * logvar[i, j]) * sum_dz_eps

        _CUDA["forward"] = forward
        _CUDA["backward"] = backward
    return _CUDA


def _cuda_launch(kernel, n_entries, arrays):
    """Launch ``kernel`` over ``n_entries`` threads' worth of work.

    On NumPy arrays this runs in Numba's CUDA simulator; on CuPy arrays it runs on the
    GPU on CuPy's current stream.
    """
    blocks = max(1, min(_MAX_BLOCKS, -(-n_entries // _THREADS_PER_BLOCK)))
    if isinstance(arrays[0], np.ndarray):
        kernel[blocks, _THREADS_PER_BLOCK](*arrays)
        return
    import cupy

    stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    kernel[blocks, _THREADS_PER_BLOCK, stream](*arrays)


def _array_module(x):
    if isinstance(x, np.ndarray):
        return np
    import cupy

    return cupy


def _check_shapes(mu_like, logvar, eps):
    if eps.ndim != 3 or logvar.ndim != 2 or eps.shape[1:] != logvar.shape:
        raise ValueError(
            f"reparam: expected logvar of shape (n, k) and eps of shape (L, n, k) with the same "
            f"n and k; got logvar {logvar.shape}, eps {eps.shape}"
        )
    if mu_like.shape[-2:] != logvar.shape:
        raise ValueError(
            f"reparam: mu/dz trailing shape {mu_like.shape[-2:]} does not match logvar "
            f"{logvar.shape}"
        )


# ---- dispatch --------------------------------------------------------------------------


def reparam_forward(mu, logvar, eps, impl="cpu"):
    """``z = mu + exp(logvar/2) * eps``; see :func:`reparam_forward_reference`.

    ``impl="cpu"`` and ``"cuda"`` need C-contiguous inputs of one float dtype (they are
    made contiguous here if they are not).
    """
    if impl == "reference":
        return reparam_forward_reference(mu, logvar, eps)
    _check_shapes(mu, logvar, eps)
    xp = _array_module(mu)
    mu, logvar, eps = (xp.ascontiguousarray(a) for a in (mu, logvar, eps))
    z = xp.empty(eps.shape, dtype=eps.dtype)
    if impl == "cpu":
        _cpu_kernels(eps.size >= _PARALLEL_MIN_ENTRIES)[0](mu, logvar, eps, z)
    elif impl == "cuda":
        _cuda_launch(_cuda_kernels()["forward"], mu.size, (mu, logvar, eps, z))
    else:
        raise ValueError(f"impl={impl!r} is not one of ('reference', 'cpu', 'cuda')")
    return z


def reparam_backward(dz, logvar, eps, impl="cpu"):
    """``(dmu, dlogvar)``; see :func:`reparam_backward_reference`."""
    if impl == "reference":
        return reparam_backward_reference(dz, logvar, eps)
    _check_shapes(dz, logvar, eps)
    if dz.shape != eps.shape:
        raise ValueError(f"reparam_backward: dz has shape {dz.shape} but eps has {eps.shape}")
    xp = _array_module(dz)
    dz, logvar, eps = (xp.ascontiguousarray(a) for a in (dz, logvar, eps))
    dmu = xp.empty(logvar.shape, dtype=dz.dtype)
    dlogvar = xp.empty(logvar.shape, dtype=dz.dtype)
    if impl == "cpu":
        _cpu_kernels(eps.size >= _PARALLEL_MIN_ENTRIES)[1](dz, logvar, eps, dmu, dlogvar)
    elif impl == "cuda":
        _cuda_launch(_cuda_kernels()["backward"], logvar.size, (dz, logvar, eps, dmu, dlogvar))
    else:
        raise ValueError(f"impl={impl!r} is not one of ('reference', 'cpu', 'cuda')")
    return dmu, dlogvar
