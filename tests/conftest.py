"""Test configuration.

The CUDA kernels are tested under Numba's CUDA simulator, which must be switched on before
Numba is first imported; no test needs a GPU. Matplotlib draws off-screen.
"""

import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A fresh seeded Generator for each test."""
    return np.random.default_rng(12345)
