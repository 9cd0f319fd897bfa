"""Tests of minivae.experiments: the baselines, run_experiment's outputs, and its atomicity.

Everything runs on tiny data (two sequences of 16 frames, 12 x 12 images) with one or two
epochs, so the numbers are poor; the tests check behaviour, shapes and files, not quality.
"""
import json
import os
import stat

import numba
import numpy as np
import pytest
from minivae.kernels.threads import limited_threads

from minivae import experiments, plots
from minivae.cli import run_demo, train_var
from minivae.datasets import make_image_sequences, make_postures
from minivae.errors import DataError
from minivae.baselines import NearestAnchor, PixelGP, TwoStage, starting_lengthscales
from minivae.experiments import METHODS, compare_seeds, run_experiment
from minivae.reports import RUN_MARKER, _dense_inputs, _numbered_across_phases

TINY_SETTINGS = {"latent_dim": 2, "hidden": (16,), "batch_size": 16, "n_anchor": 6, "n_query": 4}
TINY_EPOCHS = (1, 1, 1)


@pytest.fixture(autouse=True)
def one_thread_per_pool():
    """Run every test as run_experiment runs: one BLAS and one Numba thread.

    On a few shared cores the default thread pools make these small models 20-50x slower
    (see limited_threads); the tests would take minutes instead of seconds.
    """
    with limited_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny_sequences():
    return make_image_sequences(n_sequences=2, n_frames=16, size=12, seed=3, supersample=1)


@pytest.fixture(scope="module")
def tiny_postures():
    return make_postures(n_sequences=2, n_frames=16, size=12, seed=3)


def split_parts(data, mode="interpolation"):
    train_idx, test_idx = data.split(mode)
    return data.subset(train_idx), data.subset(test_idx)


def test_nearest_anchor_picks_the_nearest_input_of_the_same_sequence(rng):
    X = np.array([[0.0], [1.0], [10.0], [0.5]])
    Y = rng.random((4, 3, 3))
    groups = np.array([0, 0, 1, 1])
    model = NearestAnchor().fit(X, Y, groups)
    predicted = model.predict(np.array([[0.4], [0.6], [0.6], [9.0]]), np.array([0, 0, 1, 1]))
    # 0.6 is nearest to 0.5 overall, but 0.5 is in sequence 1; in sequence 0 it is 1.0.
    np.testing.assert_array_equal(predicted, Y[[0, 1, 3, 2]])


def test_nearest_anchor_returns_exact_training_images(tiny_postures):
    train, test = split_parts(tiny_postures)
    model = NearestAnchor().fit(train.X, train.Y, train.groups)
    np.testing.assert_array_equal(model.predict(train.X, train.groups), train.Y)
    predicted = model.predict(test.X, test.groups)
    assert predicted.shape == test.Y.shape
    for image, group in zip(predicted, test.groups):
        same_group = train.Y[train.groups == group]
        assert any(np.array_equal(image, candidate) for candidate in same_group)


def test_prediction_for_an_unseen_sequence_names_the_problem(tiny_sequences):
    train, _ = split_parts(tiny_sequences)
    model = NearestAnchor().fit(train.X, train.Y, train.groups)
    with pytest.raises(DataError, match="sequence 7 has no training examples"):
        model.predict(train.X[:1], np.array([7]))


def test_starting_lengthscales_span_nearest_neighbour_to_median_distance():
    X = np.arange(5.0)[:, None]
    # nearest distinct neighbours are all 1 apart; the 10 pairwise distances have median 2
    np.testing.assert_allclose(starting_lengthscales(X, 3), [1.0, np.sqrt(2.0), 2.0], rtol=1e-12)
    np.testing.assert_array_equal(starting_lengthscales(np.zeros((3, 2)), 2), [1.0, 1.0])


def test_pixel_gp_predicts_image_shapes_per_sequence(tiny_sequences):
    train, test = split_parts(tiny_sequences)
    model = PixelGP().fit(train.X, train.Y, train.groups)
    predicted = model.predict(test.X, test.groups)
    assert predicted.shape == test.Y.shape
    assert np.all(np.isfinite(predicted))
    # the GP interpolates a smooth sequence far better than its mean image does
    mean_images = np.stack([train.Y[train.groups == g].mean(axis=0) for g in test.groups])
    assert np.mean((predicted - test.Y) ** 2) < 0.5 * np.mean((mean_images - test.Y) ** 2)


def test_pixel_gp_predicts_a_constant_sequence_as_its_image(rng):
    image = rng.random((4, 4))
    X = np.linspace(0.0, 1.0, 6)[:, None]
    model = PixelGP().fit(X, np.repeat(image[None], 6, axis=0))
    # the mean of six equal values can differ from them in the last bit
    np.testing.assert_allclose(model.predict(np.array([[0.3], [2.0]])), np.stack([image, image]),
                               rtol=1e-12)


def test_pixel_gp_is_equivariant_to_the_images_scale(tiny_sequences):
    # dim images (variance ~1e-8 here) used to start the noise below its bound and fail
    train, test = split_parts(tiny_sequences)
    bright = PixelGP().fit(train.X, train.Y, train.groups).predict(test.X, test.groups)
    dim = PixelGP().fit(train.X, 1e-4 * train.Y, train.groups).predict(test.X, test.groups)
    np.testing.assert_allclose(dim, 1e-4 * bright, rtol=1e-6, atol=1e-4 * 1e-6)


def test_pixel_gp_keeps_only_the_winning_starts_warnings(monkeypatch, tiny_sequences):
    import warnings

    from minivae import gp

    class Start:
        """A stand-in GP: the smallest starting lengthscale warns and loses."""

        def __init__(self, lengthscale, **_):
            self.lengthscale = lengthscale

        def fit(self, X, y):
            self.log_marginal_likelihood_value_ = self.lengthscale
            if self.lengthscale == smallest:
                warnings.warn("losing start", RuntimeWarning)
            if self.lengthscale == largest:
                warnings.warn("winning start", RuntimeWarning)
            return self

    train, _ = split_parts(tiny_sequences)
    starts = starting_lengthscales(train.X[train.groups == 0], 3)
    smallest, largest = starts[0], starts[-1]
    monkeypatch.setattr(gp, "GPRegressor", Start)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PixelGP().fit(train.X[train.groups == 0], train.Y[train.groups == 0])
    assert [str(w.message) for w in caught] == ["winning start"]


def test_two_stage_predicts_images_and_codes(tiny_postures):
    train, test = split_parts(tiny_postures, "extrapolation")
    model = TwoStage(latent_dim=3, hidden=(16,), epochs=2, batch_size=16)
    model.fit(train.X, train.Y, train.groups)
    predicted = model.predict(test.X, test.groups)
    assert predicted.shape == test.Y.shape
    assert np.all((predicted >= 0) & (predicted <= 1))
    mean, variance = model.predict_latent(test.X, test.groups)
    assert mean.shape == (test.n, 3) and variance.shape == (test.n,)
    assert np.all(variance >= 0)
    assert model.history_["epoch"] == [1, 2]


def test_two_stage_is_bit_identical_for_a_seed(tiny_sequences):
    train, test = split_parts(tiny_sequences)
    first, second = (TwoStage(latent_dim=2, hidden=(8,), epochs=2, batch_size=16, seed=5)
                     .fit(train.X, train.Y, train.groups).predict(test.X, test.groups)
                     for _ in range(2))
    np.testing.assert_array_equal(first, second)


def test_dense_inputs_interpolate_each_column_over_t():
    t = np.array([0.0, 1.0, 0.5])
    X = np.column_stack([t, 2.0 * t + 1.0])
    t_dense, X_dense = _dense_inputs(X, t, 5)
    np.testing.assert_allclose(t_dense, [0.0, 0.25, 0.5, 0.75, 1.0], rtol=1e-12)
    np.testing.assert_allclose(X_dense, np.column_stack([t_dense, 2.0 * t_dense + 1.0]), rtol=1e-12)


def test_loss_curves_number_epochs_across_phases():
    history = {"epoch": [1, 2, 1, 1], "train_loss": [4.0, 3.0, 2.0, 1.0],
               "phase": ["pretrain", "pretrain", "joint", "finetune"]}
    numbered = _numbered_across_phases(history)
    assert numbered["epoch"] == [1, 2, 3, 4]
    assert numbered["train_loss"] == history["train_loss"] and numbered["phase"] == history["phase"]
    assert history["epoch"] == [1, 2, 1, 1]


def test_run_experiment_scores_every_method_and_writes_the_report(tiny_sequences, tmp_path,
                                                                  monkeypatch):
    ylabels = {}
    real_plot_history = plots.plot_history

    def recording_plot_history(history, path, **kwargs):
        ylabels[path.name] = kwargs.get("ylabel")
        return real_plot_history(history, path, **kwargs)

    monkeypatch.setattr(plots, "plot_history", recording_plot_history)
    out_dir = tmp_path / "run"
    result = run_experiment(tiny_sequences, "interpolation", epochs=TINY_EPOCHS, out_dir=out_dir,
                            progress=False, settings=TINY_SETTINGS)
    assert list(result["methods"]) == list(METHODS)
    for name, scores in result["methods"].items():
        extra = {"coverage_2std"} if name == "var" else set()
        assert set(scores) == {"mse", "psnr", "ssim", "fit_seconds", "predict_seconds"} | extra
        assert scores["mse"] >= 0 and -1 <= scores["ssim"] <= 1
    expected = {"report.md", "metrics.json", "comparison.png", "latent_trajectory.png",
                "var_loss.png", "two_stage_loss.png", "var_checkpoint.npz", RUN_MARKER}
    assert {path.name for path in out_dir.iterdir()} == expected
    assert [path.name for path in tmp_path.iterdir()] == ["run"]
    for png in out_dir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads((out_dir / "metrics.json").read_text())
    assert written["methods"] == result["methods"]
    assert written["n_test"] == result["n_test"] == 6
    report = (out_dir / "report.md").read_text()
    for name in METHODS:
        assert f"| {name} |" in report
    for figure in result["figures"]:
        assert f"]({figure})" in report
    from minivae.var import VARegressor

    var = VARegressor.load(out_dir / "var_checkpoint.npz")
    test = tiny_sequences.subset(tiny_sequences.split("interpolation")[1])
    assert var.predict(test.X, test.groups).shape == test.Y.shape
    # VAR's joint and fine-tuning losses are not a negative ELBO; the two-stage VAE's is
    assert ylabels == {"var_loss.png": "loss (nats/example)", "two_stage_loss.png": None}


def test_a_failure_mid_run_leaves_no_half_written_files(tiny_sequences, tmp_path, monkeypatch):
    def broken_plot_history(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "plot_history", broken_plot_history)
    with pytest.raises(RuntimeError, match="disk full"):
        run_experiment(tiny_sequences, methods=("nearest_anchor", "two_stage"),
                       epochs=TINY_EPOCHS, out_dir=tmp_path / "fresh", progress=False,
                       settings=TINY_SETTINGS)
    assert list(tmp_path.iterdir()) == []
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / RUN_MARKER).write_text("")
    (earlier / "report.md").write_text("the previous run")
    with pytest.raises(RuntimeError, match="disk full"):
        run_experiment(tiny_sequences, methods=("nearest_anchor", "two_stage"),
                       epochs=TINY_EPOCHS, out_dir=earlier, progress=False,
                       settings=TINY_SETTINGS)
    assert [path.name for path in tmp_path.iterdir()] == ["earlier"]
    assert sorted(path.name for path in earlier.iterdir()) == sorted([RUN_MARKER, "report.md"])
    assert (earlier / "report.md").read_text() == "the previous run"


def test_a_finished_run_replaces_an_earlier_run_folder(tiny_sequences, tmp_path):
    out_dir = tmp_path / "run"
    run_experiment(tiny_sequences, methods=("nearest_anchor",), out_dir=out_dir, progress=False)
    (out_dir / "stale.txt").write_text("added to an earlier run")
    run_experiment(tiny_sequences, methods=("nearest_anchor",), out_dir=out_dir, progress=False)
    assert {path.name for path in out_dir.iterdir()} == {"report.md", "metrics.json",
                                                         "comparison.png", RUN_MARKER}
    assert [path.name for path in tmp_path.iterdir()] == ["run"]
    empty = tmp_path / "empty"
    empty.mkdir()
    run_experiment(tiny_sequences, methods=("nearest_anchor",), out_dir=empty, progress=False)
    assert (empty / "metrics.json").is_file()


def _no_training(monkeypatch):
    """Record every model run_experiment would build, so a test can check none was."""
    built = []
    monkeypatch.setattr(experiments, "_make_method", lambda name, *args: built.append(name))
    return built


def test_a_folder_minivae_did_not_write_is_refused_untouched_before_training(
        tiny_sequences, tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "notes.txt").write_text("my work")
    (project / "src" / "main.py").write_text("print(1)")
    built = _no_training(monkeypatch)
    for call in (lambda: run_experiment(tiny_sequences, out_dir=project, progress=False),
                 lambda: compare_seeds(tiny_sequences, seeds=(0,), out_dir=project,
                                       progress=False)):
        with pytest.raises(DataError, match="holds files minivae did not write"):
            call()
    assert built == []
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "project", "project/notes.txt", "project/src", "project/src/main.py"]
    assert (project / "notes.txt").read_text() == "my work"


def test_the_current_folder_is_refused_before_training(tiny_sequences, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    built = _no_training(monkeypatch)
    for out_dir in (".", "..", str(here)):
        with pytest.raises(DataError, match="is the current folder or contains it"):
            run_experiment(tiny_sequences, out_dir=out_dir, progress=False)
    assert built == []
    assert list(tmp_path.iterdir()) == [here] and list(here.iterdir()) == []


def test_output_folders_and_files_follow_the_umask(tiny_sequences, tmp_path):
    previous = os.umask(0o022)
    try:
        run_experiment(tiny_sequences, methods=("nearest_anchor",), out_dir=tmp_path / "run",
                       progress=False)
        compare_seeds(tiny_sequences, seeds=(0,), methods=("nearest_anchor",),
                      out_dir=tmp_path / "seeds", progress=False)
    finally:
        os.umask(previous)

    def mode(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    for folder in (tmp_path / "run", tmp_path / "seeds", tmp_path / "seeds" / "seed0"):
        assert mode(folder) == 0o755
        for path in folder.iterdir():
            assert mode(path) == (0o755 if path.is_dir() else 0o644), path


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"methods": ("nearest_anchor", "magic")}, "unknown \\['magic'\\]"),
        ({"epochs": (1, 2)}, "three non-negative integers"),
        ({"settings": {"latent": 3}}, "unknown settings \\['latent'\\]"),
        ({"mode": "sideways"}, "mode='sideways' is not known"),
    ],
)
def test_run_experiment_rejects_bad_arguments(tiny_sequences, arguments, message):
    with pytest.raises(ValueError, match=message):
        run_experiment(tiny_sequences, progress=False, **arguments)


def test_out_dir_that_is_a_file_is_refused_before_training(tiny_sequences, tmp_path):
    path = tmp_path / "taken"
    path.write_text("")
    with pytest.raises(DataError, match="exists and is a file"):
        run_experiment(tiny_sequences, methods=("nearest_anchor",), out_dir=path, progress=False)


def test_compare_seeds_summarises_each_metric_over_seeds(tiny_sequences, tmp_path):
    comparison = compare_seeds(tiny_sequences, "interpolation", seeds=(0, 1),
                               methods=("nearest_anchor", "two_stage"), epochs=(1, 1, 0),
                               settings=TINY_SETTINGS, out_dir=tmp_path, progress=False)
    assert comparison["seeds"] == [0, 1] and len(comparison["runs"]) == 2
    values = [run["methods"]["two_stage"]["psnr"] for run in comparison["runs"]]
    summary = comparison["summary"]["two_stage"]["psnr"]
    assert summary["values"] == values
    assert summary["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert summary["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert comparison["summary"]["nearest_anchor"]["psnr"]["std"] == 0.0  # no randomness
    assert {path.name for path in tmp_path.iterdir()} == {"seed0", "seed1", "summary.json",
                                                          "summary.md", RUN_MARKER}
    assert "| two_stage |" in (tmp_path / "summary.md").read_text()


def _tree(folder):
    """Every file under ``folder``: relative path -> bytes."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_compare_seeds_failing_in_the_last_seed_leaves_out_dir_as_it_was(
        tiny_sequences, tmp_path, monkeypatch):
    out_dir = tmp_path / "seeds"
    compare_seeds(tiny_sequences, seeds=(0, 1), methods=("nearest_anchor",), out_dir=out_dir,
                  progress=False)
    before = _tree(out_dir)
    real_run_experiment = experiments.run_experiment

    def failing_in_seed_1(*args, **kwargs):
        if kwargs["seed"] == 1:
            raise RuntimeError("simulated failure in seed 1")
        return real_run_experiment(*args, **kwargs)

    monkeypatch.setattr(experiments, "run_experiment", failing_in_seed_1)
    with pytest.raises(RuntimeError, match="seed 1"):
        compare_seeds(tiny_sequences, seeds=(0, 1), methods=("nearest_anchor",),
                      settings={"n_anchor_every": 3}, out_dir=out_dir, progress=False)
    assert _tree(out_dir) == before
    assert [path.name for path in tmp_path.iterdir()] == ["seeds"]


def test_quick_demo_writes_the_demo_folder(tmp_path):
    result = run_demo(out_dir=tmp_path / "demo", progress=False, quick=True)
    assert (result["data"], result["mode"], result["n_test"]) == ("image_sequences",
                                                                  "interpolation", 66)
    assert list(result["methods"]) == list(METHODS)
    assert {"report.md", "metrics.json", "var_checkpoint.npz", "comparison.png"} <= {
        path.name for path in (tmp_path / "demo").iterdir()}


def test_train_var_reads_a_folder_and_writes_var_only(tmp_path):
    from PIL import Image

    data = make_image_sequences(n_sequences=1, n_frames=16, size=12, seed=1, supersample=1)
    folder = tmp_path / "frames"
    folder.mkdir()
    rows = ["file,t"]
    for index, (image, t) in enumerate(zip(data.Y, data.t)):
        Image.fromarray(np.round(255 * image).astype(np.uint8)).save(folder / f"{index:02d}.png")
        rows.append(f"{index:02d}.png,{float(t)!r}")
    (folder / "inputs.csv").write_text("\n".join(rows) + "\n")
    result = train_var(data=str(folder), out_dir=tmp_path / "out", epochs=(1, 1, 1),
                           latent=2, seed=0, progress=False)
    assert list(result["methods"]) == ["var"]
    assert result["settings"]["latent_dim"] == 2 and result["data"] == "frames"
    assert (tmp_path / "out" / "var_checkpoint.npz").is_file()


def test_train_var_names_an_unknown_data_set(tmp_path):
    with pytest.raises(DataError, match="neither 'sequences', 'postures' nor a folder"):
        train_var(data=str(tmp_path / "missing"), out_dir=tmp_path / "out", progress=False)


def test_limited_threads_sets_numba_threads_and_restores_them():
    from threadpoolctl import threadpool_info

    assert numba.get_num_threads() == 1  # the autouse fixture's limit
    with limited_threads(2):
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
        assert all(pool["num_threads"] <= 2 for pool in threadpool_info())
    assert numba.get_num_threads() == 1
    with pytest.raises(ValueError, match="positive integer or None"):
        with limited_threads(0):
            pass


def test_baselines_treat_missing_groups_as_one_sequence():
    t = np.linspace(0.0, 1.0, 9)
    images = np.stack([np.full((7, 7), value) for value in t])
    train, query = np.arange(0, 9, 2), np.arange(1, 9, 2)
    nearest = NearestAnchor().fit(t[train, None], images[train]).predict(t[query, None])
    smooth = PixelGP().fit(t[train, None], images[train]).predict(t[query, None])
    assert nearest.shape == smooth.shape == (4, 7, 7)
    # a ramp of constant images is what a smooth GP interpolates well and a lookup cannot
    assert np.mean((smooth - images[query]) ** 2) < 0.1 * np.mean((nearest - images[query]) ** 2)


def test_sparse_split_keeps_every_kth_frame_and_the_last(tiny_sequences):
    train_idx, test_idx = experiments.split_data(tiny_sequences, "sparse",
                                                 experiments._settings({"keep_every": 4}))
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.union1d(train_idx, test_idx).size == tiny_sequences.n
    for group in np.unique(tiny_sequences.groups):
        members = np.flatnonzero(tiny_sequences.groups == group)
        ordered = members[np.argsort(tiny_sequences.t[members], kind="stable")]
        kept = np.flatnonzero(np.isin(ordered, train_idx))
        assert kept.tolist() == [0, 4, 8, 12, 15]


@pytest.mark.parametrize("keep_every, error, message", [
    (1, ValueError, "keep_every=1 must be an integer >= 2"),
    (2.5, ValueError, "keep_every=2.5 must be an integer >= 2"),
])
def test_sparse_split_rejects_bad_spacings(tiny_sequences, keep_every, error, message):
    with pytest.raises(error, match=message):
        experiments.split_data(tiny_sequences, "sparse",
                               experiments._settings({"keep_every": keep_every}))


def test_sparse_split_that_holds_out_nothing_names_the_problem():
    data = make_image_sequences(n_sequences=1, n_frames=2, size=8, seed=0, supersample=1)
    with pytest.raises(DataError, match="holds out nothing"):
        experiments.split_data(data, "sparse", experiments._settings({"keep_every": 2}))


def test_coverage_counts_pixels_within_k_standard_deviations():
    truth = np.array([[0.0, 1.0], [2.0, 3.0]])
    mean = np.zeros((2, 2))
    std = np.full((2, 2), 0.75)
    assert experiments.coverage(truth, mean, std) == 0.5  # |0|, |1| <= 1.5; 2, 3 are not
    assert experiments.coverage(truth, mean, std, k=3.0) == 0.75  # 3 > 2.25


def test_var_scores_hold_the_coverage_of_its_predicted_spread(tiny_sequences):
    result = run_experiment(tiny_sequences, "sparse", methods=("var",), epochs=TINY_EPOCHS,
                            settings={**TINY_SETTINGS, "n_anchor": None, "n_query": None},
                            progress=False)
    assert 0.0 <= result["methods"]["var"]["coverage_2std"] <= 1.0


def test_run_benchmark_writes_every_regime_table_and_figure(tmp_path, monkeypatch):
    tiny = {"n_sequences": 2, "n_frames": 16, "size": 12, "seed": 3, "supersample": 1}
    monkeypatch.setattr(experiments, "BENCHMARK_REGIMES", {
        "tiny sparse": ("sequences", tiny, "sparse", {"keep_every": 4}),
        "tiny postures": ("postures", {"n_sequences": 2, "n_frames": 16, "size": 12},
                          "extrapolation", {}),
    })
    settings = {**TINY_SETTINGS, "n_anchor": None, "n_query": None}
    result = experiments.run_benchmark(tmp_path / "bench", seeds=(0, 1), epochs=TINY_EPOCHS,
                                       settings=settings, progress=False)
    assert list(result["regimes"]) == ["tiny sparse", "tiny postures"]
    sparse = result["regimes"]["tiny sparse"]
    assert (sparse["n_train"], sparse["n_test"]) == (10, 22)
    assert len(sparse["runs"]) == 2 and set(sparse["summary"]) == set(METHODS)
    psnr = [run["var"]["psnr"] for run in sparse["runs"]]
    assert sparse["summary"]["var"]["psnr"]["mean"] == pytest.approx(np.mean(psnr), rel=1e-12)
    written = {path.name for path in (tmp_path / "bench").iterdir()}
    # one figure per regime; the latent trajectory only for one-column inputs
    assert written == {"results.json", "results.md", "regime1.png", "regime1-latent.png",
                       "regime2.png", RUN_MARKER}
    table = (tmp_path / "bench" / "results.md").read_text()
    assert table.count("| tiny sparse |") == 3 and "| tiny postures |" in table
    assert json.loads((tmp_path / "bench" / "results.json").read_text())["seeds"] == [0, 1]


def test_run_benchmark_rejects_an_unknown_regime(tmp_path):
    with pytest.raises(ValueError, match="unknown regimes \\['sideways'\\]"):
        experiments.run_benchmark(tmp_path / "bench", regimes=["sideways"], progress=False)
    assert not (tmp_path / "bench").exists()


def test_demo_full_runs_the_benchmark_into_its_folder(tmp_path, monkeypatch, capsys):
    from minivae import cli

    calls = []

    def fake_benchmark(out_dir, progress):
        calls.append((out_dir, progress))
        (tmp_path / "bench").mkdir()
        (tmp_path / "bench" / "results.md").write_text("| table |\n")

    monkeypatch.setattr(experiments, "run_benchmark", fake_benchmark)
    assert cli.main(["demo", "--full", "--no-progress", "--out", str(tmp_path / "bench")]) == 0
    assert calls == [(str(tmp_path / "bench"), False)]
    assert "| table |" in capsys.readouterr().out
