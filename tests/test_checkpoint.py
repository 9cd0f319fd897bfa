"""Checkpoints: round trip, atomic writes, and a clear CheckpointError for every bad file."""

import json
import os
import stat
import zipfile

import numpy as np
import pytest

from minivae import checkpoint as ckpt
from minivae.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from minivae.errors import CheckpointError


def _example_arrays(rng):
    return {
        "enc.W": rng.standard_normal((5, 3)).astype(np.float32),
        "enc.b": rng.standard_normal(3),
        "count": np.array(7, dtype=np.int64),
        "labels": np.array(["a", "bc"]),
    }


def test_round_trip_preserves_arrays_and_meta(tmp_path, rng):
    arrays = _example_arrays(rng)
    meta = {"config": {"latent_dim": 2, "hidden": [4, 4]}, "epoch": 3, "loss": 1.5}
    path = tmp_path / "deep" / "er" / "model.npz"
    save_checkpoint(path, arrays, meta, kind="VAE")

    loaded, loaded_meta = load_checkpoint(path, kind="VAE")
    assert set(loaded) == set(arrays)
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded[name], value)
    assert loaded_meta["format_version"] == FORMAT_VERSION
    assert loaded_meta["kind"] == "VAE"
    assert loaded_meta["minivae_version"]
    for key, value in meta.items():
        assert loaded_meta[key] == value


def test_file_is_plain_npz_with_json_meta_and_no_pickle(tmp_path, rng):
    path = tmp_path / "m.npz"
    save_checkpoint(path, _example_arrays(rng), {"epoch": 1}, kind="GPRegressor")
    assert path.exists() and not (tmp_path / "m.npz.npz").exists()
    with zipfile.ZipFile(path) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["__meta__"][()]))
    assert meta["kind"] == "GPRegressor" and meta["epoch"] == 1


def test_kind_none_accepts_any_kind(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"x": np.zeros(2)}, {}, kind="VARegressor")
    _, meta = load_checkpoint(path)
    assert meta["kind"] == "VARegressor"


class _ExplodingArray:
    """Array-like whose conversion fails, as if serialisation broke down mid-write."""

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("disk full (simulated)")


def test_failed_write_leaves_old_file_intact_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save_checkpoint(path, {"W": np.arange(6.0)}, {"epoch": 1}, kind="VAE")
    before = path.read_bytes()

    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        real_savez(file, **arrays)
        file.write(b"partial garbage")
        raise OSError("disk full (simulated, after the archive was partly written)")

    monkeypatch.setattr(ckpt.np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"W": np.arange(6.0) + 1}, {"epoch": 2}, kind="VAE")
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    arrays, meta = load_checkpoint(path, kind="VAE")
    np.testing.assert_array_equal(arrays["W"], np.arange(6.0))
    assert meta["epoch"] == 1


def test_array_that_cannot_be_serialised_leaves_old_file_intact(tmp_path):
    path = tmp_path / "model.npz"
    save_checkpoint(path, {"W": np.ones(3)}, {"epoch": 1}, kind="VAE")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(path, {"W": np.ones(3), "bad": _ExplodingArray()}, {}, kind="VAE")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_unserialisable_meta_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "model.npz"
    with pytest.raises(TypeError):
        save_checkpoint(path, {"W": np.ones(3)}, {"when": object()}, kind="VAE")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "arrays, meta, match",
    [
        ({"__meta__": np.ones(1)}, {}, "reserved"),
        ({"allow_pickle": np.ones(1), "W": np.ones(1)}, {}, "reserved"),
        ({"file": np.ones(1)}, {}, "reserved"),
        ({"W": np.ones(1)}, {"kind": "GP"}, "reserved"),
        ({"W": np.array([{"a": 1}], dtype=object)}, {}, "dtype object"),
    ],
)
def test_save_rejects_reserved_names_and_object_arrays(tmp_path, arrays, meta, match):
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "m.npz", arrays, meta, kind="VAE")
    assert os.listdir(tmp_path) == []


def test_checkpoint_file_mode_follows_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "m.npz", {"W": np.ones(2)}, {}, kind="VAE")
        os.umask(0o077)
        save_checkpoint(tmp_path / "private.npz", {"W": np.ones(2)}, {}, kind="VAE")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "private.npz").st_mode) == 0o600


def test_temporary_file_left_by_a_killed_writer_is_ignored(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"W": np.arange(3.0)}, {"epoch": 1}, kind="VAE")
    # what a writer killed mid-np.savez leaves: a partial archive under the temporary name
    (tmp_path / ".m.npz.0123456789abcdef0123456789abcdef.tmp").write_bytes(b"PK\x03\x04partial")
    arrays, meta = load_checkpoint(path, kind="VAE")
    np.testing.assert_array_equal(arrays["W"], np.arange(3.0))
    assert meta["epoch"] == 1
    save_checkpoint(path, {"W": np.zeros(3)}, {"epoch": 2}, kind="VAE")
    assert load_checkpoint(path)[1]["epoch"] == 2


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")


def test_truncated_file(tmp_path, rng):
    path = tmp_path / "m.npz"
    save_checkpoint(path, _example_arrays(rng), {}, kind="VAE")
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 30, 10):
        path.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="corrupt|damaged") as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)


def test_random_bytes(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(np.random.default_rng(3).bytes(4000))
    with pytest.raises(CheckpointError, match="not a readable minivae checkpoint"):
        load_checkpoint(path)


def test_damaged_member_is_reported(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"W": np.arange(100.0)}, {}, kind="VAE")
    data = bytearray(path.read_bytes())
    payload_at = data.index(np.arange(100.0).tobytes()[:16])
    data[payload_at + 40] ^= 0xFF  # flip bits inside W's data: the CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_single_npy_file(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.ones(3))
    with pytest.raises(CheckpointError, match="single .npy array"):
        load_checkpoint(path)


def test_npz_without_meta(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, W=np.ones(2))
    with pytest.raises(CheckpointError, match="no '__meta__' entry"):
        load_checkpoint(path)


def test_meta_that_is_not_json(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, W=np.ones(2), __meta__=np.array("{not json"))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_wrong_format_version_names_both_versions(tmp_path):
    path = tmp_path / "m.npz"
    meta = {"format_version": FORMAT_VERSION + 1, "kind": "VAE", "minivae_version": "9.9.9"}
    np.savez(path, W=np.ones(2), __meta__=np.array(json.dumps(meta)))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, kind="VAE")
    message = str(info.value)
    assert f"format_version {FORMAT_VERSION + 1}" in message
    assert f"reads format_version {FORMAT_VERSION}" in message
    assert "9.9.9" in message


def test_wrong_kind_says_how_to_load_it(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, {"x": np.ones(2)}, {}, kind="GPRegressor")
    with pytest.raises(CheckpointError, match="this is a GPRegressor checkpoint") as info:
        load_checkpoint(path, kind="VAE")
    assert "load it with GPRegressor.load" in str(info.value)


def test_saving_under_a_regular_file_names_the_file_and_leaves_it(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(NotADirectoryError, match=r"'.*notes.txt' is a regular file, not a "
                                                 r"folder; choose another output path"):
        save_checkpoint(blocker / "run" / "model.npz", {"x": np.ones(2)}, {}, kind="VAE")
    assert blocker.read_text() == "a file, not a folder"
    with pytest.raises(IsADirectoryError, match="it is a folder; give a file name"):
        save_checkpoint(tmp_path, {"x": np.ones(2)}, {}, kind="VAE")


def test_saving_to_a_read_only_folder_says_so_before_writing(tmp_path, monkeypatch):
    from minivae import files

    # os.access stands in for a read-only mount, which a test running as root cannot make.
    monkeypatch.setattr(files.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match=r"the folder '.*' is not writable; choose a "
                                              r"writable location"):
        save_checkpoint(tmp_path / "model.npz", {"x": np.ones(2)}, {}, kind="VAE")
    assert list(tmp_path.iterdir()) == []
