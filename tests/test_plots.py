"""Tests of minivae.plots: every figure is a real, non-blank PNG written atomically."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from minivae import plots
from minivae.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(fig, path):
    """``fig`` is the Figure a plot function returned and ``path`` holds it as a PNG."""
    assert isinstance(fig, Figure)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels[..., :3].var() > 1e-4, "the figure is blank"
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left behind"


def test_plot_history_losses_and_phases(tmp_path):
    history = {"epoch": [1, 2, 3, 4], "train_loss": [9.0, 6.0, 5.0, 4.5],
               "val_loss": [9.5, 7.0, 6.0, 5.5], "phase": ["vae", "vae", "gp", "gp"]}
    out = plots.plot_history(history, tmp_path / "sub" / "history.png", title="demo")
    assert_real_png(out, tmp_path / "sub" / "history.png")
    no_validation = {"epoch": [1, 2], "train_loss": [9.0, 6.0], "val_loss": [None, None]}
    assert_real_png(plots.plot_history(no_validation, tmp_path / "no_val.png"), tmp_path / "no_val.png")
    elbo = {"epoch": [1, 2], "train_elbo": [-9.0, -6.0]}
    assert_real_png(plots.plot_history(elbo, tmp_path / "elbo.png"), tmp_path / "elbo.png")
    with pytest.raises(DataError, match="train_loss"):
        plots.plot_history({"epoch": [1]}, tmp_path / "x.png")
    with pytest.raises(DataError, match="3 entries"):
        plots.plot_history({"epoch": [1, 2], "train_loss": [1.0, 2.0, 3.0]}, tmp_path / "x.png")


def test_image_grid_square_rows_and_labels(tmp_path, rng):
    images = rng.random((7, 36))
    out = plots.image_grid(images, tmp_path / "grid.png", nrow=2, titles=list("abcdefg"),
                           row_labels=["first", "second"])
    assert_real_png(out, tmp_path / "grid.png")
    with pytest.raises(DataError, match="not square"):
        plots.image_grid(rng.random((3, 10)), tmp_path / "bad.png")
    with pytest.raises(DataError, match="row labels"):
        plots.image_grid(images, tmp_path / "bad.png", nrow=2, row_labels=["only one"])
    with pytest.raises(ValueError, match="nrow"):
        plots.image_grid(images, tmp_path / "bad.png", nrow=8)
    assert not (tmp_path / "bad.png").exists()


def test_latent_manifold_uses_the_gaussian_inverse_cdf(tmp_path):
    from scipy.stats import norm

    seen = []

    def decode(z):
        seen.append(z)
        return 1.0 / (1.0 + np.exp(-(z[:, :1] * np.linspace(-1, 1, 16) + z[:, 1:])))

    assert_real_png(plots.latent_manifold(decode, tmp_path / "m.png", n=5, image_shape=(4, 4)), tmp_path / "m.png")
    codes = seen[0]
    assert codes.shape == (25, 2)
    np.testing.assert_allclose(np.unique(codes[:, 0]), norm.ppf(np.linspace(0.05, 0.95, 5)), rtol=1e-12)
    with pytest.raises(DataError, match="decode returned shape"):
        plots.latent_manifold(decode, tmp_path / "bad.png", n=3, image_shape=(3, 3))


def test_plot_gp_1d_and_latent_trajectory(tmp_path, rng):
    x = np.sort(rng.random(8))
    x_test = np.linspace(0, 1, 30)
    out = plots.plot_gp_1d(x[:, None], np.sin(6 * x), x_test, np.sin(6 * x_test), 0.1 + 0 * x_test,
                           tmp_path / "gp.png", title="sine")
    assert_real_png(out, tmp_path / "gp.png")
    with pytest.raises(DataError, match="one mean and std"):
        plots.plot_gp_1d(x, np.sin(x), x_test, np.sin(x_test)[:5], x_test, tmp_path / "bad.png")
    codes = np.column_stack([np.sin(6 * x), np.cos(6 * x), x])
    mean = np.column_stack([np.sin(6 * x_test), np.cos(6 * x_test), x_test])
    assert_real_png(plots.plot_latent_trajectory(x, codes, x_test, mean, 0.1 * np.ones(30),
                                                 tmp_path / "traj.png", dims=3), tmp_path / "traj.png")
    assert_real_png(plots.plot_latent_trajectory(x, codes, x_test, mean, 0.1 * np.ones((30, 3)),
                                                 tmp_path / "traj2.png"), tmp_path / "traj2.png")
    with pytest.raises(DataError, match="mean has shape"):
        plots.plot_latent_trajectory(x, codes, x_test, mean[:, :2], 0.1 * np.ones(30), tmp_path / "b.png")


def test_compare_methods(tmp_path, rng):
    truth = rng.random((10, 8, 8))
    predictions = {"VAR": truth + 0.05, "mean image": np.repeat(truth.mean(0, keepdims=True), 10, 0)}
    assert_real_png(plots.compare_methods(truth, predictions, tmp_path / "cmp.png", n_show=6), tmp_path / "cmp.png")
    with pytest.raises(DataError, match="same held-out inputs"):
        plots.compare_methods(truth, {"bad": truth[:5]}, tmp_path / "bad.png")
    with pytest.raises(DataError, match="empty"):
        plots.compare_methods(truth, {}, tmp_path / "bad.png")


def _capture_saved_figures(monkeypatch):
    """Record every Figure a plot function returns (after it is saved)."""
    saved = []

    real_finish = plots._finish

    def record(fig, path, own):
        saved.append(real_finish(fig, path, own))
        return saved[-1]

    monkeypatch.setattr(plots, "_finish", record)
    return saved


def test_plot_history_ylabel_defaults_to_the_elbo_and_can_be_given(tmp_path, monkeypatch):
    saved = _capture_saved_figures(monkeypatch)
    history = {"epoch": [1, 2], "train_loss": [2.0, 1.0]}
    plots.plot_history(history, tmp_path / "a.png")
    plots.plot_history(history, tmp_path / "b.png", ylabel="loss (nats/example)")
    plots.plot_history({"epoch": [1, 2], "train_elbo": [-2.0, -1.0]}, tmp_path / "c.png")
    labels = [fig.axes[0].get_ylabel() for fig in saved]
    assert labels == ["negative ELBO (nats/example)", "loss (nats/example)", "ELBO (nats/example)"]


def test_compare_methods_clips_overshooting_predictions_for_display(tmp_path, monkeypatch, rng):
    saved = _capture_saved_figures(monkeypatch)
    truth = rng.random((3, 4, 4))
    overshoot = truth.copy()
    overshoot[0, 0, 0], overshoot[1, 2, 3] = -0.4, 1.7
    plots.compare_methods(truth, {"gp": overshoot}, tmp_path / "cmp.png")
    shown = [ax.images[0] for ax in saved[0].axes if ax.images]
    assert len(shown) == 6
    for image in shown:
        assert image.get_clim() == (0.0, 1.0)
    np.testing.assert_array_equal(shown[4].get_array(), np.clip(overshoot[1], 0.0, 1.0))
    np.testing.assert_array_equal(overshoot[1, 2, 3], 1.7)


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "history.png"
    target.write_bytes(b"previous figure")

    def write_half_then_fail(self, handle, **kwargs):  # the figure goes to a binary file
        handle.write(PNG_SIGNATURE)
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_history({"epoch": [1, 2], "train_loss": [2.0, 1.0]}, target)
    assert target.read_bytes() == b"previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["history.png"]


def test_figures_read_at_a_glance(tmp_path, monkeypatch, rng):
    saved = _capture_saved_figures(monkeypatch)
    plots.plot_history({"epoch": [1, 2, 3], "train_loss": [500.0, 40.0, 30.0],
                        "val_loss": [None, 45.0, 35.0]}, tmp_path / "h.png")
    (ax,) = saved[-1].axes
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 2
    plots.plot_history({"epoch": [1, 2], "train_loss": [40.0, 30.0]}, tmp_path / "h.png")
    assert saved[-1].axes[0].get_yscale() == "linear"
    plots.image_grid(rng.random((4, 8, 8)), tmp_path / "g.png")
    assert saved[-1].subplotpars.wspace > 0 and saved[-1].subplotpars.hspace > 0
    plots.latent_manifold(lambda z: np.ones((z.shape[0], 16)), tmp_path / "m.png", n=3,
                          image_shape=(4, 4))
    canvas = saved[-1].axes[0].get_images()[0].get_array()
    assert canvas.shape == (3 * 5 - 1, 3 * 5 - 1) and np.ma.is_masked(canvas[4, 0])
    t = np.linspace(0, 1, 5)
    plots.plot_latent_trajectory(t, rng.random((5, 2)), t, rng.random((5, 2)), np.full(5, 1e-3),
                                 tmp_path / "t.png", dims=1)
    band = saved[-1].axes[0].collections[0]
    assert band.get_alpha() >= 0.3 and len(saved[-1].axes[0].get_lines()) == 4  # mean, edges, codes
    truth = rng.random((3, 8, 8))
    plots.compare_methods(truth, {"VAR": truth}, tmp_path / "c.png", psnr={"VAR": 31.25})
    labels = [ax.get_ylabel() for ax in saved[-1].axes if ax.get_ylabel()]
    assert labels == ["ground truth", "VAR\nPSNR 31.2 dB"]


def test_new_figure_options_write_pngs(tmp_path, rng):
    truth = rng.random((3, 8, 8))
    assert_real_png(plots.compare_methods(truth, {"VAR": truth}, tmp_path / "c.png",
                                          psnr={"VAR": 20.0}), tmp_path / "c.png")
    assert_real_png(plots.plot_history({"epoch": [1, 2], "train_loss": [900.0, 3.0]},
                                       tmp_path / "h.png"), tmp_path / "h.png")


def test_plots_draw_on_the_callers_axes_and_figures_and_save_only_when_asked(tmp_path, rng):
    canvas = Figure(figsize=(12, 8))
    left, right = canvas.subplots(1, 2)
    history = {"epoch": [1, 2], "train_loss": [2.0, 1.0]}
    assert plots.plot_history(history, ax=left) is canvas
    assert left.get_xlabel() == "epoch" and len(canvas.axes) == 2
    x = np.linspace(0, 1, 6)
    assert plots.plot_gp_1d(x, x, x, x, 0.1 + 0 * x, ax=right, title="gp") is canvas
    assert right.get_title() == "gp"
    assert plots.latent_manifold(lambda z: np.ones((z.shape[0], 4)), n=2, image_shape=(2, 2),
                                 ax=left) is canvas
    panels = Figure().subfigures(1, 2)
    truth = rng.random((3, 4, 4))
    top = plots.compare_methods(truth, {"VAR": truth}, n_show=3, fig=panels[0])
    assert top is panels[0].figure and len(panels[0].axes) == 6 and not panels[1].axes
    plots.plot_latent_trajectory(x, rng.random((6, 2)), x, rng.random((6, 2)), 0.1 + 0 * x,
                                 tmp_path / "t.png", fig=panels[1])
    assert len(panels[1].axes) == 2
    assert_real_png(top, tmp_path / "t.png")  # the whole figure, both panels, was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png"]  # path=None wrote nothing
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        plots.plot_history(history, ax=canvas)
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure or SubFigure"):
        plots.image_grid(truth, fig=left)
