"""minivae: variational autoencoders, exact Gaussian-process regression and Variational
Autoencoded Regression, with every gradient derived by hand and no autograd.

    >>> import minivae
    >>> vae = minivae.VAE(input_dim=64, latent_dim=2)            # doctest: +SKIP
    >>> gp = minivae.GPRegressor(ard=True).fit(X, y)              # doctest: +SKIP
    >>> var = minivae.VARegressor(latent_dim=4).fit(X, images)    # doctest: +SKIP
"""

import os
from importlib import import_module

# Numba's OpenMP worker threads busy-wait after every parallel region, and so do OpenBLAS's
# after every BLAS call; on a machine with few cores the two pools then starve each other.
# Measured on the 2-core development machine: one GP log-marginal-likelihood evaluation with
# its gradient (n=20) followed by a BLAS product took a median 64 ms, and 2-4 ms with passive
# waiting. libgomp reads this when Numba first starts its thread pool, which happens after
# this import; a value the user has set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .backend import get_backend
from .errors import (
    CheckpointError,
    DataError,
    DeviceUnavailableError,
    MinivaeError,
    NotPositiveDefiniteError,
    TrainingDivergedError,
)

__version__ = "0.1.0"

_LAZY = {
    "VAE": "vae",
    "GPRegressor": "gp",
    "VARegressor": "var",
    "limited_threads": "kernels.threads",
}


def __getattr__(name):
    # Models load on first use so that `import minivae` stays light (no Numba compile).
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'minivae' has no attribute {name!r}")


__all__ = [
    "VAE",
    "GPRegressor",
    "VARegressor",
    "get_backend",
    "limited_threads",
    "CheckpointError",
    "DataError",
    "DeviceUnavailableError",
    "MinivaeError",
    "NotPositiveDefiniteError",
    "TrainingDivergedError",
]
