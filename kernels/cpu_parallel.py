"""Numba's threads for large batches: the batch gather on them, and the
rules for when the threaded kernels (this gather, and
``cpu_threaded_step.py``) may run.

- Large batches only (``MIN_ROWS``): a parallel launch costs microseconds,
  which a step of a few hundred rows does not win back.
- One pool at a time: Numba's threads run fastmlp's kernels only inside
  :func:`one_pool`, which holds NumPy's OpenBLAS to one thread; the GEMMs
  of a threaded step run on Numba's threads, each on its slice of the
  batch. ``fit`` holds it for the whole fit when its steps are threaded
  (NumPy's products elsewhere in the process, the validation scores
  included, run on one thread meanwhile). Two pools taking turns on the
  same cores, each spinning while the other works, ran a 2-core step 4-40x
  slower; OpenBLAS's threads keep spinning for ~0.1 s after its last
  threaded product.
- Both pools are sized by their own settings: ``NUMBA_NUM_THREADS`` (or
  ``numba.set_num_threads``) for the threaded step, ``OPENBLAS_NUM_THREADS``
  for NumPy's products elsewhere; by default each is the number of CPUs.
  One Numba thread means the serial step.
- Safety: Numba's GNU OpenMP layer cannot run in a child forked after it
  started (Numba ends the child), so such a child stays serial; its
  ``workqueue`` layer aborts on concurrent launches, so with that layer
  fastmlp's launches take a lock (:func:`launching`).
"""

import contextlib
import os
import threading

import numba
import numpy as np

from . import blas
from .cpu_math import jit

#: rows per block of the gather
BLOCK_ROWS = 64
#: batches of at least this many rows take the threaded step and gather
MIN_ROWS = 512


@numba.njit(inline="always")
def _blocks(n):
    return (n + BLOCK_ROWS - 1) // BLOCK_ROWS


@numba.njit(inline="always")
def _span(n, t):
    """Rows [lo, hi) of block ``t``."""
    return t * BLOCK_ROWS, min(n, (t + 1) * BLOCK_ROWS)


@jit(nogil=True)
def gather_rows(a, idx, scale, out, lo, hi):
    """``out[r] = a[idx[r]] * scale`` (in ``out``'s dtype) for r in [lo, hi)."""
    for r in range(lo, hi):
        src = a[idx[r]]
        for j in range(src.shape[0]):
            out[r, j] = src[j] * scale


@jit(parallel=True, nogil=True)
def gather(a, idx, scale, out):
    """:func:`gather_rows` for every row, on threads."""
    n = idx.shape[0]
    for t in numba.prange(_blocks(n)):
        lo, hi = _span(n, t)
        gather_rows(a, idx, scale, out, lo, hi)


@jit(parallel=True)
def _probe(a):
    for i in numba.prange(a.size):
        a[i] = i


# --- when to use threads ----------------------------------------------------------------

class _State:
    layer = None           # Numba's threading layer, once a probe has launched it
    usable = None          # None: not probed yet
    lock = contextlib.nullcontext()
    probing = threading.Lock()


def _after_fork_in_child():
    # GNU OpenMP cannot run in a child forked after it started: Numba ends such a
    # child (SIGTERM). Whoever started it in the parent, the child stays serial.
    from numba.np.ufunc import parallel
    if parallel._is_initialized and numba.threading_layer() == "omp":
        from numba.np.ufunc import omppool
        if getattr(omppool, "openmp_vendor", "GNU") == "GNU":
            _State.usable = False
    if _State.layer == "workqueue":
        _State.lock = threading.Lock()       # another thread may have held the parent's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def usable():
    """Whether the threaded kernels may run in this process: more than one
    Numba thread, and not a child forked from a process that runs GNU
    OpenMP. The first call launches a tiny parallel kernel, which starts
    Numba's threading layer; with the ``workqueue`` layer, which aborts on
    concurrent launches, :func:`launching` serialises them."""
    if _State.usable is None:
        with _State.probing:                 # two threads' first calls: one probe
            if _State.usable is None:
                _probe(np.empty(2))
                _State.layer = numba.threading_layer()
                if _State.layer == "workqueue":
                    _State.lock = threading.Lock()
                _State.usable = True
    return _State.usable and numba.get_num_threads() > 1


def threaded(rows):
    """Whether steps of ``rows`` rows should run on threads."""
    return rows >= MIN_ROWS and blas.THREADS is not None and usable()


def gathers_threaded(rows):
    """Whether a gather of ``rows`` rows should run on threads: inside
    :func:`one_pool` only."""
    return _Blas.holders > 0 and rows >= MIN_ROWS and usable()


def launching():
    """The context every call of a threaded kernel from Python runs in."""
    return _State.lock


class _Blas:
    lock = threading.Lock()
    holders = 0            # threaded steps running now, in any thread
    saved = None           # OpenBLAS's thread count before the first of them


@contextlib.contextmanager
def one_pool():
    """A context in which NumPy's OpenBLAS runs each call on the caller's
    thread, as the threaded kernels need; its thread count is put back when
    the last such context (of any thread) ends, so nesting costs nothing.
    NumPy's products elsewhere in the process run on one thread meanwhile."""
    get, set_ = blas.THREADS
    with _Blas.lock:
        if _Blas.holders == 0:
            _Blas.saved = get()
            set_(1)
        _Blas.holders += 1
    try:
        yield
    finally:
        with _Blas.lock:
            _Blas.holders -= 1
            if _Blas.holders == 0:
                set_(_Blas.saved)


def busy():
    """Whether more than one fit holds :func:`one_pool` now (their steps then
    take one thread each)."""
    return _Blas.holders > 1


@contextlib.contextmanager
def blas_threads(n):
    """Inside :func:`one_pool`: NumPy's OpenBLAS on ``n`` threads for one call,
    then back to one (0.2 us each way, measured; its threads stay up)."""
    _, set_ = blas.THREADS
    set_(n)
    try:
        yield
    finally:
        set_(1)
