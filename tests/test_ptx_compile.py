"""Every Numba-CUDA kernel of minivae.kernels compiles to PTX for real GPUs.

The CUDA simulator (tests/conftest.py) runs the kernels' Python but neither types them nor
calls NVVM, so a kernel can pass every simulator test and still fail to compile for a GPU.
This test compiles each kernel with ``numba.cuda.compile_ptx`` for sm_90 and sm_80, in
float32 and float64, with the argument types the library launches it with: the public
functions are called on small NumPy arrays with ``launch`` replaced by a recorder, and
each recorded argument list is typed with ``numba.typeof`` (a CuPy array types like a
C-contiguous NumPy array of its dtype and rank). No GPU or driver is needed, only NVVM and
libdevice, which the ``test`` extra installs (``numba-cuda[cu12]``).

The compile runs in a subprocess with the simulator off, since this process has it on.
Without the toolchain the test skips, except under CI (``CI`` set), where it fails.
"""

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

KERNELS_DIR = Path(__file__).resolve().parents[1] / "kernels"
ARCHITECTURES = ((9, 0), (8, 0))
DTYPES = (np.float32, np.float64)
SKIP_EXIT = 3  # the driver's exit status when NVVM or NVRTC cannot be found


# ---- the launches, one builder per public cuda entry point --------------------------------


def _rbf_launches(kernels, dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3)).astype(dtype)
    Y = rng.standard_normal((4, 3)).astype(dtype)
    amp = np.full(5, 0.5, dtype)
    kernels.rbf_matrix(X, None, 0.7, 1.2, impl="cuda")
    kernels.rbf_matrix(X, Y, [0.7, 0.8, 0.9], 1.2, amp, np.ones(4, dtype), impl="cuda")
    W = rng.standard_normal((5, 5)).astype(dtype)
    kernels.rbf_grad_contract(W, X, 0.7, 1.2, impl="cuda")
    kernels.rbf_grad_contract(W, X, [0.7, 0.8, 0.9], 1.2, amp, impl="cuda")


def _adam_launches(kernels, dtype):
    param, grad, m, v = (np.full(7, 0.1, dtype) for _ in range(4))
    kernels.adam_step(param, grad, m, v, t=3, impl="cuda")


def _bernoulli_launches(kernels, dtype):
    logits = np.linspace(-2, 2, 12, dtype=dtype).reshape(3, 4)
    kernels.bernoulli_nll_and_grad(logits, (logits > 0).astype(dtype), 0.5, impl="cuda")


def _dense_launches(kernels, dtype):
    y = np.ones((3, 4), dtype)
    b = np.ones(4, dtype)
    kernels.add_bias(y, b, relu=True, impl="cuda")
    kernels.bias_grad(y, b, impl="cuda")
    kernels.bias_grad(y, b, relu_output=y, impl="cuda")


def _reparam_launches(kernels, dtype):
    mu = np.zeros((3, 2), dtype)
    eps = np.ones((2, 3, 2), dtype)
    kernels.reparam_forward(mu, mu, eps, impl="cuda")
    kernels.reparam_backward(eps, mu, eps, impl="cuda")


#: module of minivae.kernels -> a function making every kind of cuda launch it has
LAUNCHES = {
    "rbf": _rbf_launches,
    "adam": _adam_launches,
    "bernoulli": _bernoulli_launches,
    "dense": _dense_launches,
    "reparam": _reparam_launches,
}


# ---- the driver, run in a subprocess with the simulator off ------------------------------


def _record_launches():
    """``{(module, kernel name): {signature string: (dispatcher, argument types)}}``."""
    import importlib

    import numba

    import minivae.kernels as kernels

    recorded = {}
    for module_name, make_launches in LAUNCHES.items():
        module = importlib.import_module(f"minivae.kernels.{module_name}")

        def record(kernel, grid, block, *args, _module=module_name):
            types = tuple(numba.typeof(arg) for arg in args)
            key = (_module, kernel.py_func.__name__)
            recorded.setdefault(key, {})[str(types)] = (kernel, types)

        module.launch = record
        for dtype in DTYPES:
            make_launches(kernels, dtype)
    return recorded


def _toolchain_missing(cuda):
    """Why NVVM / NVRTC / libdevice cannot compile a trivial kernel, or None if they can."""
    import numba

    def probe(out):
        out[0] = 1.0

    try:
        cuda.compile_ptx(probe, (numba.float32[::1],), cc=ARCHITECTURES[0])
    except Exception as error:  # noqa: BLE001 (the class depends on the numba-cuda version)
        name = type(error).__name__
        if "NotFound" in name or "Nvvm" in name or "Nvrtc" in name or "libdevice" in str(error):
            return f"{name}: {error}".splitlines()[0]
        raise
    return None


def _compile_all(cc):
    """Print one JSON line per (kernel, signature) compiled for ``cc``; exit SKIP_EXIT
    without the toolchain.

    A kernel that calls a ``cuda.jit(device=True)`` function has numba-cuda compile that
    function for the current device's compute capability; with no device, the device
    lookup is answered with ``cc``, as a GPU of that architecture would answer it (which is
    why each architecture gets a process of its own).
    """
    from types import SimpleNamespace

    from numba import cuda
    from numba.cuda import dispatcher

    missing = _toolchain_missing(cuda)
    if missing:
        print(json.dumps({"missing": missing}))
        sys.exit(SKIP_EXIT)
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    for (module_name, kernel_name), signatures in sorted(_record_launches().items()):
        for signature, (kernel, types) in signatures.items():
            line = {"module": module_name, "kernel": kernel_name, "signature": signature,
                    "cc": list(cc), "error": None}
            try:
                ptx, _ = cuda.compile_ptx(kernel.py_func, types, cc=cc)
                line["target"] = f".target sm_{cc[0]}{cc[1]}" in ptx
            except Exception as error:  # noqa: BLE001 (reported, asserted on by the test)
                line["error"] = f"{type(error).__name__}: {error}"
            print(json.dumps(line), flush=True)


# ---- the tests ----------------------------------------------------------------------------


def _cuda_kernel_names():
    """``{(module, name)}`` of every function kernels/*.py compiles with ``cuda.jit`` as a
    kernel (decorated, or passed to it by name), device functions excluded."""

    def is_cuda_jit(node):
        return isinstance(node, ast.Attribute) and node.attr == "jit" and (
            isinstance(node.value, ast.Name) and node.value.id == "cuda")

    def is_device(call):
        return any(kw.arg == "device" for kw in call.keywords)

    names = set()
    for path in KERNELS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    plain = is_cuda_jit(decorator)
                    called = (isinstance(decorator, ast.Call) and is_cuda_jit(decorator.func)
                              and not is_device(decorator))
                    if plain or called:
                        names.add((path.stem, node.name))
            elif (isinstance(node, ast.Call) and is_cuda_jit(node.func) and node.args
                  and isinstance(node.args[0], ast.Name) and not is_device(node)):
                names.add((path.stem, node.args[0].id))
    return names


@pytest.fixture(scope="module")
def compiled():
    """The driver's JSON lines for every architecture, and how long they took."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    lines = []
    start = time.perf_counter()
    for cc in ARCHITECTURES:
        result = subprocess.run([sys.executable, __file__, f"{cc[0]}.{cc[1]}"], env=env,
                                capture_output=True, text=True, timeout=900)
        out = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode == SKIP_EXIT:
            reason = f"no CUDA compiler toolchain ({out[0]['missing']}); pip install -e '.[test]'"
            if os.environ.get("CI"):
                pytest.fail(f"CI must compile PTX, but there is {reason}")
            pytest.skip(reason)
        assert result.returncode == 0, result.stderr[-4000:]
        lines += out
    return lines, time.perf_counter() - start


def test_every_cuda_kernel_is_launched_by_the_table(compiled):
    lines, _ = compiled
    launched = {(line["module"], line["kernel"]) for line in lines}
    assert launched == _cuda_kernel_names()


def test_every_launch_compiles_for_sm90_and_sm80(compiled):
    lines, seconds = compiled
    failures = [f"{line['module']}.{line['kernel']} {line['signature']} cc={line['cc']}: "
                f"{line['error']}" for line in lines if line["error"]]
    assert not failures, "\n".join(failures)
    assert all(line["target"] for line in lines)
    # every kernel in both dtypes, on both architectures
    for module_name, kernel_name in {(line["module"], line["kernel"]) for line in lines}:
        mine = [line for line in lines if (line["module"], line["kernel"]) ==
                (module_name, kernel_name)]
        assert {tuple(line["cc"]) for line in mine} == set(ARCHITECTURES)
        assert any("float32" in line["signature"] for line in mine)
        assert any("float64" in line["signature"] for line in mine)
    print(f"compiled {len(lines)} PTX modules in {seconds:.1f} s")


if __name__ == "__main__":
    _compile_all(tuple(int(part) for part in sys.argv[1].split(".")))
