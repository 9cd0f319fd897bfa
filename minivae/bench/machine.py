"""The machine a benchmark ran on: CPU, versions, BLAS and thread settings."""

from __future__ import annotations

import os
import platform

import numpy as np

from . import peers


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
    for name in ("torch", "jax", "jaxlib", "gpytorch"):
        versions[name] = peers.version(name)
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count()),
        "platform": platform.platform(),
        "versions": versions,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,  # type: ignore[attr-defined]
        "blas": blas_info(),
        "env": {name: os.environ.get(name) for name in
                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                 "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "NUMBA_NUM_THREADS")},
        "numba_threading_layer": numba_threading_layer(),
    }


def numba_threading_layer():
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
