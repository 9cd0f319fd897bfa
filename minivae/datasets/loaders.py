"""Loaders for bundled and users' own data; nothing here touches the network.

- :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits;
- :func:`load_idx`, :func:`load_npz`, :func:`load_image_folder`: images for the VAE;
- :func:`load_regression_folder`: images plus an ``inputs.csv`` (a :class:`SequenceData`);
- :func:`read_xy_csv`: a CSV table, inputs then the target column (``minivae train gp``).
"""
from __future__ import annotations

import csv
import gzip
import math
import zipfile
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import DataError
from .sequence import SequenceData


def load_digits(return_labels: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
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


_IDX_DTYPES: dict[int, np.dtype] = {
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


def load_idx(path: str | PathLike[str], scale: bool = True, flatten: bool = True) -> np.ndarray:
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


def load_npz(path: str | PathLike[str], key: str | None = None, scale: bool = True) -> np.ndarray:
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
    if not hasattr(archive, "files"):
        raise DataError(f"{str(path)!r} holds a single array (a .npy file), not an npz "
                        "archive; load it with numpy.load, or save it with numpy.savez")
    with archive:
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


def load_image_folder(path: str | PathLike[str], size: int, pattern: str = "*.png") -> np.ndarray:
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


def load_regression_folder(path: str | PathLike[str], size: int | None = None,
                           name: str | None = None) -> SequenceData:
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


def _parse_float(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def read_xy_csv(path: str | PathLike[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a CSV file whose last column is the target y and the others the inputs X.

    A first row with any non-numeric field is taken as a header. Blank lines are skipped.

    Returns
    -------
    X : (n, d) ndarray
    y : (n,) ndarray
    names : list of str
        The column names (from the header, else ``x1..xd, y``).

    Raises
    ------
    DataError
        If the file is missing or empty, has fewer than 2 columns, rows of different
        lengths, non-numeric or non-finite values; the message gives the line.
    """
    try:
        with open(path, newline="") as handle:
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), start=1)
                    if row and any(field.strip() for field in row)]
    except FileNotFoundError as exc:
        raise DataError(f"CSV file {str(path)!r} does not exist; check the path") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{str(path)!r} is not a readable CSV text file: {exc}") from exc
    if not rows:
        raise DataError(
            f"CSV file {str(path)!r} is empty; it needs input columns and a last y column"
        )
    width = len(rows[0][1])
    header = None
    if any(_parse_float(field) is None for field in rows[0][1]):
        header = [field.strip() for field in rows[0][1]]
        rows = rows[1:]
    if width < 2:
        raise DataError(
            f"CSV file {str(path)!r} has {width} column; it needs at least one input column "
            "and the target y as the last column"
        )
    if not rows:
        raise DataError(f"CSV file {str(path)!r} has a header but no data rows")
    values = np.empty((len(rows), width))
    for index, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"{str(path)!r} line {line} has {len(row)} fields but the first row has "
                f"{width}; every row needs the same columns"
            )
        for column, field in enumerate(row):
            value = _parse_float(field)
            if value is None or not math.isfinite(value):
                name = header[column] if header else f"column {column + 1}"
                raise DataError(
                    f"{str(path)!r} line {line}, {name}: {field!r} is not a finite number; "
                    "fix or remove that row"
                )
            values[index, column] = value
    names = header or [f"x{k + 1}" for k in range(width - 1)] + ["y"]
    return values[:, :-1], values[:, -1], names
