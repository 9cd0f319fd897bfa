"""The reparameterisation trick (Kingma & Welling 2014, Sec. 2.4) and its backward.

Forward: ``z[l] = mu + exp(logvar / 2) * eps[l]`` for each of L samples.
Backward: ``dmu = sum_l dz[l]``, ``dlogvar = 0.5 * exp(logvar / 2) * sum_l dz[l] * eps[l]``
(docs/derivations.md, "Reparameterisation").

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba, parallel over rows, one pass over ``eps`` and ``dz`` after a vectorised
``exp``) and ``cuda`` (Numba-CUDA,
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

    Derivation: docs/derivations.md, "Reparameterisation".

    Returns
    -------
    dmu, dlogvar : (n, k) arrays
    """
    dmu = dz.sum(axis=0)
    dlogvar = 0.5 * np.exp(0.5 * logvar) * (dz * eps).sum(axis=0)
    return dmu, dlogvar


# ---- cpu: Numba ------------------------------------------------------------------------

# The kernels are plain Python functions compiled by Numba on first use, so importing this
# module does not import Numba. ``prange`` is bound to ``numba.prange`` before compiling.
#
# The standard deviation exp(logvar / 2) is computed by NumPy's vectorised exp before the
# kernel runs: Numba has no vector math library here (no SVML), and a scalar exp per entry
# costs more than the rest of the kernel. The kernel then makes one pass over eps (and dz),
# rows spread over threads, with the innermost loop running along contiguous memory.
prange = range
_CPU = {}
_PARALLEL_MIN_ENTRIES = 1 << 15  # below this, waking the thread pool costs more than it saves


def _forward_rows_serial(mu, std, eps, z):
    n_samples, n, k = eps.shape
    for i in range(n):
        for sample in range(n_samples):
            for j in range(k):
                z[sample, i, j] = mu[i, j] + std[i, j] * eps[sample, i, j]


def _forward_rows_parallel(mu, std, eps, z):
    n_samples, n, k = eps.shape
    for i in prange(n):
        for sample in range(n_samples):
            for j in range(k):
                z[sample, i, j] = mu[i, j] + std[i, j] * eps[sample, i, j]


def _backward_rows_serial(dz, std, eps, dmu, dlogvar):
    n_samples, n, k = eps.shape
    for i in range(n):
        for j in range(k):
            dmu[i, j] = dz[0, i, j]
            dlogvar[i, j] = dz[0, i, j] * eps[0, i, j]
        for sample in range(1, n_samples):
            for j in range(k):
                dmu[i, j] += dz[sample, i, j]
                dlogvar[i, j] += dz[sample, i, j] * eps[sample, i, j]
        for j in range(k):
            dlogvar[i, j] = (dlogvar[i, j] * std[i, j]) * 0.5


def _backward_rows_parallel(dz, std, eps, dmu, dlogvar):
    n_samples, n, k = eps.shape
    for i in prange(n):
        for j in range(k):
            dmu[i, j] = dz[0, i, j]
            dlogvar[i, j] = dz[0, i, j] * eps[0, i, j]
        for sample in range(1, n_samples):
            for j in range(k):
                dmu[i, j] += dz[sample, i, j]
                dlogvar[i, j] += dz[sample, i, j] * eps[sample, i, j]
        for j in range(k):
            dlogvar[i, j] = (dlogvar[i, j] * std[i, j]) * 0.5


def _cpu_kernels(parallel: bool):
    """``(forward, backward)`` compiled by Numba (or loaded from its cache) on first use.

    ``parallel=True`` spreads rows over threads with ``prange``; small inputs use the
    serial build, for which the thread pool's start-up costs more than the work.
    """
    global prange
    if not _CPU:
        import numba

        prange = numba.prange
        _CPU[False] = (numba.njit(cache=True)(_forward_rows_serial),
                       numba.njit(cache=True)(_backward_rows_serial))
        _CPU[True] = (numba.njit(parallel=True, cache=True)(_forward_rows_parallel),
                      numba.njit(parallel=True, cache=True)(_backward_rows_parallel))
    return _CPU[parallel]


def _std(logvar):
    """``exp(logvar / 2)`` in the dtype of ``logvar`` (NumPy's vectorised exp)."""
    std = np.multiply(logvar, 0.5)
    return np.exp(std, out=std)


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
        _cpu_kernels(eps.size >= _PARALLEL_MIN_ENTRIES)[0](mu, _std(logvar), eps, z)
    elif impl == "cuda":
        _cuda_launch(_cuda_kernels()["forward"], mu.size, (mu, logvar, eps, z))
    else:
        raise ValueError(f"impl={impl!r} is not one of ('reference', 'cpu', 'cuda')")
    return z


def reparam_backward(dz, logvar, eps, impl="cpu"):
    """``(dmu, dlogvar)``; see :func:`reparam_backward_reference`.

    Derivation: docs/derivations.md, "Reparameterisation".
    """
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
        _cpu_kernels(eps.size >= _PARALLEL_MIN_ENTRIES)[1](dz, _std(logvar), eps, dmu,
                                                           dlogvar)
    elif impl == "cuda":
        _cuda_launch(_cuda_kernels()["backward"], logvar.size, (dz, logvar, eps, dmu, dlogvar))
    else:
        raise ValueError(f"impl={impl!r} is not one of ('reference', 'cpu', 'cuda')")
    return dmu, dlogvar
