"""`minivae bench --scaling` and `--cold` on tiny sizes: every point measured, the JSON and
the PNG written, the memory probe counting what a call touches. No timing is asserted."""

import json

import numpy as np
import pytest

from minivae import cli
from minivae.bench import cold, scaling

TINY = scaling.ScalingSizes(gp_n=(20, 40), vae_batch=(4, 8),
                            vae_layers=(12, 6, 2), repeats_gp=2, repeats_vae=2)


def test_scaling_writes_every_point_and_the_figure(tmp_path, capsys):
    out = tmp_path / "s" / "scaling.json"
    assert scaling.main(out=out, sizes=TINY, isolate=False) == 0
    result = json.loads(out.read_text())
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*.tmp"))
    curves = result["curves"]
    assert set(curves) == {"fit", "predict", "vae"}
    for curve, sizes in (("fit", TINY.gp_n), ("predict", TINY.gp_n), ("vae", TINY.vae_batch)):
        assert [point["size"] for point in curves[curve]] == list(sizes)
        for point in curves[curve]:
            # tiny calls project far below the time and memory limits: every library runs
            assert point["skipped"] == {}
            assert set(point["seconds"]) == set(point["peak_bytes"]) == set(scaling.available(curve))
            assert all(seconds > 0 for seconds in point["seconds"].values())
    assert "load average" in capsys.readouterr().out


def test_admit_projects_time_and_memory_from_the_size_before():
    sizes = scaling.ScalingSizes(max_call_seconds=100.0, memory_fraction=0.5)
    libraries = ("minivae", "jax", "gpytorch")
    assert scaling.admit("fit", 500, libraries, None, sizes, 2**30) == (libraries, {})
    gib = 2**30
    previous = {"size": 4000, "seconds": {"minivae": 1.0, "jax": 5.0, "gpytorch": 20.0},
                "peak_bytes": {"minivae": gib / 8, "jax": gib, "gpytorch": gib / 4}}
    # n doubles: times x 8 (gpytorch 160 s > 100 s), peaks x 4 (minivae 0.5, jax 4 GiB)
    admitted, skipped = scaling.admit("fit", 8000, libraries, previous, sizes, 9 * gib)
    assert admitted == ("minivae", "jax") and set(skipped) == {"gpytorch"}
    assert "projected 160 s" in skipped["gpytorch"]
    # with 8 GiB available (budget 4 GiB) jax's 4 GiB no longer fits beside minivae's 0.5
    admitted, skipped = scaling.admit("fit", 8000, libraries, previous, sizes, 8 * gib)
    assert admitted == ("minivae",) and "projected peak 4.0 GiB" in skipped["jax"]
    # unknown memory: only the time decides; a library out at the size before stays out
    admitted, skipped = scaling.admit("fit", 8000, libraries, previous, sizes, None)
    assert admitted == ("minivae", "jax")
    later = {"size": 8000, "seconds": {"minivae": 8.0}, "peak_bytes": {"minivae": None},
             "skipped": {"jax": "why", "gpytorch": "why"}}
    assert scaling.admit("fit", 16000, libraries, later, sizes, None) == (
        ("minivae",), {"jax": "why", "gpytorch": "why"})
    # the VAE step's cost is linear in the batch: 80 s, where n^3 would give 320 s
    vae = {"size": 512, "seconds": {"minivae": 40.0}, "peak_bytes": {"minivae": 0}}
    assert scaling.admit("vae", 1024, ("minivae",), vae, sizes, None)[0] == ("minivae",)


def test_peak_rss_counts_the_pages_a_call_touches():
    size = 64 * 2**20
    peak = scaling.peak_rss_bytes(lambda: np.ones(size // 8).sum())
    if peak is None:
        pytest.skip("no peak memory on this system: /proc/self/clear_refs (Linux) cannot reset "
                    "the resident high-water mark, so bench --scaling reports none either")
    assert 0.9 * size <= peak <= 2 * size
    assert scaling.peak_rss_bytes(lambda: None) < size / 8


def test_cold_measures_fresh_processes(tmp_path, capsys):
    out = tmp_path / "cold.json"
    assert cold.main(out=out, repeats=1, kernels=["adam_step 1M f32"], warm_calls=3) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["kernel"] for row in rows] == ["adam_step 1M f32"]
    for row in rows:
        assert len(row["first_calls_s"]) == cold.FIRST_CALLS and row["warm_median_s"] > 0
        assert len(row["first_calls_faults"]) == cold.FIRST_CALLS and row["warm_faults"] >= 0
        assert row["worst_ratio"] == pytest.approx(max(row["first_calls_s"][1:])
                                                   / row["warm_median_s"])
    assert "worst 2-5 / warm" in capsys.readouterr().out


def test_cli_scaling_and_cold_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--cold", "--scaling"])


def test_cold_reused_output_takes_no_page_faults():
    faults = cold.child("rbf_matrix n=4000 d=2 out= reused", 3)["faults"]
    assert max(faults[1:]) <= 10, f"minor page faults per call: {faults}"


def test_peak_point_counts_the_gp_matrix_in_a_fresh_process():
    """minivae's LML + gradient holds one n x n float64 matrix (K, then L, A^-1 and W);
    measured in a fresh process the peak is that, not what an earlier call left behind."""
    n = 1000
    peak = scaling._in_fresh_process(scaling.peak_point, "fit", n, "minivae", TINY.vae_layers)
    if peak is None:
        pytest.skip("no peak memory on this system: /proc/self/clear_refs (Linux) cannot reset "
                    "the resident high-water mark, so bench --scaling reports none either")
    assert 0.9 * n * n * 8 <= peak <= 2 * n * n * 8, f"peak {peak} B for n^2 * 8 = {n * n * 8} B"
