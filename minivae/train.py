"""The minibatch training loop shared by every trainable model.

:func:`fit_loop` knows nothing about VAEs or GPs. A model hands it its training as data, a
list of :class:`Phase` objects (a name, a number of epochs, a step function, the names of
the parameters it trains, optionally custom batches, a validation loss and a stopping
rule), and the loop does the rest: per-epoch seeding, shuffling, one optimiser per phase,
progress, the divergence guard, early stopping, checkpoints and resuming.

Reproducibility without stored generator state: at the start of epoch ``e`` (1-based,
counted within its phase) the loop draws the shuffle from
``np.random.default_rng(epoch_seed(model.seed, e, 0))`` and hands the step a fresh
Monte-Carlo generator ``model.backend.rng(epoch_seed(model.seed, e, 1))``. Each epoch
therefore depends only on the parameters and optimiser state at its start, which a
checkpoint stores exactly, so a resumed run ends bit-identical to an uninterrupted one.

The model contract: ``model.params`` (dict name -> device array), ``model.backend``,
``model.seed``, ``model.get_state()`` -> ``(arrays, meta)`` and
``model.set_state(arrays, meta)``. The loop writes no attribute of the model.

A training checkpoint holds the model's state arrays under ``"param.<name>"``, the
optimiser's under ``"optim.<name>"``, the best parameters of an unfinished early-stopping
phase under ``"best.<name>"`` (at its end the parameters are the best and its last epoch's
are under ``"last.<name>"``, so that the phase can still be extended), and the metadata ``{"model", "phases": [[name, epochs], ...],
"phase_index", "phase", "epoch", "finished", "stopping", "history", "optimizer",
"batch_size"}``.

Resuming (``resume=True``) continues at (phase index, epoch) and refuses, with a
:class:`~minivae.errors.CheckpointError` that names the difference, a checkpoint that would
mix two training runs: one written by a model's ``save()``; a model configured otherwise
(the model metadata must be equal but for the keys in :data:`RESUME_MAY_DIFFER`); other
phase names; another number of epochs for a phase the checkpoint had finished and left;
in the checkpoint's own unfinished phase, another optimiser, optimiser setting or batch
size, or fewer epochs than it holds. The checkpoint's own phase may be extended, and the
phases it has not reached may be given any number of epochs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, TrainingDivergedError
from .files import check_writable
from .kernels.threads import pinned_threads
from .optim import make_optimizer
from .params import FlatArrays
from .validation import is_int

History = dict
"""``{"epoch", "train_loss", "val_loss", "phase", "seconds"}``: one entry per epoch
(``val_loss`` None without a validation loss), and ``"stops"``: one dict per finished
phase, ``{"phase", "epochs", "best_epoch", "reason"}``."""

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "phase", "seconds")
MODEL_PREFIX, OPTIM_PREFIX, BEST_PREFIX, LAST_PREFIX = "param.", "optim.", "best.", "last."

#: Model metadata keys (at any nesting level) that may differ between a checkpoint and the
#: model resuming from it: the device (results are then equal to round-off, not
#: bit-identical) and a schedule ``epochs``, which the phase rules check instead.
RESUME_MAY_DIFFER = ("device", "epochs")

_TRAINING_META_KEYS = ("model", "phases", "phase_index", "epoch", "history", "optimizer")


@dataclass(frozen=True)
class Phase:
    """One phase of training.

    Attributes
    ----------
    name : str
    epochs : int
        At most this many epochs (fewer when ``patience`` stops it).
    step : callable ``(idx, rng) -> (loss, grads)``
        Mean loss over the examples ``idx`` (an int array) and its gradient by parameter
        name; ``rng`` is the epoch's Monte-Carlo generator on the model's device. Grads
        may be a :class:`~minivae.params.FlatArrays` laid out like the parameters: when
        the trained names lead its layout, the optimiser updates them in one call.
    trainable : tuple of str or None
        The parameters this phase updates; None means all. The others stay frozen.
    batches : callable ``(rng) -> list of int arrays`` or None
        Custom batches of an epoch, drawn from its shuffle generator; None means
        shuffled minibatches of ``batch_size``.
    evaluate : callable ``() -> float`` or None
        Validation loss, called after every epoch (lower is better).
    patience : int or None
        With ``evaluate``: stop when the validation loss has not improved for this many
        epochs, and end the phase with the parameters of its best epoch.
    """

    name: str
    epochs: int
    step: Callable
    trainable: tuple | None = None
    batches: Callable | None = None
    evaluate: Callable | None = None
    patience: int | None = None


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of random stream ``stream`` (0: shuffle, 1: model noise) in ``epoch``.

    Distinct (seed, epoch, stream) triples give statistically independent seeds
    (NumPy's SeedSequence hashing), and the result depends on nothing else.
    """
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def new_history() -> History:
    """An empty :data:`History`."""
    return {**{key: [] for key in HISTORY_KEYS}, "stops": []}


def default_batches(n_examples: int, batch_size: int, rng: np.random.Generator) -> list:
    """A random permutation of ``range(n_examples)`` cut into ``batch_size`` pieces.

    The last batch is shorter when ``batch_size`` does not divide ``n_examples``.
    """
    order = rng.permutation(n_examples)
    return [order[start:start + batch_size] for start in range(0, n_examples, batch_size)]


def _check_phases(model, phases) -> list:
    phases = list(phases)
    if not phases or not all(isinstance(phase, Phase) for phase in phases):
        raise ValueError("phases must be a non-empty sequence of minivae.train.Phase")
    names = [phase.name for phase in phases]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names {names} repeat; give every phase its own name")
    for phase in phases:
        if not is_int(phase.epochs) or phase.epochs < 0:
            raise ValueError(f"phase {phase.name!r}: epochs={phase.epochs!r} must be a "
                             "non-negative integer")
        if phase.patience is not None and (not is_int(phase.patience) or phase.patience < 1
                                           or phase.evaluate is None):
            raise ValueError(f"phase {phase.name!r}: patience={phase.patience!r} must be a "
                             "positive integer, with an evaluate function")
        unknown = [name for name in (phase.trainable or ()) if name not in model.params]
        if unknown:
            raise ValueError(
                f"phase {phase.name!r} trains {unknown}, which are not parameters of the "
                f"model; its parameters are {list(model.params)}"
            )
    return phases


def _check_arguments(n_examples, batch_size, checkpoint, checkpoint_every, resume):
    for name, value in (("n_examples", n_examples), ("batch_size", batch_size),
                        ("checkpoint_every", checkpoint_every)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path> to resume from")
    if checkpoint is not None:
        check_writable(checkpoint)  # a bad path fails now, not after the first epoch


def _flatten(meta, prefix: str = "") -> dict:
    """``{"a.b": value}`` for the nested dicts of JSON metadata (lists are values)."""
    if isinstance(meta, dict) and meta:
        flat = {}
        for key, value in meta.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: meta}


_ABSENT = "(absent)"


def _config_differences(saved_meta, current_meta) -> list:
    """``[(key, saved, current), ...]`` where two models' metadata differ.

    Both are compared as JSON (a tuple equals a list); nested keys are joined with dots
    (``"config.seed"``); keys whose last part is in :data:`RESUME_MAY_DIFFER` are ignored;
    a key that only one side has shows ``"(absent)"`` on the other.
    """
    saved = _flatten(json.loads(json.dumps(saved_meta)))
    current = _flatten(json.loads(json.dumps(current_meta)))
    differences = []
    for key in list(saved) + [key for key in current if key not in saved]:
        if key.rsplit(".", 1)[-1] in RESUME_MAY_DIFFER:
            continue
        old, new = saved.get(key, _ABSENT), current.get(key, _ABSENT)
        if old != new:
            differences.append((key, old, new))
    return differences


def _sum_of_squares(xp, arrays):
    """The sum of squares of ``arrays`` as a scalar where the arrays live (no host read).

    A BLAS dot product: NaN and +-Inf make it NaN or Inf (0.08 ms for the 784-400-20
    VAE's 652,824 float32 gradients, where ``sum`` took 0.16 ms, 5% of a training step).
    """
    if isinstance(arrays, FlatArrays):
        return xp.dot(arrays.flat, arrays.flat)
    return sum(xp.vdot(array, array) for array in arrays.values())


def _nonfinite_counts(xp, arrays) -> list:
    """``[(name, count), ...]`` for the arrays (gradients or parameters) holding NaN or Inf.

    One reduction and one device synchronisation in the common all-finite case
    (:func:`_sum_of_squares`). The per-array counts run only when it is not finite, which
    also happens when finite entries' squares overflow: the counts then find nothing.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # squares may overflow: see above
        total = float(_sum_of_squares(xp, arrays))
    if math.isfinite(total):
        return []
    bad = []
    for name, array in arrays.items():
        count = int(array.size - int(xp.count_nonzero(xp.isfinite(array))))
        if count:
            bad.append((name, count))
    return bad


def _checked_loss(xp, loss, update, run, epoch: int, where: str) -> float:
    """The step's loss as a float, after the divergence guard on it and on ``update``.

    The loss may be a device scalar: the loss and the gradients' sum of squares are read
    back together, ``float(loss + 0 * sum of squares)`` (``loss`` itself when both are
    finite), one device synchronisation per step. Only when that is not finite are the
    two told apart.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # squares may overflow: see below
        probe = float(loss + 0.0 * _sum_of_squares(xp, update))
    if math.isfinite(probe):
        return probe
    loss = float(loss)
    if not math.isfinite(loss):
        run.diverged(epoch, where, f"the loss is {loss}")
    bad = _nonfinite_counts(xp, update)  # nothing when only finite squares overflowed
    if bad:
        listing = ", ".join(f"{name!r} has {n} NaN/Inf values" for name, n in bad)
        run.diverged(epoch, where, f"the loss is {loss} but the gradient of {listing}")
    return loss


def _update_of(grads, names: list):
    """What the optimiser steps with: a leading block of flat gradient buffers (one call)
    when ``names`` lead their layout, else the named arrays."""
    if isinstance(grads, FlatArrays) and list(grads)[:len(names)] == names:
        return grads.leading(len(names))
    return {name: grads[name] for name in names}


def interactive(progress: bool) -> bool:
    """Whether to draw progress bars: asked for, and stderr is a terminal (in a log file a
    bar's carriage returns are noise; :func:`fit_loop` then prints one line per phase)."""
    return bool(progress) and sys.stderr.isatty()


class _Run:
    """Where one :func:`fit_loop` call is: phase index, finished epochs, optimiser, best."""

    def __init__(self, model, phases, kind, checkpoint, optimizer, lr, batch_size):
        self.model, self.phases, self.kind = model, phases, kind
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.optimizer_name, self.lr, self.batch_size = optimizer, lr, batch_size
        self.history = new_history()
        self.index, self.done = 0, 0
        self.optimizer = self.new_optimizer()
        self.best = None  # (validation loss, epoch, host parameters) of the current phase
        self.last = None  # host parameters of a stopping phase's last epoch, at its end
        self.last_good = None  # (path, phase, epoch) of the newest checkpoint known good

    @property
    def phase(self) -> Phase:
        return self.phases[self.index]

    def new_optimizer(self):
        return make_optimizer(self.optimizer_name, self.lr, impl=self.model.backend.kernel_impl)

    def phase_batch_size(self):
        return self.batch_size if self.phase.batches is None else None

    def diverged(self, epoch, where, what):
        if self.last_good is not None:
            path, phase, good_epoch = self.last_good
            last = f"the last good checkpoint is {str(path)!r} (phase {phase!r}, epoch {good_epoch})"
        elif self.checkpoint is None:
            last = "no checkpoint was being written (pass checkpoint=<path> to keep one)"
        else:
            last = f"no checkpoint of this run has been written to {str(self.checkpoint)!r} yet"
        raise TrainingDivergedError(
            f"training diverged in phase {self.phase.name!r}, epoch {epoch}, {where}: {what}; "
            f"{last}. Lower the learning rate or check the data."
        )

    def save(self, epoch: int, finished: bool, stopped: bool) -> None:
        model_arrays, model_meta = self.model.get_state()
        arrays = {MODEL_PREFIX + key: value for key, value in model_arrays.items()}
        arrays.update({OPTIM_PREFIX + key: value
                       for key, value in self.optimizer.state_arrays().items()})
        stopping = None
        if self.best is not None:
            stopping = {"best_loss": self.best[0], "best_epoch": self.best[1]}
            if not finished:
                arrays.update({BEST_PREFIX + key: value for key, value in self.best[2].items()})
            elif self.last is not None:  # the parameters are the best; extending needs these
                arrays.update({LAST_PREFIX + key: value for key, value in self.last.items()})
        meta = {
            "model": model_meta,
            "phases": [[phase.name, int(phase.epochs)] for phase in self.phases],
            "phase_index": self.index, "phase": self.phase.name, "epoch": int(epoch),
            "finished": finished, "stopped": stopped, "stopping": stopping,
            "history": self.history, "optimizer": self.optimizer.config(),
            "batch_size": self.phase_batch_size(),
        }
        save_checkpoint(self.checkpoint, arrays, meta, kind=self.kind)
        self.last_good = (self.checkpoint, self.phase.name, int(epoch))

    def resume(self) -> None:
        """Restore model, optimiser, history and position from the checkpoint, if any.

        Everything is checked before the model or the optimiser is touched.
        """
        if not self.checkpoint.exists():
            return
        arrays, meta = load_checkpoint(self.checkpoint, kind=self.kind)
        where = f"{str(self.checkpoint)!r}"
        if not all(key in meta for key in _TRAINING_META_KEYS):
            raise CheckpointError(
                f"{where} was written by save(), not by fit(checkpoint=...), so it holds no "
                f"training state (epoch, phase, optimiser); load it with {self.kind}.load and "
                "call fit without resume=True, or pass a training checkpoint"
            )
        self._check_same_model(meta["model"])
        saved = meta["phases"]
        names = [phase.name for phase in self.phases]
        if [name for name, _ in saved] != names:
            raise CheckpointError(f"{where} was written by a run with phases "
                                  f"{[name for name, _ in saved]}, but this run has {names}; "
                                  "start without resume=True")
        index, epoch = int(meta["phase_index"]), int(meta["epoch"])
        for (name, epochs), phase in zip(saved[:index], self.phases):
            if epochs != phase.epochs:
                raise CheckpointError(
                    f"{where} was written in phase {saved[index][0]!r}, after its run had "
                    f"finished phase {name!r} with epochs={epochs}, but this run asks for "
                    f"{phase.epochs}; a finished phase cannot be extended or shortened on "
                    f"resume. Ask for {epochs} epochs of {name!r}, or start without resume=True"
                )
        phase = self.phases[index]
        if epoch > phase.epochs:
            raise CheckpointError(
                f"{where} already holds {epoch} epochs of phase {phase.name!r}, more than the "
                f"{phase.epochs} this run asks for; ask for at least {epoch} epochs, or start "
                "without resume=True"
            )
        ends_phase = meta["finished"] and (meta["stopped"] or epoch == phase.epochs)
        if not ends_phase:
            self._check_same_settings(meta["optimizer"], meta["batch_size"], index)
        prefix = LAST_PREFIX if not ends_phase and any(
            key.startswith(LAST_PREFIX) for key in arrays) else MODEL_PREFIX
        self.model.set_state({key[len(prefix):]: value for key, value in arrays.items()
                              if key.startswith(prefix)}, meta["model"])
        self.history = meta["history"]
        self.last_good = (self.checkpoint, phase.name, epoch)
        if ends_phase:
            self.index, self.done = index + 1, 0
            return
        self.index, self.done = index, epoch
        self.history["stops"] = [stop for stop in self.history["stops"]
                                 if stop["phase"] != phase.name]  # the phase goes on
        self.optimizer.load_state_arrays({key[len(OPTIM_PREFIX):]: value
                                          for key, value in arrays.items()
                                          if key.startswith(OPTIM_PREFIX)})
        if meta.get("stopping"):
            best = {key[len(BEST_PREFIX):]: value for key, value in arrays.items()
                    if key.startswith(BEST_PREFIX)}
            if not best:  # the checkpoint ended the phase: its parameters are the best
                best = {key[len(MODEL_PREFIX):]: value for key, value in arrays.items()
                        if key.startswith(MODEL_PREFIX)}
            self.best = (meta["stopping"]["best_loss"], meta["stopping"]["best_epoch"], best)

    def _check_same_model(self, saved_meta) -> None:
        differences = _config_differences(saved_meta, self.model.get_state()[1])
        if not differences:
            return
        listing = "; ".join(f"{key} is {saved!r} in the checkpoint but {current!r} here"
                            for key, saved, current in differences)
        raise CheckpointError(
            f"{str(self.checkpoint)!r} was written by a differently configured model "
            f"({listing}); resuming would mix two training objectives. Construct the model "
            f"with the checkpoint's settings ({self.kind}.load({str(self.checkpoint)!r})"
            ".get_config() lists them), or train without resume=True or with another "
            "checkpoint path"
        )

    def _check_same_settings(self, saved_optimizer, saved_batch_size, index) -> None:
        where = (f"{str(self.checkpoint)!r} was written while training phase "
                 f"{self.phases[index].name!r}")
        saved_name = saved_optimizer["name"]
        if saved_name != self.optimizer.name:
            raise CheckpointError(
                f"{where} with optimizer={saved_name!r}, but this run asks for "
                f"{self.optimizer.name!r}; resume with optimizer={saved_name!r} or start "
                "without resume=True"
            )
        current = self.optimizer.config()
        differing = [key for key in saved_optimizer
                     if key != "t" and saved_optimizer[key] != current.get(key, _ABSENT)]
        if differing:
            listing = ", ".join(f"{key}={saved_optimizer[key]!r} (this run: "
                                f"{current.get(key, _ABSENT)!r})" for key in differing)
            raise CheckpointError(
                f"{where} with {saved_name} {listing}; resume with the checkpoint's "
                "settings or start without resume=True"
            )
        batch_size = self.batch_size if self.phases[index].batches is None else None
        if None not in (saved_batch_size, batch_size) and saved_batch_size != batch_size:
            raise CheckpointError(
                f"{where} with batch_size={saved_batch_size}, but this run asks for "
                f"batch_size={batch_size}; resume with batch_size={saved_batch_size} or "
                "start without resume=True"
            )


def fit_loop(model, phases, *, n_examples, batch_size=100, optimizer="adam", lr=1e-3,
             progress=True, checkpoint=None, checkpoint_every=1, resume=False,
             kind="model") -> History:
    """Train ``model.params`` phase after phase by minibatch gradient descent.

    Parameters
    ----------
    model : object
        Implements the training contract (module docstring).
    phases : sequence of Phase
        Run in order, each with a fresh optimiser.
    n_examples : int
        Default batches hold indices into ``range(n_examples)``.
    batch_size : int
        Size of the default shuffled minibatches (the last one may be shorter).
    optimizer : {"adam", "adagrad", "sgd"}
    lr : float
    progress : bool
        A tqdm bar per phase on a terminal; elsewhere one line per phase on stderr.
    checkpoint : str or os.PathLike or None
        Where to save a checkpoint every ``checkpoint_every`` epochs and at each phase end.
    checkpoint_every : int
    resume : bool
        Continue from ``checkpoint`` if the file exists (module docstring, "Resuming").
    kind : str
        The checkpoint kind (the model class name, e.g. ``"VAE"``).

    Returns
    -------
    history : History
        ``train_loss`` is the mean of the batch losses weighted by batch size.

    Raises
    ------
    TrainingDivergedError
        If a loss, a gradient, the parameters at the end of an epoch or the validation loss
        are NaN or infinite. The parameters are not updated with the bad gradient and the
        checkpoint on disk is left as it was; the message names the phase, the epoch
        (1-based), the step in the epoch, the value, and the last good checkpoint.
    CheckpointError
        If ``resume=True`` and the checkpoint does not belong to this run (module
        docstring). The model is then left as it was.

    Notes
    -----
    When ``model.backend.kernel_impl == "cpu"`` the epochs run inside
    :func:`minivae.kernels.threads.pinned_threads`: the calling thread and Numba's workers
    on distinct CPUs, every CPU set restored on exit (``MINIVAE_PIN_THREADS=0`` turns it
    off); the step, ``evaluate`` and ``batches`` run inside it too, and a thread or
    process started during training inherits one CPU.
    """
    phases = _check_phases(model, phases)
    _check_arguments(n_examples, batch_size, checkpoint, checkpoint_every, resume)
    run = _Run(model, phases, kind, checkpoint, optimizer, lr, batch_size)
    if resume:
        run.resume()
    # CPU training: the calling thread and Numba's workers on distinct CPUs, so that the
    # parallel kernels get the second core (minivae.kernels.threads has why).
    placement = pinned_threads() if model.backend.kernel_impl == "cpu" else nullcontext()
    with placement:
        while run.index < len(phases):
            _train_phase(run, n_examples, progress, checkpoint_every)
            run.index, run.done, run.best, run.last = run.index + 1, 0, None, None
            run.optimizer = run.new_optimizer()
    return run.history


def _train_phase(run, n_examples, progress, checkpoint_every) -> None:
    """The remaining epochs of ``run.phase``, then its end: best parameters, record, save."""
    model, phase = run.model, run.phase
    xp = model.backend.xp
    names = list(model.params) if phase.trainable is None else list(phase.trainable)
    bar = tqdm(total=phase.epochs, initial=run.done, desc=phase.name, unit="epoch",
               disable=not interactive(progress))
    stopped, epoch = False, run.done
    for epoch in range(run.done + 1, phase.epochs + 1):
        started = time.perf_counter()
        shuffle_rng = np.random.default_rng(epoch_seed(model.seed, epoch, 0))
        noise_rng = model.backend.rng(epoch_seed(model.seed, epoch, 1))
        batches = (default_batches(n_examples, run.batch_size, shuffle_rng)
                   if phase.batches is None else list(phase.batches(shuffle_rng)))
        loss_sum, count = 0.0, 0
        for step, idx in enumerate(batches, start=1):
            where = f"step {step} of {len(batches)}"
            loss, grads = phase.step(idx, noise_rng)
            missing = [name for name in names if name not in grads]
            if missing:
                if not math.isfinite(float(loss)):  # a diverged step may return no gradients
                    run.diverged(epoch, where, f"the loss is {float(loss)}")
                raise ValueError(f"phase {phase.name!r}: the step returned no gradient for "
                                 f"{missing}; it returned {list(grads)}")
            update = _update_of(grads, names)
            loss = _checked_loss(xp, loss, update, run, epoch, where)
            run.optimizer.step(model.params, update)
            loss_sum += loss * len(idx)
            count += len(idx)
        if count == 0:
            raise ValueError(
                f"phase {phase.name!r}, epoch {epoch}: the batches returned no examples; "
                "batches(rng) must return a non-empty list of non-empty index arrays"
            )
        bad = _nonfinite_counts(xp, {name: model.params[name] for name in names})
        if bad:
            listing = ", ".join(f"{name!r} has {n} NaN/Inf values" for name, n in bad)
            run.diverged(epoch, "after its last step", f"the parameter {listing}")
        val_loss = None
        if phase.evaluate is not None:
            val_loss = float(phase.evaluate())
            if not math.isfinite(val_loss):
                run.diverged(epoch, "at validation", f"the validation loss is {val_loss}")
        for key, value in zip(HISTORY_KEYS, (epoch, loss_sum / count, val_loss, phase.name,
                                             time.perf_counter() - started)):
            run.history[key].append(value)
        if phase.patience is not None:
            if run.best is None or val_loss < run.best[0]:
                run.best = (val_loss, epoch, {name: np.array(model.backend.to_host(value))
                                              for name, value in model.params.items()})
            stopped = epoch - run.best[1] >= phase.patience
        postfix = {"loss": f"{loss_sum / count:.4g}"}
        if val_loss is not None:
            postfix["val_loss"] = f"{val_loss:.4g}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        if stopped or epoch == phase.epochs:
            break
        if run.checkpoint is not None and epoch % checkpoint_every == 0:
            run.save(epoch, finished=False, stopped=False)
    bar.close()
    if epoch > 0:
        _end_phase(run, epoch, stopped, progress)


def _end_phase(run, epoch: int, stopped: bool, progress: bool) -> None:
    """Keep the best epoch's parameters (a stopping rule), record why the phase ended,
    write the checkpoint and, off a terminal, one progress line."""
    phase, history = run.phase, run.history
    best_epoch = epoch
    if run.best is not None:
        best_epoch = run.best[1]
        run.last = {name: np.array(run.model.backend.to_host(value))
                    for name, value in run.model.params.items()}
        run.model.set_state(run.best[2], None)
    if stopped:
        reason = (f"stopped: no better validation loss for {phase.patience} epochs; kept "
                  f"epoch {best_epoch}")
    elif run.best is not None:
        reason = f"ran all {phase.epochs} epochs; kept epoch {best_epoch}, the best validation"
    else:
        reason = f"ran all {phase.epochs} epochs"
    history["stops"].append({"phase": phase.name, "epochs": epoch, "best_epoch": best_epoch,
                             "reason": reason})
    if run.checkpoint is not None:
        run.save(epoch, finished=True, stopped=stopped)
    if progress and not interactive(progress):
        seconds = sum(s for s, name in zip(history["seconds"], history["phase"])
                      if name == phase.name)
        val = history["val_loss"][-1]
        print(f"{phase.name}: {epoch} epochs, loss {history['train_loss'][-1]:.4g}"
              + ("" if val is None else f", validation {val:.4g}")
              + f", {seconds:.1f} s; {reason}", file=sys.stderr)
