"""The ``minivae`` command line.

    minivae demo                       the main job: VAR and its baselines on image sequences
    minivae demo --full                every regime of the README's results table, 3 seeds
    minivae train vae --data digits    train a VAE, write checkpoint, metrics and figures
    minivae train gp --data PATH.csv   fit a GP to a CSV (last column is y), plot it
    minivae train var --data sequences train VAR on built-in or your own regression data
    minivae gradcheck vae              analytic vs finite-difference gradients, per parameter
    minivae bench [--quick]            kernel and model benchmarks against their baselines

Every command documents its flags under ``--help``. Errors in the user's input are printed
as one line ("minivae: error: ...") with exit status 2, not as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import MinivaeError
from .files import write_json


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer (1 or more)")
    return value


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 0")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def _fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = _positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1 (exclusive)")
    return value


def _cmd_demo(args) -> int:
    if args.full:
        from .experiments import run_benchmark

        out = args.out if args.out is not None else "runs/benchmark"
        run_benchmark(out_dir=out, progress=not args.no_progress)
        print((Path(out) / "results.md").read_text(), end="")
        print(f"wrote {out}/results.md")
        return 0
    out = args.out if args.out is not None else "runs/demo"
    result = run_demo(out_dir=out, progress=not args.no_progress, quick=args.quick)
    print(f"wrote {out}/report.md")
    _print_metrics(result)
    return 0


def _print_metrics(result) -> None:
    methods = result.get("methods", {}) if isinstance(result, dict) else {}
    if not methods:
        return
    print(f"{'method':<16}{'MSE':>10}{'PSNR (dB)':>12}{'SSIM':>8}")
    for name, m in methods.items():
        print(f"{name:<16}{m['mse']:>10.5f}{m['psnr']:>12.2f}{m['ssim']:>8.3f}")


# ---- train vae -------------------------------------------------------------------------
def _load_vae_data(spec: str, seed: int, key=None, size=28):
    """Return (X, image_shape or None) for --data digits|swissroll|PATH (``key``: the array
    of an .npz archive; ``size``: the side images of a folder are resized to)."""
    import numpy as np

    from . import datasets

    if spec == "digits":
        return datasets.load_digits(), (8, 8)
    if spec == "swissroll":
        return datasets.make_swiss_roll(2000, noise=0.05, seed=seed), None
    path = Path(spec)
    if not path.exists():
        raise MinivaeError(
            f"--data {spec!r}: no such file or folder; use 'digits', 'swissroll', an IDX or "
            ".npz file, or a folder of PNG images"
        )
    if path.is_dir():
        X = datasets.load_image_folder(path, size=size)
        return X, (size, size)
    if path.suffix == ".npz":
        X = datasets.load_npz(path, key=key)
    else:
        X = datasets.load_idx(path)
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    side = int(round(np.sqrt(X.shape[1])))
    return X, ((side, side) if side * side == X.shape[1] else None)


def _cmd_train_vae(args) -> int:
    import numpy as np

    from . import plots
    from .vae import VAE

    X, shape = _load_vae_data(args.data, args.seed, key=args.key, size=args.size)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(X))
    n_val = max(1, int(round(args.val_fraction * len(X))))
    X_val, X_train = X[order[:n_val]], X[order[n_val:]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.npz"
    in_unit_interval = bool(X.size) and 0.0 <= float(X.min()) and float(X.max()) <= 1.0
    likelihood = args.likelihood or ("bernoulli" if in_unit_interval else "gaussian")
    vae = VAE(
        X.shape[1],
        args.latent,
        hidden=tuple(args.hidden),
        activation=args.activation,
        likelihood=likelihood,
        seed=args.seed,
        device=args.device,
    )
    from .kernels.threads import limited_threads

    with limited_threads(args.threads):
        history = vae.fit(
            X_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr,
            validation_data=X_val,
            progress=not args.no_progress,
            checkpoint=str(ckpt),
            resume=args.resume,
        ).history_
    metrics = {
        "train_elbo": float(vae.score(X_train)),
        "val_elbo": float(vae.score(X_val)),
        "n_train": int(len(X_train)),
        "n_val": int(len(X_val)),
        "settings": {**{k: v for k, v in vars(args).items() if k != "func"},
                     "likelihood": likelihood},
    }
    plots.plot_history(history, out / "elbo.png", title=f"VAE on {args.data}")
    if shape is not None:
        n_show = min(10, len(X_val))
        recon = vae.reconstruct(X_val[:n_show])
        plots.image_grid(
            np.concatenate([X_val[:n_show], recon]).reshape(-1, *shape),
            out / "reconstructions.png",
            nrow=2,
            row_labels=["data", "reconstruction"],
        )
        plots.image_grid(vae.sample(64, seed=args.seed).reshape(-1, *shape), out / "samples.png")
        if args.latent == 2:
            plots.latent_manifold(vae.decode, out / "manifold.png", n=15, image_shape=shape)
    write_json(out / "metrics.json", metrics)
    print(f"held-out ELBO {metrics['val_elbo']:.3f} nats/example; wrote {out}/")
    return 0


def run_demo(out_dir="runs/demo", progress=True, quick=False):
    """The main job, ``minivae demo``: VAR and its baselines on the built-in image sequences.

    Trains :data:`~minivae.experiments.METHODS` on :func:`~minivae.datasets.make_image_sequences` (6
    sequences of 48 frames, 32x32), interpolation split (every 4th frame held out), seed
    0, VAR epochs :data:`~minivae.var.DEFAULT_EPOCHS` (:data:`~minivae.experiments.QUICK_EPOCHS` with ``quick``), default
    settings, and writes ``out_dir`` as :func:`~minivae.experiments.run_experiment` does. 40 s on an idle
    2-core machine, under 2 minutes on a busy one.

    Parameters
    ----------
    out_dir : str or Path, default "runs/demo"
    progress : bool, default True
        tqdm progress bars.
    quick : bool, default False
        A smoke run of a few epochs (the images will be poor).

    Returns
    -------
    dict
        :func:`~minivae.experiments.run_experiment`'s result.
    """
    from .datasets import make_image_sequences
    from .experiments import METHODS, QUICK_EPOCHS, run_experiment
    from .var import DEFAULT_EPOCHS

    data = make_image_sequences()
    return run_experiment(data, "interpolation", methods=METHODS, seed=0,
                          epochs=QUICK_EPOCHS if quick else DEFAULT_EPOCHS, out_dir=out_dir,
                          progress=progress)


# ---- train gp --------------------------------------------------------------------------
def _cmd_train_gp(args) -> int:
    result = fit_gp_csv(args.data, args.out, ard=args.ard, n_restarts=args.restarts, seed=args.seed,
                        device=args.device)
    print(json.dumps(result, indent=2, default=float))
    return 0


def fit_gp_csv(path, out_dir, ard=False, n_restarts=2, seed=0, normalize_y=True, device="cpu"):
    """Fit a :class:`~minivae.gp.GPRegressor` to a CSV table and write the run to ``out_dir``.

    ``path`` holds input columns, then y (:func:`minivae.datasets.read_xy_csv`). ``out_dir``
    (created if needed) receives ``model.npz``, ``metrics.json`` and, for one input column,
    ``gp_fit.png`` (data, posterior mean, 95% band of f). ``ard``, ``n_restarts``, ``seed``,
    ``normalize_y`` and ``device`` go to the regressor. Returns the metrics written: sizes,
    fitted hyperparameters, log marginal likelihood, training RMSE and the paths.
    """
    import numpy as np

    from .datasets import read_xy_csv
    from .gp import GPRegressor

    X, y, names = read_xy_csv(path)
    model = GPRegressor(ard=ard, n_restarts=n_restarts, seed=seed, normalize_y=normalize_y,
                        device=device).fit(X, y)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "n_points": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "columns": names,
        "lengthscale": np.atleast_1d(model.lengthscale_).tolist(),
        "variance": float(model.variance_),
        "noise": float(model.noise_),
        "log_marginal_likelihood": float(model.log_marginal_likelihood_value_),
        "train_rmse": float(np.sqrt(np.mean((model.predict(X) - y) ** 2))),
        "model": str(out / "model.npz"),
    }
    model.save(metrics["model"])
    if X.shape[1] == 1:
        from .plots import plot_gp_1d

        lo, hi = X[:, 0].min(), X[:, 0].max()
        grid = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 400)[:, None]
        mean, std = model.predict(grid, return_std=True)
        metrics["plot"] = str(out / "gp_fit.png")
        plot_gp_1d(X, y, grid, mean, std, metrics["plot"], title=f"GP fit to {Path(path).name}")
    write_json(out / "metrics.json", metrics)
    return metrics


# ---- train var -------------------------------------------------------------------------
def _cmd_train_var(args) -> int:
    result = train_var(
        data=args.data,
        out_dir=args.out,
        epochs=tuple(args.epochs),
        mode=args.mode,
        latent=args.latent,
        seed=args.seed,
        progress=not args.no_progress,
        device=args.device,
    )
    _print_metrics(result)
    print(f"wrote {args.out}/")
    return 0


def train_var(data="sequences", out_dir="runs/var", epochs=None,
              mode="interpolation", latent=8, seed=0, progress=True, device="cpu"):
    """``minivae train var``: train VAR on a data set's anchors and write its report.

    Parameters
    ----------
    data : str or Path, default "sequences"
        "sequences", "postures", or a folder with images and ``inputs.csv``
        (:func:`~minivae.experiments.load_data`).
    out_dir : str or Path, default "runs/var"
        Written as by :func:`~minivae.experiments.run_experiment`: report.md, metrics.json, figures and
        ``var_checkpoint.npz``.
    epochs : (int, int, int), optional
        Pre-training, joint and fine-tuning epochs; default
        :data:`~minivae.var.DEFAULT_EPOCHS`.
    mode : {"interpolation", "extrapolation"}, default "interpolation"
    latent : int, default 8
        Latent dimension.
    seed : int, default 0
    progress : bool, default True
    device : {"cpu", "gpu", "cuda-sim"}, default "cpu"
        Where VAR runs.

    Returns
    -------
    dict
        :func:`~minivae.experiments.run_experiment`'s result, with VAR's held-out metrics under
        ``result["methods"]["var"]``.
    """
    from .experiments import load_data, run_experiment
    from .var import DEFAULT_EPOCHS

    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    return run_experiment(load_data(data), mode, methods=("var",), seed=seed, epochs=epochs,
                          out_dir=out_dir, progress=progress,
                          settings={"latent_dim": latent, "device": device})


# ---- gradcheck -------------------------------------------------------------------------
def _cmd_gradcheck(args) -> int:
    from .gradcheck import format_table, gradcheck_vae

    rows = gradcheck_vae(likelihood=args.likelihood, activation=args.activation, seed=args.seed)
    print(format_table(rows))
    worst = max(r["rel_error"] for r in rows)
    print("ok: below the bound 1e-6" if worst < 1e-6 else "FAILED: above the bound 1e-6")
    return 0 if worst < 1e-6 else 1


# ---- bench -----------------------------------------------------------------------------
def _cmd_bench(args) -> int:
    if args.cold:
        from .bench.cold import main as cold_main

        return cold_main(out=args.out or "runs/bench-cold.json")
    if args.scaling:
        from .bench import scaling

        sizes = scaling.QUICK() if args.quick else scaling.ScalingSizes()
        return scaling.main(out=args.out or "runs/bench-scaling.json", sizes=sizes)
    from .bench.harness import main as bench_main

    return bench_main(quick=args.quick, device=args.device, out=args.out or "runs/bench.json")


def _version() -> str:
    """The installed distribution's version; the package's own when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("minivae")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``minivae`` command line; every option's help ends with its default."""
    formatter = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="minivae",
        description="Variational autoencoders, Gaussian-process regression and Variational "
        "Autoencoded Regression with hand-derived gradients (no autograd).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", formatter_class=formatter,
                       help="train VAR and its baselines on built-in image sequences")
    d.add_argument("--out", default=None,
                   help="output folder (default runs/demo, with --full runs/benchmark)")
    d.add_argument("--quick", action="store_true", help="fewer epochs, for a smoke run")
    d.add_argument("--full", action="store_true",
                   help="the benchmark behind the README's results table: every regime of "
                   "minivae.experiments.BENCHMARK_REGIMES, every method, seeds 0, 1, 2 "
                   "(about 10 minutes on one core)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train", help="train one model; see `minivae train MODEL --help`")
    tsub = t.add_subparsers(dest="model", required=True, metavar="MODEL")

    tv = tsub.add_parser("vae", formatter_class=formatter, help="train a VAE (AEVB/SGVB)")
    tv.add_argument("--data", default="digits",
                    help="digits | swissroll | PATH (IDX, .npz, or an image folder)")
    tv.add_argument("--key", default=None,
                    help="the array to read from an .npz archive that holds several (None: "
                    "its only array)")
    tv.add_argument("--size", type=_positive_int, default=28,
                    help="side, in pixels, that the images of a folder are resized to")
    tv.add_argument("--latent", type=_positive_int, default=2, help="latent dimension")
    tv.add_argument("--hidden", type=_positive_int, nargs="+", default=[200], help="hidden layer widths")
    tv.add_argument("--activation", default="relu", choices=["relu", "tanh", "softplus"],
                    help="hidden-layer activation")
    tv.add_argument("--likelihood", default=None, choices=["bernoulli", "gaussian"],
                    help="decoder likelihood; None: bernoulli when every value is in [0, 1], "
                    "gaussian otherwise")
    tv.add_argument("--epochs", type=_count, default=50, help="passes over the training set")
    tv.add_argument("--batch-size", type=_positive_int, default=100, help="examples per step")
    tv.add_argument("--optimizer", default="adam", choices=["adam", "adagrad", "sgd"],
                    help="optimiser")
    tv.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate")
    tv.add_argument("--val-fraction", type=_fraction, default=0.2, help="held-out fraction")
    tv.add_argument("--seed", type=_count, default=0, help="model and data-split seed")
    tv.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda-sim"],
                    help="where the model runs")
    tv.add_argument("--out", default="runs/vae", help="output folder")
    tv.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    tv.add_argument("--threads", type=_positive_int, default=None,
                    help="cap the BLAS and Numba thread pools (None: leave them alone; "
                    "1 is often fastest for small models on a busy machine)")
    tv.add_argument("--no-progress", action="store_true", help="no progress bars")
    tv.set_defaults(func=_cmd_train_vae)

    tg = tsub.add_parser("gp", formatter_class=formatter,
                         help="fit a GP regressor to a CSV file (last column is the target)")
    tg.add_argument("--data", required=True, help="PATH.csv: input columns, then y")
    tg.add_argument("--ard", action="store_true", help="one lengthscale per input column")
    tg.add_argument("--restarts", type=_count, default=2, help="random restarts of the optimiser")
    tg.add_argument("--seed", type=_count, default=0, help="seed of the restarts")
    tg.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda-sim"],
                    help="where the model runs")
    tg.add_argument("--out", default="runs/gp", help="output folder")
    tg.set_defaults(func=_cmd_train_gp)

    tr = tsub.add_parser("var", formatter_class=formatter,
                         help="train Variational Autoencoded Regression")
    tr.add_argument("--data", default="sequences",
                    help="sequences | postures | PATH (folder with inputs.csv)")
    tr.add_argument("--epochs", type=_count, nargs=3, default=[300, 600, 150],
                    metavar=("PRE", "JOINT", "FINE"),
                    help="epochs of pre-training, joint training and fine-tuning "
                    "(VARegressor's default)")
    tr.add_argument("--mode", default="interpolation", choices=["interpolation", "extrapolation"],
                    help="which frames are held out")
    tr.add_argument("--latent", type=_positive_int, default=8, help="latent dimension")
    tr.add_argument("--seed", type=_count, default=0, help="model seed")
    tr.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda-sim"],
                    help="where the model runs")
    tr.add_argument("--out", default="runs/var", help="output folder")
    tr.add_argument("--no-progress", action="store_true", help="no progress bars")
    tr.set_defaults(func=_cmd_train_var)

    g = sub.add_parser("gradcheck", formatter_class=formatter,
                       help="analytic vs finite-difference gradients")
    g.add_argument("model", choices=["vae"], help="the model to check")
    g.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"],
                   help="decoder likelihood")
    g.add_argument("--activation", default="tanh", choices=["relu", "tanh", "softplus"],
                   help="hidden-layer activation")
    g.add_argument("--seed", type=_count, default=0, help="seed of the model and its data")
    g.set_defaults(func=_cmd_gradcheck)

    b = sub.add_parser("bench", formatter_class=formatter,
                       help="benchmarks: ours vs baselines, as ratios of medians")
    b.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    b.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                   help="cpu: the target table; gpu: cuda kernels against cpu (needs CuPy)")
    mode = b.add_mutually_exclusive_group()
    mode.add_argument("--cold", action="store_true",
                      help="first five calls of each kernel in fresh processes vs warm")
    mode.add_argument("--scaling", action="store_true",
                      help="GP fit/predict against n and the VAE step against batch, "
                           "ours vs peers, with peak memory and a log-log PNG")
    b.add_argument("--out", default=None,
                   help="where to write the JSON (default runs/bench.json, "
                        "runs/bench-cold.json or runs/bench-scaling.json; the PNG beside it)")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MinivaeError, ValueError, OSError) as exc:
        # The library's checks raise these for bad input (DataError and CheckpointError
        # are ValueErrors too; a missing or unwritable path is an OSError).
        print(f"minivae: error: {exc or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minivae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
