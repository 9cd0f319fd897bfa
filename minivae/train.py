"""The minibatch training loop shared by every trainable model.

:func:`fit_loop` knows nothing about VAEs or GPs. A model hands it a function that returns
the mean loss and the gradients of a batch of example indices, and the loop does the rest:
per-epoch seeding, shuffling, the optimiser, a progress bar, the divergence guard,
checkpoints and resuming.

Reproducibility without stored generator state: at the start of epoch ``e`` (1-based) the
loop draws the shuffle from ``np.random.default_rng(epoch_seed(model.seed, e, 0))`` and
replaces the model's Monte-Carlo generator with ``model.backend.rng(epoch_seed(model.seed,
e, 1))``. Each epoch therefore depends only on the parameters and optimiser state at its
start, which a checkpoint stores exactly, so a resumed run ends with parameters
bit-identical to an uninterrupted one.

The model contract (see ARCHITECTURE.md): ``model.params`` (dict name -> device array),
``model.backend``, ``model.dtype``, ``model.seed``, ``model._rng``, ``model.get_state()``
-> ``(arrays, meta)`` and ``model.set_state(arrays, meta)``.

A training checkpoint (written by :func:`minivae.checkpoint.save_checkpoint`) holds the
model's state arrays under ``"param.<name>"``, the optimiser's under ``"optim.<name>"``,
and the metadata ``{"model": <model meta>, "epoch", "phase", "history", "optimizer":
{"name", "lr", "t", ...}, "batch_size"}`` (``batch_size`` None with custom batches);
:func:`load_model_state` reads the model part back.

Resuming (``resume=True``) refuses, with a :class:`~minivae.errors.CheckpointError` that
names the difference, a checkpoint that would mix two training runs:

- a file written by a model's ``save()``: it has no epoch, phase or optimiser state;
- a model configured differently: the checkpoint's model metadata must equal
  ``model.get_state()[1]`` except for the keys in :data:`RESUME_MAY_DIFFER` (the device,
  and a model's ``epochs`` schedule, which the phase rules below check instead);
- in the checkpoint's own phase, another optimiser or optimiser setting (``lr``, ...),
  another ``batch_size``, or more finished epochs than this run asks for;
- a phase that the checkpoint's run finished before moving on to a later one, with a
  different number of epochs than this run asks for: a finished phase cannot be
  extended or shortened afterwards (for a VARegressor written with ``epochs=(1, 1, 0)``
  and resumed with ``(2, 1, 0)``, the second pre-training epoch would have to come before
  the joint epoch already in the checkpoint).

Phases the checkpoint has not reached may be given any number of epochs, and the
checkpoint's own phase may be extended: that is how an interrupted or finished run is
continued. A phase with no epochs in the checkpoint's history is told apart from one that
comes after the checkpoint's phase by the ``phases`` argument (the run's phase order);
multi-phase callers should pass it (see :func:`fit_loop`).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, TrainingDivergedError
from .kernels.threads import pinned_threads
from .params import FlatArrays
from .optim import make_optimizer

History = dict
"""``{"epoch": [...], "train_loss": [...], "val_loss": [...], "phase": [...], "seconds": [...]}``,
one entry per epoch; ``val_loss`` entries are None without an ``evaluate`` function."""

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "phase", "seconds")
MODEL_PREFIX = "param."
OPTIM_PREFIX = "optim."

#: Model metadata keys (at any nesting level) that may differ between a checkpoint and the
#: model resuming from it: the device (training may move between devices; results are
#: then equal to round-off, not bit-identical) and a training schedule ``epochs``, whose
#: consistency with the checkpoint's history :func:`fit_loop` checks phase by phase.
RESUME_MAY_DIFFER = ("device", "epochs")

#: Metadata entries of a training checkpoint (a model's ``save()`` writes only some).
_TRAINING_META_KEYS = ("model", "epoch", "phase", "history", "optimizer")


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of random stream ``stream`` (0: shuffle, 1: model noise) in ``epoch``.

    Distinct (seed, epoch, stream) triples give statistically independent seeds
    (NumPy's SeedSequence hashing), and the result depends on nothing else.
    """
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def new_history() -> History:
    """An empty :data:`History`."""
    return {key: [] for key in HISTORY_KEYS}


def default_batches(n_examples: int, batch_size: int, rng: np.random.Generator) -> list:
    """A random permutation of ``range(n_examples)`` cut into ``batch_size`` pieces.

    The last batch is shorter when ``batch_size`` does not divide ``n_examples``.
    """
    order = rng.permutation(n_examples)
    return [order[start:start + batch_size] for start in range(0, n_examples, batch_size)]


def load_model_state(path, kind=None) -> tuple[dict, dict]:
    """The model's ``(arrays, meta)`` from a training checkpoint written by :func:`fit_loop`.

    The result is what ``model.get_state()`` returned when the checkpoint was written, so
    it can be passed to ``model.set_state``.
    """
    arrays, meta = load_checkpoint(path, kind=kind)
    if "model" not in meta:
        raise CheckpointError(
            f"{str(path)!r} is a {meta.get('kind')} checkpoint but not a training checkpoint "
            "(its metadata has no 'model' entry); load it with the model's load method"
        )
    model_arrays = {
        key[len(MODEL_PREFIX):]: value for key, value in arrays.items()
        if key.startswith(MODEL_PREFIX)
    }
    return model_arrays, meta["model"]


def _validate(model, n_examples, epochs, batch_size, checkpoint, checkpoint_every, resume,
              phase, phases, param_names):
    if not (isinstance(n_examples, (int, np.integer)) and n_examples >= 1):
        raise ValueError(f"n_examples={n_examples!r} must be a positive integer")
    if not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
        raise ValueError(f"epochs={epochs!r} must be a non-negative integer")
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer, e.g. 100")
    if not (isinstance(checkpoint_every, (int, np.integer)) and checkpoint_every >= 1):
        raise ValueError(f"checkpoint_every={checkpoint_every!r} must be a positive integer")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path> to resume from")
    if phases is not None and phase not in phases:
        raise ValueError(f"phase={phase!r} is not one of phases={list(phases)}")
    if param_names is None:
        return list(model.params)
    unknown = [name for name in param_names if name not in model.params]
    if unknown:
        raise ValueError(
            f"param_names contains {unknown}, which are not parameters of the model; "
            f"its parameters are {list(model.params)}"
        )
    return list(param_names)


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


def _nonfinite_counts(xp, arrays) -> list:
    """``[(name, count), ...]`` for the arrays (gradients or parameters) holding NaN or Inf.

    One reduction and one device synchronisation in the common all-finite case: the sum
    of squares, a BLAS dot product (NaN and +-Inf make it NaN or Inf; 0.08 ms for the
    784-400-20 VAE's 652,824 float32 gradients, where ``sum`` took 0.16 ms, 5% of a
    training step). The per-array counts run only when it is not finite, which also
    happens when finite entries' squares overflow: the counts then find nothing.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # squares may overflow: see above
        if isinstance(arrays, FlatArrays):
            total = float(xp.dot(arrays.flat, arrays.flat))
        else:
            total = float(sum(xp.vdot(array, array) for array in arrays.values()))
    if math.isfinite(total):
        return []
    bad = []
    for name, array in arrays.items():
        count = int(array.size - int(xp.count_nonzero(xp.isfinite(array))))
        if count:
            bad.append((name, count))
    return bad


class _Run:
    """The state of one :func:`fit_loop` call that the helpers below share."""

    def __init__(self, model, optimizer, batch_size, phase, phases, kind, checkpoint, history):
        self.model = model
        self.optimizer = optimizer
        self.batch_size = batch_size  # None with custom batches
        self.phase = phase
        self.phases = phases
        self.kind = kind
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.history = history
        self.last_good = None  # (path, phase, epoch) of the newest checkpoint known to be good

    def where_last_good(self) -> str:
        if self.last_good is None:
            if self.checkpoint is None:
                return "no checkpoint was being written (pass checkpoint=<path> to keep one)"
            return f"no checkpoint of this run has been written to {str(self.checkpoint)!r} yet"
        path, phase, epoch = self.last_good
        return f"the last good checkpoint is {str(path)!r} (phase {phase!r}, epoch {epoch})"

    def diverged(self, epoch, where, what):
        raise TrainingDivergedError(
            f"training diverged in phase {self.phase!r}, epoch {epoch}, {where}: {what}; "
            f"{self.where_last_good()}. Lower the learning rate or check the data."
        )

    def save(self, epoch):
        model_arrays, model_meta = self.model.get_state()
        arrays = {MODEL_PREFIX + key: value for key, value in model_arrays.items()}
        arrays.update(
            {OPTIM_PREFIX + key: value for key, value in self.optimizer.state_arrays().items()}
        )
        meta = {
            "model": model_meta,
            "epoch": int(epoch),
            "phase": self.phase,
            "history": self.history,
            "optimizer": self.optimizer.config(),
            "batch_size": self.batch_size,
        }
        save_checkpoint(self.checkpoint, arrays, meta, kind=self.kind)
        self.last_good = (self.checkpoint, self.phase, int(epoch))

    def resume(self, epochs: int) -> int:
        """Restore from the checkpoint if there is one; return the last finished epoch.

        -1 means this phase finished before the checkpoint's phase began: nothing to run.
        Everything is checked before the model or the optimiser is touched (module
        docstring, "Resuming").
        """
        if not self.checkpoint.exists():
            return 0
        arrays, meta = load_checkpoint(self.checkpoint, kind=self.kind)
        self._check_training_checkpoint(meta)
        self._check_same_model(meta["model"])
        saved_phase, saved_epoch = meta["phase"], int(meta["epoch"])
        if saved_phase == self.phase:
            self._check_same_phase(meta["optimizer"], meta.get("batch_size"), saved_epoch,
                                   epochs)
            done = saved_epoch
        elif self._comes_later(saved_phase, meta["history"]):
            # This phase finished before the checkpoint's phase began.
            self._check_finished_phase(meta["history"]["phase"].count(self.phase), saved_phase,
                                       epochs)
            done = -1
        else:
            # The checkpoint ends an earlier phase; this phase starts from its parameters.
            done = 0
        model_arrays = {
            key[len(MODEL_PREFIX):]: value for key, value in arrays.items()
            if key.startswith(MODEL_PREFIX)
        }
        self.model.set_state(model_arrays, meta["model"])
        if saved_phase == self.phase:
            self.optimizer.load_state_arrays({
                key[len(OPTIM_PREFIX):]: value for key, value in arrays.items()
                if key.startswith(OPTIM_PREFIX)
            })
        if saved_phase == self.phase or done == -1:
            self.history = meta["history"]
        self.last_good = (self.checkpoint, saved_phase, saved_epoch)
        return done

    def _comes_later(self, saved_phase, saved_history) -> bool:
        """Whether the checkpoint's phase ``saved_phase`` comes after this phase.

        Yes if this phase is in the checkpoint's history. Otherwise (this phase had no
        epochs in the checkpoint's run, or has not started) the order of ``phases``
        decides; without it, the checkpoint's phase is taken as earlier when the history
        handed to this call has it.
        """
        if self.phase in saved_history["phase"]:
            return True
        if self.phases is not None and saved_phase in self.phases:
            return self.phases.index(saved_phase) > self.phases.index(self.phase)
        return saved_phase not in self.history["phase"]

    def _check_training_checkpoint(self, meta) -> None:
        """CheckpointError for a file written by a model's save(), not by fit_loop."""
        if all(key in meta for key in _TRAINING_META_KEYS):
            return
        raise CheckpointError(
            f"{str(self.checkpoint)!r} was written by save(), not by fit(checkpoint=...), so "
            "it holds no training state (epoch, phase, optimiser); load it with "
            f"{self.kind}.load and call fit without resume=True, or pass a training checkpoint"
        )

    def _check_same_model(self, saved_meta) -> None:
        """CheckpointError if the checkpoint's model is configured unlike this one."""
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

    def _check_same_phase(self, saved_optimizer, saved_batch_size, saved_epoch, epochs) -> None:
        """CheckpointError if the checkpoint's phase ran with another optimiser setting or
        batch size, or already has more epochs than this run asks for."""
        where = f"{str(self.checkpoint)!r} was written while training phase {self.phase!r}"
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
        if None not in (saved_batch_size, self.batch_size) and saved_batch_size != self.batch_size:
            raise CheckpointError(
                f"{where} with batch_size={saved_batch_size}, but this run asks for "
                f"batch_size={self.batch_size}; resume with batch_size={saved_batch_size} or "
                "start without resume=True"
            )
        if saved_epoch > epochs:
            raise CheckpointError(
                f"{where} and already holds {saved_epoch} epochs of it, more than the "
                f"{epochs} this run asks for; ask for at least {saved_epoch} epochs, or start "
                "without resume=True"
            )

    def _check_finished_phase(self, finished, saved_phase, epochs) -> None:
        """CheckpointError if this phase, finished before the checkpoint's phase, ran for
        another number of epochs than this run asks for."""
        if finished == epochs:
            return
        raise CheckpointError(
            f"{str(self.checkpoint)!r} was written in phase {saved_phase!r}, after its run did "
            f"{finished} epochs of phase {self.phase!r}, but this run asks for {epochs} epochs "
            f"of {self.phase!r}; a finished phase cannot be extended or shortened on resume "
            f"(its epochs would have to come before those of {saved_phase!r}). Ask for "
            f"{finished} epochs of {self.phase!r} (for a VARegressor, that entry of epochs=), "
            "or start without resume=True"
        )


def fit_loop(model, n_examples, loss_and_grads, *, epochs, batch_size=100, optimizer="adam",
             lr=1e-3, param_names=None, evaluate=None, batches=None, progress=True,
             checkpoint=None, checkpoint_every=1, resume=False, phase="train", phases=None,
             history=None, kind="vae") -> History:
    """Train ``model.params`` by minibatch gradient descent.

    Parameters
    ----------
    model : object
        Implements the training contract (module docstring).
    n_examples : int
        Number of training examples; batches hold indices into ``range(n_examples)``.
    loss_and_grads : callable ``(idx: (b,) int array) -> (loss: float, grads: dict)``
        Mean loss over the examples ``idx`` and its gradient for each parameter (device
        arrays shaped like the parameters).
    epochs : int
        Train until this many epochs of this phase are done (counting resumed ones).
    batch_size : int
        Size of the default shuffled minibatches (the last one may be shorter).
    optimizer : {"adam", "adagrad", "sgd"}
    lr : float
    param_names : list of str or None
        Parameters the optimiser updates; None means all. The others stay frozen.
    evaluate : callable ``() -> float`` or None
        Validation loss, called at the end of every epoch.
    batches : callable ``(rng: numpy.random.Generator) -> list of int arrays`` or None
        Custom batching for each epoch, drawn from the epoch's shuffle generator.
    progress : bool
        Show a tqdm bar over the epochs with the last epoch's mean loss (and validation
        loss).
    checkpoint : str or os.PathLike or None
        Where to save a checkpoint after every ``checkpoint_every`` epochs and the last.
    checkpoint_every : int
    resume : bool
        Restore the model, optimiser and history from ``checkpoint`` if the file exists
        and continue after its epoch (the rules are in the module docstring,
        "Resuming").
    phase : str
        Name of this training phase (for multi-phase training, e.g. pre-training then
        fine-tuning). Resuming a later phase's checkpoint skips an already finished phase;
        a checkpoint of an earlier phase gives this one its starting parameters.
    phases : sequence of str or None
        All the phases of a multi-phase run, in order, e.g. ``("pretrain", "joint",
        "finetune")``. Resuming uses it to tell whether the checkpoint's phase comes
        before or after this one when this phase has no epochs in the checkpoint's
        history. Without it, the checkpoint's phase counts as earlier if ``history``
        has it, which is wrong after a skipped phase (a checkpoint written with 0 epochs
        of this phase and resumed with more: its training would be silently mixed in).
    history : History or None
        History of earlier phases to append to (copied, not modified).
    kind : str
        The checkpoint kind (the model class name, e.g. ``"VAE"``).

    Returns
    -------
    history : History
        One entry per epoch; ``train_loss`` is the mean of the batch losses weighted by
        batch size.

    Raises
    ------
    TrainingDivergedError
        If a loss, a gradient, the parameters at the end of an epoch or the validation loss
        are NaN or infinite. The parameters are not updated with the bad gradient and the
        checkpoint on disk is left as it was; the message names the phase, the epoch
        (1-based), the step in the epoch, the value, and the last good checkpoint.
    CheckpointError
        If ``resume=True`` and the checkpoint is unreadable, of another kind, was written
        by a model's ``save()``, by a differently configured model, with another optimiser,
        learning rate or batch size, or does not fit this run's epochs (module docstring,
        "Resuming"). The model is then left as it was.

    Notes
    -----
    When ``model.backend.kernel_impl == "cpu"`` the epochs run inside
    :func:`minivae.kernels.threads.pinned_threads`: the calling thread and Numba's workers
    on distinct CPUs, every CPU set restored on exit (``MINIVAE_PIN_THREADS=0`` turns it
    off); ``evaluate`` and ``batches`` run inside it too, and a thread or process started
    during training inherits one CPU.
    """
    names = _validate(model, n_examples, epochs, batch_size, checkpoint, checkpoint_every,
                      resume, phase, phases, param_names)
    run = _Run(
        model,
        make_optimizer(optimizer, lr, impl=model.backend.kernel_impl),
        batch_size if batches is None else None,
        phase,
        None if phases is None else tuple(phases),
        kind,
        checkpoint,
        {key: list(values) for key, values in (history or new_history()).items()},
    )
    done = run.resume(epochs) if resume else 0
    if done < 0:
        return run.history
    xp = model.backend.xp
    bar = tqdm(total=epochs, initial=done, desc=phase, unit="epoch", disable=not progress)
    # CPU training: the calling thread and Numba's workers on distinct CPUs, so that the
    # parallel kernels get the second core (minivae.kernels.threads has why).
    placement = pinned_threads() if model.backend.kernel_impl == "cpu" else nullcontext()
    with placement:
        for epoch in range(done + 1, epochs + 1):
            started = time.perf_counter()
            shuffle_rng = np.random.default_rng(epoch_seed(model.seed, epoch, 0))
            model._rng = model.backend.rng(epoch_seed(model.seed, epoch, 1))
            epoch_batches = (
                default_batches(n_examples, batch_size, shuffle_rng) if batches is None
                else list(batches(shuffle_rng))
            )
            loss_sum = 0.0
            count = 0
            for step, idx in enumerate(epoch_batches, start=1):
                where = f"step {step} of {len(epoch_batches)}"
                loss, grads = loss_and_grads(idx)
                loss = float(loss)
                if not math.isfinite(loss):
                    run.diverged(epoch, where, f"the loss is {loss}")
                missing = [name for name in names if name not in grads]
                if missing:
                    raise ValueError(
                        f"loss_and_grads returned no gradient for {missing}; it returned "
                        f"{list(grads)}"
                    )
                update = (grads if isinstance(grads, FlatArrays) and list(grads) == names
                          else {name: grads[name] for name in names})
                bad = _nonfinite_counts(xp, update)
                if bad:
                    listing = ", ".join(f"{name!r} has {n} NaN/Inf values" for name, n in bad)
                    run.diverged(epoch, where, f"the loss is {loss} but the gradient of {listing}")
                run.optimizer.step(model.params, update)
                loss_sum += loss * len(idx)
                count += len(idx)
            if count == 0:
                raise ValueError(
                    f"phase {phase!r}, epoch {epoch}: the batches returned no examples; "
                    "batches(rng) must return a non-empty list of non-empty index arrays"
                )
            bad = _nonfinite_counts(xp, {name: model.params[name] for name in names})
            if bad:
                listing = ", ".join(f"{name!r} has {n} NaN/Inf values" for name, n in bad)
                run.diverged(epoch, "after its last step", f"the parameter {listing}")
            val_loss = None
            if evaluate is not None:
                val_loss = float(evaluate())
                if not math.isfinite(val_loss):
                    run.diverged(epoch, "at validation", f"the validation loss is {val_loss}")
            run.history["epoch"].append(epoch)
            run.history["train_loss"].append(loss_sum / count)
            run.history["val_loss"].append(val_loss)
            run.history["phase"].append(phase)
            run.history["seconds"].append(time.perf_counter() - started)
            postfix = {"loss": f"{loss_sum / count:.4g}"}
            if val_loss is not None:
                postfix["val_loss"] = f"{val_loss:.4g}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if run.checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
                run.save(epoch)
    bar.close()
    return run.history
