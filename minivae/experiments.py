"""Experiments: Variational Autoencoded Regression against its baselines, and the demo.

The question (Yoo et al., CVPR 2017): given images paired with low-dimensional inputs
(a frame's position in a sequence, a body's joint positions), how well can a model
predict the image of an input it has not seen? Every method here is trained on the
anchor frames of a split (:meth:`minivae.datasets.SequenceData.split`) and scored on the
held-out frames with MSE, PSNR and SSIM (:func:`minivae.metrics.summarize`).

Methods: the baselines of :mod:`minivae.baselines` (``"nearest_anchor"``,
``"pixel_gp"``, ``"two_stage"``) and ``"var"``, :class:`minivae.var.VARegressor`, the VAE
and the GP trained together.

Entry points: :func:`run_experiment` (one data set, one split, one seed; optionally
writes figures, ``metrics.json``, ``report.md`` and VAR's checkpoint into a folder, through
:mod:`minivae.reports`) and :func:`compare_seeds` (means and standard deviations over
seeds) and :func:`run_benchmark` (every regime of :data:`BENCHMARK_REGIMES`: anchor
spacing, extrapolation, the postures' joint inputs, an unseen data set; behind
``minivae demo --full``). The commands are in :mod:`minivae.cli`.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import datasets, metrics, reports
from .baselines import NearestAnchor, PixelGP, TwoStage
from .errors import DataError
from .kernels.threads import limited_threads
from .var import DEFAULT_BETA, DEFAULT_EPOCHS

METHODS = ("nearest_anchor", "pixel_gp", "two_stage", "var")
"""Names of the methods :func:`run_experiment` knows, in the order reports list them."""


DEFAULT_SETTINGS = {
    "latent_dim": 8,
    "hidden": (256,),
    "activation": "relu",
    "likelihood": "bernoulli",
    "lr": 1e-3,
    "batch_size": 64,
    "beta": DEFAULT_BETA,
    "n_anchor": None,
    "n_query": None,
    "lengthscale": None,
    "noise": 1e-3,
    "gp_starts": 3,
    "dtype": "float32",
    "device": "cpu",
    "threads": 1,
    "n_anchor_every": 4,
    "holdout": 0.25,
    "keep_every": 4,
}
"""Model and split settings shared by the methods; :func:`run_experiment` takes overrides.

``latent_dim, hidden, activation, likelihood, lr, batch_size, beta, dtype, device``
configure both VAR and the two-stage VAE (``beta`` is VAR's default KL weight,
:data:`minivae.var.DEFAULT_BETA`, so the two autoencoders differ only in how they are
trained); ``n_anchor, n_query, lengthscale, noise`` only VAR;
``gp_starts`` the baselines' GPs; ``n_anchor_every``, ``holdout`` and ``keep_every``
the split (:func:`split_data`); ``n_anchor=None, n_query=None`` let VAR's episode sizes
follow the group sizes;
``threads`` caps the BLAS and Numba thread pools while the experiment runs (None leaves
them as they are; see :func:`limited_threads`)."""


QUICK_EPOCHS = (3, 3, 2)
"""``minivae demo --quick``: a smoke run."""

# ---- one experiment -----------------------------------------------------------------


def _check_epochs(epochs):
    """(pre, joint, fine) as a tuple of three non-negative ints."""
    if len(tuple(epochs)) != 3 or any(int(e) != e or e < 0 for e in epochs):
        raise ValueError(f"epochs={epochs!r} must be three non-negative integers "
                         "(pre-training, joint, fine-tuning)")
    return tuple(int(e) for e in epochs)


def _check_methods(methods):
    """``methods`` as a tuple of known names, without repeats."""
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(dict.fromkeys(methods))
    unknown = [name for name in methods if name not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods={methods!r}: unknown {unknown}; choose from {METHODS}")
    return methods


def _settings(overrides):
    """DEFAULT_SETTINGS updated by ``overrides``; unknown keys are an error."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; the settings are {sorted(DEFAULT_SETTINGS)}")
    settings = {**DEFAULT_SETTINGS, **overrides}
    settings["hidden"] = tuple(settings["hidden"])
    return settings


def _make_method(name, settings, epochs, seed):
    """A fresh, unfitted model for method ``name``."""
    shared = {key: settings[key] for key in ("latent_dim", "hidden", "activation", "likelihood",
                                             "lr", "batch_size", "beta", "dtype", "device")}
    if name == "nearest_anchor":
        return NearestAnchor()
    if name == "pixel_gp":
        return PixelGP(n_starts=settings["gp_starts"], device=settings["device"])
    if name == "two_stage":
        return TwoStage(epochs=sum(epochs), n_starts=settings["gp_starts"], seed=seed,
                        **shared)
    from .var import VARegressor

    return VARegressor(n_anchor=settings["n_anchor"], n_query=settings["n_query"],
                       epochs=epochs, lengthscale=settings["lengthscale"],
                       noise=settings["noise"], seed=seed, **shared)


@contextlib.contextmanager
def _output_folder(out_dir):
    """The staging folder for ``out_dir`` (None without one), published whole when the
    block ends and removed, leaving ``out_dir`` as it was, when it raises
    (:func:`minivae.reports.prepare_output_folder`)."""
    if out_dir is None:
        yield None
        return
    target, staging = reports.prepare_output_folder(out_dir)
    try:
        yield staging
        reports.publish_folder(staging, target, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


_TRAINED = ("two_stage", "var")
"""Methods whose fit trains a network and takes ``progress``."""


MODES = ("interpolation", "extrapolation", "sparse")
"""Splits :func:`run_experiment` knows (:func:`split_data`)."""


def split_data(data, mode, settings):
    """Training and held-out indices of ``data`` for ``mode``.

    ``"interpolation"`` and ``"extrapolation"`` are
    :meth:`~minivae.datasets.SequenceData.split` with the settings' ``n_anchor_every`` and
    ``holdout``. ``"sparse"`` keeps only every ``keep_every``-th frame of each sequence
    (ordered by ``t``; the first and the last frame always) for training and holds out
    every other frame: with ``keep_every=8`` the anchors are 8 frames apart and each gap
    holds 7 frames to predict.

    Returns
    -------
    train_idx, test_idx : ndarray of int64
        Sorted, disjoint, together every example.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not known; use one of {MODES}")
    if mode != "sparse":
        return data.split(mode, n_anchor_every=settings["n_anchor_every"],
                          holdout=settings["holdout"])
    every = settings["keep_every"]
    if int(every) != every or every < 2:
        raise ValueError(f"keep_every={every!r} must be an integer >= 2 (every k-th frame kept)")
    is_train = np.zeros(data.n, dtype=bool)
    for group in np.unique(data.groups):
        members = np.flatnonzero(data.groups == group)
        ordered = members[np.argsort(data.t[members], kind="stable")]
        position = np.arange(ordered.size)
        is_train[ordered[(position % int(every) == 0) | (position == ordered.size - 1)]] = True
    if is_train.all():
        raise DataError(f"keeping every {every}-th frame of {data.name!r} holds out nothing; "
                        "use longer sequences or a larger keep_every")
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def coverage(truth, mean, std, k=2.0):
    """Fraction of pixels whose truth lies within ``mean +- k std``."""
    truth, mean, std = (np.asarray(a, dtype=np.float64) for a in (truth, mean, std))
    return float(np.mean(np.abs(truth - mean) <= k * std.reshape(truth.shape)))


def _fit_and_score(name, settings, epochs, seed, train, test, progress):
    """Fit method ``name`` on ``train``, predict ``test``: (model, predictions, scores).

    VAR's scores also hold ``coverage_2std``, the fraction of held-out pixels within its
    ``predict(..., return_std=True)`` mean +- 2 std (:func:`coverage`).
    """
    model = _make_method(name, settings, epochs, seed)
    fit_options = {"progress": progress} if name in _TRAINED else {}
    tick = time.perf_counter()
    model.fit(train.X, train.Y, train.groups, **fit_options)
    fit_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    predicted = np.asarray(model.predict(test.X, test.groups), dtype=np.float64)
    predict_seconds = time.perf_counter() - tick
    predicted = predicted.reshape(test.Y.shape)
    scores = {**metrics.summarize(test.Y, predicted),
              "fit_seconds": fit_seconds, "predict_seconds": predict_seconds}
    if name == "var":
        mean, std = model.predict(test.X, test.groups, return_std=True)
        scores["coverage_2std"] = coverage(test.Y, mean, std)
    return model, predicted, scores


def run_experiment(data, mode="interpolation", methods=METHODS, seed=0, epochs=DEFAULT_EPOCHS,
                   out_dir=None, progress=True, settings=None):
    """Train every method on a split's anchors and score it on the held-out frames.

    Parameters
    ----------
    data : minivae.datasets.SequenceData
    mode : {"interpolation", "extrapolation", "sparse"}, default "interpolation"
        The split (:func:`split_data`).
    methods : sequence of str, default all of :data:`METHODS`
    seed : int, default 0
        Seed of every model (the data set is not reseeded).
    epochs : (int, int, int), default :data:`minivae.var.DEFAULT_EPOCHS`
        VAR's pre-training, joint and fine-tuning epochs. The two-stage VAE trains for
        their sum, so both networks see the training images equally often.
    out_dir : str or Path, optional
        Folder to write the figures, ``metrics.json``, ``report.md`` and
        ``var_checkpoint.npz`` into, with a :data:`~minivae.reports.RUN_MARKER` file. It is built as
        ``<out_dir>.tmp-<hex>`` and renamed to ``out_dir`` only when complete, replacing
        an earlier folder; if anything fails, nothing is left behind and an earlier
        folder is untouched. An existing ``out_dir`` must be empty or written by minivae
        (hold :data:`~minivae.reports.RUN_MARKER`); anything else, or the current folder, is refused
        before any training.
    progress : bool, default True
        A tqdm bar over the methods, and the networks' training bars.
    settings : dict, optional
        Overrides of :data:`DEFAULT_SETTINGS`.

    Returns
    -------
    dict
        ``data, mode, seed, epochs, settings, n_train, n_test, n_groups, image_shape,
        started_utc, total_seconds`` and ``methods``: method name -> ``{"mse", "psnr",
        "ssim", "fit_seconds", "predict_seconds"}`` (VAR also ``coverage_2std``), the
        metrics being means over the held-out frames. With ``out_dir`` also ``figures`` (file names) and
        ``checkpoint`` (when VAR ran).

    Raises
    ------
    ValueError
        For an unknown mode, method or setting, or malformed epochs.
    DataError
        If the split holds out nothing, or ``out_dir`` is a file, a folder holding files
        minivae did not write, or the current folder (or one containing it).
    """
    methods = _check_methods(methods)
    epochs = _check_epochs(epochs)
    settings = _settings(settings)
    started = time.perf_counter()
    started_utc = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    train_idx, test_idx = split_data(data, mode, settings)
    train, test = data.subset(train_idx), data.subset(test_idx)
    with _output_folder(out_dir) as staging:
        fitted, predictions, scores = {}, {}, {}
        with limited_threads(settings["threads"]):
            for name in tqdm(methods, desc=f"{data.name} {mode}", disable=not progress):
                fitted[name], predictions[name], scores[name] = _fit_and_score(
                    name, settings, epochs, seed, train, test, progress)
        result = {
            "data": data.name,
            "mode": mode,
            "seed": int(seed),
            "epochs": list(epochs),
            "settings": {key: list(value) if isinstance(value, tuple) else value
                         for key, value in settings.items()},
            "n_train": int(train.n),
            "n_test": int(test.n),
            "n_groups": int(data.n_groups),
            "image_shape": list(data.image_shape),
            "started_utc": started_utc,
            "methods": scores,
        }
        result["total_seconds"] = time.perf_counter() - started
        if staging is not None:
            reports.write_run(staging, data, train_idx, test_idx, fitted, predictions, result)
    return result


# ---- several seeds, the demo, the CLI -------------------------------------------------


def load_data(name, seed=0):
    """The data set called ``name``: "sequences", "postures", or a folder path.

    Parameters
    ----------
    name : str, Path or SequenceData
        "sequences" (:func:`~minivae.datasets.make_image_sequences`, defaults),
        "postures" (:func:`~minivae.datasets.make_postures`, defaults), a folder for
        :func:`~minivae.datasets.load_regression_folder`, or data already loaded (returned
        as it is).
    seed : int, default 0
        Seed of the synthetic sets.

    Returns
    -------
    minivae.datasets.SequenceData
    """
    if isinstance(name, datasets.SequenceData):
        return name
    if name == "sequences":
        return datasets.make_image_sequences(seed=seed)
    if name == "postures":
        return datasets.make_postures(seed=seed)
    if not Path(name).is_dir():
        raise DataError(f"data {str(name)!r} is neither 'sequences', 'postures' nor a folder; "
                        "give a folder holding images and inputs.csv")
    return datasets.load_regression_folder(name)


def _summarise(scores):
    """Per method and metric, ``{"mean", "std", "values"}`` over a list of runs' scores;
    ``std`` is the sample standard deviation (ddof 1; 0 for a single run)."""
    summary = {}
    for name, first in scores[0].items():
        summary[name] = {}
        for metric in ("mse", "psnr", "ssim", "fit_seconds", "coverage_2std"):
            if metric not in first:
                continue
            values = np.array([run[name][metric] for run in scores])
            summary[name][metric] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                "values": values.tolist(),
            }
    return summary


def compare_seeds(data_name, mode="interpolation", seeds=(0, 1, 2), methods=METHODS,
                  epochs=DEFAULT_EPOCHS, settings=None, out_dir=None, progress=True):
    """Run :func:`run_experiment` once per seed and summarise each metric over the seeds.

    Parameters
    ----------
    data_name : str, Path or SequenceData
        As :func:`load_data`; the data set is the same for every seed.
    mode : {"interpolation", "extrapolation", "sparse"}
    seeds : sequence of int, default (0, 1, 2)
        Model seeds.
    methods, epochs, settings, progress
        As :func:`run_experiment`.
    out_dir : str or Path, optional
        Each seed's run is written to ``out_dir/seed<seed>``, and ``summary.json`` and
        ``summary.md`` to ``out_dir``. The whole folder is built beside ``out_dir`` and
        published once, when every seed has finished, as :func:`run_experiment` does:
        if a seed fails, ``out_dir`` is left as it was. An existing ``out_dir`` is
        refused, before any training, where :func:`run_experiment` would refuse it.

    Returns
    -------
    dict
        ``data, mode, seeds, runs`` (each run's result) and ``summary``: method ->
        metric -> ``{"mean", "std", "values"}`` for ``mse, psnr, ssim, fit_seconds`` (and
        VAR's ``coverage_2std``);
        ``std`` is the sample standard deviation (ddof 1; 0 for a single seed).
    """
    data = load_data(data_name)
    seeds = tuple(int(seed) for seed in seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    with _output_folder(out_dir) as staging:
        runs = []
        for seed in seeds:
            run_dir = None if staging is None else staging / f"seed{seed}"
            runs.append(run_experiment(data, mode, methods=methods, seed=seed, epochs=epochs,
                                       out_dir=run_dir, progress=progress, settings=settings))
        result = {"data": data.name, "mode": mode, "seeds": list(seeds), "runs": runs,
                  "summary": _summarise([run["methods"] for run in runs])}
        if staging is not None:
            reports.write_seed_summary(staging, result)
    return result


# ---- the benchmark: every regime, every method, several seeds ---------------------------

UNSEEN_SEQUENCES = {"n_sequences": 5, "n_frames": 40, "seed": 11}
"""Settings of :func:`~minivae.datasets.make_image_sequences` that no default was chosen on
(another data seed, fewer and shorter sequences): the benchmark's unseen data set."""

BENCHMARK_REGIMES = {
    "sequences, every 2nd frame kept": ("sequences", {}, "sparse", {"keep_every": 2}),
    "sequences, every 4th frame kept": ("sequences", {}, "sparse", {"keep_every": 4}),
    "sequences, every 8th frame kept": ("sequences", {}, "sparse", {"keep_every": 8}),
    "sequences, extrapolation (last 25%)": ("sequences", {}, "extrapolation", {}),
    "postures (22 joint inputs), every 4th frame kept": ("postures", {}, "sparse",
                                                         {"keep_every": 4}),
    "postures (22 joint inputs), every 8th frame kept": ("postures", {}, "sparse",
                                                         {"keep_every": 8}),
    "postures (22 joint inputs), extrapolation (last 25%)": ("postures", {}, "extrapolation",
                                                             {}),
    "unseen sequences, every 4th frame kept": ("sequences", UNSEEN_SEQUENCES, "sparse",
                                               {"keep_every": 4}),
}
"""Regime name -> (data set, its generator's keyword arguments, split mode, settings).

The sequences' input is the frame's position t (one column), the postures' the 22 joint
coordinates. Every cell of the README's results table is one regime and one method."""


def _regime_figures(folder, slug, train, test, fitted, predictions, scores):
    """The regime's comparison figure and, for one-column inputs, VAR's latent trajectory."""
    from . import plots

    shown = np.unique(np.linspace(0, test.n - 1, min(8, test.n)).round().astype(np.int64))
    plots.compare_methods(test.Y[shown], {name: images[shown] for name, images in
                                          predictions.items()},
                          folder / f"{slug}.png", n_show=shown.size,
                          psnr={name: score["psnr"] for name, score in scores.items()})
    if "var" not in fitted or test.X.shape[1] != 1:
        return
    var, group = fitted["var"], test.groups[0]
    in_group = train.groups == group
    codes = var.encode(train.Y[in_group])[0]
    t_anchor = train.X[in_group, 0]
    t_all = np.concatenate([t_anchor, test.X[test.groups == group, 0]])
    t_dense = np.linspace(t_all.min(), t_all.max(), 200)
    mean, variance = var.predict_latent(t_dense[:, None], groups=np.full(t_dense.size, group))
    plots.plot_latent_trajectory(t_anchor, codes, t_dense, mean, np.sqrt(variance),
                                 folder / f"{slug}-latent.png")


def run_benchmark(out_dir=None, seeds=(0, 1, 2), regimes=None, epochs=DEFAULT_EPOCHS,
                  settings=None, progress=True):
    """Every method of :data:`METHODS` in every regime of :data:`BENCHMARK_REGIMES`, per seed.

    Parameters
    ----------
    out_dir : str or Path, optional
        Written as :func:`run_experiment` writes a folder (built beside, published whole):
        ``results.json`` (every run's scores and the summaries), ``results.md`` (the
        tables of :func:`format_benchmark_table`) and, per regime, ``<slug>.png`` (the
        held-out truth above each method's prediction of the first seed, rows labelled
        with that seed's PSNR over all held-out frames) and, for one-column inputs,
        ``<slug>-latent.png`` (VAR's GP mean of the code over t with its 95% band).
    seeds : sequence of int, default (0, 1, 2)
        Model seeds; the data sets are fixed.
    regimes : sequence of str, optional
        Names in :data:`BENCHMARK_REGIMES`; default all.
    epochs, settings, progress
        As :func:`run_experiment` (``settings`` overrides apply to every regime, under the
        regime's own split settings).

    Returns
    -------
    dict
        ``seeds, epochs`` and ``regimes``: name -> ``{"data", "mode", "n_train",
        "n_test", "runs" (per seed: method -> scores), "summary"`` (:func:`_summarise`)}.
    """
    seeds = tuple(int(seed) for seed in seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    names = tuple(BENCHMARK_REGIMES) if regimes is None else tuple(regimes)
    unknown = [name for name in names if name not in BENCHMARK_REGIMES]
    if unknown:
        raise ValueError(f"unknown regimes {unknown}; choose from {list(BENCHMARK_REGIMES)}")
    epochs = _check_epochs(epochs)
    with _output_folder(out_dir) as staging:
        result = {"seeds": list(seeds), "epochs": list(epochs), "regimes": {}}
        for slug_number, name in enumerate(names):
            source, data_options, mode, split_settings = BENCHMARK_REGIMES[name]
            maker = (datasets.make_image_sequences if source == "sequences"
                     else datasets.make_postures)
            data = maker(**data_options)
            regime_settings = _settings({**(settings or {}), **split_settings})
            train_idx, test_idx = split_data(data, mode, regime_settings)
            train, test = data.subset(train_idx), data.subset(test_idx)
            runs = []
            for seed in seeds:
                fitted, predictions, scores = {}, {}, {}
                with limited_threads(regime_settings["threads"]):
                    for method in tqdm(METHODS, desc=f"{name}, seed {seed}",
                                       disable=not progress):
                        fitted[method], predictions[method], scores[method] = _fit_and_score(
                            method, regime_settings, epochs, seed, train, test, progress)
                if staging is not None and seed == seeds[0]:
                    _regime_figures(staging, f"regime{slug_number + 1}", train, test, fitted,
                                    predictions, scores)
                runs.append(scores)
            result["regimes"][name] = {"data": {"source": source, **data_options}, "mode": mode,
                                       "split": split_settings, "n_train": int(train.n),
                                       "n_test": int(test.n), "runs": runs,
                                       "summary": _summarise(runs)}
        if staging is not None:
            from .files import write_text

            write_text(staging / "results.json", json.dumps(result, indent=2))
            write_text(staging / "results.md", format_benchmark_table(result))
    return result


def format_benchmark_table(result):
    """Markdown tables of :func:`run_benchmark`'s result: PSNR and SSIM, mean +- std over
    the seeds, one row per regime, one column per method, and VAR's 2-std coverage."""
    seeds = result["seeds"]
    header = "| regime | " + " | ".join(METHODS) + " |"
    rule = "|---|" + "---:|" * len(METHODS)
    lines = []
    for metric, title, digits in (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3)):
        lines += [f"{title} on held-out frames, mean +- std over seeds {seeds}", "", header, rule]
        for name, regime in result["regimes"].items():
            cells = [f"{regime['summary'][m][metric]['mean']:.{digits}f} +- "
                     f"{regime['summary'][m][metric]['std']:.{digits}f}" for m in METHODS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["VAR: fraction of held-out pixels within predict(..., return_std=True) mean +- 2 "
              "std; training / held-out frames; VAR fit seconds", "",
              "| regime | coverage | frames | fit (s) |", "|---|---:|---:|---:|"]
    for name, regime in result["regimes"].items():
        var = regime["summary"]["var"]
        lines.append(f"| {name} | {var['coverage_2std']['mean']:.3f} +- "
                     f"{var['coverage_2std']['std']:.3f} | {regime['n_train']} / "
                     f"{regime['n_test']} | {var['fit_seconds']['mean']:.1f} |")
    return "\n".join(lines) + "\n"
