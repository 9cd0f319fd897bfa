"""The fused Adam step (Kingma & Ba 2015, Algorithm 1), in place.

.. math::

    m \\leftarrow \\beta_1 m + (1 - \\beta_1) g,\\quad
    v \\leftarrow \\beta_2 v + (1 - \\beta_2) g^2,\\quad
    \\theta \\leftarrow \\theta - \\frac{\\mathrm{lr}}{1 - \\beta_1^t}\\,
        \\frac{m}{\\sqrt{v / (1 - \\beta_2^t)} + \\epsilon}

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba, one pass over memory) and ``cuda`` (Numba-CUDA grid-stride loop).
"""

from __future__ import annotations

import numpy as np

# TODO(train helper): cpu and cuda implementations.


def adam_step_reference(param, grad, m, v, lr, beta1, beta2, eps, t):
    """Update ``param``, ``m`` and ``v`` in place; ``t`` is the 1-based step count."""
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    step = lr / (1 - beta1**t)
    denom = np.sqrt(v / (1 - beta2**t)) + eps
    param -= step * m / denom


def adam_step(param, grad, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1, impl="cpu"):
    """One Adam step in place; see :func:`adam_step_reference`."""
    if impl == "reference":
        return adam_step_reference(param, grad, m, v, lr, beta1, beta2, eps, t)
    raise NotImplementedError(impl)
