"""VARegressor().fit with its defaults on 240 frames of 32x32 (6 sequences of 40 frames of
minivae.datasets.make_image_sequences), one thread, with the MLP and the convolutional
decoder: target <= 30 s.

    pytest benchmarks/test_bench_var_fit.py

One round: a fit is the unit a user waits for, and its time is dominated by the
DEFAULT_EPOCHS schedule's 1050 epochs, so repeating it adds minutes and little
information. The measured seconds, the schedule and the epochs run per phase are in the
benchmark's extra_info.
"""

import pytest

from minivae.datasets import make_image_sequences
from minivae.kernels.threads import limited_threads
from minivae.var import DEFAULT_EPOCHS, VARegressor

pytest.importorskip("pytest_benchmark")

TARGET_SECONDS = 30.0


@pytest.fixture(scope="module")
def frames():
    data = make_image_sequences(n_sequences=6, n_frames=40, size=32, seed=0)
    assert data.n == 240 and data.image_shape == (32, 32)
    return data


@pytest.mark.parametrize("decoder", ["mlp", "conv"])
def test_var_fit_240_frames(benchmark, frames, decoder):
    fitted = []

    def fit():
        fitted.append(VARegressor(decoder=decoder).fit(frames.X, frames.Y, frames.groups,
                                                       progress=False))

    benchmark.group = "VARegressor().fit, 240 frames of 32x32, 1 thread"
    benchmark.name = f"decoder={decoder!r}, epochs {DEFAULT_EPOCHS}"
    with limited_threads(1):
        benchmark.pedantic(fit, rounds=1, iterations=1)
    stops = fitted[-1].history_["stops"]
    benchmark.extra_info.update(target_seconds=TARGET_SECONDS, epochs=list(DEFAULT_EPOCHS),
                                stops=stops)
