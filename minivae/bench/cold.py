"""``minivae bench --cold``: the first calls of each kernel in a fresh process against its
warm median.

Each kernel runs in a new Python process (after one process has compiled it into
Numba's cache): calls 1 to 5 are timed one by one, then ``WARM_CALLS`` more, whose median
is the warm time. Each process is repeated ``repeats`` times, interleaved over kernels and
settings, and every call index reports its median over the processes.

Two settings are compared. ``default``: the process as a user starts it. ``heap kept``:
glibc told to serve every allocation from its heap and never give freed memory back
(``MALLOC_MMAP_MAX_=0``, ``MALLOC_TRIM_THRESHOLD_`` = 64 GiB), so that a fresh output
array reuses pages the process has already touched. On a virtual machine whose freed
memory goes back to the host (virtio-balloon free page reporting), a large fresh array's
first touch costs far more than a warm one's; the two settings tell that cost apart from
Numba's (compiled-code loading, thread pool start), which both share.
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
HEAP_KEPT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 * 2**30)}
SETTINGS = {"default": {}, "heap kept": HEAP_KEPT}


def _rbf_matrix():
    from ..kernels import rbf_matrix

    X = np.random.default_rng(0).standard_normal((4000, 2))
    return lambda: rbf_matrix(X, None, 1.4, 1.0, impl="cpu")


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
    "rbf_grad_contract n=3000 d=8": _rbf_grad_contract,
    "reparam fwd+bwd 4096x256 f32": _reparam,
    "adam_step 1M f32": _adam,
    "GP LML+grad n=3000 d=8 (after fit)": _gp_lml,
}


def child(name: str, calls: int) -> list:
    """Seconds of each of ``calls`` consecutive calls of kernel ``name`` in this process."""
    import time

    fn = KERNELS[name]()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def _run_child(name: str, env: dict, calls: int) -> list:
    """:func:`child` in a new Python process with ``env`` added to the environment."""
    done = subprocess.run(
        [sys.executable, "-m", "minivae.bench.cold", name, str(calls)],
        env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(kernels=None, repeats: int = 3, warm_calls: int = WARM_CALLS) -> list:
    """Rows ``{kernel, setting, first_calls_s, warm_median_s, worst_ratio}``.

    ``first_calls_s[i]`` is the median over ``repeats`` fresh processes of call i + 1;
    ``worst_ratio`` the slowest of calls 2 to 5 over the warm median (call 1 also loads
    the compiled code from Numba's cache and is reported, not counted).
    """
    kernels = list(KERNELS) if kernels is None else list(kernels)
    calls = FIRST_CALLS + warm_calls
    for name in kernels:  # fill Numba's cache, so that no measured process compiles
        _run_child(name, {}, 1)
    samples: dict[tuple[str, str], list] = {(name, setting): [] for name in kernels
                                            for setting in SETTINGS}
    for _ in range(repeats):
        for name in kernels:
            for setting, env in SETTINGS.items():
                samples[name, setting].append(_run_child(name, env, calls))
    rows = []
    for (name, setting), runs in samples.items():
        per_call = [statistics.median(run[i] for run in runs) for i in range(calls)]
        warm = statistics.median(per_call[FIRST_CALLS:])
        first = per_call[:FIRST_CALLS]
        rows.append({"kernel": name, "setting": setting, "first_calls_s": first,
                     "warm_median_s": warm, "worst_ratio": max(first[1:]) / warm,
                     "processes": len(runs)})
    return rows


def format_rows(rows: list) -> str:
    """The console table: calls 1..5 and the warm median in ms, and the worst ratio."""
    header = (f"{'kernel':36s} {'setting':10s} " + " ".join(f"{f'call {i}':>7s}" for i in
                                                            range(1, FIRST_CALLS + 1))
              + f" {'warm':>7s} {'worst 2-5 / warm':>17s}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['kernel']:36s} {row['setting']:10s} "
                     + " ".join(f"{t * 1e3:7.1f}" for t in row["first_calls_s"])
                     + f" {row['warm_median_s'] * 1e3:7.1f} {row['worst_ratio']:16.2f}x")
    return "\n".join(lines)


def main(out="runs/bench-cold.json", repeats: int = 3, kernels=None,
         warm_calls: int = WARM_CALLS) -> int:
    """Measure, print the table with the machine and the load, write the JSON to ``out``."""
    from ..files import write_json
    from .harness import check_output_path, format_machine, machine_info

    check_output_path(out)
    load_start = os.getloadavg()
    print(f"minivae bench --cold: {repeats} fresh processes per kernel and setting",
          flush=True)
    rows = measure(kernels, repeats, warm_calls)
    info = machine_info()
    info["load_average"] = {"start": [round(x, 2) for x in load_start],
                            "end": [round(x, 2) for x in os.getloadavg()]}
    print(format_rows(rows))
    print()
    print(format_machine(info))
    write_json(out, {"schema": 1, "mode": "cold", "settings": SETTINGS, "machine": info,
                     "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
