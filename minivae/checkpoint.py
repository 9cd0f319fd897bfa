"""Checkpoints: named arrays plus JSON metadata in one ``.npz`` file, written atomically.

A checkpoint is an uncompressed NumPy ``.npz`` archive (``np.savez``). Beside the user's
arrays it holds one more entry, ``__meta__``: a 0-d unicode array containing a JSON object

.. code-block:: json

    {"format_version": 1, "kind": "VAE", "minivae_version": "0.1.0", ...meta}

Nothing is pickled, on writing or on reading (``allow_pickle=False``), so loading a file
from an untrusted source cannot run code.

Writing is atomic: the archive goes to a temporary file ``.<name>.<random hex>.tmp`` in
the destination directory, is flushed and ``fsync``-ed, and then ``os.replace``-d over the
destination, so any previous checkpoint at that path stays intact until the new one is
complete. An exception part-way removes the temporary file; a killed process (SIGKILL,
power loss) can leave it next to the checkpoint, where :func:`load_checkpoint`, which reads
only the path it is given, ignores it. The file is created with mode ``0o666`` minus the
process umask, as ``open`` would create it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .files import atomic_write

FORMAT_VERSION = 1
"""The checkpoint layout this minivae writes and reads."""

META_KEY = "__meta__"

RESERVED_ARRAY_NAMES = (META_KEY, "file", "allow_pickle")
"""Array names save_checkpoint refuses: the metadata entry, and ``np.savez``'s own keyword
parameters, which would swallow an array passed under that name."""


def _minivae_version() -> str:
    from . import __version__

    return __version__


def save_checkpoint(path, arrays: dict, meta: dict, kind: str) -> None:
    """Write ``arrays`` and ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Parent directories are created. NumPy does not append ``.npz``
        here: the file is written exactly at ``path``.
    arrays : dict of str -> array_like
        The arrays to store, by name. Names may not be one of
        :data:`RESERVED_ARRAY_NAMES` (``"__meta__"``, ``"file"``, ``"allow_pickle"``).
        Host (NumPy) arrays; convert device arrays with ``backend.to_host`` first.
    meta : dict
        JSON-serialisable metadata (model configuration, epoch, history, ...). Its keys
        ``"format_version"``, ``"kind"`` and ``"minivae_version"`` are reserved.
    kind : str
        What the file holds, e.g. ``"VAE"`` or ``"GPRegressor"``; :func:`load_checkpoint`
        checks it.

    Raises
    ------
    ValueError
        If an array name or a meta key is reserved, or an array has
        dtype ``object`` (which would need pickle).
    TypeError
        If ``meta`` is not JSON-serialisable.
    OSError
        If the file cannot be written; any previous file at ``path`` is then unchanged.
    """
    path = Path(path)
    clashing = [name for name in RESERVED_ARRAY_NAMES if name in arrays]
    if clashing:
        raise ValueError(
            f"array names {clashing} are reserved ({META_KEY!r} holds the checkpoint metadata, "
            "'file' and 'allow_pickle' are np.savez's own parameters); rename those arrays"
        )
    reserved = {"format_version", "kind", "minivae_version"} & set(meta)
    if reserved:
        raise ValueError(
            f"meta keys {sorted(reserved)} are reserved and filled in by save_checkpoint; "
            "remove them"
        )
    host_arrays = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype == object:
            raise ValueError(
                f"array {name!r} has dtype object, which cannot be stored without pickle; "
                "convert it to a numeric or string array"
            )
        host_arrays[name] = value
    full_meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "minivae_version": _minivae_version(),
        **meta,
    }
    meta_json = json.dumps(full_meta)

    named = {**host_arrays, META_KEY: np.array(meta_json)}
    atomic_write(path, lambda handle: np.savez(handle, **named))  # type: ignore[arg-type]


def load_checkpoint(path, kind: str | None = None) -> tuple[dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike
    kind : str or None
        The kind the caller expects (e.g. ``"VAE"``); None accepts any.

    Returns
    -------
    arrays : dict of str -> numpy.ndarray
        Every stored array except the metadata, loaded into memory.
    meta : dict
        The metadata, including ``format_version``, ``kind`` and ``minivae_version``.

    Raises
    ------
    CheckpointError
        If the file is missing, is not an ``.npz`` archive (corrupt or truncated), has no
        metadata, was written in another format version, or holds another kind of model.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {str(path)!r} is a directory, not a file")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # any failure to open means the bytes are not an .npz archive
        raise CheckpointError(
            f"{str(path)!r} is not a readable minivae checkpoint (corrupt, truncated or not an "
            f".npz archive: {type(exc).__name__}: {exc}); re-save it or use an earlier checkpoint"
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(
            f"{str(path)!r} holds a single .npy array, not a minivae checkpoint (.npz archive)"
        )
    with archive:
        if META_KEY not in archive.files:
            raise CheckpointError(
                f"{str(path)!r} is an .npz archive but has no {META_KEY!r} entry, so it was "
                "not written by minivae.checkpoint.save_checkpoint"
            )
        try:
            meta_json = str(archive[META_KEY][()])
            arrays = {name: archive[name] for name in archive.files if name != META_KEY}
        except Exception as exc:  # a damaged member: bad CRC, short read, bad .npy header
            raise CheckpointError(
                f"{str(path)!r} is a damaged minivae checkpoint ({type(exc).__name__}: {exc}); "
                "re-save it or use an earlier checkpoint"
            ) from exc
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{str(path)!r}: the {META_KEY!r} entry is not valid JSON ({exc}); the file is corrupt"
        ) from exc
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{str(path)!r}: the {META_KEY!r} entry is a JSON {type(meta).__name__}, "
            "not an object; the file is corrupt"
        )
    found_version = meta.get("format_version")
    if found_version != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format_version {found_version!r}, but this minivae "
            f"({_minivae_version()}) reads format_version {FORMAT_VERSION}; load it with the "
            f"minivae version that wrote it (minivae_version={meta.get('minivae_version')!r})"
        )
    found_kind = meta.get("kind")
    if kind is not None and found_kind != kind:
        raise CheckpointError(
            f"{str(path)!r}: this is a {found_kind} checkpoint, not a {kind} one; "
            f"load it with {found_kind}.load"
        )
    return arrays, meta
