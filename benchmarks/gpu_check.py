"""GPU check: each model on "gpu" against "cpu", then timings against the memory floor.

Run by ``benchmarks/gpu_check.sh`` on a machine with one CUDA GPU; writes
``OUT/compare.json`` and ``OUT/timings.json``. ``--device cuda-sim --small`` runs the same
code under Numba's CUDA simulator (a check of the script itself, no timing meaning).

    python benchmarks/gpu_check.py --out runs/gpu-check [--device gpu] [--small]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from minivae import VAE, GPRegressor, VARegressor, get_backend
from minivae.files import write_json
from minivae.gp import log_marginal_likelihood
from minivae.kernels import rbf_matrix


def _relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def compare(device: str, small: bool) -> dict:
    """Loss, gradients and a short fit of every model on ``device`` against "cpu"."""
    rng = np.random.default_rng(0)
    n = 64 if small else 512
    X = (rng.random((n, 64)) < 0.3).astype(np.float64)
    eps = rng.standard_normal((1, n, 4))
    out = {}
    vaes = [VAE(64, 4, hidden=(32,), dtype="float64", device=d) for d in ("cpu", device)]
    (loss_c, g_c), (loss_d, g_d) = (vae.loss_and_grads(X, eps=eps) for vae in vaes)
    backend = get_backend(device)
    out["vae_loss_rel"] = abs(loss_d - loss_c) / abs(loss_c)
    out["vae_grad_rel"] = max(_relative(backend.to_host(g_d[k]), g_c[k]) for k in g_c)
    fits = {d: VAE(64, 4, hidden=(32,), device=d, seed=0).fit(X, epochs=3, progress=False)
            for d in ("cpu", device)}
    out["vae_fit_elbo"] = {d: float(model.score(X)) for d, model in fits.items()}
    x = rng.uniform(-2, 2, (n, 3))
    y = np.sin(x[:, 0]) + 0.1 * rng.standard_normal(n)
    theta = np.log([0.8, 0.9, 1.1, 1.2, 0.05])
    lml = {d: log_marginal_likelihood(x, y, theta, backend=d, eval_gradient=True)
           for d in ("cpu", device)}
    out["gp_lml_rel"] = abs(lml[device][0] - lml["cpu"][0]) / abs(lml["cpu"][0])
    out["gp_grad_rel"] = _relative(lml[device][1], lml["cpu"][1])
    gps = {d: GPRegressor(ard=True, device=d).fit(x, y) for d in ("cpu", device)}
    out["gp_fit_theta"] = {d: gp.theta_.tolist() for d, gp in gps.items()}
    t = np.linspace(0, 1, 24)[:, None]
    images = rng.random((24, 8, 8))
    vars_ = {d: VARegressor(latent_dim=2, hidden=(16,), epochs=(2, 2, 1), device=d)
             .fit(t, images, progress=False) for d in ("cpu", device)}
    out["var_predict_rel"] = _relative(vars_[device].predict(t), vars_["cpu"].predict(t))
    return out


def _time_gpu(fn, repeats: int = 5) -> float:
    """Median seconds of ``fn()`` by CUDA events on CuPy's current stream."""
    import cupy

    fn()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def timings(small: bool) -> dict:
    """RBF matrix n = 4k..40k and the GP LML + gradient n = 4k..20k, float64, on "gpu",
    with the floor of writing K once at the device's measured copy bandwidth."""
    import cupy

    rng = np.random.default_rng(0)
    big = cupy.empty(2**28, dtype=np.float64)  # 2 GiB: a copy measures the HBM rate
    seconds = _time_gpu(big.copy)
    bandwidth = 2 * big.nbytes / seconds
    del big
    result = {"copy_bandwidth_GBps": bandwidth / 1e9, "rbf": [], "lml": []}
    for n in ((1000, 2000) if small else (4000, 10000, 20000, 40000)):
        X = cupy.asarray(rng.standard_normal((n, 2)))
        sec = _time_gpu(lambda: rbf_matrix(X, None, 0.7, 1.3, impl="cuda"))
        result["rbf"].append({"n": n, "seconds": sec, "floor_seconds": 8 * n * n / bandwidth})
    for n in ((1000, 2000) if small else (4000, 10000, 20000)):
        X, y = rng.standard_normal((n, 8)), rng.standard_normal(n)
        theta = np.log([1.0] * 8 + [1.0, 0.1])
        started = time.perf_counter()
        log_marginal_likelihood(X, y, theta, backend="gpu", eval_gradient=True)
        cupy.cuda.get_current_stream().synchronize()
        first = time.perf_counter() - started
        sec = _time_gpu(lambda: log_marginal_likelihood(X, y, theta, backend="gpu",
                                                        eval_gradient=True), repeats=3)
        result["lml"].append({"n": n, "seconds": sec, "first_call_seconds": first,
                              "floor_seconds": 8 * n * n / bandwidth})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--device", default="gpu", choices=["gpu", "cuda-sim"])
    parser.add_argument("--small", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args()
    out = Path(args.out)
    result = compare(args.device, args.small)
    write_json(out / "compare.json", result)
    print(json.dumps(result, indent=2))
    if args.device == "gpu":
        timed = timings(args.small)
        write_json(out / "timings.json", timed)
        print(json.dumps(timed, indent=2))


if __name__ == "__main__":
    main()
