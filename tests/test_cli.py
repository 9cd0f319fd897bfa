"""The command line: each command runs end to end on tiny settings and writes what it says."""

import json

import numpy as np
import pytest

from minivae import cli


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "train", "gradcheck", "bench"):
        assert command in out


def test_train_vae_writes_checkpoint_metrics_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "vae", "--data", "digits", "--latent", "2", "--hidden", "16",
            "--out", str(out), "--no-progress", "--threads", "1"]
    assert cli.main(argv + ["--epochs", "2"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"checkpoint.npz", "metrics.json", "elbo.png", "reconstructions.png",
            "samples.png", "manifold.png"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["val_elbo"]) and metrics["val_elbo"] < 0
    # --resume continues from the checkpoint to a later epoch.
    assert cli.main(argv + ["--epochs", "4", "--resume"]) == 0
    assert "held-out ELBO" in capsys.readouterr().out
    from minivae.checkpoint import load_checkpoint

    _, meta = load_checkpoint(out / "checkpoint.npz", kind="VAE")
    assert meta["epoch"] == 4 and meta["history"]["epoch"] == [1, 2, 3, 4]


def test_train_vae_missing_data_is_one_line_error(tmp_path, capsys):
    code = cli.main(["train", "vae", "--data", str(tmp_path / "nope.idx"),
                     "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("minivae: error:") and "no such file" in err


def test_train_gp_on_a_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 6, 30))
    y = np.sin(x) + 0.1 * rng.standard_normal(30)
    csv = tmp_path / "data.csv"
    csv.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in zip(x, y)) + "\n")
    out = tmp_path / "gp"
    assert cli.main(["train", "gp", "--data", str(csv), "--out", str(out),
                     "--restarts", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out) == metrics
    assert metrics["n_points"] == 30 and metrics["columns"] == ["x", "y"]
    assert metrics["train_rmse"] < 0.2  # the noise std is 0.1
    assert (out / "gp_fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from minivae.gp import GPRegressor

    loaded = GPRegressor.load(metrics["model"])
    assert loaded.log_marginal_likelihood_value_ == metrics["log_marginal_likelihood"]


def test_gradcheck_vae_passes_and_prints_every_parameter(capsys):
    assert cli.main(["gradcheck", "vae", "--likelihood", "gaussian"]) == 0
    out = capsys.readouterr().out
    for name in ("enc.0.W", "enc.mu.b", "enc.logvar.W", "dec.mean.W", "dec.logvar.b"):
        assert name in out
    assert "ok: below the bound 1e-6" in out


@pytest.mark.parametrize("flag, value", [
    ("--latent", "0"), ("--threads", "0"), ("--batch-size", "0"), ("--epochs", "-1"),
    ("--lr", "inf"), ("--lr", "0"), ("--val-fraction", "1"), ("--hidden", "0"),
    ("--seed", "-3"), ("--latent", "two"),
])
def test_out_of_range_arguments_are_refused_by_the_parser(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "vae", flag, value, "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("minivae train vae: error: argument " + flag)
    assert not (tmp_path / "run").exists()


def test_unreadable_npz_is_a_one_line_error(tmp_path, capsys):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip archive")
    code = cli.main(["train", "vae", "--data", str(broken), "--out", str(tmp_path / "run"),
                     "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minivae: error: ")


@pytest.mark.parametrize("low, high, expected", [(0.0, 1.0, "bernoulli"),
                                                  (-2.0, 2.0, "gaussian")])
def test_train_vae_picks_the_likelihood_from_the_value_range(tmp_path, low, high, expected):
    """Not from the width: 16 columns of N(0, 1)-like data are not images in [0, 1], and
    3 columns in [0, 1] are; the choice is recorded in metrics.json."""
    rng = np.random.default_rng(0)
    width = 16 if expected == "gaussian" else 3
    data = tmp_path / "data.npz"
    np.savez(data, X=rng.uniform(low, high, size=(40, width)))
    out = tmp_path / "run"
    assert cli.main(["train", "vae", "--data", str(data), "--epochs", "1", "--hidden", "4",
                     "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["likelihood"] == expected


def test_train_vae_reads_the_named_array_of_an_npz(tmp_path, capsys):
    rng = np.random.default_rng(1)
    data = tmp_path / "several.npz"
    np.savez(data, x_train=rng.uniform(size=(30, 4)), y_train=np.arange(30))
    argv = ["train", "vae", "--data", str(data), "--epochs", "1", "--hidden", "4",
            "--out", str(tmp_path / "run"), "--no-progress", "--threads", "1"]
    assert cli.main(argv) == 2  # two arrays: which one?
    assert "key=" in capsys.readouterr().err
    assert cli.main(argv + ["--key", "x_train"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] == 30


def test_train_var_defaults_to_the_models_epochs():
    from minivae.var import DEFAULT_EPOCHS

    args = cli.build_parser().parse_args(["train", "var"])
    assert tuple(args.epochs) == DEFAULT_EPOCHS


def test_version_is_printed_by_the_command_and_by_python_dash_m(capsys):
    import subprocess
    import sys

    import minivae

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"minivae {minivae.__version__}"
    result = subprocess.run([sys.executable, "-m", "minivae", "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"minivae {minivae.__version__}"


def test_license_and_py_typed_ship_with_the_package():
    from pathlib import Path

    import minivae

    package = Path(minivae.__file__).parent
    assert (package / "py.typed").is_file()
    assert "MIT License" in (package.parent / "LICENSE").read_text()


def test_train_gp_and_var_take_a_device():
    parser = cli.build_parser()
    for command in (["train", "gp", "--data", "x.csv"], ["train", "var"]):
        assert parser.parse_args(command).device == "cpu"
        assert parser.parse_args([*command, "--device", "cuda-sim"]).device == "cuda-sim"
