"""Tests of minivae.datasets: embedded and synthetic sets, SequenceData splits, file loaders."""

import gzip

import numpy as np
import pytest

from minivae.datasets import (
    POSTURE_JOINTS,
    SequenceData,
    describe,
    load_digits,
    load_idx,
    load_image_folder,
    load_npz,
    load_regression_folder,
    make_image_sequences,
    make_postures,
    make_swiss_roll,
    read_xy_csv,
)
from minivae.errors import DataError


def test_load_digits_shape_range_and_labels():
    X, y = load_digits(return_labels=True)
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.shape == (1797,) and set(np.unique(y)) == set(range(10))
    np.testing.assert_array_equal(load_digits(), X)
    # All pixel values are multiples of 1/16 (the original counts 0..16).
    np.testing.assert_array_equal(X * 16, np.round(X * 16))


def test_swiss_roll_is_scaled_seeded_and_on_the_spiral():
    X, t = make_swiss_roll(500, seed=3, return_t=True)
    assert X.shape == (500, 3) and X.dtype == np.float64
    np.testing.assert_array_equal(X.min(axis=0), 0.0)
    np.testing.assert_array_equal(X.max(axis=0), 1.0)
    assert t.min() >= 1.5 * np.pi and t.max() <= 4.5 * np.pi
    np.testing.assert_array_equal(make_swiss_roll(500, seed=3), X)
    assert not np.array_equal(make_swiss_roll(500, seed=4), X)
    # Undo the per-column scaling with the spiral's extremes: x = t cos t, z = t sin t.
    raw_x, raw_z = t * np.cos(t), t * np.sin(t)
    np.testing.assert_allclose(X[:, 0], (raw_x - raw_x.min()) / np.ptp(raw_x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(X[:, 2], (raw_z - raw_z.min()) / np.ptp(raw_z), rtol=1e-12, atol=1e-15)


def test_swiss_roll_noise_moves_points_off_the_spiral():
    clean, t = make_swiss_roll(200, seed=0, return_t=True)
    noisy, t_noisy = make_swiss_roll(200, noise=0.5, seed=0, return_t=True)
    np.testing.assert_array_equal(t, t_noisy)
    assert not np.allclose(clean, noisy)
    with pytest.raises(ValueError, match="noise"):
        make_swiss_roll(10, noise=-1.0)


@pytest.fixture(scope="module")
def sequences():
    return make_image_sequences(n_sequences=3, n_frames=20, size=16, seed=1)


def test_image_sequences_shapes_ranges_and_determinism(sequences):
    d = sequences
    assert d.X.shape == (60, 1) and d.Y.shape == (60, 16, 16)
    np.testing.assert_array_equal(d.X[:, 0], d.t)
    np.testing.assert_array_equal(d.groups, np.repeat([0, 1, 2], 20))
    assert d.Y.min() >= 0.0 and d.Y.max() <= 1.0
    again = make_image_sequences(n_sequences=3, n_frames=20, size=16, seed=1)
    np.testing.assert_array_equal(again.Y, d.Y)
    assert not np.array_equal(make_image_sequences(3, 20, 16, seed=2).Y, d.Y)


def test_image_sequences_move_smoothly_and_are_anti_aliased(sequences):
    Y = sequences.Y.reshape(3, 20, -1)
    step = np.abs(np.diff(Y, axis=1)).mean(axis=2)
    far = np.abs(Y[:, :1] - Y[:, 10:11]).mean(axis=2)
    assert (step > 0).all(), "every frame differs from the previous one"
    assert (step.max(axis=1) < far[:, 0]).all(), "consecutive frames are closer than distant ones"
    # Supersampling gives partial-coverage pixels on the edges, not only 0 or the texture levels.
    partial = (sequences.Y > 0.02) & (sequences.Y < 0.4)
    assert partial.any()
    # The dark background covers the border.
    assert sequences.Y[:, 0, :].max() < 0.05


def test_image_sequences_default_set_matches_documented_size():
    d = make_image_sequences()
    assert d.Y.shape == (6 * 48, 32, 32) and d.n_groups == 6


def test_postures_inputs_are_joint_coordinates_of_the_drawn_figure():
    d = make_postures(n_sequences=4, n_frames=12, size=24, seed=0)
    assert d.X.shape == (48, 2 * len(POSTURE_JOINTS)) and d.Y.shape == (48, 24, 24)
    assert d.X.min() >= 0.0 and d.X.max() <= 1.0
    assert d.Y.min() >= 0.0 and d.Y.max() <= 1.0
    np.testing.assert_array_equal(make_postures(4, 12, 24, seed=0).Y, d.Y)
    # Every joint is drawn: the centre of the pixel holding it is at most sqrt(2)/2 pixels
    # away, so its coverage is at least thickness/2 + 1/2 - sqrt(2)/2 (thickness 1.5 here).
    cols = np.clip((d.X[:, 0::2] * 24).astype(int), 0, 23)
    rows = np.clip((d.X[:, 1::2] * 24).astype(int), 0, 23)
    under_joints = d.Y[np.arange(48)[:, None], rows, cols]
    assert under_joints.min() >= 0.75 + 0.5 - np.sqrt(0.5)
    assert np.median(under_joints) == 1.0
    # Anti-aliasing: some pixels are partly covered.
    assert ((d.Y > 0.05) & (d.Y < 0.95)).any()
    # Bone lengths are constant within a sequence (rigid kinematics), e.g. left forearm.
    joints = d.X.reshape(48, -1, 2)
    elbow, hand = POSTURE_JOINTS.index("left_elbow"), POSTURE_JOINTS.index("left_hand")
    forearm = np.linalg.norm(joints[:, hand] - joints[:, elbow], axis=1)
    np.testing.assert_allclose(forearm, forearm[0], rtol=1e-12)
    # The four sequences are four different motions: their mean images differ.
    means = d.Y.reshape(4, 12, -1).mean(axis=1)
    assert np.min([np.abs(means[i] - means[j]).mean() for i in range(4) for j in range(i)]) > 1e-3


def _toy(lengths, shuffle_seed=None):
    groups = np.concatenate([np.full(n, g) for g, n in enumerate(lengths)])
    t = np.concatenate([np.linspace(0, 1, n) if n > 1 else [0.0] for n in lengths])
    order = np.arange(groups.size)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(groups.size)
    return SequenceData(X=t[order, None], Y=np.zeros((groups.size, 2, 2)), groups=groups[order],
                        t=t[order], name="toy")


def test_interpolation_split_holds_out_frames_between_anchors():
    d = _toy([13, 9, 2], shuffle_seed=0)
    train, test = d.split("interpolation", n_anchor_every=4)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(d.n))
    for g in range(3):
        members = np.flatnonzero(d.groups == g)
        position = np.argsort(np.argsort(d.t[members]))
        held = np.isin(members, test)
        expected = (position % 4 == 0) & (position > 0) & (position < members.size - 1)
        np.testing.assert_array_equal(held, expected)
        if held.any():
            train_t = d.t[members[~held]]
            for value in d.t[members[held]]:
                assert train_t.min() < value < train_t.max()
    assert test.size == 2 + 1  # positions 4, 8 of 13; 4 of 9; none of 2


def test_extrapolation_split_holds_out_the_end_of_each_sequence():
    d = _toy([20, 8], shuffle_seed=1)
    train, test = d.split("extrapolation", holdout=0.25)
    for g, n_held in ((0, 5), (1, 2)):
        members = np.flatnonzero(d.groups == g)
        held_t = d.t[np.intersect1d(members, test)]
        kept_t = d.t[np.intersect1d(members, train)]
        assert held_t.size == n_held
        assert held_t.min() > kept_t.max()


def test_split_rejects_bad_arguments():
    d = _toy([10])
    with pytest.raises(ValueError, match="mode"):
        d.split("random")
    with pytest.raises(ValueError, match="n_anchor_every"):
        d.split("interpolation", n_anchor_every=1)
    with pytest.raises(ValueError, match="holdout"):
        d.split("extrapolation", holdout=1.5)
    with pytest.raises(DataError, match="holds out no example"):
        _toy([2, 2]).split("interpolation")


def test_subset_describe_and_validation():
    d = _toy([5, 5])
    part = d.subset([0, 2, 7])
    assert part.n == 3 and part.name == "toy"
    np.testing.assert_array_equal(part.groups, [0, 0, 1])
    assert "(10, 1)" in repr(d) and "2 sequences" in d.describe()
    assert "(3, 4)" in describe(np.zeros((3, 4)))
    with pytest.raises(DataError, match="rows"):
        SequenceData(X=np.zeros((3, 1)), Y=np.zeros((2, 2, 2)), groups=[0, 0, 0], t=[0, 0.5, 1])
    with pytest.raises(DataError, match=r"1 NaN.*row 1"):
        SequenceData(X=[[0.0], [np.nan]], Y=np.zeros((2, 2, 2)), groups=[0, 0], t=[0, 1])


def _idx_bytes(array, type_code):
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.tobytes()


def test_load_idx_images_labels_gzip_and_other_dtypes(tmp_path, rng):
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    (tmp_path / "img").write_bytes(_idx_bytes(images, 0x08))
    (tmp_path / "img.gz").write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
    for name in ("img", "img.gz"):
        loaded = load_idx(tmp_path / name)
        assert loaded.shape == (5, 12) and loaded.dtype == np.float64
        np.testing.assert_array_equal(loaded, images.reshape(5, 12) / 255.0)
    raw = load_idx(tmp_path / "img", scale=False, flatten=False)
    np.testing.assert_array_equal(raw, images)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    (tmp_path / "lab").write_bytes(_idx_bytes(labels, 0x08))
    np.testing.assert_array_equal(load_idx(tmp_path / "lab"), labels.astype(np.int64))
    floats = rng.standard_normal((3, 2)).astype(">f4")
    (tmp_path / "f").write_bytes(_idx_bytes(floats, 0x0D))
    np.testing.assert_array_equal(load_idx(tmp_path / "f"), floats.astype(np.float64))


def test_load_idx_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_idx(tmp_path / "missing")
    (tmp_path / "bad").write_bytes(b"\x00\x01\x08\x03rest")
    with pytest.raises(DataError, match="magic number is 00010803"):
        load_idx(tmp_path / "bad")
    full = _idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8), 0x08)
    (tmp_path / "short").write_bytes(full[:-5])
    with pytest.raises(DataError, match=f"needs {len(full)} bytes, found {len(full) - 5}"):
        load_idx(tmp_path / "short")


def test_load_npz(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.arange(6, dtype=np.uint8).reshape(2, 3), x=np.ones(2))
    np.testing.assert_array_equal(load_npz(tmp_path / "d.npz", "images"),
                                  np.arange(6).reshape(2, 3) / 255.0)
    assert load_npz(tmp_path / "d.npz", "x").dtype == np.float64
    with pytest.raises(DataError, match=r"no array 'y'.*\['images', 'x'\]"):
        load_npz(tmp_path / "d.npz", "y")
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "none.npz", "x")
    with pytest.raises(DataError, match="holds 2 arrays"):
        load_npz(tmp_path / "d.npz")
    np.savez(tmp_path / "one.npz", only=np.ones(3))
    np.testing.assert_array_equal(load_npz(tmp_path / "one.npz"), np.ones(3))
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(DataError, match=r"holds a single array \(a .npy file\), not an npz "
                                        r"archive; load it with numpy.load"):
        load_npz(tmp_path / "single.npy")


def _write_png(path, pixels):
    from PIL import Image

    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def test_load_image_folder_sorted_grey_resized(tmp_path):
    _write_png(tmp_path / "b.png", np.full((6, 6), 255))
    _write_png(tmp_path / "a.png", np.zeros((10, 10, 3)))
    (tmp_path / "notes.txt").write_text("not an image")
    X = load_image_folder(tmp_path, size=4)
    assert X.shape == (2, 16)
    np.testing.assert_array_equal(X[0], 0.0)
    np.testing.assert_array_equal(X[1], 1.0)
    with pytest.raises(DataError, match="no files matching"):
        load_image_folder(tmp_path, size=4, pattern="*.jpg")
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope", size=4)


def test_load_regression_folder(tmp_path):
    for i in range(5):
        _write_png(tmp_path / f"f{i}.png", np.full((8, 8), 50 * i))
    rows = ["file,x1,x2,group", "f0.png,0,1,0", "f1.png,1,2,0", "f2.png,2,3,0",
            "f3.png,3,4,1", "f4.png,4,5,1"]
    (tmp_path / "inputs.csv").write_text("\n".join(rows) + "\n")
    d = load_regression_folder(tmp_path, name="mine")
    assert d.X.shape == (5, 2) and d.Y.shape == (5, 8, 8) and d.name == "mine"
    np.testing.assert_array_equal(d.groups, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(d.t, [0, 0.5, 1, 0, 1])
    np.testing.assert_array_equal(d.Y[:, 0, 0], np.arange(5) * 50 / 255.0)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["file,x1", "f0.png,1", "missing.png,2"], "names 'missing.png'"),
        (["file,x1", "f0.png,1,2"], "has 3 columns but the header has 2"),
        (["file,x1", "f0.png,abc"], "non-numeric"),
        (["file,x1", "f0.png,1", "f0.png,nan"], r"NaN.*line 3"),
        (["file,x1"], "no data rows"),
        (["name,x1", "f0.png,1"], "expected 'file,x1"),
    ],
)
def test_load_regression_folder_errors(tmp_path, lines, message):
    _write_png(tmp_path / "f0.png", np.zeros((4, 4)))
    (tmp_path / "inputs.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_regression_folder(tmp_path)


def test_load_regression_folder_missing_csv(tmp_path):
    with pytest.raises(DataError, match="inputs.csv"):
        load_regression_folder(tmp_path)


def test_star_polygon_inside_test_matches_matplotlib_path(rng):
    from matplotlib.path import Path

    from minivae.datasets.synthetic import _inside_star_polygon

    radii = rng.uniform(0.3, 1.0, 7)
    angles = 2 * np.pi * np.arange(7) / 7
    polygon = Path(np.column_stack([radii * np.cos(angles), radii * np.sin(angles)]))
    points = rng.uniform(-1.0, 1.0, (4000, 2))
    np.testing.assert_array_equal(_inside_star_polygon(points[:, 0], points[:, 1], radii),
                                  polygon.contains_points(points))


def test_load_idx_one_dimensional_float_keeps_its_values(tmp_path):
    values = np.array([0.5, 1.7, -2.9, 3.99], dtype=">f8")
    (tmp_path / "f1d").write_bytes(_idx_bytes(values, 0x0E))
    loaded = load_idx(tmp_path / "f1d")
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, values.astype(np.float64))
    labels = np.array([3, -1, 7], dtype=">i4")
    (tmp_path / "i1d").write_bytes(_idx_bytes(labels, 0x0C))
    assert load_idx(tmp_path / "i1d").dtype == np.int64


@pytest.mark.parametrize("shape", [(0, 28, 28), (3, -1, 28), (5, 0)])
def test_load_idx_refuses_dimensions_below_one(tmp_path, shape):
    header = bytes([0, 0, 0x08, len(shape)]) + np.asarray(shape, dtype=">i4").tobytes()
    (tmp_path / "bad").write_bytes(header + bytes(10))
    axis = next(i for i, length in enumerate(shape) if length < 1)
    with pytest.raises(DataError, match=rf"dimension {axis} of shape .* is {shape[axis]}, every dimension must be >= 1"):
        load_idx(tmp_path / "bad")


def test_load_npz_refuses_corrupt_archives_and_non_real_arrays(tmp_path, rng):
    np.savez(tmp_path / "ok.npz", X=rng.random((50, 8)))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cannot be read as an npz archive"):
        load_npz(tmp_path / "truncated.npz")
    corrupted = bytearray(raw)
    corrupted[200] ^= 0xFF  # inside the stored array bytes: the member's CRC no longer matches
    (tmp_path / "crc.npz").write_bytes(bytes(corrupted))
    with pytest.raises(DataError, match="array 'X' of .* cannot be read .*CRC"):
        load_npz(tmp_path / "crc.npz")
    np.savez(tmp_path / "object.npz", X=np.array([1, "a", None], dtype=object))
    with pytest.raises(DataError, match="array 'X' of .* cannot be read .*[Oo]bject"):
        load_npz(tmp_path / "object.npz")
    np.savez(tmp_path / "complex.npz", X=np.array([1 + 2j, 3 + 4j]))
    with pytest.raises(DataError, match="dtype complex128, which is not real"):
        load_npz(tmp_path / "complex.npz")
    np.savez(tmp_path / "strings.npz", X=np.array(["a", "b"]))
    with pytest.raises(DataError, match="dtype <U1, which is not real"):
        load_npz(tmp_path / "strings.npz")


def _write_png16(path, pixels):
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels, dtype=np.uint16))
    assert image.mode == "I;16"
    image.save(path)


def test_load_image_folder_reads_16_bit_pngs_at_full_depth(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 8).round().astype(np.uint16), (8, 1))
    _write_png16(tmp_path / "ramp.png", ramp)
    np.testing.assert_array_equal(load_image_folder(tmp_path, size=8)[0], (ramp / 65535.0).ravel())
    # Resized, a 16-bit image of the 8-bit levels v * 257 (= v / 255 exactly after scaling)
    # matches the same 8-bit image resized in "L" mode to that mode's 1/255 quantisation.
    levels = np.random.default_rng(0).integers(0, 256, size=(12, 12))
    (tmp_path / "wide").mkdir()
    (tmp_path / "narrow").mkdir()
    _write_png16(tmp_path / "wide" / "a.png", levels * 257)
    _write_png(tmp_path / "narrow" / "a.png", levels)
    wide = load_image_folder(tmp_path / "wide", size=5)
    narrow = load_image_folder(tmp_path / "narrow", size=5)
    assert wide.min() >= 0.0 and wide.max() <= 1.0
    np.testing.assert_allclose(wide, narrow, rtol=0, atol=1 / 255)


def test_float_images_outside_their_range_are_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4, 4), 2.5, dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"mode 'F' image with values in \[2.5, 2.5\].*\[0, 1\]"):
        load_image_folder(tmp_path, size=4, pattern="*.tif")
    Image.fromarray(np.full((4, 4), 0.25, dtype=np.float32)).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image_folder(tmp_path, size=4, pattern="*.tif"), 0.25)


def test_load_regression_folder_reads_utf8_bom_and_reports_file_lines(tmp_path):
    for i in range(2):
        _write_png(tmp_path / f"f{i}.png", np.full((4, 4), 100 * i))
    (tmp_path / "inputs.csv").write_bytes("\ufefffile,x1,group\nf0.png,0.1,0\nf1.png,0.2,0\n".encode())
    d = load_regression_folder(tmp_path)
    np.testing.assert_array_equal(d.X[:, 0], [0.1, 0.2])
    (tmp_path / "inputs.csv").write_text("file,x1\n\n\nf0.png,0.1\n\nf1.png,nan\n")
    with pytest.raises(DataError, match="first on line 6"):
        load_regression_folder(tmp_path)
    (tmp_path / "inputs.csv").write_text("file,x1\n\n\n\nf0.png,0.1,7\n")
    with pytest.raises(DataError, match="line 5 has 3 columns"):
        load_regression_folder(tmp_path)


# ---- CSV tables (minivae train gp) ------------------------------------------------------


def test_read_xy_csv_header_and_values(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b,target\n1,2,3\n\n4,5.5,-6e-3\n")
    X, y, names = read_xy_csv(path)
    np.testing.assert_array_equal(X, [[1.0, 2.0], [4.0, 5.5]])
    np.testing.assert_array_equal(y, [3.0, -6e-3])
    assert names == ["a", "b", "target"]
    X, y, names = read_xy_csv(_write(tmp_path / "plain.csv", "1,2\n3,4\n"))
    assert names == ["x1", "y"] and X.shape == (2, 1)


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("x,y\n", "has a header but no data rows"),
    ("1\n2\n3\n", "has 1 column"),
    ("1,2\n3,4,5\n", "line 2 has 3 fields but the first row has 2"),
    ("a,b\n1,2\n3,oops\n", "line 3, b: 'oops' is not a finite number"),
    ("1,2\n3,nan\n", "line 2, column 2: 'nan' is not a finite number"),
])
def test_malformed_csv_is_a_data_error(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_xy_csv(_write(tmp_path / "bad.csv", text))


def test_missing_csv_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_xy_csv(tmp_path / "nope.csv")
