"""pytest-benchmark configuration: record which BLAS (and which of its kernels) ran.

OpenBLAS picks a kernel for the CPU at load time (``architecture`` in threadpoolctl's
report, e.g. "SkylakeX" or "Haswell"; ``OPENBLAS_CORETYPE`` overrides it), and that
choice can change a matrix product's time by 2x. Saved runs (``--benchmark-save`` or
``--benchmark-autosave``) therefore carry, in their ``machine_info``:

- ``blas``: threadpoolctl's entry for every loaded BLAS and OpenMP library (library,
  version, kernel architecture, threads, threading layer, file);
- ``blas_env``: the OpenBLAS/OpenMP/Numba environment variables that change them
  (``OMP_WAIT_POLICY`` included: ``import minivae`` sets it to PASSIVE unless set);
- ``numba_threads`` and ``numba_threading_layer`` (None when the session ran no parallel
  Numba function before the hook; the hook runs at the end of the session), ``cpu_model``.

The same BLAS summary is printed in the session header.
"""

from minivae.bench.machine import blas_info
from minivae.bench.machine import machine_info as describe_machine


def pytest_report_header(config):
    pools = [pool for pool in blas_info() if pool.get("user_api") == "blas"]
    summary = "; ".join(
        f"{pool.get('prefix')} {pool.get('version')} ({pool.get('architecture', '?')}, "
        f"{pool.get('num_threads')} threads)"
        for pool in pools
    )
    return f"BLAS: {summary or 'none found by threadpoolctl'}"


def pytest_benchmark_update_machine_info(config, machine_info):
    info = describe_machine()
    machine_info["blas"] = info["blas"]
    machine_info["blas_env"] = info["env"]
    machine_info["numba_threads"] = info["numba_threads"]
    machine_info["numba_threading_layer"] = info["numba_threading_layer"]
    machine_info["cpu_model"] = info["cpu_model"]
