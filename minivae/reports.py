"""Writing a run folder: metrics.json, report.md, figures, and publishing the folder whole.

:func:`write_run` writes one experiment's outputs into a staging folder;
:func:`prepare_output_folder` checks the user's ``out_dir`` and makes that staging folder
beside it; :func:`publish_folder` swaps it into place, so that ``out_dir`` is at every
moment the old or the new complete folder. A folder is replaced only if it is empty or
holds :data:`RUN_MARKER`.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from . import plots
from .errors import DataError
from .files import write_text

TRAJECTORY_POINTS = 200
"""Points along a sequence at which the latent-trajectory figure evaluates the GP."""


def write_seed_summary(folder, comparison):
    """``summary.json`` and ``summary.md`` of :func:`~minivae.experiments.compare_seeds`."""
    write_text(Path(folder) / "summary.json", json.dumps(_json_ready(comparison), indent=2))
    write_text(Path(folder) / "summary.md", format_seed_table(comparison))


def _dense_inputs(X, t, n_points):
    """Inputs along one sequence at ``n_points`` equally spaced positions in t.

    Each input column is interpolated linearly over t between the sequence's frames
    (for the image sequences, whose input is t itself, the grid is t).
    """
    order = np.argsort(t, kind="stable")
    t_sorted, X_sorted = t[order], X[order]
    t_dense = np.linspace(t_sorted[0], t_sorted[-1], n_points)
    X_dense = np.column_stack([np.interp(t_dense, t_sorted, column) for column in X_sorted.T])
    return t_dense, X_dense


def _numbered_across_phases(history):
    """A copy of a multi-phase history whose epochs count on across phases (1..total).

    The trainer numbers each phase's epochs from 1; a loss curve needs one axis.
    """
    return {**history, "epoch": list(range(1, len(history["epoch"]) + 1))}


def _json_ready(value):
    """Replace non-finite floats (an exact prediction's PSNR is inf) by None, recursively."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_table(method_metrics):
    """A markdown table of each method's MSE, PSNR, SSIM and timings.

    Parameters
    ----------
    method_metrics : dict
        Method name -> ``{"mse", "psnr", "ssim", "fit_seconds", "predict_seconds"}``
        (the ``"methods"`` entry of :func:`run_experiment`'s result).

    Returns
    -------
    str
    """
    lines = ["| method | MSE | PSNR (dB) | SSIM | fit (s) | predict (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, values in method_metrics.items():
        lines.append(f"| {name} | {values['mse']:.5f} | {values['psnr']:.2f} | "
                     f"{values['ssim']:.4f} | {values['fit_seconds']:.1f} | "
                     f"{values['predict_seconds']:.2f} |")
    return "\n".join(lines)


def _report_markdown(result, figures):
    """The report.md text of one experiment."""
    settings = ", ".join(f"{key}={value!r}" for key, value in result["settings"].items())
    lines = [
        f"# {result['data']}: {result['mode']} (seed {result['seed']})",
        "",
        f"Run started {result['started_utc']} UTC and took {result['total_seconds']:.1f} s.",
        f"{result['n_train']} training frames (anchors), {result['n_test']} held-out frames, "
        f"images {result['image_shape'][0]}x{result['image_shape'][1]}, "
        f"{result['n_groups']} sequences.",
        "",
        "Metrics are means over the held-out frames (PSNR and SSIM with data range 1).",
        "",
        format_table(result["methods"]),
        "",
        f"- seed: {result['seed']} (models; the data set is fixed)",
        f"- epochs (VAR pre-training, joint, fine-tuning): {tuple(result['epochs'])}; "
        f"the two-stage VAE trains for their sum, {sum(result['epochs'])}",
        f"- settings: {settings}",
        "",
        "## Figures",
        "",
    ]
    for caption, file_name in figures:
        lines += [f"{caption}: [{file_name}]({file_name})", "", f"![{caption}]({file_name})", ""]
    if result.get("checkpoint"):
        lines += [f"VAR checkpoint: [{result['checkpoint']}]({result['checkpoint']})", ""]
    return "\n".join(lines)


def write_run(folder, data, train_idx, test_idx, fitted, predictions, result):
    """Figures, VAR's checkpoint, metrics.json and report.md into ``folder``."""
    folder = Path(folder)
    test = data.subset(test_idx)
    shown = np.unique(np.linspace(0, test.n - 1, min(8, test.n)).round().astype(np.int64))
    shown_predictions = {name: images[shown] for name, images in predictions.items()}
    psnr = {name: score["psnr"] for name, score in result["methods"].items()}
    plots.compare_methods(test.Y[shown], shown_predictions, folder / "comparison.png",
                          n_show=shown.size, psnr=psnr)
    figures = [("Held-out ground truth (top) and each method's prediction", "comparison.png")]
    if "var" in fitted:
        var = fitted["var"]
        group = test.groups[0]
        in_group = data.groups == group
        anchors = train_idx[data.groups[train_idx] == group]
        t_dense, X_dense = _dense_inputs(data.X[in_group], data.t[in_group], TRAJECTORY_POINTS)
        mean, variance = var.predict_latent(X_dense, groups=np.full(t_dense.size, group))
        codes = var.encode(data.Y[anchors])[0]
        std = np.sqrt(np.asarray(variance))
        plots.plot_latent_trajectory(data.t[anchors], codes, t_dense, mean, std,
                                     folder / "latent_trajectory.png")
        figures.append((f"VAR latent code over t for sequence {int(group)}: anchors' codes and the "
                        "GP mean with its 95% band (first 2 dimensions)", "latent_trajectory.png"))
        plots.plot_history(_numbered_across_phases(var.history_), folder / "var_loss.png",
                           title="VAR training loss", ylabel="loss (nats/example)")
        figures.append(("VAR training loss per epoch and phase", "var_loss.png"))
        var.save(folder / "var_checkpoint.npz")
        result["checkpoint"] = "var_checkpoint.npz"
    if "two_stage" in fitted:
        plots.plot_history(fitted["two_stage"].history_, folder / "two_stage_loss.png",
                           title="Two-stage: VAE training loss")
        figures.append(("Two-stage VAE training loss per epoch", "two_stage_loss.png"))
    result["figures"] = [file_name for _, file_name in figures]
    write_text(folder / "metrics.json", json.dumps(_json_ready(result), indent=2))
    write_text(folder / "report.md", _report_markdown(result, figures))


RUN_MARKER = ".minivae-run"
"""File that marks a folder written by a minivae run (:func:`minivae.experiments.run_experiment`, :func:`~minivae.experiments.compare_seeds`).

An existing ``out_dir`` is replaced only if it is empty or holds this file, so that a
mistyped ``out_dir`` (a project folder, ``~``) is refused instead of deleted."""

_MARKER_TEXT = ("This folder was written by minivae. The next run given this folder as out_dir "
                "deletes and replaces it whole.\n")


def _refuse_foreign_folder(out_dir, given):
    """DataError unless ``out_dir`` is absent, an empty folder, or a folder minivae wrote."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(f"out_dir {str(given)!r} exists and is a file; give a folder path")
    if any(out_dir.iterdir()) and not (out_dir / RUN_MARKER).is_file():
        raise DataError(f"out_dir {str(given)!r} holds files minivae did not write (it has no "
                        f"{RUN_MARKER} file), and minivae replaces out_dir as a whole; choose a "
                        "new or empty folder")


def prepare_output_folder(out_dir):
    """Check ``out_dir`` and make a fresh staging folder beside it.

    Parameters
    ----------
    out_dir : str or Path

    Returns
    -------
    target : Path
        ``out_dir`` made absolute, symbolic links resolved.
    staging : Path
        The new folder ``<target>.tmp-<random hex>``, holding the :data:`RUN_MARKER`
        file, created with mode ``0o777`` minus the umask.

    Raises
    ------
    DataError
        If ``out_dir`` is a file, holds files without the :data:`RUN_MARKER` file, or is
        (or contains) the current working folder, which could not be replaced in place.
    """
    target = Path(out_dir).expanduser().resolve()
    working = Path.cwd().resolve()
    if target == working or target in working.parents:
        raise DataError(f"out_dir {str(out_dir)!r} is the current folder or contains it, and "
                        "minivae replaces out_dir as a whole; give a subfolder such as 'runs/demo'")
    _refuse_foreign_folder(target, out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex}")
    os.mkdir(staging, 0o777)
    (staging / RUN_MARKER).write_text(_MARKER_TEXT)
    return target, staging


def publish_folder(staging, target, given):
    """Move the finished ``staging`` folder to ``target``, replacing an earlier one.

    The earlier folder is checked again (:func:`_refuse_foreign_folder`: files may have
    appeared since :func:`prepare_output_folder`), renamed aside, and deleted only once
    the new one is in place, so ``target`` is at every moment either the old or the new
    complete folder (or briefly absent).
    """
    _refuse_foreign_folder(target, given)
    retired = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        os.rename(target, retired)
    try:
        os.rename(staging, target)
    except BaseException:
        if retired is not None:
            os.rename(retired, target)
        raise
    if retired is not None:
        shutil.rmtree(retired)


def format_seed_table(comparison):
    """A markdown table of :func:`compare_seeds`' means +- standard deviations."""
    seeds = comparison["seeds"]
    lines = [f"{comparison['data']}, {comparison['mode']}, mean +- std over seeds {seeds}",
             "",
             "| method | MSE | PSNR (dB) | SSIM | fit (s) |",
             "|---|---:|---:|---:|---:|"]
    for name, values in comparison["summary"].items():
        cells = [f"{values['mse']['mean']:.5f} +- {values['mse']['std']:.5f}",
                 f"{values['psnr']['mean']:.2f} +- {values['psnr']['std']:.2f}",
                 f"{values['ssim']['mean']:.4f} +- {values['ssim']['std']:.4f}",
                 f"{values['fit_seconds']['mean']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
