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
"""
from __future__ import annotations

import csv
import gzip
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .validation import check_finite


def load_digits(return_labels=False):
    """Load scikit-learn's bundled 8x8 handwritten digits, scaled to [0, 1].

    Parameters
    ----------
    return_labels : bool, default False
        Also return the digit labels.

    Returns
    -------
    X : ndarray of float64, shape (1797, 64)
        Pixel intensities divided by 16 (the original range is 0..16); rows are images
        flattened row-major from 8x8.
    y : ndarray of int64, shape (1797,)
        The digit 0..9 of each image; only when ``return_labels`` is True.

    Notes
    -----
    The data ship inside scikit-learn (UCI ML hand-written digits, test set); no download.
    """
    from sklearn.datasets import load_digits as _sklearn_load_digits

    bunch = _sklearn_load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    if return_labels:
        return X, np.asarray(bunch.target, dtype=np.int64)
    return X


def _scale_columns_to_unit(X):
    """Affinely map each column of X (n, d) onto [0, 1]; constant columns become 0."""
    lo = X.min(axis=0)
    span = X.max(axis=0) - lo
    span[span == 0] = 1.0
    return (X - lo) / span


def make_swiss_roll(n, noise=0.0, seed=0, return_t=False):
    """Sample the Swiss roll: a rectangle rolled into a spiral in 3-D, scaled to [0, 1].

    Parameters
    ----------
    n : int
        Number of points, >= 2.
    noise : float, default 0.0
        Standard deviation of isotropic Gaussian noise added to the 3-D points before
        scaling (in the roll's original units, where the spiral radius runs 4.7..14.1).
    seed : int, default 0
        Seed of the NumPy Generator; the same seed gives the same points.
    return_t : bool, default False
        Also return the manifold coordinate ``t`` (the angle along the spiral).

    Returns
    -------
    X : ndarray of float64, shape (n, 3)
        The points, each column affinely scaled to [0, 1].
    t : ndarray of float64, shape (n,)
        The angle along the spiral in [1.5 pi, 4.5 pi]; only when ``return_t`` is True.

    Notes
    -----
    With :math:`t \\sim U(1.5\\pi, 4.5\\pi)` and height :math:`h \\sim U(0, 21)`,

    .. math:: x = (t \\cos t,\\; h,\\; t \\sin t) + \\sigma \\epsilon,
              \\quad \\epsilon \\sim N(0, I_3).

    The two intrinsic coordinates are (t, h); ``t`` is the one that is hard to recover
    linearly, which is why it is returned.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"n={n} points is too few for a Swiss roll; ask for n >= 2")
    if noise < 0:
        raise ValueError(f"noise={noise} is negative; give a standard deviation >= 0")
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    height = 21.0 * rng.random(n)
    X = np.column_stack([t * np.cos(t), height, t * np.sin(t)])
    if noise > 0:
        X = X + noise * rng.standard_normal((n, 3))
    X = _scale_columns_to_unit(X)
    if return_t:
        return X, t
    return X


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
    def n(self):
        """Number of examples."""
        return self.X.shape[0]

    @property
    def image_shape(self):
        """(H, W) of each image."""
        return self.Y.shape[1:]

    @property
    def n_groups(self):
        """Number of distinct sequences."""
        return int(np.unique(self.groups).size)

    def images_flat(self):
        """The images as rows, shape (n, H * W), for a VAE."""
        return self.Y.reshape(self.n, -1)

    def subset(self, idx):
        """Return the examples at ``idx`` (integer indices or a boolean mask) as a new SequenceData."""
        idx = np.asarray(idx)
        return SequenceData(
            X=self.X[idx].copy(),
            Y=self.Y[idx].copy(),
            groups=self.groups[idx].copy(),
            t=self.t[idx].copy(),
            name=self.name,
        )

    def split(self, mode="interpolation", n_anchor_every=4, holdout=0.25):
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

    def describe(self):
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


def describe(data):
    """Return a one-line (array) or multi-line (SequenceData) summary of shapes and ranges."""
    if isinstance(data, SequenceData):
        return data.describe()
    array = np.asarray(data)
    if array.size == 0:
        return f"array {array.shape} {array.dtype}, empty"
    return f"array {array.shape} {array.dtype}, range [{array.min():.3g}, {array.max():.3g}]"


def _render_supersampled(inside_and_shade, size, supersample):
    """Average a shading function over a supersampled pixel grid.

    ``inside_and_shade(u, v)`` takes sample coordinates u, v in [0, 1] (x right, y down)
    of shape (size * s, size * s) broadcast against any leading frame axis, and returns
    the intensity of each sample; the result is box-filtered down to (..., size, size).
    """
    s = supersample
    centres = (np.arange(size * s) + 0.5) / (size * s)
    v, u = np.meshgrid(centres, centres, indexing="ij")
    samples = inside_and_shade(u, v)
    lead = samples.shape[:-2]
    return samples.reshape(*lead, size, s, size, s).mean(axis=(-3, -1))


def _inside_star_polygon(x, y, radii):
    """Whether points (x, y) lie inside the polygon with vertex j at angle 2 pi j / m, radius radii[j].

    Notes
    -----
    Between vertices j and j+1 (angular gap :math:`\\Delta`), the edge seen from the
    centre at angle :math:`\\phi_j + \\lambda` is at distance

    .. math:: r(\\lambda) = \\frac{r_j r_{j+1} \\sin\\Delta}
              {r_j \\sin\\lambda + r_{j+1} \\sin(\\Delta - \\lambda)},

    the polar equation of the straight line through the two vertices.
    """
    m = radii.size
    gap = 2.0 * np.pi / m
    phi = np.mod(np.arctan2(y, x), 2.0 * np.pi)
    edge = np.minimum((phi // gap).astype(np.int64), m - 1)
    offset = phi - edge * gap
    r_start, r_end = radii[edge], radii[(edge + 1) % m]
    boundary = r_start * r_end * np.sin(gap) / (r_start * np.sin(offset) + r_end * np.sin(gap - offset))
    return np.hypot(x, y) <= boundary


def make_image_sequences(n_sequences=6, n_frames=48, size=32, seed=0, supersample=4):
    """Synthesise sequences of a textured object turning and moving, one object per sequence.

    Parameters
    ----------
    n_sequences : int, default 6
        Number of sequences; each has its own object, texture and motion.
    n_frames : int, default 48
        Frames per sequence, >= 2.
    size : int, default 32
        Images are size x size pixels.
    seed : int, default 0
        Seed of the NumPy Generator that draws shapes, textures and motions.
    supersample : int, default 4
        Anti-aliasing: each pixel averages supersample^2 point samples.

    Returns
    -------
    SequenceData
        ``X`` (n, 1) equal to ``t``, the frame's relative position in its sequence;
        ``Y`` (n, size, size) grey images in [0, 1], dark (0) background;
        n = n_sequences * n_frames, sequences stored one after the other.

    Notes
    -----
    Each object is an irregular heptagon, star-shaped about its centre: vertex j sits at
    angle :math:`2 \\pi j / 7` and a random radius, vertex 0 being the longest (a "nose"),
    so no rotation maps it onto itself and its orientation is visible in every frame. The inside is shaded by
    a stripe (even sequences) or checker (odd sequences) texture fixed to the object. Over
    :math:`t \\in [0, 1]` the object turns by :math:`\\omega t` and its centre follows

    .. math:: c(t) = c_0 + A \\sin(2 \\pi f t + \\varphi),

    all parameters drawn per sequence.
    """
    n_sequences, n_frames, size = int(n_sequences), int(n_frames), int(size)
    if n_sequences < 1 or n_frames < 2 or size < 4:
        raise ValueError(
            f"need n_sequences >= 1, n_frames >= 2 and size >= 4; got {n_sequences}, {n_frames}, {size}"
        )
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n_frames)
    n_vertices = 7
    images = []
    for sequence in range(n_sequences):
        radii = 0.27 * rng.uniform(0.4, 0.8, n_vertices)
        radii[0] = 0.27
        start_angle = rng.uniform(0.0, 2.0 * np.pi)
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.75 * np.pi, 1.5 * np.pi)
        amplitude = rng.uniform(0.04, 0.12, 2)
        frequency = rng.uniform(0.5, 1.0, 2)
        phase = rng.uniform(0.0, 2.0 * np.pi, 2)
        texture_angle = rng.uniform(0.0, np.pi)
        texture_period = rng.uniform(0.08, 0.14)
        brightness = rng.uniform(0.75, 1.0)
        angle = (start_angle + turn * t)[:, None, None]
        centre_x = (0.5 + amplitude[0] * np.sin(2 * np.pi * frequency[0] * t + phase[0]))[:, None, None]
        centre_y = (0.5 + amplitude[1] * np.sin(2 * np.pi * frequency[1] * t + phase[1]))[:, None, None]
        checker = sequence % 2 == 1

        def shade(u, v):
            dx, dy = u - centre_x, v - centre_y
            cos_a, sin_a = np.cos(angle), np.sin(angle)
            obj_x = cos_a * dx + sin_a * dy
            obj_y = -sin_a * dx + cos_a * dy
            inside = _inside_star_polygon(obj_x, obj_y, radii)
            along = obj_x * np.cos(texture_angle) + obj_y * np.sin(texture_angle)
            if checker:
                across = -obj_x * np.sin(texture_angle) + obj_y * np.cos(texture_angle)
                light = (np.floor(along / texture_period) + np.floor(across / texture_period)) % 2 == 0
            else:
                light = np.floor(along / texture_period) % 2 == 0
            return inside * brightness * np.where(light, 1.0, 0.45)

        images.append(_render_supersampled(shade, size, int(supersample)))
    Y = np.concatenate(images, axis=0)
    t_all = np.tile(t, n_sequences)
    return SequenceData(
        X=t_all[:, None].copy(),
        Y=Y,
        groups=np.repeat(np.arange(n_sequences), n_frames),
        t=t_all,
        name="image_sequences",
    )


POSTURE_JOINTS = (
    "head", "neck", "pelvis",
    "left_elbow", "left_hand", "right_elbow", "right_hand",
    "left_knee", "left_foot", "right_knee", "right_foot",
)
"""Joint names of :func:`make_postures`, in the order of ``X``'s (x, y) column pairs."""

_POSTURE_BONES = ((0, 1), (1, 2), (1, 3), (3, 4), (1, 5), (5, 6), (2, 7), (7, 8), (2, 9), (9, 10))
_BONE_LENGTH = {"neck": 0.08, "torso": 0.24, "upper_arm": 0.13, "forearm": 0.12, "thigh": 0.16, "shin": 0.16}
_HEAD_RADIUS = 0.05
_GROUND = 0.93
_MOTIONS = ("walk", "wave", "squat", "jumping_jack")


def _posture_angles(motion, phase, amplitude, rng):
    """Joint angles (radians, 0 = pointing down, positive towards +x) over phase (T,).

    Returns a dict of arrays (T,): lean, left/right shoulder, elbow, hip, knee; elbow and
    knee angles are relative to their upper segment.
    """
    still = np.zeros_like(phase)
    rest = rng.uniform(0.15, 0.3)
    angles = {
        "lean": still + rng.uniform(-0.08, 0.08),
        "left_shoulder": still - rest, "right_shoulder": still + rest,
        "left_elbow": still - 0.2, "right_elbow": still + 0.2,
        "left_hip": still - 0.1, "right_hip": still + 0.1,
        "left_knee": still, "right_knee": still,
    }
    swing = amplitude * np.sin(phase)
    if motion == "walk":
        angles["left_hip"] = swing * 0.6
        angles["right_hip"] = -swing * 0.6
        angles["left_knee"] = -0.6 * amplitude * np.maximum(0.0, -np.sin(phase))
        angles["right_knee"] = -0.6 * amplitude * np.maximum(0.0, np.sin(phase))
        angles["left_shoulder"] = -swing * 0.7
        angles["right_shoulder"] = swing * 0.7
    elif motion == "wave":
        angles["right_shoulder"] = still + 2.4
        angles["right_elbow"] = 0.6 * amplitude * np.sin(phase)
        angles["lean"] = angles["lean"] - 0.1 * amplitude * np.sin(phase)
    elif motion == "squat":
        depth = amplitude * 0.5 * (1.0 - np.cos(phase))
        angles["left_hip"] = -0.1 - 0.9 * depth
        angles["right_hip"] = 0.1 - 0.9 * depth
        angles["left_knee"] = 1.6 * depth
        angles["right_knee"] = 1.6 * depth
        angles["left_shoulder"] = -rest - 1.3 * depth
        angles["right_shoulder"] = rest - 1.3 * depth
        angles["lean"] = angles["lean"] + 0.4 * depth
    else:  # jumping_jack
        spread = amplitude * 0.5 * (1.0 - np.cos(phase))
        angles["left_shoulder"] = -rest - 2.3 * spread
        angles["right_shoulder"] = rest + 2.3 * spread
        angles["left_hip"] = -0.1 - 0.45 * spread
        angles["right_hip"] = 0.1 + 0.45 * spread
    return angles


def _posture_joints(angles, centre_x):
    """Forward kinematics: joint positions (T, n_joints, 2) in [0, 1] image coordinates (y down)."""
    def direction(angle):
        return np.stack([np.sin(angle), np.cos(angle)], axis=-1)

    L = _BONE_LENGTH
    pelvis = np.zeros(angles["lean"].shape + (2,))
    up = -direction(angles["lean"])
    neck = pelvis + L["torso"] * up
    head = neck + L["neck"] * up
    limbs = {}
    for side in ("left", "right"):
        shoulder = angles[f"{side}_shoulder"] + angles["lean"]
        elbow = neck + L["upper_arm"] * direction(shoulder)
        limbs[f"{side}_elbow"] = elbow
        limbs[f"{side}_hand"] = elbow + L["forearm"] * direction(shoulder + angles[f"{side}_elbow"])
        hip = angles[f"{side}_hip"]
        knee = pelvis + L["thigh"] * direction(hip)
        limbs[f"{side}_knee"] = knee
        limbs[f"{side}_foot"] = knee + L["shin"] * direction(hip + angles[f"{side}_knee"])
    named = {"head": head, "neck": neck, "pelvis": pelvis, **limbs}
    joints = np.stack([named[name] for name in POSTURE_JOINTS], axis=1)
    lowest_foot = np.maximum(named["left_foot"][:, 1], named["right_foot"][:, 1])
    offset = np.stack([centre_x, _GROUND - lowest_foot], axis=-1)
    return joints + offset[:, None, :]


def _render_stick_figures(joints, size, thickness):
    """Draw bones as thick anti-aliased segments and the head as a disc: (T, size, size) in [0, 1].

    Each pixel's intensity is its coverage, approximated from the distance d (in pixels)
    between its centre and the nearest shape as clip(half_width - d + 1/2, 0, 1).
    """
    centres = (np.arange(size) + 0.5) / size
    py, px = np.meshgrid(centres, centres, indexing="ij")
    points = np.stack([px, py], axis=-1)[None, :, :, None, :]
    starts = joints[:, None, None, [a for a, _ in _POSTURE_BONES], :]
    ends = joints[:, None, None, [b for _, b in _POSTURE_BONES], :]
    bone = ends - starts
    along = np.sum((points - starts) * bone, axis=-1) / np.sum(bone * bone, axis=-1)
    nearest = starts + np.clip(along, 0.0, 1.0)[..., None] * bone
    bone_distance = np.linalg.norm(points - nearest, axis=-1).min(axis=-1)
    head = joints[:, None, None, 0, :]
    head_distance = np.maximum(np.linalg.norm(points[..., 0, :] - head, axis=-1) - _HEAD_RADIUS, 0.0)
    distance_pixels = np.minimum(bone_distance, head_distance) * size
    return np.clip(thickness / 2.0 - distance_pixels + 0.5, 0.0, 1.0)


def make_postures(n_sequences=4, n_frames=60, size=32, seed=0, thickness=None):
    """Synthesise a stick figure moving through periodic motions; joint positions -> image.

    Parameters
    ----------
    n_sequences : int, default 4
        Number of sequences; the motions cycle walk, wave, squat, jumping jack, each
        sequence with its own amplitude, speed, phase and horizontal drift.
    n_frames : int, default 60
        Frames per sequence, >= 2.
    size : int, default 32
        Images are size x size pixels.
    seed : int, default 0
        Seed of the NumPy Generator that draws the motion parameters.
    thickness : float, optional
        Line width in pixels; default ``max(1.5, size / 16)``.

    Returns
    -------
    SequenceData
        ``X`` (n, 22): the (x, y) image coordinates, in [0, 1] with y pointing down, of the
        11 joints named in :data:`POSTURE_JOINTS`, in that order (x0, y0, x1, y1, ...);
        ``Y`` (n, size, size) the rendered figure, white on black, in [0, 1];
        ``t`` the frame's relative position in its sequence.

    Notes
    -----
    Bones: head-neck, neck-pelvis, two arms (neck-elbow-hand) and two legs
    (pelvis-knee-foot); the head is a disc. Angles follow
    :math:`\\theta(t) = \\theta_0 + a \\, g(2 \\pi c t + \\varphi)` with g a sine or a
    raised cosine, c in [1, 2] cycles per sequence, so motions are smooth and periodic.
    The figure stands on a fixed ground line (its lower foot touches it), so a squat
    lowers the whole body. Lines are anti-aliased from the distance of each pixel centre
    to the nearest segment.
    """
    n_sequences, n_frames, size = int(n_sequences), int(n_frames), int(size)
    if n_sequences < 1 or n_frames < 2 or size < 8:
        raise ValueError(
            f"need n_sequences >= 1, n_frames >= 2 and size >= 8; got {n_sequences}, {n_frames}, {size}"
        )
    if thickness is None:
        thickness = max(1.5, size / 16.0)
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n_frames)
    joint_rows, images = [], []
    for sequence in range(n_sequences):
        motion = _MOTIONS[sequence % len(_MOTIONS)]
        cycles = rng.uniform(1.0, 2.0)
        phase = 2.0 * np.pi * cycles * t + rng.uniform(0.0, 2.0 * np.pi)
        amplitude = rng.uniform(0.7, 1.0)
        angles = _posture_angles(motion, phase, amplitude, rng)
        drift = rng.uniform(-0.06, 0.06)
        centre_x = 0.5 + drift * (2.0 * t - 1.0)
        joints = _posture_joints(angles, centre_x)
        joint_rows.append(joints.reshape(n_frames, -1))
        images.append(_render_stick_figures(joints, size, thickness))
    t_all = np.tile(t, n_sequences)
    return SequenceData(
        X=np.concatenate(joint_rows, axis=0),
        Y=np.concatenate(images, axis=0),
        groups=np.repeat(np.arange(n_sequences), n_frames),
        t=t_all,
        name="postures",
    )


_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _require_file(path, what):
    """Return ``path`` as a Path, or raise DataError if it is not an existing file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist or is not a file; check the path")
    return path


def load_idx(path, scale=True, flatten=True):
    """Read an array in the IDX format of MNIST and Fashion-MNIST, gzipped or not.

    Parameters
    ----------
    path : str or Path
        An IDX file (``train-images-idx3-ubyte``) or its gzip (``...ubyte.gz``); gzip is
        recognised by its content, not its name.
    scale : bool, default True
        Map uint8 images (files of 2 or more dimensions) to float64 in [0, 1] by dividing
        by 255. One-dimensional files of an integer type (labels) are returned as int64;
        everything else as float64.
    flatten : bool, default True
        Reshape images (n, rows, cols) to rows (n, rows * cols).

    Returns
    -------
    ndarray
        The data, with the shape recorded in the file (flattened as above).

    Notes
    -----
    An IDX file is a 4-byte magic number - two zero bytes, a type code (0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) and the number of
    dimensions - then one big-endian int32 per dimension, then the elements, big-endian,
    in row-major order.
    """
    path = _require_file(path, "IDX file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{str(path)!r} looks gzipped but cannot be decompressed ({error}); "
                            "re-download or gunzip it to check") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{str(path)!r} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'}, "
            "expected 0000 then a type code (08, 09, 0b, 0c, 0d, 0e) and a dimension count >= 1"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise DataError(f"{str(path)!r} is truncated: its header needs {header_bytes} bytes, "
                        f"found {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    for axis, length in enumerate(shape):
        if length < 1:
            raise DataError(f"{str(path)!r} has a corrupt header: dimension {axis} of shape {shape} "
                            f"is {length}, every dimension must be >= 1; re-download the file")
    expected = header_bytes + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{str(path)!r} is {problem}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"found {len(raw)}; re-download the file"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_bytes).reshape(shape)
    if ndim == 1 and dtype.kind in "iu":
        return data.astype(np.int64)
    if scale and dtype == np.uint8:
        data = data.astype(np.float64) / 255.0
    else:
        data = data.astype(np.float64)
    if flatten and ndim >= 3:
        data = data.reshape(shape[0], -1)
    return data


def load_npz(path, key=None, scale=True):
    """Read one array from a NumPy ``.npz`` archive as float64.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file (written by ``numpy.savez``).
    key : str, optional
        The name of the array in the archive; may be left out when it holds one array.
    scale : bool, default True
        Divide uint8 arrays by 255, mapping them to [0, 1].

    Returns
    -------
    ndarray of float64
        The array, in the shape it was saved with.
    """
    path = _require_file(path, "npz archive")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{str(path)!r} cannot be read as an npz archive ({error}); "
                        "check that it was written by numpy.savez and copied completely") from error
    with archive:
        if not hasattr(archive, "files"):
            raise DataError(f"{str(path)!r} holds a single array, not an npz archive; "
                            "load it with numpy.load")
        if key is None:
            if len(archive.files) != 1:
                raise DataError(f"{str(path)!r} holds {len(archive.files)} arrays "
                                f"{sorted(archive.files)}; name the one to load with key=")
            key = archive.files[0]
        if key not in archive.files:
            raise DataError(f"{str(path)!r} has no array {key!r}; the arrays present are "
                            f"{sorted(archive.files)}")
        try:
            data = archive[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise DataError(f"array {key!r} of {str(path)!r} cannot be read ({error}); the archive "
                            "is corrupt or holds Python objects; re-create it with numpy.savez "
                            "from a numeric array") from error
    if data.dtype.kind not in "biuf":
        raise DataError(f"array {key!r} of {str(path)!r} has dtype {data.dtype}, which is not real "
                        "numbers; save a bool, integer or float array")
    if scale and data.dtype == np.uint8:
        return data.astype(np.float64) / 255.0
    return data.astype(np.float64)


# Image modes read through NumPy rather than Pillow's 8-bit "L": the largest value each can
# be scaled from (a 16-bit greyscale PNG opens as "I;16" or, in older Pillow, as "I").
_WIDE_MODE_LIMITS = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0,
                     "I": 65535.0, "F": 1.0}


def _wide_grey_pixels(image, path):
    """A 16-bit, 32-bit integer or float image as float64 (H, W) in [0, 1], or DataError."""
    limit = _WIDE_MODE_LIMITS[image.mode]
    pixels = np.asarray(image, dtype=np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    if not (np.isfinite(pixels).all() and low >= 0.0 and high <= limit):
        raise DataError(f"{str(path)!r} is a mode {image.mode!r} image with values in [{low:g}, {high:g}]; "
                        f"it can be read only with values in [0, {limit:g}]; rescale it to that range "
                        "or save it as an 8-bit or 16-bit PNG")
    return pixels / limit


def _read_grey_image(path, size=None):
    """One image file as float64 (H, W) in [0, 1], greyscale, resized to size x size if given.

    Notes
    -----
    8-bit and colour images go through Pillow's "L" conversion (0..255, divided by 255).
    16-bit ("I;16*"; and "I") images are divided by 65535 and float ("F") images are taken
    as they are, both required to lie in [0, 1] after scaling; they are resized in float
    mode and clipped to [0, 1] (Lanczos overshoots at edges, as "L" clips it too).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in _WIDE_MODE_LIMITS:
                pixels = _wide_grey_pixels(image, path)
                if size is None or image.size == (size, size):
                    return pixels
                resized = Image.fromarray(pixels.astype(np.float32)).resize(
                    (size, size), Image.Resampling.LANCZOS)
                return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
            grey = image.convert("L")
            if size is not None:
                grey = grey.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(grey, dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{str(path)!r} cannot be read as an image ({error}); "
                        "remove it or convert it to PNG") from error


def load_image_folder(path, size, pattern="*.png"):
    """Read every image in a folder as a greyscale row vector.

    Parameters
    ----------
    path : str or Path
        The folder.
    size : int
        Images are resized (Lanczos) to size x size.
    pattern : str, default "*.png"
        Glob pattern of the files to read, in sorted file-name order.

    Returns
    -------
    ndarray of float64, shape (n, size * size)
        One image per row, in [0, 1].
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"image folder {str(folder)!r} does not exist or is not a folder")
    size = int(size)
    if size < 1:
        raise ValueError(f"size={size} must be a positive number of pixels")
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise DataError(f"image folder {str(folder)!r} has no files matching {pattern!r}; "
                        "check the folder or pass another pattern")
    return np.stack([_read_grey_image(f, size).ravel() for f in files])


def load_regression_folder(path, size=None, name=None):
    """Read users' own regression pairs: a folder of images plus ``inputs.csv``.

    Parameters
    ----------
    path : str or Path
        A folder holding the images and ``inputs.csv``. The CSV has a header
        ``file,x1,...,xp[,group]``: the image's file name relative to the folder, p >= 1
        numeric inputs, and optionally an integer sequence id in a column named ``group``.
        It is read as UTF-8, with or without the byte-order mark Excel writes; blank lines
        are skipped, and errors name the line of the file.
    size : int, optional
        Resize every image to size x size; without it all images must have one size.
    name : str, optional
        Name of the data set; default the folder's name.

    Returns
    -------
    SequenceData
        ``X`` (n, p) from the input columns, ``Y`` (n, H, W) greyscale in [0, 1],
        ``groups`` from the group column (all 0 without one), and ``t`` the row's position
        within its group in CSV order, scaled to [0, 1] (0 for a group of one row).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"regression folder {str(folder)!r} does not exist or is not a folder")
    csv_path = _require_file(folder / "inputs.csv", "input table")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            numbered = [(reader.line_num, row) for row in reader
                        if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError as error:
        raise DataError(f"{str(csv_path)!r} is not UTF-8 text ({error}); save it as UTF-8 CSV") from error
    line_numbers = [line for line, _ in numbered]
    rows = [row for _, row in numbered]
    if len(rows) < 2:
        raise DataError(f"{str(csv_path)!r} has no data rows; it needs a header "
                        "'file,x1,...,xp[,group]' and one row per image")
    header = [cell.strip() for cell in rows[0]]
    has_group = header[-1].lower() == "group"
    input_names = header[1:-1] if has_group else header[1:]
    if header[0].lower() != "file" or not input_names:
        raise DataError(f"{str(csv_path)!r} has header {header}; expected 'file,x1,...,xp[,group]' "
                        "with at least one input column")
    files, inputs, groups = [], [], []
    for line, row in zip(line_numbers[1:], rows[1:]):
        if len(row) != len(header):
            raise DataError(f"{str(csv_path)!r} line {line} has {len(row)} columns but the header "
                            f"has {len(header)}; fix the row")
        files.append(row[0].strip())
        values = row[1:-1] if has_group else row[1:]
        try:
            inputs.append([float(v) for v in values])
        except ValueError:
            raise DataError(f"{str(csv_path)!r} line {line} has a non-numeric input among {values}; "
                            "inputs must be numbers") from None
        if has_group:
            try:
                groups.append(int(row[-1]))
            except ValueError:
                raise DataError(f"{str(csv_path)!r} line {line} has group {row[-1]!r}; "
                                "groups must be integers") from None
    X = np.asarray(inputs, dtype=np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad_rows.size:
        raise DataError(f"{str(csv_path)!r} has {bad_rows.size} rows with NaN or infinite inputs "
                        f"(first on line {line_numbers[bad_rows[0] + 1]}); remove or impute them")
    groups = np.asarray(groups if has_group else np.zeros(len(files)), dtype=np.int64)
    images = []
    for file_name in files:
        image_path = folder / file_name
        if not image_path.is_file():
            raise DataError(f"{str(csv_path)!r} names {file_name!r}, which is not in "
                            f"{str(folder)!r}; add the image or remove its row")
        images.append(_read_grey_image(image_path, None if size is None else int(size)))
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError(f"the images have different sizes {sorted(shapes)}; pass size= to resize "
                        "them all to one square size")
    t = np.zeros(len(files))
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if members.size > 1:
            t[members] = np.arange(members.size) / (members.size - 1)
    return SequenceData(X=X, Y=np.stack(images), groups=groups, t=t,
                        name=name if name is not None else folder.name)
