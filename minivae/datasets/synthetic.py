"""Synthetic data sets, each a deterministic function of its ``seed``.

- :func:`make_swiss_roll`: the classic 2-D manifold rolled up in 3-D (for the VAE);
- :func:`make_image_sequences`: textured objects turning and moving over time;
- :func:`make_postures`: a stick figure whose joint positions are the input.
"""
from __future__ import annotations

import numpy as np

from .sequence import SequenceData


def _scale_columns_to_unit(X):
    """Affinely map each column of X (n, d) onto [0, 1]; constant columns become 0."""
    lo = X.min(axis=0)
    span = X.max(axis=0) - lo
    span[span == 0] = 1.0
    return (X - lo) / span


def make_swiss_roll(n: int, noise: float = 0.0, seed: int = 0,
                    return_t: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
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


def make_image_sequences(n_sequences: int = 6, n_frames: int = 48, size: int = 32,
                         seed: int = 0, supersample: int = 4) -> SequenceData:
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


def make_postures(n_sequences: int = 4, n_frames: int = 60, size: int = 32, seed: int = 0,
                  thickness: float | None = None) -> SequenceData:
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
