"""``minivae bench --scaling``: time and peak memory against problem size, ours and peers.

Curves: GP fit (LML + gradient, ARD, d = 8, float64) and GP predict (mean + std, as many
test as training points) for n training points, and the VAE training step (784-400-20,
Bernoulli, Adam, float32) for batch sizes. For each size, one fresh process times every
library present, interleaved, medians of ``repeats`` calls after one warm-up call. Peak
memory comes from one more fresh process per library and size (:func:`peak_point`): only
that library is set up, the allocator hands back the free memory it keeps, and one call's
resident-set high-water mark above the resident set before it is its peak. In the timing
process the allocators (glibc's heap, PyTorch's, XLA's) keep pages from earlier calls,
which a high-water mark would not count. The figure is a log-log plot per curve with n^3
and n^2 reference slopes (a linear one for the VAE step).

Every library, ours included, runs at a size only while its projection from the size
before fits (:func:`admit`): its call time scaled by the curve's cost power (n^3 for the GP,
linear for the VAE step) within ``max_call_seconds``, and the peaks of the libraries set up
together scaled by n^2 within ``memory_fraction`` of the memory available. A library left
out is named in the row with the projection that stopped it: the peers' autodiff graphs
hold 7-13 n x n float64 arrays where minivae holds one, so at n = 16000 (2 GiB an array)
they would need 15-26 GiB.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from . import peer_cases, peers
from .harness import time_interleaved, wall_timer

GP_D = 8


@dataclass(frozen=True)
class ScalingSizes:
    """The sizes of the curves and the repeats of each point."""

    gp_n: tuple = (500, 1000, 2000, 4000, 8000, 16000)
    vae_batch: tuple = (32, 64, 128, 256, 512, 1024)
    vae_layers: tuple = (784, 400, 20)
    repeats_gp: int = 3
    repeats_vae: int = 30
    max_call_seconds: float = 120.0
    memory_fraction: float = 0.7


COST_POWER = {"fit": 3, "predict": 3, "vae": 1}
MEMORY_POWER = {"fit": 2, "predict": 2, "vae": 1}


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None where there is none (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def admit(curve: str, size: int, libraries: tuple, previous: dict | None,
          sizes: ScalingSizes, memory_bytes: int | None) -> tuple[tuple, dict]:
    """The libraries to run at ``size``, and ``{library: why not}`` for the others.

    ``previous`` is the row of the size before (``seconds`` and ``peak_bytes`` per
    library; None at the first size, where every library runs). A library measured there
    runs if its median scaled by ``COST_POWER`` is within ``sizes.max_call_seconds`` and
    the peaks scaled by ``MEMORY_POWER`` of it and the libraries admitted before it (in
    the order of ``libraries``: minivae first) stay within ``sizes.memory_fraction`` of
    ``memory_bytes`` (not checked where the memory or a peak is unknown). A library left
    out at the size before stays out.
    """
    if previous is None:
        return tuple(libraries), {}
    admitted, skipped, total = [], {}, 0.0
    ratio = size / previous["size"]
    for name in libraries:
        if name not in previous["seconds"]:
            skipped[name] = previous.get("skipped", {}).get(name, "not run at the size before")
            continue
        seconds = previous["seconds"][name] * ratio ** COST_POWER[curve]
        peak = previous["peak_bytes"].get(name)
        peak = None if peak is None else peak * ratio ** MEMORY_POWER[curve]
        if seconds > sizes.max_call_seconds:
            skipped[name] = (f"projected {seconds:.0f} s a call > max_call_seconds "
                             f"{sizes.max_call_seconds:g}")
        elif (memory_bytes is not None and peak is not None
              and total + peak > sizes.memory_fraction * memory_bytes):
            skipped[name] = (f"projected peak {peak / 2**30:.1f} GiB (with the libraries "
                             f"before it {(total + peak) / 2**30:.1f} GiB) > "
                             f"{sizes.memory_fraction:g} x {memory_bytes / 2**30:.1f} GiB available")
        else:
            admitted.append(name)
            total += peak or 0.0
    return tuple(admitted), skipped


def _gp_calls(kind: str, n: int, libraries) -> dict:
    """Label -> callable of GP ``kind`` ("fit" or "predict") at ``n`` for ``libraries``."""
    from ..gp import GPRegressor
    from .cases import _gp_problem

    X, y, lengthscale, variance, noise = _gp_problem(n, GP_D, seed=0)
    model = GPRegressor(lengthscale, variance, noise, ard=True, optimize=False).fit(X, y)
    theta = model.theta_
    X_fit, y_fit = model.X_train_, np.asarray(model.y_train_, dtype=np.float64).reshape(-1)
    peers_present = [name for name in libraries if name != "minivae"]
    if kind == "fit":
        calls = {"minivae": lambda: model.log_marginal_likelihood(theta, eval_gradient=True)}
        expected = calls["minivae"]() if peers_present else None
        builders = {"jax": lambda jax: peer_cases.jax_lml_fn(jax, X_fit, y_fit, theta, expected),
                    "gpytorch": lambda gpytorch: peer_cases.gpytorch_lml_fn(
                        peers.import_torch(), gpytorch, X_fit, y_fit, theta, expected)}
    else:
        X_test = np.random.default_rng(2).uniform(-1.0, 1.0, size=(n, GP_D))
        calls = {"minivae": lambda: model.predict(X_test, return_std=True)}
        expected = calls["minivae"]() if peers_present else None
        builders = {"jax": lambda jax: peer_cases.jax_predict_fn(jax, X_fit, y_fit, X_test,
                                                                 theta, expected),
                    "gpytorch": lambda gpytorch: peer_cases.gpytorch_predict_fn(
                        peers.import_torch(), gpytorch, X_fit, y_fit, X_test, theta, expected)}
    for name in peers_present:
        calls[name] = builders[name]({"jax": peers.import_jax,
                                      "gpytorch": peers.import_gpytorch}[name]())
    return calls


def _vae_calls(batch: int, layers: tuple, libraries) -> dict:
    """Label -> one VAE training step at ``batch`` for ``libraries``."""
    from ..backend import get_backend
    from .cases import _jax_vae_step_fn, _torch_vae_step_fn, _vae_step_fn
    from .harness import Sizes

    sizes = Sizes(vae_layers=layers, vae_batch=batch)
    data = (np.random.default_rng(0).uniform(size=(batch, layers[0])) > 0.7).astype(np.float32)
    calls = {"minivae": _vae_step_fn(get_backend("cpu"), sizes, data)}
    if "jax" in libraries:
        calls["jax"] = _jax_vae_step_fn(peers.import_jax(), sizes, data)
    if "torch" in libraries:
        calls["torch"] = _torch_vae_step_fn(peers.import_torch(), sizes, data)
    return calls


def _build(curve: str, size: int, libraries: tuple, layers: tuple) -> dict:
    if curve == "vae":
        return _vae_calls(size, layers, libraries)
    return _gp_calls(curve, size, libraries)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def peak_rss_bytes(fn) -> int | None:
    """Bytes by which ``fn()`` raised the resident set above where it stood before the
    call (Linux: the high-water mark is reset first); None where /proc cannot do that."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        before = _proc_status_kib("VmRSS")
        fn()
        return max(0, _proc_status_kib("VmHWM") - before) * 1024
    except OSError:
        return None


def _release_free_memory() -> None:
    """Give the free memory glibc's allocator keeps back to the system (``malloc_trim``),
    so that the next call's touches of it raise the resident set; a no-op elsewhere."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_point(curve: str, size: int, library: str, layers: tuple) -> int | None:
    """Peak bytes of one call of ``library`` on ``curve`` at ``size``, measured in this
    process, which should be fresh: only ``library`` is set up (with the data and the
    minivae model the peers are checked against), one warm-up call compiles and loads
    what the call needs (minivae's on a small problem: its compiled kernels do not depend
    on the size, and at n = 16000 a call takes a minute), the free memory is handed back,
    then :func:`peak_rss_bytes` of one call."""
    fn = _build(curve, size, (library,), layers)[library]
    if library == "minivae":
        _build(curve, min(size, 64), (library,), layers)[library]()
    else:
        fn()
    _release_free_memory()
    return peak_rss_bytes(fn)


def _time_point(curve: str, size: int, libraries: tuple, layers: tuple, repeats: int) -> dict:
    """``{library: median seconds}`` at one size, timed interleaved in this process."""
    from ..kernels.threads import pinned_threads

    calls = {name: (fn, wall_timer) for name, fn in _build(curve, size, libraries,
                                                           layers).items()}
    block = 10 if curve == "vae" else 1
    stats = time_interleaved(calls, repeats, warmup=1, block=block,
                             contexts={"minivae": pinned_threads} if curve == "vae" else None)
    return {name: stat["median"] for name, stat in stats.items()}


def _in_fresh_process(fn, *args):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def available(curve: str) -> tuple:
    """The libraries a curve compares: minivae and each installed peer."""
    names = ("jax", "torch") if curve == "vae" else ("jax", "gpytorch")
    present = {"jax": peers.version("jax"), "torch": peers.version("torch"),
               "gpytorch": peers.version("gpytorch") and peers.version("torch")}
    return ("minivae",) + tuple(name for name in names if present[name])


def measure(sizes: ScalingSizes = ScalingSizes(), fresh=_in_fresh_process) -> dict:
    """``{curve: [{"size", "seconds": {lib: s}, "peak_bytes": {lib: B}}, ...]}``."""
    """``{curve: [{"size", "seconds": {lib: s}, "peak_bytes": {lib: B}, "skipped": {lib:
    why}}, ...]}``; a curve's rows end at the last size where some library ran."""
    curves = {"fit": sizes.gp_n, "predict": sizes.gp_n, "vae": sizes.vae_batch}
    result = {}
    for curve, points in curves.items():
        libraries = available(curve)
        rows: list = []
        for size in points:
            present, skipped = admit(curve, size, libraries, rows[-1] if rows else None,
                                     sizes, available_memory_bytes())
            for name, why in skipped.items():
                if name not in (rows[-1].get("skipped", {}) if rows else {}):
                    print(f"  {curve} {size}: {name} not run from here: {why}", flush=True)
            if not present:
                break
            repeats = sizes.repeats_vae if curve == "vae" else sizes.repeats_gp
            seconds = fresh(_time_point, curve, size, present, sizes.vae_layers, repeats)
            peak = {name: fresh(peak_point, curve, size, name, sizes.vae_layers)
                    for name in present}
            rows.append({"size": size, "seconds": seconds, "peak_bytes": peak,
                         "skipped": skipped})
            print(f"  {curve} {size}: " + ", ".join(
                f"{name} {seconds[name] * 1e3:.3g} ms / {(peak[name] or 0) / 2**20:.0f} MiB"
                for name in present), flush=True)
        result[curve] = rows
    return result


def plot(result: dict, path) -> None:
    """Log-log time against size per curve, with n^3 and n^2 slopes for the GP curves and
    a linear one for the VAE step (its cost is linear in the batch); PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    titles = {"fit": f"GP LML + gradient (ARD, d={GP_D}, f64)",
              "predict": f"GP predict mean + std (m = n, d={GP_D}, f64)",
              "vae": "VAE step 784-400-20 (f32, Adam)"}
    fig, axes = plt.subplots(1, len(result), figsize=(5 * len(result), 4))
    for ax, (curve, rows) in zip(np.atleast_1d(axes), result.items()):
        names = sorted({name for row in rows for name in row["seconds"]},
                       key=lambda name: name != "minivae")
        for name in names:
            points = [(row["size"], row["seconds"][name]) for row in rows
                      if name in row["seconds"]]
            ax.loglog(*zip(*points), marker="o", label=name)
        first = rows[0]
        sizes = np.array([row["size"] for row in rows], dtype=float)
        slopes = ((1, "--"),) if curve == "vae" else ((3, ":"), (2, "--"))
        for power, style in slopes:
            ax.loglog(sizes, first["seconds"]["minivae"] * (sizes / sizes[0]) ** power,
                      "k" + style, linewidth=0.8, label=f"n^{power}")
        ax.set_xticks(sizes, [f"{size:.0f}" for size in sizes], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlabel("batch size" if curve == "vae" else "n (training points)")
        ax.set_ylabel("seconds per call (median)")
        ax.set_title(titles[curve], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)


def main(out="runs/bench-scaling.json", figure=None, sizes: ScalingSizes = ScalingSizes(),
         isolate: bool = True) -> int:
    """Measure the curves, print them with the machine and load, write JSON and PNG.

    ``figure`` defaults to ``out`` with the suffix ``.png``; ``isolate=False`` measures in
    this process (tests).
    """
    import os
    from pathlib import Path

    from ..files import write_json
    from .harness import check_output_path
    from .machine import format_machine, machine_info

    check_output_path(out)
    figure = Path(out).with_suffix(".png") if figure is None else figure
    load_start = os.getloadavg()
    print("minivae bench --scaling: GP fit and predict for n = "
          f"{', '.join(map(str, sizes.gp_n))}, VAE step for batch = "
          f"{', '.join(map(str, sizes.vae_batch))}; a library runs at a size while its "
          f"projected call stays within {sizes.max_call_seconds:g} s and the projected "
          f"peaks within {sizes.memory_fraction:g} of the memory available", flush=True)
    fresh = _in_fresh_process if isolate else (lambda fn, *args: fn(*args))
    result = measure(sizes, fresh)
    info = machine_info()
    info["load_average"] = {"start": [round(x, 2) for x in load_start],
                            "end": [round(x, 2) for x in os.getloadavg()]}
    print(format_machine(info))
    write_json(out, {"schema": 1, "mode": "scaling", "sizes": asdict(sizes), "machine": info,
                     "curves": result})
    plot(result, figure)
    print(f"wrote {out} and {figure}")
    return 0


QUICK = functools.partial(ScalingSizes, gp_n=(500, 1000, 2000), vae_batch=(32, 128, 512),
                          repeats_vae=10)
