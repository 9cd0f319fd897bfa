"""Data sets: small embedded ones, synthetic ones, and loaders for users' own files.

Nothing here touches the network. Every synthetic set is a deterministic function of
its ``seed``.

Unsupervised sets (for the VAE) are float64 arrays of shape (n, D) in [0, 1]:

- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits;
- :func:`make_swiss_roll`: the classic 2-D manifold rolled up in 3-D;
- :func:`load_idx`, :func:`load_npz`, :func:`load_image_folder`: users' own data.

Regression sets (for Variational Autoencoded Regression, Yoo et al., CVPR 2017) are
:class:`SequenceData`: low-dimensional inputs ``X`` paired with images ``Y``, grouped into
sequences:

- :func:`make_image_sequences`: textured objects turning and moving over time;
- :func:`make_postures`: a stick figure whose joint positions are the input;
- :func:`load_regression_folder`: users' own images plus an ``inputs.csv``.

Tables for the GP: :func:`read_xy_csv` (inputs, then the target as the last column).

The code lives in :mod:`.synthetic`, :mod:`.loaders` and :mod:`.sequence`; this package
is their one public namespace.
"""
from .loaders import (
    load_digits,
    load_idx,
    load_image_folder,
    load_npz,
    load_regression_folder,
    read_xy_csv,
)
from .sequence import SequenceData, describe
from .synthetic import (
    POSTURE_JOINTS,
    make_image_sequences,
    make_postures,
    make_swiss_roll,
)

__all__ = [
    "POSTURE_JOINTS",
    "SequenceData",
    "describe",
    "load_digits",
    "load_idx",
    "load_image_folder",
    "load_npz",
    "load_regression_folder",
    "make_image_sequences",
    "make_postures",
    "make_swiss_roll",
    "read_xy_csv",
]
