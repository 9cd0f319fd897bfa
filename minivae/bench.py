"""``minivae bench``: every performance target, measured as ours against its baseline.

    minivae bench                  the full table (~1.5 min on 2 idle cores, up to ~7 under load)
    minivae bench --quick          smaller sizes, fewer repeats (a smoke run; not the targets)
    minivae bench --device gpu     GPU against CPU for every kernel and both model steps

Each case runs in a fresh process (CPU; see ``isolate`` in :func:`main`), its callables
interleaved (ours, baseline, ours, baseline, ...) after one warm-up call each, so that
load from other processes falls on both sides alike. Each callable is timed per call
with ``time.perf_counter`` (on the GPU with CUDA events); the table reports medians, the
JSON also the quartiles, the minimum and every sample. Peak memory (the GP row) is
tracemalloc's peak above what was live before the call; NumPy and SciPy report their
array allocations to tracemalloc.

A target is one of two kinds:

- ``faster``: ours must be at least ``factor`` times faster; the ratio shown is
  baseline median / ours median;
- ``at_most``: ours may take at most ``factor`` times the baseline (time or bytes); the
  ratio shown is ours / baseline.

The exit status is 0 when the measurements completed, whether or not the targets were
met (the table and the JSON say which); 2 when ``--device gpu`` finds no usable GPU.
"""

from __future__ import annotations

import functools
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .backend import Backend, get_backend
from .errors import DeviceUnavailableError
from .files import write_json
from .kernels.threads import pinned_threads

TORCH_VERSION = "2.13.0"


# ---- sizes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """Problem sizes and repeat counts of one benchmark run.

    ``FULL`` holds the sizes the targets are stated for; ``QUICK`` smaller ones for a
    smoke run. Tests pass tiny overrides through ``main(sizes=...)``.
    """

    rbf_n: int = 4000
    rbf_dims: tuple = (2, 32)
    lml_n: int = 3000
    lml_d: int = 8
    predict_train: int = 4000
    predict_test: int = 4000
    predict_d: int = 8
    vae_layers: tuple = (784, 400, 20)
    vae_batch: int = 128
    reparam_shape: tuple = (4096, 256)
    adam_params: int = 1_000_000
    contract_n: int = 3000
    contract_d: int = 8
    repeats_fast: int = 201
    repeats_medium: int = 21
    repeats_slow: int = 7
    warmup: int = 1
    copy_mib: tuple = (32, 512)


FULL = Sizes()
QUICK = Sizes(rbf_n=1500, lml_n=1000, predict_train=1500, predict_test=1500,
              contract_n=1000, repeats_fast=21, repeats_medium=5, repeats_slow=3,
              copy_mib=(32, 128))


# ---- targets, rows and timing --------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A performance target.

    ``kind="faster"``: met when baseline / ours >= ``factor``; ``kind="at_most"``: met when
    ours / baseline <= ``factor``. ``text`` is how the table states it.
    """

    kind: str
    factor: float
    text: str

    def ratio(self, ours: float, baseline: float) -> float:
        """baseline / ours for "faster", ours / baseline for "at_most"."""
        return baseline / ours if self.kind == "faster" else ours / baseline

    def met(self, ratio: float) -> bool:
        """Whether ``ratio`` (from :meth:`ratio`) meets the target."""
        return ratio >= self.factor if self.kind == "faster" else ratio <= self.factor


GPU_SPEEDUP = Target("faster", 1.0, "GPU vs CPU speedup")  # how GPU rows (no target) compare


@dataclass
class Row:
    """One line of the table: ours against one baseline, in seconds or bytes."""

    case: str
    ours: str
    baseline: str
    target: Target | None
    unit: str = "s"
    ours_stats: dict | None = None
    baseline_stats: dict | None = None
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        """The ratio of the medians (see :class:`Target`), None when not measured."""
        if self.skipped or self.ours_stats is None or self.baseline_stats is None:
            return None
        target = self.target or GPU_SPEEDUP
        return target.ratio(self.ours_stats["median"], self.baseline_stats["median"])

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when skipped or without a target (GPU rows)."""
        ratio = self.ratio
        if ratio is None or self.target is None:
            return None
        return self.target.met(ratio)

    def to_json(self) -> dict:
        """The row, its target, ratio, verdict and both sides' statistics, as plain data."""
        return {
            "case": self.case,
            "ours": self.ours,
            "baseline": self.baseline,
            "unit": self.unit,
            "target": None if self.target is None else asdict(self.target),
            "ratio_definition": (
                "baseline / ours" if (self.target or GPU_SPEEDUP).kind == "faster"
                else "ours / baseline"
            ),
            "ratio": self.ratio,
            "met": self.met,
            "skipped": self.skipped,
            "ours_stats": self.ours_stats,
            "baseline_stats": self.baseline_stats,
        }


def summarize(samples) -> dict:
    """Median, quartiles, IQR, minimum and count of a list of measurements."""
    values = sorted(float(s) for s in samples)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "min": values[0],
        "n": len(values),
        "samples": values,
    }


def wall_timer(fn: Callable) -> float:
    """Seconds one call of ``fn`` takes, by ``time.perf_counter`` (garbage collector off)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def cuda_event_timer(cupy) -> Callable:
    """A timer that measures one call of ``fn`` between two CUDA events on the current stream."""

    def time_call(fn: Callable) -> float:
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return cupy.cuda.get_elapsed_time(start, stop) / 1e3

    return time_call


def time_interleaved(calls: dict, repeats: int, warmup: int = 1, block: int = 1,
                     contexts: dict | None = None) -> dict:
    """Time several callables round-robin; return ``{label: summarize(seconds)}``.

    Parameters
    ----------
    calls : dict label -> (fn, timer)
        ``timer(fn)`` returns the seconds of one call (:func:`wall_timer`, or a
        :func:`cuda_event_timer`).
    repeats : int
        Timed calls of each callable (rounded down to a multiple of ``block``; a block
        longer than ``repeats`` is cut to it).
    warmup : int
        Untimed calls of each callable first (compilation, caches, allocator).
    block : int
        Consecutive calls of one callable per turn. 1 alternates call by call; more keeps
        one library's thread pools from running straight into another's: measured on
        the VAE step, a minivae step that follows a PyTorch step call by call takes 3.56
        instead of 3.11 ms (PyTorch's OpenMP threads are still awake and compete with
        OpenBLAS's and Numba's on the two cores), while blocks of 10 give 3.11 ms with
        or without PyTorch in the process (docs/performance.md, "How the numbers are
        taken").
    contexts : dict label -> context manager factory, optional
        Entered around each block of that label's calls, outside the timed calls: the
        setting a caller would run those calls under (the VAE step's thread placement,
        as in :func:`minivae.train.fit_loop`).
    """
    contexts = contexts or {}
    for _ in range(warmup):
        for fn, _timer in calls.values():
            fn()
    samples = {label: [] for label in calls}
    block = max(1, min(block, repeats))
    for _ in range(max(1, repeats // block)):
        for label, (fn, timer) in calls.items():
            with contexts.get(label, nullcontext)():
                for _ in range(block):
                    samples[label].append(timer(fn))
    return {label: summarize(values) for label, values in samples.items()}


def traced_peak_bytes(fn: Callable) -> int:
    """Peak bytes traced by tracemalloc during ``fn()``, above what was live before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


@dataclass
class Group:
    """Callables measured together, and the rows their medians fill.

    ``rows`` name their ours/baseline callables by the labels of ``calls``;
    ``memory_rows`` are filled from :func:`traced_peak_bytes` of the same callables.
    """

    title: str
    calls: dict
    rows: list
    repeats: int
    memory_rows: list = field(default_factory=list)
    block: int = 1  # consecutive calls per turn, see time_interleaved
    contexts: dict = field(default_factory=dict)  # label -> context for its blocks


def run_group(group: Group, warmup: int) -> list:
    """Measure ``group`` and return its :class:`Row` objects filled in."""
    stats = time_interleaved(group.calls, group.repeats, warmup, group.block, group.contexts)
    filled = []
    for row, ours_label, baseline_label in group.rows:
        if row.skipped is None:
            row.ours_stats, row.baseline_stats = stats[ours_label], stats[baseline_label]
        filled.append(row)
    for row, ours_label, baseline_label in group.memory_rows:
        row.ours_stats = summarize([traced_peak_bytes(group.calls[ours_label][0])])
        row.baseline_stats = summarize([traced_peak_bytes(group.calls[baseline_label][0])])
        filled.append(row)
    return filled


# ---- the CPU cases -------------------------------------------------------------------------
def _rbf_group(sizes: Sizes, d: int) -> Group:
    """K(X, X) by the cpu kernel against scikit-learn's RBF and against np.full."""
    from sklearn.gaussian_process.kernels import RBF

    from .kernels import rbf_matrix

    n = sizes.rbf_n
    X = np.random.default_rng(d).standard_normal((n, d))
    lengthscale = float(np.sqrt(d))  # typical squared distances ~ 2d: K's entries stay O(1)
    sklearn_kernel = RBF(length_scale=lengthscale)
    calls = {
        "ours": (lambda: rbf_matrix(X, None, lengthscale, 1.0, impl="cpu"), wall_timer),
        "sklearn": (lambda: sklearn_kernel(X), wall_timer),
        "fill": (lambda: np.full((n, n), 1.0), wall_timer),
    }
    case = f"RBF K(X,X) n={n} d={d} f64"
    rows = [
        (Row(f"{case} vs sklearn", "rbf_matrix(impl='cpu')",
             "sklearn.gaussian_process.kernels.RBF(X)", Target("faster", 3.0, ">= 3x faster")),
         "ours", "sklearn"),
        (Row(f"{case} vs np.full", "rbf_matrix(impl='cpu')",
             "np.full((n, n), 1.0): writing the output once",
             Target("at_most", 2.5, "<= 2.5x its time")),
         "ours", "fill"),
    ]
    return Group(f"RBF kernel matrix n={n} d={d}", calls, rows, sizes.repeats_medium)


def _gp_problem(n: int, d: int, seed: int):
    """Inputs, targets and ARD hyperparameters of a smooth regression problem."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n, d))
    y = np.sin(3.0 * X @ rng.normal(size=d)) + 0.1 * rng.normal(size=n)
    lengthscale = rng.uniform(0.5, 2.0, size=d)
    return X, y, lengthscale, 1.3, 0.05


def _fitted_gp_pair(X, y, lengthscale, variance, noise, device="cpu"):
    """minivae's GPRegressor and scikit-learn's, fitted to the same data, same fixed theta."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    from .gp import GPRegressor

    ours = GPRegressor(lengthscale, variance, noise, ard=True, optimize=False,
                       device=device).fit(X, y)
    kernel = ConstantKernel(variance) * RBF(lengthscale) + WhiteKernel(noise)
    theirs = GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None).fit(X, y)
    return ours, theirs


def _sklearn_theta(theta):
    """minivae's theta (log l.., log s, log noise) in scikit-learn's order.

    scikit-learn orders ``ConstantKernel * RBF + WhiteKernel`` as (log s, log l.., log noise).
    """
    return np.concatenate([[theta[-2]], theta[:-2], [theta[-1]]])


def _gp_lml_group(sizes: Sizes) -> Group:
    """LML + gradient at a fixed theta, time and peak memory, against scikit-learn."""
    n, d = sizes.lml_n, sizes.lml_d
    ours, theirs = _fitted_gp_pair(*_gp_problem(n, d, seed=0))
    theta = ours.theta_
    theta_sklearn = _sklearn_theta(theta)
    calls = {
        "ours": (lambda: ours.log_marginal_likelihood(theta, eval_gradient=True), wall_timer),
        "sklearn": (lambda: theirs.log_marginal_likelihood(theta_sklearn, eval_gradient=True),
                    wall_timer),
    }
    case = f"GP LML+grad ARD n={n} d={d}"
    ours_label = "GPRegressor.log_marginal_likelihood(theta, eval_gradient=True)"
    sklearn_label = "GaussianProcessRegressor.log_marginal_likelihood(theta, eval_gradient=True)"
    rows = [(Row(f"{case} time", ours_label, sklearn_label,
                 Target("faster", 3.0, ">= 3x faster")),
             "ours", "sklearn")]
    memory_rows = [(Row(f"{case} peak memory", ours_label, sklearn_label,
                        Target("at_most", 0.2, "<= 1/5 its peak"), unit="B"),
                    "ours", "sklearn")]
    return Group(f"GP log marginal likelihood + gradient n={n} d={d}", calls, rows,
                 sizes.repeats_slow, memory_rows)


def _gp_predict_group(sizes: Sizes) -> Group:
    """Predictive mean and standard deviation against scikit-learn's."""
    n, m, d = sizes.predict_train, sizes.predict_test, sizes.predict_d
    X, y, lengthscale, variance, noise = _gp_problem(n, d, seed=1)
    ours, theirs = _fitted_gp_pair(X, y, lengthscale, variance, noise)
    X_test = np.random.default_rng(2).uniform(-1.0, 1.0, size=(m, d))
    calls = {
        "ours": (lambda: ours.predict(X_test, return_std=True), wall_timer),
        "sklearn": (lambda: theirs.predict(X_test, return_std=True), wall_timer),
    }
    rows = [(Row(f"GP predict mean+std {n} train {m} test",
                 "GPRegressor.predict(return_std=True)",
                 "GaussianProcessRegressor.predict(return_std=True)",
                 Target("faster", 2.0, ">= 2x faster")),
             "ours", "sklearn")]
    return Group(f"GP predict mean + std, {n} train / {m} test", calls, rows,
                 sizes.repeats_slow)


def _vae_step_fn(backend: Backend, sizes: Sizes, data: np.ndarray) -> Callable:
    """One training step of minivae's VAE (loss, hand-written backward, fused Adam)."""
    from .optim import make_optimizer
    from .vae import VAE

    D, H, K = sizes.vae_layers
    vae = VAE(D, K, hidden=(H,), likelihood="bernoulli", dtype="float32", seed=0,
              device=backend.name)
    optimizer = make_optimizer("adam", 1e-3, impl=backend.kernel_impl)
    X = backend.asarray(data)

    def step():
        _loss, grads = vae._loss_and_grads_device(X, reuse_buffers=True)
        optimizer.step(vae.params, grads)

    return step


def _torch_vae_step_fn(torch, sizes: Sizes, data: np.ndarray) -> Callable:
    """The same model, loss and Adam in PyTorch CPU with autograd (the peer)."""
    from .vae import VAE

    D, H, K = sizes.vae_layers
    initial = VAE(D, K, hidden=(H,), likelihood="bernoulli", dtype="float32", seed=0)
    params = {name: torch.tensor(np.asarray(value), requires_grad=True)
              for name, value in initial.get_state()[0].items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    X = torch.from_numpy(data)
    generator = torch.Generator().manual_seed(0)
    batch = data.shape[0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step():
        optimizer.zero_grad(set_to_none=True)
        hidden = torch.relu(X @ params["enc.0.W"] + params["enc.0.b"])
        mu = hidden @ params["enc.mu.W"] + params["enc.mu.b"]
        logvar = hidden @ params["enc.logvar.W"] + params["enc.logvar.b"]
        eps = torch.randn(mu.shape, generator=generator)
        z = mu + torch.exp(0.5 * logvar) * eps
        decoder_hidden = torch.relu(z @ params["dec.0.W"] + params["dec.0.b"])
        logits = decoder_hidden @ params["dec.out.W"] + params["dec.out.b"]
        nll = bce(logits, X, reduction="sum")
        kl = 0.5 * torch.sum(torch.exp(logvar) + mu * mu - 1.0 - logvar)
        loss = (nll + kl) / batch
        loss.backward()
        optimizer.step()

    return step


def _six_matmuls_fn(sizes: Sizes, data: np.ndarray) -> Callable:
    """The step's six products that touch the D x H layers and the latent heads.

    Encoder forward X W0, heads H [Wmu Wlogvar], decoder output G Wout, its weight
    gradient G^T dlogits, its input gradient dlogits Wout^T, encoder weight gradient
    X^T dH; float32, the step's shapes. The rest of the step is O(batch x (D + H))
    elementwise work and products with the (H, K) and (K, H) matrices.
    """
    D, H, K = sizes.vae_layers
    batch = data.shape[0]
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((D, H), dtype=np.float32)
    W_heads = rng.standard_normal((H, 2 * K), dtype=np.float32)
    W_out = rng.standard_normal((H, D), dtype=np.float32)
    decoder_hidden = rng.standard_normal((batch, H), dtype=np.float32)
    dlogits = rng.standard_normal((batch, D), dtype=np.float32)

    def six_products():
        encoder_hidden = data @ W0
        heads = encoder_hidden @ W_heads
        logits = decoder_hidden @ W_out
        dW_out = decoder_hidden.T @ dlogits
        dhidden = dlogits @ W_out.T
        dW0 = data.T @ dhidden
        return heads, logits, dW_out, dW0

    return six_products


def _import_torch():
    """PyTorch, or None when it is not installed (the peer rows are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _vae_group(sizes: Sizes) -> Group:
    """One VAE training step against PyTorch's and against its six matrix products."""
    D, H, K = sizes.vae_layers
    batch = sizes.vae_batch
    data = (np.random.default_rng(0).uniform(size=(batch, D)) > 0.7).astype(np.float32)
    calls = {
        "ours": (_vae_step_fn(get_backend("cpu"), sizes, data), wall_timer),
        "matmuls": (_six_matmuls_fn(sizes, data), wall_timer),
    }
    case = f"VAE step {D}-{H}-{K} b={batch} f32"
    ours = "VAE: loss_and_grads + fused Adam (impl='cpu', threads pinned as in fit)"
    torch = _import_torch()
    torch_row = Row(f"{case} vs torch CPU", ours,
                    f"PyTorch CPU autograd + torch.optim.Adam (torch=={TORCH_VERSION})",
                    Target("faster", 2.0, ">= 2x faster"))
    if torch is None:
        torch_row.skipped = ("torch is not installed "
                             f'(pip install -e ".[peers]" for torch=={TORCH_VERSION})')
    else:
        calls["torch"] = (_torch_vae_step_fn(torch, sizes, data), wall_timer)
        torch_row.baseline = (f"PyTorch {torch.__version__} CPU autograd + torch.optim.Adam, "
                              f"{torch.get_num_threads()} threads")
    rows = [
        (torch_row, "ours", "torch"),
        (Row(f"{case} vs its 6 matmuls", ours,
             "the step's six matrix products alone (its floor)",
             Target("at_most", 1.5, "<= 1.5x their time")),
         "ours", "matmuls"),
    ]
    # Our step runs as fit() runs it: the calling thread and Numba's workers pinned to
    # distinct CPUs (minivae.kernels.threads); the baselines run as NumPy and PyTorch run.
    return Group(f"VAE training step {D}-{H}-{K}, batch {batch}", calls, rows,
                 sizes.repeats_fast, block=10, contexts={"ours": pinned_threads})


def _reparam_inputs(xp_asarray, sizes: Sizes):
    """``(mu, logvar, eps, dz)``, float32, one sample, put on a device by ``xp_asarray``."""
    n, k = sizes.reparam_shape
    rng = np.random.default_rng(0)
    mu, logvar = (xp_asarray(rng.standard_normal((n, k), dtype=np.float32)) for _ in range(2))
    eps, dz = (xp_asarray(rng.standard_normal((1, n, k), dtype=np.float32)) for _ in range(2))
    return mu, logvar, eps, dz


def _reparam_fn(impl: str, mu, logvar, eps, dz) -> Callable:
    """One reparameterisation forward and backward by ``impl``."""
    from .kernels import reparam_backward, reparam_forward

    def forward_backward():
        reparam_forward(mu, logvar, eps, impl=impl)
        reparam_backward(dz, logvar, eps, impl=impl)

    return forward_backward


def _reparam_group(sizes: Sizes) -> Group:
    """The cpu kernels against the plain NumPy expressions."""
    n, k = sizes.reparam_shape
    inputs = _reparam_inputs(np.asarray, sizes)
    calls = {
        "ours": (_reparam_fn("cpu", *inputs), wall_timer),
        "numpy": (_reparam_fn("reference", *inputs), wall_timer),
    }
    rows = [(Row(f"reparam fwd+bwd {n}x{k} f32", "reparam_forward + reparam_backward (impl='cpu')",
                 "the plain NumPy expressions (impl='reference')",
                 Target("faster", 2.0, ">= 2x faster")),
             "ours", "numpy")]
    return Group(f"reparameterisation forward + backward {n}x{k}", calls, rows,
                 sizes.repeats_fast)


def numpy_adam_textbook(param, grad, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """The plain NumPy Adam update a user would write (Kingma & Ba, Algorithm 1), in place.

    The baseline of the Adam row. minivae's reference (``adam_step(impl="reference")``)
    also flushes subnormal moments to zero (kernels/adam.py), which costs NumPy three more
    passes (about 1.3 ms of 6.5 ms at 1M float32); the baseline leaves that out, so the
    ratio is against the textbook update, not against minivae's specification.
    """
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    param -= (lr / (1 - beta1**t)) * m / (np.sqrt(v / (1 - beta2**t)) + eps)


def _adam_fn(impl: str, xp_asarray, n_params: int) -> Callable:
    """One in-place Adam step per call on its own arrays; the step count keeps growing.

    ``impl="textbook"`` is :func:`numpy_adam_textbook`; the others go to ``adam_step``.
    """
    from .kernels import adam_step

    rng = np.random.default_rng(0)
    param, grad = (xp_asarray(rng.standard_normal(n_params, dtype=np.float32)) for _ in range(2))
    m, v = (xp_asarray(np.zeros(n_params, dtype=np.float32)) for _ in range(2))
    step_count = [0]

    def step():
        step_count[0] += 1
        if impl == "textbook":
            numpy_adam_textbook(param, grad, m, v, lr=1e-3, t=step_count[0])
        else:
            adam_step(param, grad, m, v, lr=1e-3, t=step_count[0], impl=impl)

    return step


def _adam_group(sizes: Sizes) -> Group:
    """The fused cpu kernel against the plain NumPy update."""
    n = sizes.adam_params
    calls = {
        "ours": (_adam_fn("cpu", np.asarray, n), wall_timer),
        "numpy": (_adam_fn("textbook", np.asarray, n), wall_timer),
    }
    rows = [(Row(f"Adam step {n:,} f32", "adam_step(impl='cpu')",
                 "the plain NumPy update (textbook Adam, no subnormal flush)",
                 Target("faster", 3.0, ">= 3x faster")),
             "ours", "numpy")]
    return Group(f"Adam step over {n:,} float32 parameters", calls, rows, sizes.repeats_fast)


def cpu_groups(sizes: Sizes) -> list:
    """The CPU table's groups as ``(title, build)``; ``build()`` sets up the data.

    Each ``build`` is a picklable :func:`functools.partial` of a module-level function, so
    that a group can be measured in a fresh process (see :func:`run`).
    """
    builders = [(f"RBF kernel matrix d={d}", functools.partial(_rbf_group, sizes, d))
                for d in sizes.rbf_dims]
    builders += [
        ("GP log marginal likelihood + gradient", functools.partial(_gp_lml_group, sizes)),
        ("GP predict mean + std", functools.partial(_gp_predict_group, sizes)),
        ("VAE training step", functools.partial(_vae_group, sizes)),
        ("reparameterisation", functools.partial(_reparam_group, sizes)),
        ("Adam step", functools.partial(_adam_group, sizes)),
    ]
    return builders


# ---- the GPU cases -------------------------------------------------------------------------
def gpu_groups(backend: Backend, sizes: Sizes, timer: Callable) -> list:
    """GPU-against-CPU groups: each kernel, the VAE step and the GP LML + gradient.

    ``backend`` is the GPU backend (or, in tests, ``"cuda-sim"``, which runs the same
    cuda kernels on NumPy arrays in Numba's simulator); ``timer`` times one call on it.
    """
    from .kernels import rbf_grad_contract, rbf_matrix

    cpu = get_backend("cpu")
    dev = backend.asarray

    def rbf_matrix_group(d):
        n = sizes.rbf_n
        X = np.random.default_rng(d).standard_normal((n, d))
        X_dev, lengthscale = dev(X), float(np.sqrt(d))
        calls = {"gpu": (lambda: rbf_matrix(X_dev, None, lengthscale, impl="cuda"), timer),
                 "cpu": (lambda: rbf_matrix(X, None, lengthscale, impl="cpu"), wall_timer)}
        return _gpu_group(f"rbf_matrix n={n} d={d} f64", calls, sizes)

    def rbf_contract_group():
        n, d = sizes.contract_n, sizes.contract_d
        rng = np.random.default_rng(3)
        X, W = rng.uniform(-1.0, 1.0, size=(n, d)), rng.standard_normal((n, n))
        W = W + W.T
        lengthscale = rng.uniform(0.5, 2.0, size=d)
        X_dev, W_dev = dev(X), dev(W)
        calls = {"gpu": (lambda: rbf_grad_contract(W_dev, X_dev, lengthscale, 1.3, impl="cuda"),
                         timer),
                 "cpu": (lambda: rbf_grad_contract(W, X, lengthscale, 1.3, impl="cpu"),
                         wall_timer)}
        return _gpu_group(f"rbf_grad_contract ARD n={n} d={d} f64", calls, sizes)

    def reparam_group():
        n, k = sizes.reparam_shape
        calls = {"gpu": (_reparam_fn("cuda", *_reparam_inputs(dev, sizes)), timer),
                 "cpu": (_reparam_fn("cpu", *_reparam_inputs(np.asarray, sizes)), wall_timer)}
        return _gpu_group(f"reparam fwd+bwd {n}x{k} f32", calls, sizes)

    def adam_group():
        n = sizes.adam_params
        calls = {"gpu": (_adam_fn("cuda", dev, n), timer),
                 "cpu": (_adam_fn("cpu", np.asarray, n), wall_timer)}
        return _gpu_group(f"Adam step {n:,} f32", calls, sizes)

    def vae_group():
        D, H, K = sizes.vae_layers
        data = (np.random.default_rng(0).uniform(size=(sizes.vae_batch, D)) > 0.7)
        data = data.astype(np.float32)
        calls = {"gpu": (_vae_step_fn(backend, sizes, data), timer),
                 "cpu": (_vae_step_fn(cpu, sizes, data), wall_timer)}
        return _gpu_group(f"VAE step {D}-{H}-{K} b={sizes.vae_batch} f32", calls, sizes)

    def gp_lml_group():
        from .gp import GPRegressor

        n, d = sizes.lml_n, sizes.lml_d
        X, y, lengthscale, variance, noise = _gp_problem(n, d, seed=0)
        models = {name: GPRegressor(lengthscale, variance, noise, ard=True, optimize=False,
                                    device=name).fit(X, y)
                  for name in (backend.name, "cpu")}
        gpu_model, cpu_model = models[backend.name], models["cpu"]
        calls = {
            "gpu": (lambda: gpu_model.log_marginal_likelihood(gpu_model.theta_, True), timer),
            "cpu": (lambda: cpu_model.log_marginal_likelihood(cpu_model.theta_, True),
                    wall_timer),
        }
        return _gpu_group(f"GP LML+grad ARD n={n} d={d}", calls, sizes)

    builders = [(f"rbf_matrix d={d}", lambda d=d: rbf_matrix_group(d))
                for d in sizes.rbf_dims]
    return builders + [("rbf_grad_contract", rbf_contract_group), ("reparam", reparam_group),
                       ("adam", adam_group), ("VAE step", vae_group),
                       ("GP LML + gradient", gp_lml_group)]


def _gpu_group(case: str, calls: dict, sizes: Sizes) -> Group:
    """One GPU-against-CPU row (no target: the ratio is the GPU's speedup)."""
    row = Row(case, "impl='cuda' / device='gpu' (CUDA events)",
              "impl='cpu' / device='cpu' (perf_counter)", None)
    return Group(case, calls, [(row, "gpu", "cpu")], sizes.repeats_fast)


# ---- the machine ---------------------------------------------------------------------------
def copy_bandwidth(mib: int, repeats: int = 5) -> dict:
    """A STREAM-like copy with NumPy: ``np.copyto`` between two arrays of ``mib`` MiB.

    Returns the median seconds and the bandwidth in GB/s counting STREAM's way, the bytes
    read plus the bytes written (2 x size; the write-allocate traffic is not counted).
    NumPy's copy runs on one thread.
    """
    source = np.ones(mib * 2**20 // 8)
    destination = np.zeros_like(source)
    stats = time_interleaved({"copy": (lambda: np.copyto(destination, source), wall_timer)},
                             repeats)["copy"]
    moved = 2 * source.nbytes
    return {"array_mib": mib, "bytes_moved": moved, "median_s": stats["median"],
            "min_s": stats["min"], "gb_per_s_median": moved / stats["median"] / 1e9,
            "gb_per_s_best": moved / stats["min"] / 1e9}


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list:
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries (kernel/architecture,
    version, threads), one dict per library."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads",
            "threading_layer", "filepath")
    return [{key: pool.get(key) for key in keys if key in pool} for pool in threadpool_info()]


def machine_info() -> dict:
    """The CPU, the versions and the BLAS that the numbers depend on."""
    import numba
    import scipy

    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "scipy": scipy.__version__, "numba": numba.__version__}
    try:
        import sklearn

        versions["scikit-learn"] = sklearn.__version__
    except ImportError:
        versions["scikit-learn"] = None
    torch = _import_torch()
    versions["torch"] = None if torch is None else torch.__version__
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count()),
        "platform": platform.platform(),
        "versions": versions,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "blas": blas_info(),
        "env": {name: os.environ.get(name) for name in
                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                 "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "NUMBA_NUM_THREADS")},
        "numba_threading_layer": _numba_threading_layer(),
    }


def _numba_threading_layer():
    """The threading layer Numba's parallel loops ran on, or None before any ran."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # raised until a parallel function has been executed
        return None


def format_machine(info: dict) -> str:
    """A few lines describing the machine, for the console."""
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items()
                         if version is not None)
    blas = "; ".join(
        f"{pool.get('prefix')} {pool.get('version')} ({pool.get('architecture', '?')}, "
        f"{pool.get('num_threads')} threads)"
        for pool in info["blas"] if pool.get("user_api") == "blas"
    )
    env = ", ".join(f"{name}={info['env'][name] or '(unset)'}"
                    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY"))
    load = info.get("load_average")
    lines = [
        f"machine: {info['cpu_model']}, {info['cpu_count']} cores "
        f"({info['cpus_usable']} usable), Numba threads {info['numba_threads']} "
        f"(threading layer {info['numba_threading_layer']})",
        f"versions: {versions}",
        f"BLAS: {blas or 'none found by threadpoolctl'}",
        f"env: {env}",
    ]
    for copy in info.get("copy_bandwidth", []):
        lines.append(f"NumPy copy of {copy['array_mib']} MiB (1 thread, read + write): "
                     f"median {copy['gb_per_s_median']:.1f} GB/s, "
                     f"best {copy['gb_per_s_best']:.1f} GB/s")
    if load:
        lines.append(f"load average (1/5/15 min) at start: {load['start']}, at end: {load['end']}")
    return "\n".join(lines)


# ---- table and JSON ------------------------------------------------------------------------
def _format_value(value: float, unit: str) -> str:
    """Seconds with a unit prefix ("12.3 ms"), or bytes in MiB."""
    if unit == "B":
        return f"{value / 2**20:.1f} MiB"
    for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value * 1e9:.3g} ns"


def _format_ratio(row: Row) -> str:
    """"4.10x faster" / "1.52x slower" for speed targets, "0.31x its peak" for at-most ones."""
    ratio = row.ratio
    if (row.target or GPU_SPEEDUP).kind == "faster":
        return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
    return f"{ratio:.2f}x its {'peak' if row.unit == 'B' else 'time'}"


def format_table(rows: list) -> str:
    """The console table: case, ours median, baseline median, ratio, target, met."""
    header = ("case", "ours median", "baseline median", "ratio", "target", "met")
    lines = []
    for row in rows:
        if row.skipped:
            lines.append((row.case, "-", "-", "-", row.target.text if row.target else "-",
                          "skipped"))
            continue
        lines.append((row.case, _format_value(row.ours_stats["median"], row.unit),
                      _format_value(row.baseline_stats["median"], row.unit),
                      _format_ratio(row), row.target.text if row.target else "-",
                      "-" if row.met is None else ("yes" if row.met else "NO")))
    widths = [max(len(str(line[i])) for line in [header] + lines) for i in range(len(header))]

    def render(cells):
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()

    out = [render(header), render(["-" * width for width in widths])]
    out += [render(line) for line in lines]
    notes = [f"  {row.case}: {row.skipped}" for row in rows if row.skipped]
    if notes:
        out += ["skipped:"] + notes
    return "\n".join(out)


def check_output_path(path) -> None:
    """Raise OSError now, before minutes of measuring, if the JSON cannot go to ``path``:
    a folder there, or a parent folder that cannot be created or written."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--out {str(path)!r} is a folder; give a file name, e.g. "
                                f"{str(path / 'bench.json')!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    with open(probe, "w", encoding="utf-8"):
        pass
    probe.unlink()


def _build_and_measure(build: Callable, warmup: int) -> tuple:
    """``(rows, repeats, Numba threading layer)`` of the group that ``build()`` sets up."""
    group = build()
    rows = run_group(group, warmup)
    return rows, group.repeats, _numba_threading_layer()


def _measure_in_fresh_process(build: Callable, warmup: int) -> tuple:
    """:func:`_build_and_measure` in a new Python process (spawned), its result returned."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(_build_and_measure, build, warmup).result()


def _run_groups(builders: list, warmup: int, isolate: bool) -> tuple:
    """Build and measure each group in turn, with a progress line each.

    Returns all the rows, and the Numba threading layer the groups' parallel loops used
    (None if none ran one).
    """
    measure = _measure_in_fresh_process if isolate else _build_and_measure
    rows, layers = [], set()
    for index, (title, build) in enumerate(builders, start=1):
        print(f"[{index}/{len(builders)}] {title} ...", end="", flush=True)
        started = time.perf_counter()
        filled, repeats, layer = measure(build, warmup)
        rows += filled
        layers.add(layer)
        print(f" {repeats} repeats, {time.perf_counter() - started:.1f} s", flush=True)
    layers.discard(None)
    return rows, ", ".join(sorted(layers)) or None


def _resolve_sizes(quick: bool, sizes) -> tuple:
    """``(Sizes, mode)``: the preset, or the overrides applied to it ("custom")."""
    base = QUICK if quick else FULL
    if sizes is None:
        return base, "quick" if quick else "full"
    if isinstance(sizes, Sizes):
        return sizes, "custom"
    return replace(base, **dict(sizes)), "custom"


def main(quick: bool = False, device: str = "cpu", out="runs/bench.json", sizes=None,
         isolate: bool = True) -> int:
    """Run the benchmarks, print the table and the machine, write the JSON.

    Parameters
    ----------
    quick : bool
        Smaller sizes and fewer repeats (``QUICK``); labelled "QUICK" in the output.
    device : {"cpu", "gpu"}
        "cpu": the target table (ours against the baselines). "gpu": every kernel and
        both model steps on the GPU against the CPU.
    out : path
        Where the JSON goes (written atomically; folders are created).
    sizes : Sizes or dict, optional
        Overrides of the sizes and repeat counts (a dict updates the FULL or QUICK
        preset); the run is then labelled "custom".
    isolate : bool
        Measure each CPU group in a fresh process (the default). Process history changes
        the numbers: in a process that had first run the RBF rows, the
        reparameterisation row took ~3.5 ms longer on both sides, the cost of page
        faults on fresh 4 MB outputs (most likely the allocator no longer reusing
        freed memory). GPU groups always run in this process.

    Returns
    -------
    status : int
        0 when the measurements completed (met or not); 2 when ``device="gpu"`` and no
        GPU is usable (the reason is printed on one line).
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device={device!r} is not one of ('cpu', 'gpu')")
    sizes, mode = _resolve_sizes(quick, sizes)
    check_output_path(out)
    if device == "gpu":
        try:
            backend = get_backend("gpu")
        except DeviceUnavailableError as exc:
            print(f"minivae: error: {exc}", file=sys.stderr)
            return 2
        import cupy

        properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        device_name = properties["name"].decode()
        builders = gpu_groups(backend, sizes, cuda_event_timer(cupy))
        isolate = False
    else:
        device_name = None
        builders = cpu_groups(sizes)
    return run(builders, sizes, mode, device, device_name, out, isolate)


def run(builders: list, sizes: Sizes, mode: str, device: str, device_name, out,
        isolate: bool = False) -> int:
    """Measure ``builders``, print the table and machine, write the JSON to ``out``.

    ``isolate``: measure each group in a fresh process (its ``build`` must pickle).
    """
    label = {"full": "full sizes", "quick": "QUICK run: smaller sizes and fewer repeats, "
             "not the sizes the targets are stated for", "custom": "CUSTOM sizes"}[mode]
    print(f"minivae bench ({device}{', ' + device_name if device_name else ''}): "
          f"{len(builders)} groups, {label}."
          + (" The full run takes about 1.5 minutes on 2 idle cores and up to ~7 under "
             "load, most of it in the GP rows (scikit-learn's gradient takes 4-20 s a call)."
             if mode == "full" else ""),
          flush=True)
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = os.getloadavg()
    started = time.perf_counter()
    rows, threading_layer = _run_groups(builders, sizes.warmup, isolate)
    info = machine_info()
    info["numba_threading_layer"] = threading_layer
    info["copy_bandwidth"] = [copy_bandwidth(mib) for mib in sizes.copy_mib]
    info["load_average"] = {"start": [round(x, 2) for x in load_start],
                            "end": [round(x, 2) for x in os.getloadavg()]}
    info["device_name"] = device_name
    print()
    if mode != "full":
        print(f"*** {label} ***")
    print(format_table(rows))
    print()
    print(format_machine(info))
    result = {
        "schema": 1,
        "mode": mode,
        "device": device,
        "isolated_processes": isolate,
        "started_utc": started_utc,
        "duration_s": time.perf_counter() - started,
        "sizes": asdict(sizes),
        "machine": info,
        "rows": [row.to_json() for row in rows],
        "summary": {
            "met": sum(row.met is True for row in rows),
            "not_met": sum(row.met is False for row in rows),
            "skipped": sum(row.skipped is not None for row in rows),
        },
    }
    write_json(out, result)
    print(f"wrote {out}")
    return 0
