"""The fused Adam step (Kingma & Ba 2015, Algorithm 1), in place.

.. math::

    m \\leftarrow \\beta_1 m + (1 - \\beta_1) g,\\quad
    v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2,\\quad
    \\theta \\leftarrow \\theta - \\frac{\\mathrm{lr}}{1 - \\beta_1^t}\\,
        \\frac{m}{\\sqrt{v / (1 - \\beta_2^t)} + \\epsilon}

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba, one pass over memory) and ``cuda`` (Numba-CUDA grid-stride loop).

Subnormal moments are flushed to zero: after the update, an ``m`` entry with
``|m| < tiny`` and a ``v`` entry with ``v < tiny`` (``tiny``: the dtype's smallest normal
number, 1.2e-38 in float32) become 0. Without it, a parameter whose gradient stays 0 (a
dead ReLU unit, an always-blank pixel's weights) has ``m`` decay by ``beta1`` a step into
the subnormal range after about 800 steps, and arithmetic on subnormals is 10-100x slower
on x86: measured on the 784-400-20 VAE trained on one batch, the Adam step went from
0.45 ms to 5 ms at step 800 (64,012 subnormal entries of 652,824). The change to the
parameter update is below ``lr * tiny / eps``, ~1e-33, far under float32 resolution.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._cuda import launch


def adam_step_reference(param, grad, m, v, lr, beta1, beta2, eps, t):
    """Update ``param``, ``m`` and ``v`` in place; ``t`` is the 1-based step count."""
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    tiny = np.finfo(m.dtype).tiny
    m[abs(m) < tiny] = 0
    v[v < tiny] = 0
    step = lr / (1 - beta1**t)
    # sqrt(v / (1 - beta2^t)) written as sqrt(v) / sqrt(1 - beta2^t), as the kernels do: v
    # itself can be near the top of float32's range (v ~ 1e37 for g ~ 1e20), and dividing
    # it by 1 - beta2^t << 1 before the square root would overflow to inf.
    denom = np.sqrt(v) / math.sqrt(1 - beta2**t) + eps
    param -= step * m / denom


def _check_hyperparameters(lr, beta1, beta2, eps, t):
    """Raise ValueError unless ``0 <= beta1, beta2 < 1``, ``eps`` is positive and finite,
    ``lr`` finite and ``t >= 1``.

    beta = 1 (or t = 0) would divide by ``1 - beta^t = 0`` in a bias correction, beta > 1
    take the square root of a negative ``1 - beta2^t``, and eps = 0 divide by 0 where v = 0.
    """
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:  # False for NaN too
            raise ValueError(
                f"adam_step: {name}={beta} must be in [0, 1), the decay rate of a moment "
                "estimate (0.9 and 0.999 are the usual beta1 and beta2)"
            )
    if not (eps > 0.0 and math.isfinite(eps)):
        raise ValueError(
            f"adam_step: eps={eps} must be positive and finite (1e-8 is the usual value)"
        )
    if not math.isfinite(lr):
        raise ValueError(f"adam_step: lr={lr} must be finite")
    if t < 1:
        raise ValueError(f"adam_step: t={t} must be the 1-based step count (t >= 1)")


def _check_arrays(param, grad, m, v):
    """Raise ValueError unless the four arrays are C-contiguous, same shape, same float dtype,
    and the three that are updated (param, m, v) writeable."""
    names = ("param", "grad", "m", "v")
    arrays = (param, grad, m, v)
    dtype = param.dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"adam_step: param has dtype {dtype}; use float32 or float64")
    for name, array in zip(names, arrays):
        if array.shape != param.shape:
            raise ValueError(
                f"adam_step: {name} has shape {array.shape} but param has shape {param.shape}; "
                "give all four arrays the same shape"
            )
        if array.dtype != dtype:
            raise ValueError(
                f"adam_step: {name} has dtype {array.dtype} but param has dtype {dtype}; "
                "give all four arrays the same dtype"
            )
        if not array.flags.c_contiguous:
            raise ValueError(
                f"adam_step: {name} is not C-contiguous (strides {array.strides}); the fused "
                "kernel updates flat views in place, so pass contiguous arrays "
                "(np.ascontiguousarray makes a copy, which would not be updated in place)"
            )
        # CuPy arrays have no read-only flag
        if name != "grad" and isinstance(array, np.ndarray) and not array.flags.writeable:
            raise ValueError(
                f"adam_step: {name} is read-only; adam_step updates param, m and v in place, "
                "so pass writeable arrays"
            )


def _scalars(dtype, lr, beta1, beta2, eps, t):
    """The loop constants, in the arrays' dtype, computed once per step in float64.

    Returns ``(step, inv_sqrt_bc2, beta1, beta2, 1 - beta1, 1 - beta2, eps, tiny)`` with
    ``step = lr / (1 - beta1^t)`` and ``inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t)``, so that
    the per-element update is ``param -= step * m / (sqrt(v) * inv_sqrt_bc2 + eps)``: the
    reference's ``sqrt(v) / sqrt(1 - beta2^t)``, its division folded into one scalar. The
    hyperparameters are checked by :func:`adam_step`.
    """
    cast = np.dtype(dtype).type
    step = lr / (1.0 - beta1**t)
    inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2**t)
    tiny = float(np.finfo(dtype).tiny)  # moments below it are flushed to 0
    constants = (step, inv_sqrt_bc2, beta1, beta2, 1.0 - beta1, 1.0 - beta2, eps, tiny)
    return tuple(cast(constant) for constant in constants)


def _adam_element_py(i, param, grad, m, v, step, inv_sqrt_bc2, beta1, beta2, one_m_beta1,
                     one_m_beta2, eps, tiny):
    """Entry ``i``'s update: the one definition compiled for the CPU (:data:`_adam_element`,
    inlined into the loops) and for CUDA (a device function, bound in _get_cuda_kernel)."""
    g = grad[i]
    m_i = beta1 * m[i] + one_m_beta1 * g
    v_i = beta2 * v[i] + one_m_beta2 * g * g
    if abs(m_i) < tiny:  # flush subnormals (module docstring); False for NaN
        m_i = tiny - tiny
    if v_i < tiny:
        v_i = tiny - tiny
    m[i] = m_i
    v[i] = v_i
    param[i] -= step * m_i / (math.sqrt(v_i) * inv_sqrt_bc2 + eps)


_adam_element = njit(inline="always")(_adam_element_py)


# Two builds of one update: below _PARALLEL_MIN_ENTRIES waking the thread pool costs more
# than the second core saves, so those run serially. They are two functions, not one
# function compiled twice: Numba's on-disk cache keys on the function, and would hand one
# build's machine code to the other. Crossover measured on the 2-core dev machine with
# minivae's OMP_WAIT_POLICY=PASSIVE (waking the sleeping OpenMP thread costs ~65 us),
# float32: 2^17 entries serial 0.064 ms / parallel 0.105 ms; 2^18 0.152 / 0.141;
# 652,824 (the 784-400-20 VAE, one flat buffer) 0.376 / 0.294.
_PARALLEL_MIN_ENTRIES = 1 << 18


# error_model="numpy": no zero-division check, which would stop the loop vectorising (the
# divisor is at least eps > 0); measured 3.8x faster serially at 652,824 float32 entries,
# with bit-identical results.
@njit(parallel=True, fastmath=False, cache=True, error_model="numpy")
def _adam_cpu_parallel(param, grad, m, v, step, inv_sqrt_bc2, beta1, beta2, one_m_beta1,
                       one_m_beta2, eps, tiny):
    for i in prange(param.size):
        _adam_element(i, param, grad, m, v, step, inv_sqrt_bc2, beta1, beta2, one_m_beta1,
                      one_m_beta2, eps, tiny)


@njit(fastmath=False, cache=True, error_model="numpy")
def _adam_cpu_serial(param, grad, m, v, step, inv_sqrt_bc2, beta1, beta2, one_m_beta1,
                     one_m_beta2, eps, tiny):
    for i in range(param.size):
        _adam_element(i, param, grad, m, v, step, inv_sqrt_bc2, beta1, beta2, one_m_beta1,
                      one_m_beta2, eps, tiny)


def adam_step_cpu(param, grad, m, v, lr, beta1, beta2, eps, t):
    """Numba implementation of :func:`adam_step_reference`: one pass over memory.

    Each element is read once (param, grad, m, v) and written once (param, m, v); the
    bias corrections are folded into two scalars before the loop.
    """
    _check_arrays(param, grad, m, v)
    kernel = _adam_cpu_parallel if param.size >= _PARALLEL_MIN_ENTRIES else _adam_cpu_serial
    kernel(
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
        *_scalars(param.dtype, lr, beta1, beta2, eps, t),
    )


_CUDA_BLOCK = 256
_CUDA_SIM_GRID = 2
cuda = None  # numba.cuda, bound on first use: a module global, so the simulator can swap it
_cuda_kernel = None
_adam_element_cuda = None  # _adam_element_py as a CUDA device function, bound with the kernel


def _adam_cuda_body(param, grad, m, v, step, inv_sqrt_bc2, beta1, beta2, one_m_beta1,
                    one_m_beta2, eps, tiny):
    """One thread's share of the step: a grid-stride loop over the flat arrays."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, param.size, stride):
        _adam_element_cuda(i, param, grad, m, v, step, inv_sqrt_bc2, beta1, beta2,
                           one_m_beta1, one_m_beta2, eps, tiny)


def _get_cuda_kernel():
    """Compile (once) the CUDA kernel; numba.cuda is imported only here."""
    global cuda, _cuda_kernel, _adam_element_cuda
    if _cuda_kernel is None:
        from numba import cuda as numba_cuda

        cuda = numba_cuda
        _adam_element_cuda = cuda.jit(device=True)(_adam_element_py)
        _cuda_kernel = cuda.jit(_adam_cuda_body)
    return _cuda_kernel


def adam_step_cuda(param, grad, m, v, lr, beta1, beta2, eps, t):
    """Numba-CUDA implementation of :func:`adam_step_reference`: a grid-stride loop.

    On CuPy arrays the kernel runs on CuPy's current stream with a grid of a few blocks
    per streaming multiprocessor; on NumPy arrays (Numba's CUDA simulator) it is a plain
    launch on a fixed grid of two blocks, small enough for the simulator and still
    exercising the stride loop.
    """
    _check_arrays(param, grad, m, v)
    if param.size == 0:
        return
    kernel = _get_cuda_kernel()
    flat = (param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1))
    scalars = _scalars(param.dtype, lr, beta1, beta2, eps, t)
    if isinstance(param, np.ndarray):
        grid = _CUDA_SIM_GRID
    else:
        sm_count = cuda.get_current_device().MULTIPROCESSOR_COUNT
        grid = min(math.ceil(param.size / _CUDA_BLOCK), 4 * sm_count)
    launch(kernel, grid, _CUDA_BLOCK, *flat, *scalars)


_IMPLEMENTATIONS = {
    "reference": adam_step_reference,
    "cpu": adam_step_cpu,
    "cuda": adam_step_cuda,
}


def adam_step(param, grad, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1, impl="cpu"):
    """One Adam step in place on ``param``, ``m`` and ``v``.

    Parameters
    ----------
    param, grad, m, v : arrays of one shape and one dtype (float32 or float64)
        C-contiguous NumPy arrays (``impl="cpu"``, or ``"cuda"`` under the simulator) or
        CuPy arrays (``impl="cuda"`` on a GPU). ``param``, ``m`` and ``v`` are updated
        (so they must be writeable).
    lr : float
        Finite.
    beta1, beta2 : float
        In [0, 1).
    eps : float
        Positive and finite.
    t : int
        The 1-based step count, for the bias corrections.
    impl : {"reference", "cpu", "cuda"}

    Raises
    ------
    ValueError
        A hyperparameter out of its range (for every ``impl``); for ``"cpu"`` and
        ``"cuda"``, arrays that differ in shape or dtype, are not float32 or float64, are
        not C-contiguous, or (param, m, v) are read-only.

    Notes
    -----
    See the module docstring for the update and :func:`adam_step_reference` for the
    specification the other implementations are tested against.
    """
    try:
        implementation = _IMPLEMENTATIONS[impl]
    except KeyError:
        raise ValueError(
            f"adam_step: impl={impl!r} is not one of {sorted(_IMPLEMENTATIONS)}"
        ) from None
    _check_hyperparameters(lr, beta1, beta2, eps, t)
    implementation(param, grad, m, v, lr, beta1, beta2, eps, t)
