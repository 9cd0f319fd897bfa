"""The ``minivae bench`` harness: every performance target, measured as ours against its baseline.

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

import gc
import os
import statistics
import sys
import time
import tracemalloc
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..backend import get_backend
from ..errors import DeviceUnavailableError
from ..files import write_json
from .machine import format_machine, machine_info, numba_threading_layer


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
    samples: dict[str, list[float]] = {label: [] for label in calls}
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
    if ratio is None:
        return "not measured"
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
    return rows, group.repeats, numba_threading_layer()


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
        from .cases import gpu_groups

        builders = gpu_groups(backend, sizes, cuda_event_timer(cupy))
        isolate = False
    else:
        device_name = None
        from .cases import cpu_groups

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
            "no_target": sum(row.skipped is None and row.target is None for row in rows),
        },
    }
    write_json(out, result)
    print(f"wrote {out}")
    return 0
