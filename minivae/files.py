"""Every file minivae writes goes through here: atomically, or not at all.

A file is written to a temporary file beside its target, flushed, ``fsync``-ed and
``os.replace``-d over it; on any exception the temporary file is removed and the target is
left as it was, so an interrupted run never leaves a half-written checkpoint, report or
figure.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path


def check_writable(path) -> Path:
    """``path`` as a Path, if a file can be created there; else an OSError that says why.

    The nearest existing folder above ``path`` must be a folder this process may write in
    (missing folders below it are created by :func:`atomic_write`). Call it before long
    work whose result goes to ``path``, so that a bad path fails at once.

    Raises
    ------
    IsADirectoryError
        If ``path`` is a folder.
    NotADirectoryError
        If a component above ``path`` is a regular file.
    PermissionError
        If the nearest existing folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(
            f"cannot write {str(path)!r}: {str(parent)!r} is a regular file, not a folder; "
            "choose another output path or move that file"
        )
    refusal = None
    if not os.access(parent, os.W_OK | os.X_OK):
        refusal = "is not writable"
    else:  # permissions can allow what the file system refuses (a read-only mount, /proc)
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        except OSError as exc:
            refusal = f"refuses new files ({exc.strerror})"
        else:
            os.close(fd)
            os.unlink(probe)
    if refusal:
        raise PermissionError(
            f"cannot write {str(path)!r}: the folder {str(parent)!r} {refusal}; choose "
            "a writable location or change the folder's permissions"
        )
    return path


def atomic_write(path, write) -> Path:
    """Create or replace the file ``path`` atomically: ``write(binary_file)`` fills a
    temporary file ``.<name>.<random hex>.tmp`` beside it, which is flushed, ``fsync``-ed
    and ``os.replace``-d over ``path``; on any exception the temporary file is removed
    and ``path`` is left as it was. Parent folders are created. The file gets mode
    ``0o666`` minus the umask, as ``open`` would give it. Every file minivae writes goes
    through here (checkpoints, JSON and Markdown reports, figures, benchmark tables).
    """
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp_name, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            write(tmp_file)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise
    return path


def write_text(path, text: str) -> Path:
    """:func:`atomic_write` of ``text``, UTF-8 encoded."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path, obj) -> Path:
    """:func:`atomic_write` of ``obj`` as indented JSON (floats of NumPy types included)."""
    return write_text(path, json.dumps(obj, indent=2, default=float) + "\n")
