"""PNG figures: training curves, image grids, the latent manifold, GP posteriors, comparisons.

Every function draws with matplotlib's object API (``matplotlib.figure.Figure``, never
pyplot, so no display or global state is involved) and returns the Figure. Given ``path``
it also writes the PNG atomically - to a temporary file in the target folder, then renamed
over ``path``; a failed save leaves neither a partial PNG nor the temporary file behind, and
missing parent folders are created. Given ``ax=`` (one-panel figures) or ``fig=`` (grids
and multi-panel figures: a Figure or SubFigure), it draws there instead of on a new Figure,
so the plot can be a panel of the user's own figure.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Union

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from numpy.typing import ArrayLike

from .files import atomic_write
from .errors import DataError
from .validation import host_array

BAND_Z = 1.959963984540054
"""Half-width of a central 95% Gaussian interval in standard deviations."""


#: Where a figure is written: a path, or None to only return the Figure.
OutPath = Union[str, "PathLike[str]", None]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure | SubFigure, Axes]:
    """The user's ``ax`` and its figure, or one Axes on a new Figure of ``figsize``."""
    if ax is None:
        fig = Figure(figsize=figsize)
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    return ax.figure, ax


def _canvas(fig: Figure | SubFigure | None, figsize: tuple[float, float]) -> Figure | SubFigure:
    """The user's Figure or SubFigure, or a new Figure of ``figsize``."""
    if fig is None:
        return Figure(figsize=figsize)
    if not isinstance(fig, (Figure, SubFigure)):
        raise TypeError(f"fig must be a matplotlib Figure or SubFigure, got {type(fig).__name__}")
    return fig


def _finish(fig, path: OutPath, own: bool) -> Figure:
    """Lay out a figure this module made, write it to ``path`` (if given) atomically
    (:func:`minivae.files.atomic_write`), and return the top-level Figure."""
    if own:
        fig.tight_layout()
    top = fig
    while isinstance(top, SubFigure):
        top = top.figure
    if path is not None:
        atomic_write(path, lambda handle: top.savefig(handle, format="png", dpi=100))
    return top


def _to_host(values):
    """A NumPy float64 array from NumPy or CuPy input."""
    return host_array(values).astype(np.float64, copy=False)


def _as_images(images, label="images"):
    """(n, H, W) float64 images from (n, H, W) or (n, D) with square D."""
    images = _to_host(images)
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise DataError(f"{label} have shape {images.shape}: rows of {images.shape[1]} values are "
                            "not square images; pass (n, H, W)")
        images = images.reshape(images.shape[0], side, side)
    if images.ndim != 3 or images.shape[0] == 0:
        raise DataError(f"{label} have shape {images.shape}; give a non-empty (n, H, W) or (n, H*W)")
    return images


def _intensity_limits(images):
    """Colour limits: [0, 1] for images inside it, else the data's own range."""
    return min(0.0, float(images.min())), max(1.0, float(images.max()))


#: Positive losses spanning more than this factor are drawn on a log axis.
LOG_AXIS_RATIO = 10.0

#: Blank space between the tiles of an image grid, as a fraction of a tile.
TILE_GAP = 0.08


def plot_history(history: Mapping[str, Sequence], path: OutPath = None,
                 title: str | None = None, ylabel: str | None = None, *,
                 ax: Axes | None = None) -> Figure:
    """Plot training (and validation) loss per epoch, with phase boundaries.

    The y-axis is logarithmic when the positive losses span more than a factor
    ``LOG_AXIS_RATIO``.

    Parameters
    ----------
    history : dict of lists
        ``"epoch"`` and ``"train_loss"`` (or ``"train_elbo"``), optionally ``"val_loss"``
        (``"val_elbo"``) and ``"phase"`` (one label per epoch; a vertical line marks each
        change). All lists have one entry per epoch; None entries (epochs without a
        validation pass) are left as gaps. Losses are in nats per example.
    path : str or Path, optional
        Output PNG; None only returns the Figure.
    title : str, optional
    ylabel : str, optional
        The y-axis label. By default ``"negative ELBO (nats/example)"`` for
        ``"train_loss"`` and ``"ELBO (nats/example)"`` for ``"train_elbo"``; give another
        for a loss that is not the ELBO (VAR's joint and fine-tuning phases).
    ax : matplotlib.axes.Axes, optional
        Draw on this Axes of the caller's figure instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (the top-level one when ``ax`` or ``fig`` was given).
    """
    if "epoch" not in history:
        raise DataError(f"history has no 'epoch' list; its keys are {sorted(history)}")
    if "train_loss" in history:
        prefix, default_ylabel = "loss", "negative ELBO (nats/example)"
    elif "train_elbo" in history:
        prefix, default_ylabel = "elbo", "ELBO (nats/example)"
    else:
        raise DataError(f"history has neither 'train_loss' nor 'train_elbo'; its keys are {sorted(history)}")
    epochs = np.asarray(history["epoch"], dtype=np.float64)
    curves = {}
    for split in ("train", "val"):
        key = f"{split}_{prefix}"
        if key not in history:
            continue
        if len(history[key]) != len(epochs):
            raise DataError(f"history {key!r} has {len(history[key])} entries but 'epoch' has "
                            f"{len(epochs)}; record one value per epoch")
        values = np.asarray(history[key], dtype=np.float64)
        if not np.isnan(values).all():
            curves[f"{split} {prefix}"] = values
    own = ax is None
    fig, ax = _axes(ax, (6.4, 4.0))
    for label, values in curves.items():
        ax.plot(epochs, values, marker="." if len(epochs) < 30 else None, label=label)
    phases = history.get("phase")
    if phases is not None:
        if len(phases) != len(epochs):
            raise DataError(f"history 'phase' has {len(phases)} entries but 'epoch' has {len(epochs)}")
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                boundary = 0.5 * (epochs[i - 1] + epochs[i])
                ax.axvline(boundary, color="0.5", linestyle="--", linewidth=1)
                ax.annotate(str(phases[i]), (boundary, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", fontsize=8, color="0.3")
    ax.set_xlabel("epoch")
    ax.set_ylabel(default_ylabel if ylabel is None else ylabel)
    plotted = np.concatenate([values[np.isfinite(values)] for values in curves.values()] or [np.empty(0)])
    if plotted.size and plotted.min() > 0 and plotted.max() > LOG_AXIS_RATIO * plotted.min():
        ax.set_yscale("log")  # the first epochs' losses would flatten the rest
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return _finish(fig, path, own)


def image_grid(images: ArrayLike, path: OutPath = None, nrow: int | None = None,
               titles: Sequence[str] | None = None, row_labels: Sequence[str] | None = None,
               cmap: str = "gray", *, fig: Figure | SubFigure | None = None) -> Figure:
    """Tile images into a grid.

    Parameters
    ----------
    images : array_like, shape (n, H, W) or (n, D) with D a perfect square
    path : str or Path, optional
        Output PNG; None only returns the Figure.
    nrow : int, optional
        Number of grid rows; the images fill them row by row, ceil(n / nrow) per row.
        Default ceil(sqrt(n)).
    titles : sequence of str, optional
        One title per image.
    row_labels : sequence of str, optional
        One label per grid row, written at the left.
    cmap : str, default "gray"
    fig : matplotlib.figure.Figure or SubFigure, optional
        Draw the panels into this empty figure instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (the top-level one when ``ax`` or ``fig`` was given).
    """
    images = _as_images(images)
    n = images.shape[0]
    n_rows = int(nrow) if nrow is not None else math.ceil(math.sqrt(n))
    if not 1 <= n_rows <= n:
        raise ValueError(f"nrow={nrow} grid rows for {n} images; use 1 <= nrow <= {n}")
    per_row = math.ceil(n / n_rows)
    if titles is not None and len(titles) != n:
        raise DataError(f"{len(titles)} titles for {n} images; give one title per image")
    if row_labels is not None and len(row_labels) != n_rows:
        raise DataError(f"{len(row_labels)} row labels for {n_rows} grid rows; give one per row")
    vmin, vmax = _intensity_limits(images)
    own = fig is None
    width, height = 1.2 * per_row + (1.0 if row_labels else 0.2), 1.2 * n_rows + 0.2
    fig = _canvas(fig, (width, height))
    # Fixed margins (tight_layout cannot place imshow tiles): room for the row labels at the
    # left and the titles above each row, and a TILE_GAP between tiles.
    gaps = {"wspace": TILE_GAP, "hspace": TILE_GAP + (0.25 if titles is not None else 0.0)}
    if own:
        gaps.update(left=(0.9 if row_labels else 0.1) / width, right=1 - 0.1 / width,
                    bottom=0.1 / height, top=1 - (0.3 if titles is not None else 0.1) / height)
    axes = fig.subplots(n_rows, per_row, squeeze=False, gridspec_kw=gaps)
    for index, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= n:
            ax.set_axis_off()
            continue
        ax.imshow(images[index], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[index]), fontsize=8)
    if row_labels is not None:
        for row, label in enumerate(row_labels):
            axes[row, 0].set_ylabel(str(label), fontsize=9)
    return _finish(fig, path, own=False)


def latent_manifold(decode: Callable, path: OutPath = None, n: int = 15,
                    image_shape: tuple[int, int] = (8, 8), *,
                    ax: Axes | None = None) -> Figure:
    """Decode a grid over a 2-D latent space (Kingma & Welling 2014, Fig. 4).

    Parameters
    ----------
    decode : callable
        Maps latent codes (m, 2) float64 to images (m, D), D = H * W (NumPy or CuPy).
    path : str or Path, optional
        Output PNG; None only returns the Figure.
    n : int, default 15
        Grid points per latent axis.
    image_shape : tuple of int, default (8, 8)
        (H, W) of a decoded image.
    ax : matplotlib.axes.Axes, optional
        Draw on this Axes of the caller's figure instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (the top-level one when ``ax`` or ``fig`` was given).

    Notes
    -----
    The coordinates are :math:`\\Phi^{-1}(p)` for p in ``linspace(0.05, 0.95, n)``: equal
    steps of prior probability mass under :math:`N(0, I)`, so the grid covers where the
    prior puts its mass. Columns vary :math:`z_1` left to right, rows :math:`z_2` bottom to top.
    """
    from scipy.stats import norm

    n = int(n)
    if n < 2:
        raise ValueError(f"n={n} grid points per axis is too few; use n >= 2")
    height, width = (int(s) for s in image_shape)
    coords = norm.ppf(np.linspace(0.05, 0.95, n))
    z1, z2 = np.meshgrid(coords, coords[::-1])
    codes = np.column_stack([z1.ravel(), z2.ravel()])
    decoded = _to_host(decode(codes))
    if decoded.shape != (n * n, height * width):
        raise DataError(f"decode returned shape {decoded.shape} for {n * n} codes; expected "
                        f"({n * n}, {height * width}) for image_shape={(height, width)}")
    vmin, vmax = _intensity_limits(decoded)
    # One blank (NaN, drawn white) pixel row and column between tiles.
    tiles = np.full((n, n, height + 1, width + 1), np.nan)
    tiles[:, :, :height, :width] = decoded.reshape(n, n, height, width)
    canvas = tiles.transpose(0, 2, 1, 3).reshape(n * (height + 1), n * (width + 1))[:-1, :-1]
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    own = ax is None
    fig, ax = _axes(ax, (6.0, 6.0))
    ax.imshow(canvas, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
              extent=(-0.5, n - 0.5, -0.5, n - 0.5))
    ticks = np.arange(0, n, max(1, n // 5))
    ax.set_xticks(ticks, [f"{coords[i]:.2f}" for i in ticks])
    ax.set_yticks(ticks, [f"{coords[i]:.2f}" for i in ticks])
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title("decoded latent grid")
    return _finish(fig, path, own)


def _column(values, label):
    """A 1-D float64 array from (n,) or (n, 1) input."""
    values = _to_host(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise DataError(f"{label} has shape {values.shape}; a 1-D plot needs (n,) or (n, 1)")
    return values


def plot_gp_1d(X_train: ArrayLike, y_train: ArrayLike, X_test: ArrayLike, mean: ArrayLike,
               std: ArrayLike, path: OutPath = None, title: str | None = None, *,
               ax: Axes | None = None) -> Figure:
    """Plot a 1-D GP posterior: training data, mean and 95% band.

    Parameters
    ----------
    X_train : array_like, shape (n,) or (n, 1)
    y_train : array_like, shape (n,) or (n, 1)
    X_test : array_like, shape (m,) or (m, 1)
    mean, std : array_like, shape (m,) or (m, 1)
        Posterior mean and standard deviation at ``X_test``.
    path : str or Path, optional
        Output PNG; None only returns the Figure.
    title : str, optional
    ax : matplotlib.axes.Axes, optional
        Draw on this Axes of the caller's figure instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (the top-level one when ``ax`` or ``fig`` was given).

    Notes
    -----
    The band is mean :math:`\\pm 1.96\\,` std, a central 95% interval of the Gaussian posterior.
    """
    x_train, y = _column(X_train, "X_train"), _column(y_train, "y_train")
    x_test, mu, sd = _column(X_test, "X_test"), _column(mean, "mean"), _column(std, "std")
    if x_train.size != y.size:
        raise DataError(f"X_train has {x_train.size} points but y_train has {y.size}")
    if not x_test.size == mu.size == sd.size:
        raise DataError(f"X_test, mean and std have {x_test.size}, {mu.size} and {sd.size} "
                        "points; give one mean and std per test input")
    order = np.argsort(x_test, kind="stable")
    x_test, mu, sd = x_test[order], mu[order], sd[order]
    own = ax is None
    fig, ax = _axes(ax, (6.4, 4.0))
    ax.fill_between(x_test, mu - BAND_Z * sd, mu + BAND_Z * sd, color="C0", alpha=0.35,
                    linewidth=0, label="95% interval")
    ax.plot(x_test, mu, color="C0", label="posterior mean")
    ax.plot(x_train, y, "k.", label="training data")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()
    if title:
        ax.set_title(title)
    return _finish(fig, path, own)


def plot_latent_trajectory(t_train: ArrayLike, Z_train: ArrayLike, t_test: ArrayLike,
                           mean: ArrayLike, std: ArrayLike, path: OutPath = None,
                           dims: int = 2, *,
                           fig: Figure | SubFigure | None = None) -> Figure:
    """Plot, per latent dimension, the anchors' codes and the GP regression over t (VAR).

    Parameters
    ----------
    t_train : array_like, shape (n,)
        Inputs (a frame's position t) of the anchor frames.
    Z_train : array_like, shape (n, k)
        The anchors' latent codes (encoder means).
    t_test : array_like, shape (m,)
        Inputs where the GP was evaluated.
    mean : array_like, shape (m, k)
        GP posterior mean of the code.
    std : array_like, shape (m,) or (m, k)
        GP posterior standard deviation, shared by all dimensions or per dimension.
    path : str or Path, optional
        Output PNG; None only returns the Figure.
    dims : int, default 2
        Plot the first ``min(dims, k)`` latent dimensions, one panel each.
    fig : matplotlib.figure.Figure or SubFigure, optional
        Draw the panels into this empty figure instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (the top-level one when ``ax`` or ``fig`` was given).
    """
    t_train, t_test = _column(t_train, "t_train"), _column(t_test, "t_test")
    Z_train, mean, std = _to_host(Z_train), _to_host(mean), _to_host(std)
    if Z_train.ndim != 2 or Z_train.shape[0] != t_train.size:
        raise DataError(f"Z_train has shape {Z_train.shape}; expected ({t_train.size}, k) to match t_train")
    k = Z_train.shape[1]
    if mean.shape != (t_test.size, k):
        raise DataError(f"mean has shape {mean.shape}; expected ({t_test.size}, {k}) "
                        "(one code per test input)")
    if std.ndim == 1:
        std = np.repeat(std[:, None], k, axis=1)
    if std.shape != mean.shape:
        raise DataError(f"std has shape {std.shape}; expected ({t_test.size},) or {mean.shape}")
    n_panels = max(1, min(int(dims), k))
    order = np.argsort(t_test, kind="stable")
    own = fig is None
    fig = _canvas(fig, (6.4, 2.2 * n_panels + 0.4))
    axes = fig.subplots(n_panels, 1, squeeze=False, sharex=True)[:, 0]
    for d, ax in enumerate(axes):
        mu, sd = mean[order, d], std[order, d]
        lower, upper = mu - BAND_Z * sd, mu + BAND_Z * sd
        ax.fill_between(t_test[order], lower, upper, color="C0", alpha=0.35, linewidth=0,
                        label="95% interval")
        for edge in (lower, upper):  # the edges stay visible where the band is thin
            ax.plot(t_test[order], edge, color="C0", linewidth=0.8, linestyle="--")
        ax.plot(t_test[order], mu, color="C0", label="GP mean")
        ax.plot(t_train, Z_train[:, d], "k.", label="anchor codes")
        ax.set_ylabel(f"$z_{{{d + 1}}}$")
    axes[0].legend(fontsize=8)
    axes[-1].set_xlabel("t")
    return _finish(fig, path, own)


def compare_methods(truth: ArrayLike, predictions: Mapping[str, ArrayLike],
                    path: OutPath = None, n_show: int = 8,
                    psnr: Mapping[str, float] | None = None, *,
                    fig: Figure | SubFigure | None = None) -> Figure:
    """Show held-out ground truth above each method's predictions.

    Parameters
    ----------
    truth : array_like, shape (n, H, W) or (n, D)
        Held-out images.
    predictions : dict of str to array_like
        Method name -> predicted images, each of the shape of ``truth``.
    path : str or Path, optional
        Output PNG; None only returns the Figure.
    n_show : int, default 8
        Number of columns: the first ``min(n_show, n)`` held-out inputs.
    psnr : dict of str to float, optional
        Method name -> PSNR in dB, written under that method's row label.
    fig : matplotlib.figure.Figure or SubFigure, optional
        Draw the panels into this empty figure instead of a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (the top-level one when ``ax`` or ``fig`` was given).

    Notes
    -----
    Every image is clipped to [0, 1] for display only (one grey scale for all rows), so
    a prediction that overshoots, such as a pixel GP's posterior mean, does not wash out
    the others' contrast.
    """
    truth = _as_images(truth, "truth")
    if not predictions:
        raise DataError("predictions is empty; give at least one method name -> images")
    rows = {"ground truth": truth}
    for name, images in predictions.items():
        images = _as_images(images, f"predictions[{name!r}]")
        if images.shape != truth.shape:
            raise DataError(f"predictions[{name!r}] has shape {images.shape} but truth has "
                            f"{truth.shape}; predict the same held-out inputs")
        rows[name] = images
    n_cols = min(int(n_show), truth.shape[0])
    if n_cols < 1:
        raise ValueError(f"n_show={n_show} must be >= 1")
    stacked = np.clip(np.concatenate([images[:n_cols] for images in rows.values()]), 0.0, 1.0)
    psnr = {} if psnr is None else psnr
    labels = [f"{name}\nPSNR {psnr[name]:.1f} dB" if name in psnr else name for name in rows]
    return image_grid(stacked, path, nrow=len(rows), row_labels=labels, fig=fig)
