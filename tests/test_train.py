"""The training loop, with a small noisy linear-regression model implementing the contract."""

import numpy as np
import pytest

from minivae import VAE, train
from minivae.backend import get_backend
from minivae.checkpoint import load_checkpoint, save_checkpoint
from minivae.errors import CheckpointError, TrainingDivergedError
from minivae.train import Phase, default_batches, epoch_seed, fit_loop
from minivae.var import VARegressor


class NoisyLinearRegression:
    """y ~ X W + b, loss 0.5 * mean ||X W + b - y||^2 over a batch.

    ``noise > 0`` adds ``noise * eps`` to the gradient of W with eps drawn from the epoch's
    Monte-Carlo generator the trainer hands the step, so its reseeding is part of what
    resume must reproduce.
    """

    def __init__(self, X, Y, seed=0, device="cpu", dtype=np.float64, noise=0.0):
        self.backend = get_backend(device)
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self.noise = noise
        xp = self.backend.xp
        self.X = self.backend.asarray(X, dtype=self.dtype)
        self.Y = self.backend.asarray(Y, dtype=self.dtype)
        init = np.random.default_rng(seed)
        d, k = X.shape[1], Y.shape[1]
        self.params = {
            "W": self.backend.asarray(init.standard_normal((d, k)), dtype=self.dtype),
            "b": xp.zeros(k, dtype=self.dtype),
        }
        self.seen = []

    def loss_and_grads(self, idx, rng=None):
        self.seen.append(np.array(idx))
        X, Y = self.X[idx], self.Y[idx]
        residual = X @ self.params["W"] + self.params["b"] - Y
        loss = 0.5 * float((residual * residual).sum()) / len(idx)
        dresidual = residual / len(idx)
        dW = X.T @ dresidual
        if self.noise:
            dW = dW + self.noise * rng.standard_normal(dW.shape).astype(self.dtype)
        return loss, {"W": dW, "b": dresidual.sum(axis=0)}

    def full_loss(self):
        residual = self.X @ self.params["W"] + self.params["b"] - self.Y
        return 0.5 * float((residual * residual).sum()) / self.X.shape[0]

    def get_state(self):
        arrays = {name: self.backend.to_host(value).copy() for name, value in self.params.items()}
        return arrays, {"seed": self.seed, "noise": self.noise, "dtype": self.dtype.name,
                        "device": self.backend.name}

    def set_state(self, arrays, meta):
        for name in self.params:
            self.params[name] = self.backend.asarray(arrays[name], dtype=self.dtype).copy()


def _data(n=53, d=4, k=2, seed=7):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((d, k))
    Y = X @ W + 0.3 + 0.01 * rng.standard_normal((n, k))
    return X, Y


def _model(**kwargs):
    X, Y = _data()
    return NoisyLinearRegression(X, Y, **kwargs)


def _phase(name="train", epochs=1, step=None, **kwargs):
    return name, epochs, step, kwargs


def _run(model, phases, **kwargs):
    """fit_loop over ``phases``: (name, epochs, step or None for the model's, Phase kwargs)."""
    kwargs.setdefault("batch_size", 10)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("kind", "vae")
    built = [Phase(name, epochs, step or model.loss_and_grads, **options)
             for name, epochs, step, options in phases]
    return fit_loop(model, built, n_examples=model.X.shape[0], **kwargs)


def _fit(model, epochs=1, phase="train", step=None, trainable=None, batches=None,
         evaluate=None, patience=None, **kwargs):
    """One phase."""
    options = dict(trainable=trainable, batches=batches, evaluate=evaluate, patience=patience)
    return _run(model, [_phase(phase, epochs, step, **options)], **kwargs)


def test_epoch_seed_is_the_documented_seedsequence_hash():
    expected = int(np.random.SeedSequence([5, 3, 1]).generate_state(1)[0])
    assert epoch_seed(5, 3, 1) == expected
    seeds = {epoch_seed(5, epoch, stream) for epoch in range(1, 6) for stream in (0, 1)}
    assert len(seeds) == 10


def test_default_batches_cover_every_example_once_with_a_short_last_batch():
    batches = default_batches(23, 5, np.random.default_rng(0))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(23))


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.05), ("adagrad", 0.5), ("sgd", 0.05)])
def test_loop_reduces_the_loss(optimizer, lr):
    model = _model()
    start = model.full_loss()
    history = _fit(model, epochs=30, optimizer=optimizer, lr=lr)
    assert model.full_loss() < 0.01 * start
    assert history["train_loss"][-1] < 0.05 * history["train_loss"][0]


def test_history_has_one_entry_per_epoch_and_weighted_mean_train_loss():
    model = _model()
    history = _fit(model, epochs=3, evaluate=model.full_loss, phase="warmup")
    assert set(history) == {"epoch", "train_loss", "val_loss", "phase", "seconds", "stops"}
    assert history["stops"] == [{"phase": "warmup", "epochs": 3, "best_epoch": 3,
                                 "reason": "ran all 3 epochs"}]
    assert history["epoch"] == [1, 2, 3]
    assert history["phase"] == ["warmup"] * 3
    assert all(len(history[key]) == 3 for key in train.HISTORY_KEYS)
    assert all(seconds >= 0 for seconds in history["seconds"])
    assert history["val_loss"][-1] == model.full_loss()
    assert all(np.isfinite(loss) for loss in history["train_loss"])


def test_train_loss_is_batch_size_weighted():
    model = _model()
    losses = []

    def recording(idx, rng):
        loss, grads = model.loss_and_grads(idx, rng)
        losses.append((loss, len(idx)))
        return loss, grads

    history = _fit(model, epochs=1, step=recording, batch_size=20, lr=1e-3)
    expected = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert [n for _, n in losses] == [20, 20, 13]
    assert history["train_loss"] == [pytest.approx(expected, rel=1e-15)]
    assert history["val_loss"] == [None]


def test_phases_share_one_history_with_epochs_counted_per_phase():
    history = _run(_model(), [_phase("a", 2), _phase("skipped", 0), _phase("b", 1)])
    assert history["phase"] == ["a", "a", "b"]
    assert history["epoch"] == [1, 2, 1]
    assert [stop["phase"] for stop in history["stops"]] == ["a", "b"]


def test_shuffle_and_noise_generators_are_reseeded_every_epoch():
    model = _model(noise=0.1)
    draws = []

    def recording(idx, rng):
        draws.append((np.array(idx), float(rng.standard_normal())))
        return model.loss_and_grads(idx, rng)

    _fit(model, epochs=2, step=recording, batch_size=60)
    for epoch, (idx, first_draw) in enumerate(draws, start=1):
        shuffle = np.random.default_rng(epoch_seed(0, epoch, 0))
        np.testing.assert_array_equal(idx, shuffle.permutation(53))
        assert first_draw == np.random.default_rng(epoch_seed(0, epoch, 1)).standard_normal()


@pytest.mark.parametrize("optimizer", ["adam", "adagrad", "sgd"])
def test_resume_after_interruption_is_bit_identical(tmp_path, optimizer):
    straight = _model(noise=0.05)
    straight_history = _fit(straight, epochs=4, optimizer=optimizer, lr=0.01)

    path = tmp_path / "run.npz"
    first = _model(noise=0.05)
    _fit(first, epochs=2, optimizer=optimizer, lr=0.01, checkpoint=path)

    resumed = _model(noise=0.05)  # a fresh process: new model, same constructor arguments
    history = _fit(resumed, epochs=4, optimizer=optimizer, lr=0.01, checkpoint=path, resume=True)

    for name in straight.params:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name])
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["train_loss"] == straight_history["train_loss"]
    _, meta = load_checkpoint(path, kind="vae")
    assert meta["epoch"] == 4 and meta["optimizer"]["name"] == optimizer


class _Crash(Exception):
    pass


def test_resume_after_a_crash_mid_epoch_is_bit_identical(tmp_path):
    straight = _model(noise=0.05)
    _fit(straight, epochs=4, optimizer="adam", lr=0.01)

    path = tmp_path / "run.npz"
    crashing = _model(noise=0.05)
    calls = []

    def crash_in_epoch_3(idx, rng):
        calls.append(1)
        if len(calls) == 2 * 6 + 3:  # 6 batches per epoch: step 3 of epoch 3
            raise _Crash
        return crashing.loss_and_grads(idx, rng)

    with pytest.raises(_Crash):
        _fit(crashing, epochs=4, step=crash_in_epoch_3, lr=0.01, checkpoint=path)
    assert load_checkpoint(path)[1]["epoch"] == 2

    resumed = _model(noise=0.05)
    _fit(resumed, epochs=4, lr=0.01, checkpoint=path, resume=True)
    for name in straight.params:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name])


def test_resume_without_a_checkpoint_file_starts_fresh(tmp_path):
    straight = _model()
    _fit(straight, epochs=2)
    fresh = _model()
    _fit(fresh, epochs=2, checkpoint=tmp_path / "none_yet.npz", resume=True)
    np.testing.assert_array_equal(fresh.params["W"], straight.params["W"])


def test_resume_a_finished_run_changes_nothing(tmp_path):
    path = tmp_path / "run.npz"
    model = _model()
    history = _fit(model, epochs=2, checkpoint=path)
    again = _model()
    history_again = _fit(again, epochs=2, checkpoint=path, resume=True)
    assert history_again == history
    np.testing.assert_array_equal(again.params["W"], model.params["W"])


def test_resume_with_another_optimizer_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    _fit(_model(), epochs=1, checkpoint=path, optimizer="adam")
    with pytest.raises(Exception, match="optimizer='adam'"):
        _fit(_model(), epochs=2, checkpoint=path, optimizer="sgd", resume=True)


def test_two_phases_resume_to_the_same_parameters(tmp_path):
    def two_phases(model, path, resume, second=3):
        return _run(model, [_phase("all", 2), _phase("W only", second, trainable=("W",))],
                    checkpoint=path, resume=resume, lr=0.01)

    straight = _model(noise=0.05)
    straight_history = two_phases(straight, None, False)

    path = tmp_path / "run.npz"
    two_phases(_model(noise=0.05), path, False, second=1)  # ends with 1 epoch of "W only"

    resumed = _model(noise=0.05)
    history = two_phases(resumed, path, True)
    for name in straight.params:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name])
    assert history["phase"] == ["all", "all", "W only", "W only", "W only"]
    assert history["train_loss"] == straight_history["train_loss"]
    assert history["stops"] == straight_history["stops"]


def _snapshot(model):
    return {name: np.array(value) for name, value in model.params.items()}


def _assert_unchanged(model, snapshot):
    for name, value in snapshot.items():
        np.testing.assert_array_equal(model.params[name], value)


def test_resume_refuses_a_differently_configured_model(tmp_path):
    path = tmp_path / "run.npz"
    _fit(_model(noise=0.05), epochs=1, checkpoint=path)
    other = _model(seed=1)
    before = _snapshot(other)
    with pytest.raises(CheckpointError) as info:
        _fit(other, epochs=2, checkpoint=path, resume=True)
    message = str(info.value)
    assert "was written by a differently configured model" in message
    assert "seed is 0 in the checkpoint but 1 here" in message
    assert "noise is 0.05 in the checkpoint but 0.0 here" in message
    assert "resuming would mix two training objectives" in message
    assert "or train without resume=True or with another checkpoint path" in message
    _assert_unchanged(other, before)


def test_config_differences_ignore_device_and_epochs_at_any_depth():
    saved = {"config": {"seed": 1, "epochs": [1, 1, 0], "device": "gpu", "hidden": [5]},
             "image_shape": [3, 2]}
    same = {"config": {"seed": 1, "epochs": (2, 3, 4), "device": "cpu", "hidden": (5,)},
            "image_shape": (3, 2)}
    assert train._config_differences(saved, same) == []
    other = {"config": {"seed": 2, "epochs": [1, 1, 0], "device": "gpu", "hidden": [5],
                        "beta": 1.0},
             "image_shape": [3, 2]}
    assert train._config_differences(saved, other) == [
        ("config.seed", 1, 2), ("config.beta", "(absent)", 1.0)]


def test_resume_on_another_device_is_allowed(tmp_path):
    X, Y = _data(n=12, d=3, k=1)
    straight = NoisyLinearRegression(X, Y)
    _fit(straight, epochs=2, batch_size=6, lr=0.01)
    path = tmp_path / "run.npz"
    _fit(NoisyLinearRegression(X, Y), epochs=1, batch_size=6, lr=0.01, checkpoint=path)
    on_sim = NoisyLinearRegression(X, Y, device="cuda-sim")
    history = _fit(on_sim, epochs=2, batch_size=6, lr=0.01, checkpoint=path, resume=True)
    assert history["epoch"] == [1, 2]
    for name in straight.params:  # the simulator's Adam kernel: equal to round-off
        np.testing.assert_allclose(on_sim.params[name], straight.params[name], rtol=1e-12)


def test_resume_with_another_learning_rate_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    _fit(_model(), epochs=1, checkpoint=path, lr=0.01)
    model = _model()
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match=r"phase 'train' with adam lr=0.01 \(this run: "
                                              r"0.02\); resume with the checkpoint's settings"):
        _fit(model, epochs=2, checkpoint=path, lr=0.02, resume=True)
    _assert_unchanged(model, before)


def test_resume_with_another_batch_size_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    _fit(_model(), epochs=1, checkpoint=path, batch_size=10)
    with pytest.raises(CheckpointError, match=r"with batch_size=10, but this run asks for "
                                              r"batch_size=20; resume with batch_size=10"):
        _fit(_model(), epochs=2, checkpoint=path, batch_size=20, resume=True)


def test_resume_from_a_file_written_by_save_is_refused(tmp_path):
    path = tmp_path / "saved.npz"
    X = np.random.default_rng(0).uniform(0, 1, (20, 5))
    vae = VAE(5, 2, hidden=(4,))
    vae.save(path)
    with pytest.raises(CheckpointError) as info:
        vae.fit(X, epochs=2, progress=False, checkpoint=path, resume=True)
    assert str(info.value) == (
        f"{str(path)!r} was written by save(), not by fit(checkpoint=...), so it holds no "
        "training state (epoch, phase, optimiser); load it with VAE.load and call fit "
        "without resume=True, or pass a training checkpoint"
    )
    model = _model()
    save_checkpoint(path, {"param.W": model.params["W"]}, {"model": model.get_state()[1]},
                    kind="vae")
    with pytest.raises(CheckpointError, match="written by save"):
        _fit(model, epochs=1, checkpoint=path, resume=True)


def test_resume_from_a_varegressor_save_file_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = np.linspace(0, 2, 8)[:, None], rng.uniform(0, 1, (8, 3, 2))
    model = VARegressor(latent_dim=2, hidden=(4,), n_anchor=3, n_query=2, epochs=(1, 0, 0))
    model.fit(X, Y, progress=False)
    path = tmp_path / "saved.npz"
    model.save(path)
    with pytest.raises(CheckpointError, match="load it with VARegressor.load and call fit"):
        model.fit(X, Y, progress=False, checkpoint=path, resume=True)


def test_resume_refuses_a_checkpoint_beyond_the_epochs_asked_for(tmp_path):
    path = tmp_path / "run.npz"
    _fit(_model(), epochs=3, checkpoint=path)
    model = _model()
    with pytest.raises(CheckpointError, match=r"already holds 3 epochs of phase 'train', more "
                                              r"than the 2 this run asks for"):
        _fit(model, epochs=2, checkpoint=path, resume=True)


@pytest.mark.parametrize("first_epochs", [1, 3])
def test_resume_refuses_to_change_a_finished_phase(tmp_path, first_epochs):
    path = tmp_path / "run.npz"
    _run(_model(), [_phase("a", 2), _phase("b", 1)], checkpoint=path)
    resumed = _model()
    before = _snapshot(resumed)
    with pytest.raises(CheckpointError) as info:
        _run(resumed, [_phase("a", first_epochs), _phase("b", 1)], checkpoint=path, resume=True)
    assert (f"was written in phase 'b', after its run had finished phase 'a' with epochs=2, "
            f"but this run asks for {first_epochs}; a finished phase cannot be extended or "
            "shortened on resume") in str(info.value)
    _assert_unchanged(resumed, before)


def _three_phases(model, epochs, path=None, resume=False):
    return _run(model, [_phase(name, n) for name, n in zip("abc", epochs)], checkpoint=path,
                resume=resume, lr=0.01)


def test_phases_tell_a_skipped_phase_from_an_earlier_one(tmp_path):
    path = tmp_path / "run.npz"
    _three_phases(_model(noise=0.05), (1, 0, 1), path)
    # Phase b had no epochs before the checkpoint's phase c: it cannot get one now.
    with pytest.raises(CheckpointError, match="after its run had finished phase 'b' with "
                                              "epochs=0, but this run asks for 1"):
        _three_phases(_model(noise=0.05), (1, 1, 1), path, resume=True)
    # Extending the checkpoint's own phase continues it bit-identically.
    straight = _model(noise=0.05)
    straight_history = _three_phases(straight, (1, 0, 2))
    resumed = _model(noise=0.05)
    history = _three_phases(resumed, (1, 0, 2), path, resume=True)
    assert history == {**straight_history, "seconds": history["seconds"]}
    _assert_unchanged(resumed, _snapshot(straight))


def test_a_checkpoint_ending_an_earlier_phase_starts_the_next_ones(tmp_path):
    path = tmp_path / "run.npz"
    _three_phases(_model(noise=0.05), (2, 0, 0), path)
    straight = _model(noise=0.05)
    _three_phases(straight, (2, 1, 1))
    resumed = _model(noise=0.05)
    history = _three_phases(resumed, (2, 1, 1), path, resume=True)
    assert history["phase"] == ["a", "a", "b", "c"]
    _assert_unchanged(resumed, _snapshot(straight))


def test_vae_resume_names_every_differing_setting(tmp_path):
    path = tmp_path / "run.npz"
    X = np.random.default_rng(0).uniform(0, 1, (40, 6))
    VAE(6, 2, hidden=(5,), seed=0, dtype="float64").fit(X, epochs=1, progress=False,
                                                         checkpoint=path)
    other = VAE(6, 2, hidden=(5,), seed=7, dtype="float32", beta=5.0, n_samples=3)
    with pytest.raises(CheckpointError) as info:
        other.fit(X, epochs=2, progress=False, checkpoint=path, resume=True)
    message = str(info.value)
    for difference in ("n_samples is 1 in the checkpoint but 3 here",
                       "beta is 1.0 in the checkpoint but 5.0 here",
                       "dtype is 'float64' in the checkpoint but 'float32' here",
                       "seed is 0 in the checkpoint but 7 here"):
        assert difference in message
    assert f"VAE.load({str(path)!r}).get_config() lists them" in message


def _tiny_var(epochs, seed=1):
    return VARegressor(latent_dim=2, hidden=(4,), activation="tanh", n_anchor=3, n_query=2,
                       epochs=epochs, dtype="float64", seed=seed, batch_size=8, lr=1e-2)


def test_varegressor_resume_checks_its_schedule_and_config(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = np.linspace(0, 2, 8)[:, None], rng.uniform(0, 1, (8, 3, 2))
    path = tmp_path / "run.npz"
    _tiny_var((1, 1, 0)).fit(X, Y, progress=False, checkpoint=path)
    # One more pre-training epoch would have to run before the joint epoch on file.
    with pytest.raises(CheckpointError, match="after its run had finished phase 'pretrain' "
                                              "with epochs=1, but this run asks for 2"):
        _tiny_var((2, 1, 0)).fit(X, Y, progress=False, checkpoint=path, resume=True)
    with pytest.raises(CheckpointError, match="config.seed is 1 in the checkpoint but 2 here"):
        _tiny_var((1, 1, 0), seed=2).fit(X, Y, progress=False, checkpoint=path, resume=True)
    # The schedule may grow after the checkpoint's phase: bit-identical to a straight run.
    straight = _tiny_var((1, 2, 1)).fit(X, Y, progress=False)
    resumed = _tiny_var((1, 2, 1)).fit(X, Y, progress=False, checkpoint=path, resume=True)
    assert resumed.history_["phase"] == ["pretrain", "joint", "joint", "finetune"]
    _assert_unchanged(resumed, _snapshot(straight))


@pytest.mark.parametrize("bad", ["loss", "grad"])
def test_divergence_raises_and_keeps_the_last_good_checkpoint(tmp_path, bad):
    path = tmp_path / "run.npz"
    model = _model()
    calls = []
    snapshot = {}

    def breaks_at_epoch_2_step_3(idx, rng):
        calls.append(1)
        loss, grads = model.loss_and_grads(idx, rng)
        if len(calls) == 6 + 3:
            snapshot["params"] = {name: value.copy() for name, value in model.params.items()}
            snapshot["file"] = path.read_bytes()
            if bad == "loss":
                return float("nan"), grads
            grads["W"][0, 1] = np.inf
        return loss, grads

    with pytest.raises(TrainingDivergedError) as info:
        _fit(model, epochs=3, step=breaks_at_epoch_2_step_3, lr=0.01, checkpoint=path,
             phase="pretrain")
    message = str(info.value)
    assert "phase 'pretrain'" in message
    assert "epoch 2" in message and "step 3 of 6" in message
    assert str(path) in message and "epoch 1" in message
    assert ("nan" in message) if bad == "loss" else ("'W' has 1 NaN/Inf values" in message)

    for name, value in snapshot["params"].items():
        np.testing.assert_array_equal(model.params[name], value)
    assert path.read_bytes() == snapshot["file"]
    _, meta = load_checkpoint(path, kind="vae")
    assert meta["epoch"] == 1


def test_divergence_without_checkpoint_says_so():
    model = _model()
    with pytest.raises(TrainingDivergedError, match="no checkpoint was being written"):
        _fit(model, step=lambda idx, rng: (float("inf"), {}))


def test_nonfinite_validation_loss_raises_before_saving(tmp_path):
    path = tmp_path / "run.npz"
    model = _model()
    with pytest.raises(TrainingDivergedError, match="epoch 1, at validation"):
        _fit(model, epochs=2, evaluate=lambda: float("nan"), checkpoint=path)
    assert not path.exists()


def test_trainable_freezes_the_others():
    model = _model()
    b_before = model.params["b"].copy()
    W_before = model.params["W"].copy()
    _fit(model, epochs=2, trainable=("W",), lr=0.01)
    np.testing.assert_array_equal(model.params["b"], b_before)
    assert not np.array_equal(model.params["W"], W_before)


def test_custom_batches_are_used_as_given():
    model = _model()
    given = []

    def every_other_example(rng):
        assert isinstance(rng, np.random.Generator)
        batches = [np.arange(0, 53, 2), rng.permutation(np.arange(1, 53, 2))[:7]]
        given.append(batches)
        return batches

    history = _fit(model, epochs=2, batches=every_other_example)
    assert len(model.seen) == 4
    for seen, expected in zip(model.seen, [b for batches in given for b in batches]):
        np.testing.assert_array_equal(seen, expected)
    replay = np.random.default_rng(epoch_seed(0, 2, 0))
    np.testing.assert_array_equal(model.seen[3], replay.permutation(np.arange(1, 53, 2))[:7])
    assert len(history["epoch"]) == 2


def test_checkpoint_every_cadence(tmp_path, monkeypatch):
    saved_epochs = []
    real_save = train.save_checkpoint

    def recording_save(path, arrays, meta, kind):
        saved_epochs.append(meta["epoch"])
        real_save(path, arrays, meta, kind)

    monkeypatch.setattr(train, "save_checkpoint", recording_save)
    path = tmp_path / "run.npz"
    model = _model()
    _fit(model, epochs=5, checkpoint=path, checkpoint_every=2, kind="LinReg")
    assert saved_epochs == [2, 4, 5]

    arrays, meta = load_checkpoint(path, kind="LinReg")
    assert {"param.W", "param.b", "optim.t", "optim.m.W", "optim.v.b"} <= set(arrays)
    assert meta["optimizer"]["t"] == 5 * 6 and meta["phase"] == "train"
    assert meta["batch_size"] == 10
    assert meta["history"]["epoch"] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(arrays["param.W"], model.params["W"])
    assert meta["model"] == {"seed": 0, "noise": 0.0, "dtype": "float64", "device": "cpu"}
    assert meta["phases"] == [["train", 5]] and meta["phase_index"] == 0 and meta["finished"]


def test_progress_bar_runs():
    model = _model()
    history = _fit(model, epochs=1, progress=True)
    assert len(history["epoch"]) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "rmsprop"}, r"not one of \['adam', 'adagrad', 'sgd'\]"),
        ({"trainable": ["W", "gamma"]}, r"\['gamma'\], which are not parameters"),
        ({"resume": True}, "needs checkpoint"),
        ({"patience": 2}, r"patience=2 must be a positive integer, with an evaluate function"),
        ({"epochs": True}, r"epochs=True must be a non-negative integer"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"checkpoint_every": 0}, "checkpoint_every=0"),
        ({"lr": -1.0}, "lr=-1.0"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _fit(_model(), **{"epochs": 1, **kwargs})


def test_missing_gradient_is_named():
    model = _model()
    with pytest.raises(ValueError, match=r"no gradient for \['b'\]"):
        _fit(model, step=lambda idx, rng: (1.0, {"W": np.zeros((4, 2))}))


def test_cuda_sim_device_matches_cpu():
    X, Y = _data(n=12, d=3, k=1)
    on_cpu = NoisyLinearRegression(X, Y, device="cpu")
    on_sim = NoisyLinearRegression(X, Y, device="cuda-sim")
    for model in (on_cpu, on_sim):
        _fit(model, epochs=1, batch_size=6, lr=0.01)
    for name in on_cpu.params:
        np.testing.assert_allclose(on_sim.params[name], on_cpu.params[name], rtol=1e-12)


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_counts_finds_nan_and_both_infinities_but_not_huge_finite_values(flat, dtype):
    """The guard's one reduction (a sum of squares) is NaN or Inf for NaN, +Inf and -Inf
    alike; finite entries whose squares overflow fall through to the exact counts, which
    find nothing."""
    from minivae.params import FlatArrays
    from minivae.train import _nonfinite_counts

    def arrays(values):
        if not flat:
            return {name: np.array(value, dtype=dtype) for name, value in values.items()}
        out = FlatArrays(np, {name: np.shape(value) for name, value in values.items()}, dtype)
        for name, value in values.items():
            out[name][...] = value
        return out

    big = np.finfo(dtype).max
    assert _nonfinite_counts(np, arrays({"W": [[1.0, 2.0]], "b": [3.0]})) == []
    assert _nonfinite_counts(np, arrays({"W": [[big, -big]], "b": [big]})) == []
    for bad in (np.nan, np.inf, -np.inf):
        got = _nonfinite_counts(np, arrays({"W": [[1.0, bad]], "b": [bad]}))
        assert got == [("W", 1), ("b", 1)], bad
    assert _nonfinite_counts(np, arrays({"W": [[-np.inf, -np.inf]], "b": [0.0]})) == [("W", 2)]


def _validation_loss_sequence(values):
    """An evaluate function returning ``values`` one per epoch."""
    calls = iter(values)
    return lambda: next(calls)


def test_patience_stops_keeps_the_best_epoch_and_says_why():
    values = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 9.0]
    model = _model()
    snapshots = []

    def evaluate():
        snapshots.append(_snapshot(model))
        return values[len(snapshots) - 1]

    history = _fit(model, epochs=7, evaluate=evaluate, patience=3, lr=0.01)
    assert history["epoch"] == [1, 2, 3, 4, 5, 6]  # no better loss after epoch 3 for 3 epochs
    assert history["val_loss"] == values[:6]
    (stop,) = history["stops"]
    assert stop == {"phase": "train", "epochs": 6, "best_epoch": 3,
                    "reason": "stopped: no better validation loss for 3 epochs; kept epoch 3"}
    _assert_unchanged(model, snapshots[2])


def test_a_phase_that_runs_out_keeps_its_best_epoch_too():
    model = _model()
    history = _fit(model, epochs=3, evaluate=_validation_loss_sequence([2.0, 1.0, 1.5]),
                   patience=5, lr=0.01)
    assert history["stops"][0]["best_epoch"] == 2
    assert history["stops"][0]["reason"].startswith("ran all 3 epochs; kept epoch 2")


@pytest.mark.parametrize("crash_after", [2, 4])
def test_resume_of_a_stopping_phase_is_bit_identical(tmp_path, crash_after):
    values = [5.0, 4.0, 4.5, 3.0, 3.5, 3.6, 3.7, 1.0]

    def run(model, path=None, resume=False, crash_at=None):
        def evaluate():
            evaluate.calls += 1
            if evaluate.calls == crash_at:
                raise _Crash
            return values[len(model.seen) // 6 - 1]
        evaluate.calls = 0
        return _run(model, [_phase("a", 8, evaluate=evaluate, patience=3), _phase("b", 2)],
                    checkpoint=path, resume=resume, lr=0.01)

    straight = _model(noise=0.05)
    straight_history = run(straight)
    assert [stop["epochs"] for stop in straight_history["stops"]] == [7, 2]
    path = tmp_path / "run.npz"
    with pytest.raises(_Crash):
        run(_model(noise=0.05), path, crash_at=crash_after + 1)
    resumed = _model(noise=0.05)
    resumed.seen = [None] * (6 * crash_after)  # the evaluate above counts epochs by steps
    history = run(resumed, path, resume=True)
    assert history == {**straight_history, "seconds": history["seconds"]}
    _assert_unchanged(resumed, _snapshot(straight))


def test_off_a_terminal_progress_is_one_line_per_phase(capsys):
    _run(_model(), [_phase("a", 2), _phase("b", 1)], progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("a: 2 epochs, loss ") and lines[0].endswith("ran all 2 epochs")
    assert lines[1].startswith("b: 1 epochs, loss ")


def test_phase_names_must_differ():
    with pytest.raises(ValueError, match="repeat"):
        _run(_model(), [_phase("a", 1), _phase("a", 1)])


def test_extending_a_finished_stopping_phase_continues_from_its_last_epoch(tmp_path):
    values = [1.0, 2.0, 3.0, 0.5, 4.0]  # best at epoch 1 of the first 3, then at epoch 4

    def run(model, epochs, path=None, resume=False):
        def evaluate():
            return values[len(model.seen) // 6 - 1]
        return _fit(model, epochs=epochs, evaluate=evaluate, patience=10, lr=0.01,
                    checkpoint=path, resume=resume)

    straight = _model(noise=0.05)
    straight_history = run(straight, 5)
    path = tmp_path / "run.npz"
    first = _model(noise=0.05)
    run(first, 3, path)
    kept = _snapshot(first)  # epoch 1's parameters, the best of three
    arrays, _ = load_checkpoint(path, kind="vae")
    np.testing.assert_array_equal(arrays["param.W"], kept["W"])
    assert "last.W" in arrays and not np.array_equal(arrays["last.W"], kept["W"])
    resumed = _model(noise=0.05)
    resumed.seen = [None] * 18
    history = run(resumed, 5, path, resume=True)
    assert history == {**straight_history, "seconds": history["seconds"]}
    _assert_unchanged(resumed, _snapshot(straight))


@pytest.mark.parametrize("where", ["under_a_file", "refusing_folder"])
def test_a_bad_checkpoint_path_fails_before_the_first_step(tmp_path, monkeypatch, where):
    from minivae import files

    if where == "under_a_file":
        (tmp_path / "notes.txt").write_text("a file")
        path, error = tmp_path / "notes.txt" / "run.npz", NotADirectoryError
    else:
        # mkstemp refusing stands in for a read-only mount, which root cannot make.
        def refuse(**kwargs):
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
        path, error = tmp_path / "run.npz", PermissionError
    model = _model()
    with pytest.raises(error, match="choose a"):
        _fit(model, epochs=2, checkpoint=path)
    assert model.seen == []
    assert sorted(p.name for p in tmp_path.iterdir()) == (["notes.txt"] if where == "under_a_file"
                                                          else [])
