"""The paired regression data of Variational Autoencoded Regression: :class:`SequenceData`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import DataError
from ..validation import check_finite


@dataclass
class SequenceData:
    """Paired regression data: inputs ``X`` and images ``Y``, grouped into sequences.

    Attributes
    ----------
    X : ndarray of float64, shape (n, p)
        The low-dimensional input of each example (a frame's position, joint coordinates).
    Y : ndarray of float64, shape (n, H, W)
        The image of each example, values in [0, 1].
    groups : ndarray of int64, shape (n,)
        The id of the sequence each example belongs to.
    t : ndarray of float64, shape (n,)
        The position of the example within its sequence, 0 for the first frame and 1 for
        the last.
    name : str
        A short name for reports and figures.
    """

    X: np.ndarray
    Y: np.ndarray
    groups: np.ndarray
    t: np.ndarray
    name: str = "sequences"

    def __post_init__(self):
        self.X = np.asarray(self.X, dtype=np.float64)
        self.Y = np.asarray(self.Y, dtype=np.float64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        self.t = np.asarray(self.t, dtype=np.float64)
        if self.X.ndim != 2:
            raise DataError(f"X has shape {self.X.shape}; it must be 2-D (n, p), one row per example")
        if self.Y.ndim != 3:
            raise DataError(f"Y has shape {self.Y.shape}; it must be 3-D (n, H, W), one image per example")
        n = self.X.shape[0]
        if self.groups.ndim != 1 or self.t.ndim != 1:
            raise DataError(
                f"groups {self.groups.shape} and t {self.t.shape} must be 1-D of length n={n}"
            )
        for field, values in (("Y", self.Y), ("groups", self.groups), ("t", self.t)):
            if values.shape[0] != n:
                raise DataError(
                    f"{field} has {values.shape[0]} rows but X has {n}; give one row per example in each"
                )
        check_finite(self.X, "X")
        check_finite(self.Y, "Y")
        check_finite(self.t, "t")

    @property
    def n(self) -> int:
        """Number of examples."""
        return self.X.shape[0]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W) of each image."""
        return self.Y.shape[1:]

    @property
    def n_groups(self) -> int:
        """Number of distinct sequences."""
        return int(np.unique(self.groups).size)

    def subset(self, idx: ArrayLike) -> SequenceData:
        """Return the examples at ``idx`` (integer indices or a boolean mask) as a new SequenceData."""
        idx = np.asarray(idx)
        return SequenceData(
            X=self.X[idx].copy(),
            Y=self.Y[idx].copy(),
            groups=self.groups[idx].copy(),
            t=self.t[idx].copy(),
            name=self.name,
        )

    def split(self, mode: str = "interpolation", n_anchor_every: int = 4,
              holdout: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
        """Split the examples into training anchors and held-out queries, sequence by sequence.

        Parameters
        ----------
        mode : {"interpolation", "extrapolation"}
            Which kind of generalisation the held-out frames test.
        n_anchor_every : int, default 4
            Interpolation period k >= 2: within each sequence ordered by ``t``, the frames
            at positions k, 2k, 3k, ... are held out, except the last frame. For k = 4, three
            of every four frames are anchors.
        holdout : float, default 0.25
            Extrapolation: the fraction of each sequence, taken from its end (largest ``t``),
            that is held out; in (0, 1).

        Returns
        -------
        train_idx, test_idx : ndarray of int64
            Sorted indices into this data set; disjoint, together all examples.

        Notes
        -----
        *Interpolation*: the first and the last frame of every sequence are always anchors,
        so every held-out frame lies strictly between two anchors of its own sequence; the
        model must fill in a gap. Sequences of fewer than three frames contribute only
        anchors.

        *Extrapolation*: in each sequence of T frames, the last
        ``max(1, round(holdout * T))`` frames by ``t`` are held out (at least one frame
        always stays an anchor); the model must continue the motion beyond what it saw.
        """
        if mode == "interpolation":
            if int(n_anchor_every) != n_anchor_every or n_anchor_every < 2:
                raise ValueError(
                    f"n_anchor_every={n_anchor_every!r} must be an integer >= 2 "
                    "(every k-th frame of a sequence is held out)"
                )
            k = int(n_anchor_every)
        elif mode == "extrapolation":
            if not 0.0 < holdout < 1.0:
                raise ValueError(
                    f"holdout={holdout!r} must lie in (0, 1): the fraction of each sequence held out"
                )
        else:
            raise ValueError(f"mode={mode!r} is not known; use 'interpolation' or 'extrapolation'")
        is_test = np.zeros(self.n, dtype=bool)
        for group in np.unique(self.groups):
            members = np.flatnonzero(self.groups == group)
            ordered = members[np.argsort(self.t[members], kind="stable")]
            length = ordered.size
            position = np.arange(length)
            if mode == "interpolation":
                held = (position % k == 0) & (position > 0) & (position < length - 1)
            else:
                n_held = min(max(1, int(round(holdout * length))), length - 1)
                held = position >= length - n_held
            is_test[ordered[held]] = True
        if not is_test.any():
            raise DataError(
                f"the {mode} split of {self.name!r} holds out no example (sequences too short for "
                f"n_anchor_every={n_anchor_every}); use longer sequences or a smaller n_anchor_every"
            )
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)

    def describe(self) -> str:
        """A multi-line summary of shapes and ranges, for users to check what they loaded."""
        lengths = np.unique(self.groups, return_counts=True)[1]
        return "\n".join(
            [
                f"SequenceData {self.name!r}: {self.n} examples in {self.n_groups} sequences "
                f"({lengths.min()}..{lengths.max()} frames each)",
                f"  X  {self.X.shape} float64, range [{self.X.min():.3g}, {self.X.max():.3g}]",
                f"  Y  {self.Y.shape} float64 images, range [{self.Y.min():.3g}, {self.Y.max():.3g}]",
                f"  t  {self.t.shape} position within sequence in [0, 1]",
            ]
        )

    def __repr__(self):
        return (
            f"SequenceData(name={self.name!r}, n={self.n}, X={self.X.shape}, Y={self.Y.shape}, "
            f"n_groups={self.n_groups})"
        )


def describe(data: object) -> str:
    """Return a one-line (array) or multi-line (SequenceData) summary of shapes and ranges."""
    if isinstance(data, SequenceData):
        return data.describe()
    array = np.asarray(data)
    if array.size == 0:
        return f"array {array.shape} {array.dtype}, empty"
    return f"array {array.shape} {array.dtype}, range [{array.min():.3g}, {array.max():.3g}]"
