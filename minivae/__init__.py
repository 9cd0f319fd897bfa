"""minivae: variational autoencoders, exact Gaussian-process regression and Variational
Autoencoded Regression, with every gradient derived by hand and no autograd.

    >>> import minivae
    >>> vae = minivae.VAE(input_dim=64, latent_dim=2)            # doctest: +SKIP
    >>> gp = minivae.GPRegressor(ard=True).fit(X, y)              # doctest: +SKIP
    >>> var = minivae.VARegressor(latent_dim=4).fit(X, images)    # doctest: +SKIP
"""

from importlib import import_module

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

_LAZY = {"VAE": "vae", "GPRegressor": "gp", "VARegressor": "var"}


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
    "CheckpointError",
    "DataError",
    "DeviceUnavailableError",
    "MinivaeError",
    "NotPositiveDefiniteError",
    "TrainingDivergedError",
]
