"""Thread placement (minivae.kernels.threads): pinned inside, every CPU set restored after."""

import os
import subprocess
import sys
import textwrap
import threading

import numba
import numpy as np
import pytest

from minivae.kernels import threads
from minivae.kernels.threads import numba_thread_ids, pinned_threads

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two = pytest.mark.skipif(
    len(CPUS) < 2 or numba.get_num_threads() < 2
    or numba_thread_ids().get(0) != threading.get_native_id(),
    reason="placement needs Linux, two usable CPUs, two Numba threads, gettid and Numba's "
           "OpenMP layer (the calling thread as thread 0)",
)


def affinities():
    """``{tid: CPU set}`` of the calling thread (key 0) and Numba's workers."""
    tids = numba_thread_ids()
    return {0: os.sched_getaffinity(0),
            **{tid: os.sched_getaffinity(tid) for number, tid in tids.items() if number}}


@needs_two
def test_thread_ids_are_the_calling_thread_and_distinct_workers():
    tids = numba_thread_ids()
    assert tids[0] == threading.get_native_id()
    assert len(set(tids.values())) == len(tids) == numba.get_num_threads()


@needs_two
def test_each_thread_gets_its_own_cpu_and_its_old_set_back():
    before = affinities()
    with pinned_threads() as pinned:
        inside = affinities()
    assert pinned is True
    assert affinities() == before
    assert all(len(cpus) == 1 for cpus in inside.values())
    used = [next(iter(cpus)) for cpus in inside.values()]
    assert len(set(used)) == min(len(used), len(CPUS))  # distinct while CPUs last
    assert set(used) <= set(CPUS)


@needs_two
def test_restored_after_an_exception_and_nested_use_pins_once():
    before = affinities()
    with pytest.raises(RuntimeError, match="boom"):
        with pinned_threads() as outer:
            with pinned_threads() as inner:
                assert len(os.sched_getaffinity(0)) == 1
                raise RuntimeError("boom")
    assert (outer, inner) == (True, False)
    assert affinities() == before
    with pinned_threads() as again:  # the depth count came back to zero
        assert again is True


@needs_two
def test_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "0")
    before = affinities()
    with pinned_threads() as pinned:
        assert affinities() == before
    assert pinned is False


@needs_two
def test_one_numba_thread_is_a_no_op():
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        before = os.sched_getaffinity(0)
        with pinned_threads() as pinned:
            assert os.sched_getaffinity(0) == before
        assert pinned is False
    finally:
        numba.set_num_threads(previous)


@needs_two
def test_fit_pins_while_training_and_restores_after(monkeypatch):
    from minivae import VAE
    from minivae.autoencoder import Autoencoder

    seen = []
    loss_and_grads = Autoencoder.neg_elbo_and_grads

    def spy(*args, **kwargs):
        seen.append(os.sched_getaffinity(0))
        return loss_and_grads(*args, **kwargs)

    monkeypatch.setattr(Autoencoder, "neg_elbo_and_grads", spy)
    vae = VAE(6, 2, hidden=(4,), likelihood="bernoulli", seed=0)
    before = affinities()
    X = (np.random.default_rng(0).uniform(size=(20, 6)) > 0.5).astype(np.float32)
    vae.fit(X, epochs=2, batch_size=10, progress=False)
    assert len(seen) == 4 and all(len(cpus) == 1 for cpus in seen)
    assert affinities() == before


def test_off_where_the_placement_cannot_be_done(monkeypatch):
    """Without sched_setaffinity (not Linux) the block runs unpinned."""
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    with pinned_threads() as pinned:
        pass
    assert pinned is False


@needs_two
def test_an_interrupt_while_pinning_leaves_nothing_behind(monkeypatch):
    """KeyboardInterrupt during setup (e.g. in the first call's compilation): no thread
    stays pinned and the nesting count comes back, so later uses still pin."""
    before = affinities()
    calls = []

    def interrupted():
        calls.append(1)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(threads, "numba_thread_ids", interrupted)
        with pytest.raises(KeyboardInterrupt):
            with pinned_threads():
                pass
    assert calls and threads._depth == 0
    assert affinities() == before
    with pinned_threads() as pinned:
        assert pinned is True
    assert affinities() == before


@needs_two
def test_closed_from_another_thread_restores_the_thread_that_pinned():
    entered, release = threading.Event(), threading.Event()
    seen = {}
    context = pinned_threads()

    def worker():
        seen["tid"] = threading.get_native_id()
        seen["before"] = os.sched_getaffinity(0)
        seen["pinned"] = context.__enter__()
        seen["inside"] = os.sched_getaffinity(0)
        entered.set()
        release.wait(30)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert entered.wait(30)
        context.__exit__(None, None, None)
        assert seen["pinned"] is True and len(seen["inside"]) == 1
        assert os.sched_getaffinity(seen["tid"]) == seen["before"]
    finally:
        release.set()
        thread.join()
    assert threads._depth == 0


@needs_two
def test_workers_started_inside_the_block_get_the_old_cpu_set():
    """Numba's team grown inside the block (set_num_threads raised there): the new worker
    inherited the caller's one CPU, and gets the caller's old set back on exit. Runs in a
    child process with three Numba threads."""
    script = textwrap.dedent("""
        import os, numba
        from minivae.kernels.threads import numba_thread_ids, pinned_threads
        numba.set_num_threads(2)
        before = os.sched_getaffinity(0)
        with pinned_threads() as pinned:
            numba.set_num_threads(3)
            team = numba_thread_ids()
        after = {n: os.sched_getaffinity(t) for n, t in numba_thread_ids().items()}
        print(pinned, len(team), all(cpus == before for cpus in after.values()))
    """)
    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "3", "True"]
