"""Thread placement for the CPU kernels: the calling thread and Numba's workers on
distinct CPUs while a training loop runs.

Why (docs/performance.md, "VAE training step", "Thread placement"): between two BLAS
calls NumPy's OpenBLAS keeps its worker thread spinning on one core (for about 0.1 s), so
in a training step, where BLAS products and Numba kernels alternate, three busy threads
share two cores, and a parallel kernel in the step runs no faster than a serial one. The
measurements fit one reading: Linux wakes Numba's sleeping OpenMP worker on the core of
the thread running the step, where the two take turns (pinning the worker alone does not
help: the step's thread then wanders onto the worker's core). With the calling thread and
each worker pinned to its own CPU, the worker runs beside the step's thread and displaces
the spinning BLAS thread. Measured on the 2-core dev machine, VAE
step 784-400-20 batch 128 (two runs each, medians of 400 steps interleaved with the six
products, 1.79-1.84 ms): parallel Adam 3.05 / 2.97 ms unpinned, 2.88 / 2.84 ms pinned;
serial Adam 2.99 / 2.93 ms either way.

The placement is entered for the duration of a loop (:func:`minivae.train.fit_loop` does)
and undone on exit: every thread's previous CPU set is restored. It is a no-op where it
cannot help or cannot be done: fewer than two CPUs or Numba threads, no
``os.sched_setaffinity`` (not Linux), no ``gettid`` in the C library, or the environment
variable ``MINIVAE_PIN_THREADS=0``. Threads and processes that the calling thread starts
while pinned inherit its one CPU (a library that starts its thread pool lazily inside the
loop would start it there; a child process would count one CPU), and keep it after the
block; Numba workers started inside the block (``numba.set_num_threads`` raised there)
get the calling thread's old CPU set back on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading

import numba
import numpy as np
from numba import types

#: Set to "0" to turn the placement off (pinning can hurt where another busy process
#: shares the CPUs the threads are pinned to).
ENV_VAR = "MINIVAE_PIN_THREADS"

_lock = threading.Lock()
_depth = 0

# The C library's gettid, called from compiled code by its symbol (an external function
# keeps the loop cacheable on disk, unlike a ctypes pointer). Only called after
# _has_gettid() said the symbol exists.
_gettid = types.ExternalFunction("gettid", types.int32())


@functools.cache
def _libc():
    """The process's C library (ctypes), or None where it cannot be opened."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _has_gettid() -> bool:
    """Whether the C library has ``gettid`` (glibc >= 2.30; not on macOS or Windows)."""
    return hasattr(_libc(), "gettid")


@numba.njit(parallel=True, cache=True)
def _record_tids(out, iterations):
    """``out[k]`` = kernel thread id of Numba thread ``k``. Numba's static schedule hands
    each thread one contiguous share of the range, so with ``iterations >= threads``
    every thread records its id."""
    for _ in numba.prange(iterations):
        out[numba.get_thread_id()] = _gettid()


def numba_thread_ids() -> dict:
    """``{numba thread number: kernel thread id}`` for the threads a parallel Numba loop
    runs on now (0: the calling thread under the OpenMP layer). Empty when the ids cannot
    be read."""
    if not _has_gettid():
        return {}
    n_threads = numba.get_num_threads()
    out = np.zeros(n_threads, dtype=np.int64)
    _record_tids(out, 64 * n_threads)
    return {number: int(tid) for number, tid in enumerate(out) if tid > 0}


def _current_cpu(cpus):
    """The CPU the calling thread runs on now, if it is in ``cpus``; else ``cpus[0]``."""
    sched_getcpu = getattr(_libc(), "sched_getcpu", None)
    cpu = sched_getcpu() if sched_getcpu is not None else cpus[0]
    return cpu if cpu in cpus else cpus[0]


def _plan(own_tid):
    """``[(tid, cpu), ...]`` for the calling thread and each worker, or None when
    placement is off or cannot help.

    The calling thread stays on the CPU it runs on now and the workers take the next ones
    in the process's CPU set: several processes that each pin their threads then start
    from where the scheduler had spread them, rather than all on the first CPU.
    """
    if os.environ.get(ENV_VAR, "1").strip() == "0" or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or numba.get_num_threads() < 2:
        return None
    tids = numba_thread_ids()
    if tids.get(0) != own_tid or len(tids) < 2:
        return None  # not the layout this placement assumes (e.g. the workqueue layer)
    first = cpus.index(_current_cpu(cpus))
    return [(tid, cpus[(first + number) % len(cpus)]) for number, tid in sorted(tids.items())]


@contextlib.contextmanager
def pinned_threads():
    """Pin the calling thread and Numba's worker threads to distinct CPUs for the block.

    The calling thread (Numba's thread 0) stays on the CPU it runs on, worker ``i`` goes
    on the ``i``-th CPU after it in the process's CPU set (wrapping around; with more
    threads than CPUs some share). On exit each thread gets back the CPU set it had, and
    workers that Numba started inside the block (``numba.set_num_threads`` raised there)
    get the calling thread's old set. Nested uses pin once. Yields True when the threads
    were pinned, False when the placement was a no-op (see the module docstring for
    when).
    """
    global _depth
    own_tid = threading.get_native_id()
    saved = []  # (tid, CPU set before), in pinning order
    with _lock:
        _depth += 1
        outermost = _depth == 1
    try:
        if outermost:
            plan = _plan(own_tid)
            try:
                for tid, cpu in plan or ():
                    saved.append((tid, os.sched_getaffinity(tid)))
                    os.sched_setaffinity(tid, {cpu})
            except OSError:  # a thread gone, or a CPU set we may not use: undo, carry on
                _restore(saved)
                saved = []
        yield bool(saved)
    finally:
        try:
            if saved:
                _restore(saved)
                _restore_new_workers(saved, own_tid)
        finally:
            with _lock:
                _depth -= 1


def _restore(saved):
    for tid, previous in reversed(saved):
        try:
            os.sched_setaffinity(tid, previous)
        except OSError:
            pass  # the thread has exited: nothing to restore


def _restore_new_workers(saved, own_tid):
    """Give workers started while pinned (they inherited one CPU) the caller's old set."""
    caller_before = dict(saved).get(own_tid)
    if caller_before is None or threading.get_native_id() != own_tid:
        return  # closed from another thread: numba_thread_ids() would see that thread's team
    known = {tid for tid, _ in saved}
    if numba.get_num_threads() <= len(known):
        return  # the team did not grow inside the block: nobody new to restore
    _restore([(tid, caller_before) for tid in numba_thread_ids().values() if tid not in known])


@contextlib.contextmanager
def limited_threads(threads):
    """Cap the BLAS (threadpoolctl) and Numba thread pools at ``threads`` inside the block.

    Parameters
    ----------
    threads : int or None
        Maximum threads of each pool; None changes nothing.

    Notes
    -----
    The models here are small (1024 x 256 layers, GPs on tens of points): each BLAS call
    or parallel kernel is far shorter than the time thread pools spend waking and
    spin-waiting, and when two pools (OpenBLAS and Numba) share a few busy cores they
    take turns stalling each other. On the shared 2-core machine this was built on, one
    VAE epoch of the demo took 1.36 s with the default pools and 0.038 s with one thread
    each, and LAPACK ``potri`` on a 37 x 37 matrix 63 ms instead of 0.01 ms. SciPy
    ships its own OpenBLAS, loaded with ``scipy.linalg``; it is imported first so that
    the limit covers it too. The previous Numba thread count is restored on exit.
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive integer or None")
    import numba
    import scipy.linalg  # noqa: F401  (loads SciPy's own OpenBLAS, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    previous = numba.get_num_threads()
    with threadpool_limits(limits=int(threads)):
        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            numba.set_num_threads(previous)
