"""``minivae bench --cold``: the first calls of each kernel in a fresh process against its
warm median.

Each kernel runs in a new Python process as a user starts it (after one process has
compiled it into Numba's cache): calls 1 to 5 are timed one by one, then ``WARM_CALLS``
more, whose median is the warm time. Each process is repeated ``repeats`` times,
interleaved over kernels, and every call index reports its median over the processes.

Beside each call's time stands its count of minor page faults (``ru_minflt``; a
transparent huge page counts once). A large fresh output array costs a fault per page,
and the kernel zeroes each page it hands out; on a virtual machine whose freed memory goes
back to the host (virtio-balloon free page reporting) the first touches in a fresh
process cost far more again, which no guest counter shows. A kernel whose calls fault
alike but whose first calls are slower pays that host cost; one whose warm calls fault
not at all (``out=``, in-place updates) pays neither.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import numpy as np

FIRST_CALLS = 5
WARM_CALLS = 15


def _rbf_matrix():
    from ..kernels import rbf_matrix

    X = np.random.default_rng(0).standard_normal((4000, 2))
    return lambda: rbf_matrix(X, None, 1.4, 1.0, impl="cpu")


def _rbf_matrix_out():
    from ..kernels import rbf_matrix

    X = np.random.default_rng(0).standard_normal((4000, 2))
    out = np.empty((4000, 4000))
    return lambda: rbf_matrix(X, None, 1.4, 1.0, impl="cpu", out=out)


def _rbf_grad_contract():
    from ..kernels import rbf_grad_contract

    rng = np.random.default_rng(3)
    X, W = rng.uniform(-1.0, 1.0, size=(3000, 8)), rng.standard_normal((3000, 3000))
    lengthscale = rng.uniform(0.5, 2.0, size=8)
    return lambda: rbf_grad_contract(W + W.T, X, lengthscale, 1.3, impl="cpu")


def _reparam():
    from ..kernels import reparam_backward, reparam_forward

    rng = np.random.default_rng(0)
    mu, logvar = (rng.standard_normal((4096, 256), dtype=np.float32) for _ in range(2))
    eps, dz = (rng.standard_normal((1, 4096, 256), dtype=np.float32) for _ in range(2))
    return lambda: (reparam_forward(mu, logvar, eps, impl="cpu"),
                    reparam_backward(dz, logvar, eps, impl="cpu"))


def _adam():
    from ..kernels import adam_step

    rng = np.random.default_rng(0)
    param, grad = (rng.standard_normal(1_000_000, dtype=np.float32) for _ in range(2))
    m, v = np.zeros_like(param), np.zeros_like(param)
    return lambda: adam_step(param, grad, m, v, lr=1e-3, t=1, impl="cpu")


def _gp_lml():
    from ..gp import GPRegressor
    from .cases import _gp_problem

    X, y, lengthscale, variance, noise = _gp_problem(3000, 8, seed=0)
    model = GPRegressor(lengthscale, variance, noise, ard=True, optimize=False).fit(X, y)
    return lambda: model.log_marginal_likelihood(model.theta_, eval_gradient=True)


KERNELS = {
    "rbf_matrix n=4000 d=2": _rbf_matrix,
    "rbf_matrix n=4000 d=2 out= reused": _rbf_matrix_out,
    "rbf_grad_contract n=3000 d=8": _rbf_grad_contract,
    "reparam fwd+bwd 4096x256 f32": _reparam,
    "adam_step 1M f32": _adam,
    "GP LML+grad n=3000 d=8 (after fit)": _gp_lml,
}


def child(name: str, calls: int) -> dict:
    """``{seconds, faults}`` of each of ``calls`` consecutive calls of kernel ``name`` in
    this process (faults: minor page faults during the call)."""
    import resource
    import time

    fn = KERNELS[name]()
    seconds, faults = [], []
    for _ in range(calls):
        faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start)
    return {"seconds": seconds, "faults": faults}


def _run_child(name: str, calls: int) -> dict:
    """:func:`child` in a new Python process."""
    done = subprocess.run([sys.executable, "-m", "minivae.bench.cold", name, str(calls)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(kernels=None, repeats: int = 3, warm_calls: int = WARM_CALLS) -> list:
    """Rows ``{kernel, first_calls_s, first_calls_faults, warm_median_s, warm_faults,
    worst_ratio, processes}``.

    ``first_calls_s[i]`` is the median over ``repeats`` fresh processes of call i + 1 and
    ``first_calls_faults[i]`` its median fault count; ``warm_faults`` the median over the
    warm calls; ``worst_ratio`` the slowest of calls 2 to 5 over the warm median (call 1
    also loads the compiled code from Numba's cache and is reported, not counted).
    """
    kernels = list(KERNELS) if kernels is None else list(kernels)
    calls = FIRST_CALLS + warm_calls
    for name in kernels:  # fill Numba's cache, so that no measured process compiles
        _run_child(name, 1)
    samples: dict[str, list] = {name: [] for name in kernels}
    for _ in range(repeats):
        for name in kernels:
            samples[name].append(_run_child(name, calls))
    rows = []
    for name, runs in samples.items():
        seconds, faults = ([statistics.median(run[key][i] for run in runs) for i in range(calls)]
                           for key in ("seconds", "faults"))
        warm = statistics.median(seconds[FIRST_CALLS:])
        first = seconds[:FIRST_CALLS]
        rows.append({"kernel": name, "first_calls_s": first,
                     "first_calls_faults": faults[:FIRST_CALLS], "warm_median_s": warm,
                     "warm_faults": statistics.median(faults[FIRST_CALLS:]),
                     "worst_ratio": max(first[1:]) / warm, "processes": len(runs)})
    return rows


def format_rows(rows: list) -> str:
    """The console table: calls 1..5 and the warm median in ms, each with its minor page
    faults, and the worst ratio."""
    cells = [f"call {i}" for i in range(1, FIRST_CALLS + 1)] + ["warm"]
    header = (f"{'kernel':36s} " + " ".join(f"{cell:>13s}" for cell in cells)
              + f" {'worst 2-5 / warm':>17s}")
    lines = [header, f"{'':36s} " + " ".join(f"{'ms/faults':>13s}" for _ in cells),
             "-" * len(header)]
    for row in rows:
        times = row["first_calls_s"] + [row["warm_median_s"]]
        faults = row["first_calls_faults"] + [row["warm_faults"]]
        lines.append(f"{row['kernel']:36s} "
                     + " ".join(f"{t * 1e3:7.1f}/{f:<5.0f}" for t, f in zip(times, faults))
                     + f" {row['worst_ratio']:16.2f}x")
    return "\n".join(lines)


def main(out="runs/bench-cold.json", repeats: int = 3, kernels=None,
         warm_calls: int = WARM_CALLS) -> int:
    """Measure, print the table with the machine and the load, write the JSON to ``out``."""
    from ..files import write_json
    from .harness import check_output_path
    from .machine import format_machine, machine_info

    check_output_path(out)
    load_start = os.getloadavg()
    print(f"minivae bench --cold: {repeats} fresh processes per kernel", flush=True)
    rows = measure(kernels, repeats, warm_calls)
    info = machine_info()
    info["load_average"] = {"start": [round(x, 2) for x in load_start],
                            "end": [round(x, 2) for x in os.getloadavg()]}
    print(format_rows(rows))
    print()
    print(format_machine(info))
    write_json(out, {"schema": 2, "mode": "cold", "machine": info, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
