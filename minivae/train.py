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
{"name", "lr", "t", ...}}``; :func:`load_model_state` reads the
model part back.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, TrainingDivergedError
from .nn import FlatArrays
from .optim import make_optimizer

History = dict
"""``{"epoch": [...], "train_loss": [...], "val_loss": [...], "phase": [...], "seconds": [...]}``,
one entry per epoch; ``val_loss`` entries are None without an ``evaluate`` function."""

HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "phase", "seconds")
MODEL_PREFIX = "param."
OPTIM_PREFIX = "optim."


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
              param_names):
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
    if param_names is None:
        return list(model.params)
    unknown = [name for name in param_names if name not in model.params]
    if unknown:
        raise ValueError(
            f"param_names contains {unknown}, which are not parameters of the model; "
            f"its parameters are {list(model.params)}"
        )
    return list(param_names)


def _nonfinite_counts(xp, arrays) -> list:
    """``[(name, count), ...]`` for the arrays (gradients or parameters) holding NaN or Inf.

    One reduction and one device synchronisation in the common all-finite case; the
    per-array counts run only when that sum is not finite (or overflows).
    """
    with np.errstate(over="ignore", invalid="ignore"):  # a float32 sum may overflow: fine
        if isinstance(arrays, FlatArrays):
            total = float(xp.sum(arrays.flat))
        else:
            total = float(sum(xp.sum(array) for array in arrays.values()))
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

    def __init__(self, model, optimizer, phase, kind, checkpoint, history):
        self.model = model
        self.optimizer = optimizer
        self.phase = phase
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
        }
        save_checkpoint(self.checkpoint, arrays, meta, kind=self.kind)
        self.last_good = (self.checkpoint, self.phase, int(epoch))

    def resume(self) -> int:
        """Restore from the checkpoint if there is one; return the last finished epoch."""
        if not self.checkpoint.exists():
            return 0
        arrays, meta = load_checkpoint(self.checkpoint, kind=self.kind)
        model_arrays = {
            key[len(MODEL_PREFIX):]: value for key, value in arrays.items()
            if key.startswith(MODEL_PREFIX)
        }
        self.model.set_state(model_arrays, meta["model"])
        saved_phase = meta["phase"]
        if saved_phase != self.phase:
            if self.phase in meta["history"]["phase"]:
                # Phases run one after another, so this one finished before the
                # checkpoint's phase began: nothing to redo.
                self.history = meta["history"]
                self.last_good = (self.checkpoint, saved_phase, meta["epoch"])
                return -1
            # The checkpoint ends an earlier phase; this phase starts from its parameters.
            self.last_good = (self.checkpoint, saved_phase, meta["epoch"])
            return 0
        saved_name = meta["optimizer"]["name"]
        if saved_name != self.optimizer.name:
            raise CheckpointError(
                f"{str(self.checkpoint)!r} was written while training phase {self.phase!r} with "
                f"optimizer={saved_name!r}, but this run asks for {self.optimizer.name!r}; "
                f"resume with optimizer={saved_name!r} or start without resume=True"
            )
        optim_arrays = {
            key[len(OPTIM_PREFIX):]: value for key, value in arrays.items()
            if key.startswith(OPTIM_PREFIX)
        }
        self.optimizer.load_state_arrays(optim_arrays)
        self.history = meta["history"]
        self.last_good = (self.checkpoint, saved_phase, meta["epoch"])
        return int(meta["epoch"])


def fit_loop(model, n_examples, loss_and_grads, *, epochs, batch_size=100, optimizer="adam",
             lr=1e-3, param_names=None, evaluate=None, batches=None, progress=True,
             checkpoint=None, checkpoint_every=1, resume=False, phase="train", history=None,
             kind="vae") -> History:
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
        and continue after its epoch.
    phase : str
        Name of this training phase (for multi-phase training, e.g. pre-training then
        fine-tuning). Resuming a later phase's checkpoint skips an already finished phase.
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
        If ``resume=True`` and the checkpoint is unreadable, of another kind, or was written
        with another optimiser.
    """
    names = _validate(model, n_examples, epochs, batch_size, checkpoint, checkpoint_every,
                      resume, param_names)
    run = _Run(
        model,
        make_optimizer(optimizer, lr, impl=model.backend.kernel_impl),
        phase,
        kind,
        checkpoint,
        {key: list(values) for key, values in (history or new_history()).items()},
    )
    done = run.resume() if resume else 0
    if done < 0:
        return run.history
    xp = model.backend.xp
    bar = tqdm(total=epochs, initial=done, desc=phase, unit="epoch", disable=not progress)
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
