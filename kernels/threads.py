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
variable ``MINIVAE_PIN_THREADS=0``. Threads that the calling thread starts while pinned
inherit its one CPU (a progress bar's monitor thread, for example); a library that starts
its thread pool lazily inside the loop would start it there too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading

import numba
import numpy as np

#: Set to "0" to turn the placement off (pinning can hurt where another busy process
#: shares the CPUs the threads are pinned to).
ENV_VAR = "MINIVAE_PIN_THREADS"

_lock = threading.Lock()
_depth = 0
_tid_kernel = None  # compiled on first use: a ctypes call cannot go in Numba's disk cache


def _libc_gettid():
    """The C library's ``gettid`` as a ctypes function, or None (glibc < 2.30, not Linux)."""
    try:
        gettid = ctypes.CDLL(None).gettid
    except (AttributeError, OSError):
        return None
    gettid.restype = ctypes.c_int
    gettid.argtypes = []
    return gettid


def _get_tid_kernel():
    """A parallel loop that records each Numba thread's kernel thread id, by Numba thread
    number (0 is the calling thread). None when the C library has no ``gettid``."""
    global _tid_kernel
    if _tid_kernel is None:
        gettid = _libc_gettid()
        if gettid is None:
            return None

        @numba.njit(parallel=True, cache=False)
        def record_tids(out, iterations):
            # Numba's static schedule hands each thread one contiguous share of the range,
            # so with iterations >= threads every thread records its id.
            for _ in numba.prange(iterations):
                out[numba.get_thread_id()] = gettid()

        _tid_kernel = record_tids
    return _tid_kernel


def numba_thread_ids() -> dict:
    """``{numba thread number: kernel thread id}`` for the threads a parallel Numba loop
    runs on now (0: the calling thread). Empty when the ids cannot be read."""
    kernel = _get_tid_kernel()
    if kernel is None:
        return {}
    n_threads = numba.get_num_threads()
    out = np.zeros(n_threads, dtype=np.int64)
    kernel(out, 64 * n_threads)
    return {number: int(tid) for number, tid in enumerate(out) if tid > 0}


def _current_cpu(cpus):
    """The CPU the calling thread runs on now, if it is in ``cpus``; else ``cpus[0]``."""
    try:
        cpu = ctypes.CDLL(None).sched_getcpu()
    except (AttributeError, OSError):
        return cpus[0]
    return cpu if cpu in cpus else cpus[0]


def _plan():
    """``[(tid, cpu), ...]`` for the calling thread (tid 0) and each worker, or None when
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
    if tids.get(0) != threading.get_native_id() or len(tids) < 2:
        return None  # not the layout this placement assumes: leave the threads alone
    first = cpus.index(_current_cpu(cpus))
    return [(0 if number == 0 else tid, cpus[(first + number) % len(cpus)])
            for number, tid in sorted(tids.items())]


@contextlib.contextmanager
def pinned_threads():
    """Pin the calling thread and Numba's worker threads to distinct CPUs for the block.

    The calling thread (Numba's thread 0) stays on the CPU it runs on, worker ``i`` goes
    on the ``i``-th CPU after it in the process's CPU set (wrapping around; with more
    threads than CPUs some share).
    On exit each thread gets back the CPU set it had. Nested uses pin once. Yields True
    when the threads were pinned, False when the placement was a no-op (see the module
    docstring for when).
    """
    global _depth
    with _lock:
        _depth += 1
        plan = _plan() if _depth == 1 else None
        saved = []
        if plan:
            try:
                for tid, cpu in plan:
                    previous = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, {cpu})
                    saved.append((tid, previous))
            except OSError:  # a thread gone, or a CPU set we may not use: undo, carry on
                _restore(saved)
                saved = []
    try:
        yield bool(saved)
    finally:
        with _lock:
            _depth -= 1
            _restore(saved)


def _restore(saved):
    for tid, previous in reversed(saved):
        try:
            os.sched_setaffinity(tid, previous)
        except OSError:
            pass  # the thread has exited: nothing to restore
