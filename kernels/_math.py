"""Shared float64 pieces of the CPU kernels: a vectorised ``exp`` for non-positive arguments.

Used by the RBF kernels (``exp(-r^2 / 2)``), the reparameterisation (``exp(logvar / 2)``)
and the Bernoulli likelihood.
"""

import numba
import numpy as np

_LOG2E = 1.4426950408889634
# ln 2 split in two (Cody & Waite): k * _LN2_HI is exact for |k| < 2^20
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# below this argument 2^k would be subnormal: such entries are recomputed with libm's exp
EXP_MIN = -708.0
_EXP_BITS_BIAS = 1023


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def exp_nonpositive(arg, out, scale_bits, count):
    """``out[:count] = exp(arg[:count])`` for ``arg <= 0``, vectorised (libm's exp is not).

    Notes
    -----
    exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2]; exp(r) by
    its Taylor polynomial to degree 13 (truncation below 5e-18 relative) in Horner form,
    2^k by writing k + 1023 into a double's exponent bits. Within 1 ulp of NumPy's exp on
    [-708, 0]; arguments below -708 are clamped here and fixed by the caller. The same holds
    up to 709 (k + 1023 <= 2046 is still a normal exponent): kernels/reparam.py relies on
    that range for exp(logvar / 2) in float64, and tests it there.
    """
    for t in range(count):
        x = max(arg[t], EXP_MIN)
        k = np.floor(x * _LOG2E + 0.5)
        r = (x - k * _LN2_HI) - k * _LN2_LO
        p = r * (1.0 / 6227020800.0) + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        out[t] = p * r + 1.0
        scale_bits[t] = (np.int64(k) + _EXP_BITS_BIAS) << 52
    scale = scale_bits.view(np.float64)
    for t in range(count):
        out[t] *= scale[t]
