"""`minivae bench`: the table and JSON logic on tiny sizes, and --device gpu without a GPU.

Nothing here asserts on timings: the sizes are far too small for the targets to mean
anything. The tests check that every row is measured (or marked skipped), that the JSON
is complete and consistent with itself, and that the GPU path fails with the backend's
message where no GPU is usable.
"""

import contextlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from minivae import cli
from minivae.backend import get_backend
from minivae.bench import cases, harness, peer_cases, peers
from minivae.errors import DeviceUnavailableError
from minivae.files import write_json

TINY = {
    "rbf_n": 24, "rbf_dims": (2, 5), "lml_n": 20, "lml_d": 3, "predict_train": 20,
    "predict_test": 11, "predict_d": 3, "vae_layers": (12, 6, 2), "vae_batch": 5,
    "reparam_shape": (7, 3), "adam_params": 33, "contract_n": 9, "contract_d": 2,
    "repeats_fast": 3, "repeats_medium": 4, "repeats_slow": 2, "warmup": 1, "copy_mib": (1,),
}
TINY_SIM = {**TINY, "rbf_n": 6, "rbf_dims": (2,), "lml_n": 6, "lml_d": 2, "contract_n": 5,
            "vae_layers": (5, 3, 2), "vae_batch": 3, "reparam_shape": (3, 2),
            "adam_params": 10, "repeats_fast": 1, "warmup": 0}

CPU_CASES = [
    "RBF K(X,X) n=24 d=2 f64 vs sklearn",
    "RBF K(X,X) n=24 d=2 f64 vs np.full",
    "RBF K(X,X) n=24 d=2 f64 vs JAX jit",
    "RBF K(X,X) n=24 d=5 f64 vs sklearn",
    "RBF K(X,X) n=24 d=5 f64 vs np.full",
    "RBF K(X,X) n=24 d=5 f64 vs JAX jit",
    "GP LML+grad ARD n=20 d=3 time",
    "GP LML+grad ARD n=20 d=3 vs JAX jit",
    "GP LML+grad ARD n=20 d=3 vs GPyTorch",
    "GP LML+grad ARD n=20 d=3 peak memory",
    "GP predict mean+std 20 train 11 test",
    "GP predict mean+std 20 train 11 test vs its floor",
    "GP predict mean+std 20 train 11 test vs JAX jit",
    "GP predict mean+std 20 train 11 test vs GPyTorch",
    "VAE step 12-6-2 b=5 f32 vs torch CPU",
    "VAE step 12-6-2 b=5 f32 vs its 6 matmuls",
    "VAE step 12-6-2 b=5 f32 vs JAX jit",
    "reparam fwd+bwd 7x3 f32",
    "reparam fwd+bwd 7x3 f32 vs JAX jit",
    "Adam step 33 f32",
    "Adam step 33 f32 vs JAX jit",
]
TORCH_CASE = "VAE step 12-6-2 b=5 f32 vs torch CPU"
# Each peer row and the module whose absence skips it.
PEER_CASES = {TORCH_CASE: "torch", **{case: "jax" for case in CPU_CASES if "JAX" in case},
              **{case: "gpytorch" for case in CPU_CASES if "GPyTorch" in case}}


def _run_tiny(folder, isolate=False):
    """``harness.main`` on the TINY sizes: (status, the JSON, what it printed)."""
    out = folder / "sub" / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = harness.main(quick=True, out=str(out), sizes=TINY, isolate=isolate)
    return status, json.loads(out.read_text()), printed.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run, each group in a fresh process as by default, shared by the tests
    that only read its output."""
    return _run_tiny(tmp_path_factory.mktemp("bench"), isolate=True)


def _check_measured_row(row, repeats):
    for side in ("ours_stats", "baseline_stats"):
        stats = row[side]
        assert stats["n"] == len(stats["samples"])
        assert all(math.isfinite(s) and s > 0 for s in stats["samples"]), (row["case"], side)
        assert stats["min"] <= stats["q1"] <= stats["median"] <= stats["q3"]
        assert stats["iqr"] == pytest.approx(stats["q3"] - stats["q1"], rel=1e-12)
    if row["unit"] == "s":
        assert row["ours_stats"]["n"] == row["baseline_stats"]["n"] == repeats
    ours, baseline = row["ours_stats"]["median"], row["baseline_stats"]["median"]
    target = row["target"]
    if target is None:  # a side-by-side row without a target: the speedup, no verdict
        assert row["ratio_definition"] == "baseline / ours"
        assert row["ratio"] == pytest.approx(baseline / ours, rel=1e-12)
        assert row["met"] is None
    elif target["kind"] == "faster":
        assert row["ratio_definition"] == "baseline / ours"
        assert row["ratio"] == pytest.approx(baseline / ours, rel=1e-12)
        assert row["met"] == (row["ratio"] >= target["factor"])
    else:
        assert row["ratio_definition"] == "ours / baseline"
        assert row["ratio"] == pytest.approx(ours / baseline, rel=1e-12)
        assert row["met"] == (row["ratio"] <= target["factor"])


def test_tiny_run_writes_every_row(tiny_run):
    status, result, printed = tiny_run
    assert status == 0
    assert result["mode"] == "custom" and result["device"] == "cpu"
    assert result["isolated_processes"] is True
    assert [row["case"] for row in result["rows"]] == CPU_CASES
    for row in result["rows"]:
        if row["skipped"]:
            assert PEER_CASES[row["case"]] in row["skipped"]
            assert row["ours_stats"] is None and row["ratio"] is None and row["met"] is None
            continue
        repeats = TINY["repeats_slow"] if row["case"].startswith("GP") else (
            TINY["repeats_medium"] if row["case"].startswith("RBF") else TINY["repeats_fast"])
        _check_measured_row(row, repeats)
    summary = result["summary"]
    assert (summary["met"] + summary["not_met"] + summary["skipped"] + summary["no_target"]
            == len(CPU_CASES))
    memory = [row for row in result["rows"] if row["unit"] == "B"]
    assert [row["case"] for row in memory] == ["GP LML+grad ARD n=20 d=3 peak memory"]
    for case in CPU_CASES:
        assert case in printed
    assert "CUSTOM sizes" in printed and "wrote" in printed


def test_json_records_machine_and_blas(tiny_run):
    _, result, printed = tiny_run
    machine = result["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"]
    assert machine["versions"]["numpy"] == np.__version__
    assert set(machine["env"]) >= {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    blas = [pool for pool in machine["blas"] if pool["user_api"] == "blas"]
    assert blas, "threadpoolctl found no BLAS; NumPy always links one"
    assert all("num_threads" in pool and "prefix" in pool for pool in blas)
    assert len(machine["load_average"]["start"]) == 3
    assert result["sizes"]["rbf_n"] == TINY["rbf_n"]
    (copy,) = machine["copy_bandwidth"]
    assert copy["array_mib"] == 1 and copy["bytes_moved"] == 2 * 2**20
    assert copy["gb_per_s_best"] >= copy["gb_per_s_median"] > 0
    assert "BLAS:" in printed and "OPENBLAS_CORETYPE=" in printed


def test_torch_row_skipped_with_a_note_when_torch_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(peers, "import_torch", lambda: None)
    status, result, printed = _run_tiny(tmp_path)
    assert status == 0
    (torch_row,) = [row for row in result["rows"] if row["case"] == TORCH_CASE]
    assert "torch is not installed" in torch_row["skipped"]
    assert torch_row["met"] is None
    assert sum((row["skipped"] or "").startswith("torch is not installed")
               for row in result["rows"]) == 1
    assert "skipped:" in printed and "torch is not installed" in printed


def test_every_peer_row_skipped_with_one_line_when_no_peer_is_installed(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(peers, "_import", lambda name: None)
    status, result, printed = _run_tiny(tmp_path)
    assert status == 0
    skipped = {row["case"]: row["skipped"] for row in result["rows"] if row["skipped"]}
    assert set(skipped) == set(PEER_CASES)
    for case, line in skipped.items():
        assert f"{PEER_CASES[case]} is not installed" in line and ".[peers]" in line
        assert f"  {case}: {line}" in printed
    assert result["summary"]["skipped"] == len(PEER_CASES)


@pytest.mark.parametrize("name", ["jax", "gpytorch"])
def test_peer_rows_measured_when_the_peer_is_present(tiny_run, name):
    pytest.importorskip(name)
    _, result, _ = tiny_run
    rows = [row for row in result["rows"] if PEER_CASES.get(row["case"]) == name]
    assert rows
    for row in rows:
        assert row["skipped"] is None and name in row["baseline"]
        assert row["baseline_stats"]["n"] >= 2


def test_the_library_never_imports_a_peer():
    code = ("import sys, minivae, minivae.bench.cases, minivae.bench.harness, "
            "minivae.bench.peer_cases; "
            "print(sorted(m for m in ('jax', 'gpytorch', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_check_close_names_the_value_that_differs():
    peer_cases.check_close("same", [1.0, 2.0], [1.0, 2.0 + 1e-9], rtol=1e-6)
    with pytest.raises(AssertionError, match="JAX LML: the peer's value differs"):
        peer_cases.check_close("JAX LML", [1.0], [1.001], rtol=1e-6)
    with pytest.raises(AssertionError, match="differs"):
        peer_cases.check_close("shape", [1.0, 2.0], [1.0], rtol=1e-6)


def test_torch_row_measured_when_torch_is_present(tiny_run):
    torch = pytest.importorskip("torch")
    _, result, _ = tiny_run
    (torch_row,) = [row for row in result["rows"] if row["case"] == TORCH_CASE]
    assert torch_row["skipped"] is None
    assert torch.__version__ in torch_row["baseline"]
    _check_measured_row(torch_row, TINY["repeats_fast"])


def test_cli_quick_uses_the_quick_preset(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(harness, "QUICK", harness.Sizes(**TINY))
    monkeypatch.setattr(harness, "_measure_in_fresh_process", harness._build_and_measure)
    out = tmp_path / "quick.json"
    assert cli.main(["bench", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["mode"] == "quick"
    assert "QUICK run" in printed
    assert len(result["rows"]) == len(CPU_CASES)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def _gpu_unavailable_message():
    try:
        get_backend("gpu")
    except DeviceUnavailableError as exc:
        return str(exc)
    pytest.skip("a GPU is usable here; this test is for machines without one")


def test_gpu_without_gpu_fails_with_the_backend_message(tmp_path, capsys):
    message = _gpu_unavailable_message()
    out = tmp_path / "gpu.json"
    status = harness.main(device="gpu", out=str(out))
    captured = capsys.readouterr()
    assert status != 0
    assert captured.err.strip() == f"minivae: error: {message}"
    assert not out.exists()


def test_cli_gpu_without_gpu_exits_nonzero(tmp_path, capsys):
    message = _gpu_unavailable_message()
    assert cli.main(["bench", "--device", "gpu", "--out", str(tmp_path / "g.json")]) != 0
    assert message in capsys.readouterr().err


def test_gpu_groups_run_under_the_cuda_simulator(tmp_path, capsys):
    """The --device gpu cases, on the simulator's backend and the host timer."""
    backend = get_backend("cuda-sim")
    sizes = harness.Sizes(**TINY_SIM)
    builders = cases.gpu_groups(backend, sizes, harness.wall_timer)
    out = tmp_path / "sim.json"
    assert harness.run(builders, sizes, "custom", "gpu", "Numba CUDA simulator", out) == 0
    result = json.loads(out.read_text())
    assert [row["case"] for row in result["rows"]] == [
        "rbf_matrix n=6 d=2 f64", "rbf_grad_contract ARD n=5 d=2 f64",
        "reparam fwd+bwd 3x2 f32", "Adam step 10 f32", "VAE step 5-3-2 b=3 f32",
        "GP LML+grad ARD n=6 d=2",
    ]
    for row in result["rows"]:
        assert row["target"] is None and row["met"] is None
        ours, baseline = row["ours_stats"]["median"], row["baseline_stats"]["median"]
        assert row["ratio"] == pytest.approx(baseline / ours, rel=1e-12)
    assert result["machine"]["device_name"] == "Numba CUDA simulator"
    assert "Numba CUDA simulator" in capsys.readouterr().out


def test_time_interleaved_runs_blocks_in_turn():
    order = []
    calls = {label: (lambda label=label: order.append(label), lambda fn: (fn(), 1.0)[1])
             for label in ("a", "b")}
    stats = harness.time_interleaved(calls, repeats=6, warmup=1, block=3)
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert stats["a"]["n"] == stats["b"]["n"] == 6
    order.clear()
    harness.time_interleaved(calls, repeats=2, warmup=0, block=10)  # block cut to repeats
    assert order == ["a", "a", "b", "b"]


def test_adam_baseline_is_the_textbook_update():
    """The Adam row's baseline computes what minivae's reference does where no moment is
    subnormal (the reference's one addition, the flush, is what it leaves out)."""
    from minivae.kernels import adam_step

    rng = np.random.default_rng(3)
    arrays = [rng.uniform(0.5, 1.5, 50) for _ in range(4)]
    textbook = [a.copy() for a in arrays]
    reference = [a.copy() for a in arrays]
    for t in (1, 2, 3):
        cases.numpy_adam_textbook(*textbook, lr=0.1, t=t)
        adam_step(*reference, lr=0.1, t=t, impl="reference")
    # float64, the same operations with the bias corrections folded in another order: a
    # few roundings apart (~1e-16 relative); arrays drawn in [0.5, 1.5], so atol 0.
    for mine, theirs in zip(textbook, reference):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=0)


def test_summarize_matches_numpy_quartiles():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    stats = harness.summarize(samples)
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    assert (stats["q1"], stats["median"], stats["q3"]) == pytest.approx((q1, median, q3))
    assert stats["min"] == 1.0 and stats["n"] == 6 and stats["samples"] == sorted(samples)
    single = harness.summarize([2.5])
    assert single["median"] == single["q1"] == single["q3"] == 2.5 and single["iqr"] == 0.0


def test_targets_ratio_and_verdict():
    faster = harness.Target("faster", 3.0, ">= 3x faster")
    assert faster.ratio(ours=1.0, baseline=3.0) == 3.0 and faster.met(3.0)
    assert not faster.met(2.99)
    at_most = harness.Target("at_most", 0.2, "<= 1/5 its peak")
    assert at_most.ratio(ours=1.0, baseline=4.0) == 0.25 and not at_most.met(0.25)
    assert at_most.met(0.2)


def test_table_shows_verdicts_and_skips():
    measured = harness.Row("case A", "ours", "base", harness.Target("faster", 2.0, ">= 2x faster"),
                         ours_stats=harness.summarize([1.0]), baseline_stats=harness.summarize([4.0]))
    slower = harness.Row("case B", "ours", "base", harness.Target("at_most", 1.5, "<= 1.5x"),
                       ours_stats=harness.summarize([3e-3]),
                       baseline_stats=harness.summarize([1e-3]))
    skipped = harness.Row("case C", "ours", "torch", harness.Target("faster", 2.0, ">= 2x faster"),
                        skipped="torch is not installed")
    lines = harness.format_table([measured, slower, skipped]).splitlines()
    assert "4.00x faster" in lines[2] and lines[2].rstrip().endswith("yes")
    assert "3.00x its time" in lines[3] and lines[3].rstrip().endswith("NO")
    assert "3 ms" in lines[3] and "1 ms" in lines[3]
    assert lines[4].rstrip().endswith("skipped")
    assert lines[-1].strip() == "case C: torch is not installed"


def test_write_json_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "r.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_unknown_device_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="device='tpu'"):
        harness.main(device="tpu", out=str(tmp_path / "x.json"))


def test_bad_output_path_is_refused_before_measuring(tmp_path, capsys):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        harness.main(out=str(folder), sizes=TINY)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        harness.main(out=str(blocker / "bench.json"), sizes=TINY)
    assert "[1/" not in capsys.readouterr().out  # nothing was measured
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]
    assert list(folder.iterdir()) == []


def test_write_json_atomic_removes_its_temporary_on_failure(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "r.json", {"not json": object()})
    assert list(tmp_path.iterdir()) == []
