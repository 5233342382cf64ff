"""The ``gemm_step`` of ``cpu_gemm_step.py`` for large batches, on Numba's
threads alone: one pool for the products and the passes between them.

Calling BLAS's threaded GEMMs with Numba-threaded passes in between makes
two thread pools take turns on the same cores, and each pool's idle
threads spin while the other works: on 2 cores such a step ran 4-40x
slower than the serial one. Here BLAS runs one thread per call (the caller
holds ``cpu_parallel.one_pool``), called from Numba's threads on slices of
the batch:

1. rows: the batch is cut into blocks of ``BLOCK_ROWS`` rows; each block's
   forward pass (GEMM, bias + activation, layer by layer), softmax +
   cross-entropy and backward deltas (dZ W^T, f'(A)) run on one thread,
   while the block is in its cache; its loss and bias-gradient sums go to a
   row of their own.
2. weights: each layer's weight gradient A^T dZ (a sum over all rows) is cut
   by its rows of W, so no two threads write the same weight; plain SGD is
   folded in as in ``gemm_step``.

The blocks are fixed by the batch size alone and their sums added in block
order, so the results do not depend on the number of threads.
"""

import numba
import numpy as np

from .blas import NO_TRANS, TRANS
from .cpu_gemm_step import _gemm
from .cpu_math import FAST, IDENTITY, act_grad_rows, bias_act_rows, colsum_add, jit, softmax_xent

#: rows per block: 32 blocks at a batch of 4096, 8 at the smallest threaded batch
BLOCK_ROWS = 128


@jit()
def threaded_layout(sizes, n):
    """Offsets into the scratch of a batch of ``n``: a zero bias as wide as
    the widest layer, each layer's (n, fan_out) output, each layer's
    (n, fan_out) delta; and the scratch's total length."""
    n_layers = sizes.size - 1
    widest = sizes[1:].max()
    o_at, d_at = np.empty(n_layers, np.int64), np.empty(n_layers, np.int64)
    at = widest
    for l in range(n_layers):
        o_at[l] = at
        d_at[l] = at + n * sizes[l + 1]
        at += 2 * n * sizes[l + 1]
    return o_at, d_at, 0, at


@jit()
def _sums_layout(sizes):
    """Where layer l's bias sums start in a row of the blocks' sums, and the row's length."""
    n_layers = sizes.size - 1
    s_at = np.zeros(n_layers, np.int64)
    for l in range(1, n_layers):
        s_at[l] = s_at[l - 1] + sizes[l]
    return s_at, s_at[n_layers - 1] + sizes[n_layers]


@jit(fastmath=FAST)
def _add_bias_sums(sums, s_at, sizes, b_at, target, step, folded):
    """The blocks' bias sums added in block order, times ``step``, to the biases
    of ``target`` (or written there, unless ``folded``)."""
    for l in range(s_at.size):
        fo = sizes[l + 1]
        gb = target[b_at[l]:b_at[l] + fo]
        for j in range(fo):
            acc = sums[0, s_at[l] + j]
            for t in range(1, sums.shape[0]):
                acc += sums[t, s_at[l] + j]
            gb[j] = gb[j] + step * acc if folded else step * acc


@jit()
def _block_sums(losses):
    """The blocks' loss sums and hits, added in block order."""
    total, hits = 0.0, 0.0
    for t in range(losses.shape[0]):
        total += losses[t, 0]
        hits += losses[t, 1]
    return total, hits


@jit(fastmath=FAST, nogil=True)
def _rows(gemm, x, y, ids, sw, params, sizes, w_at, b_at, has_bias, code, scale, work, o_at,
          d_at, s_at, zero_at, lo, hi, sums, losses):
    """Forward, loss and backward deltas of rows [lo, hi): the loss sum and
    hits to ``losses``, the column sums of layer l's delta to ``sums`` at
    ``s_at[l]``."""
    n_layers = sizes.size - 1
    r = hi - lo
    nt, tr = np.int64(NO_TRANS), np.int64(TRANS)
    for l in range(n_layers):
        fi, fo = sizes[l], sizes[l + 1]
        if l == 0:
            _gemm(gemm, nt, nt, r, fo, fi, 1.0, x.reshape(-1), np.int64(lo * fi), fi, params,
                  w_at[l], fo, 0.0, work, o_at[l] + lo * fo, fo)
        else:
            _gemm(gemm, nt, nt, r, fo, fi, 1.0, work, o_at[l - 1] + lo * fi, fi, params,
                  w_at[l], fo, 0.0, work, o_at[l] + lo * fo, fo)
        b = params[b_at[l]:b_at[l] + fo] if has_bias else work[zero_at:zero_at + fo]
        bias_act_rows(work[o_at[l] + lo * fo:o_at[l] + hi * fo], b,
                      code if l < n_layers - 1 else IDENTITY)
    last = n_layers - 1
    k = sizes[n_layers]
    losses[0], losses[1] = softmax_xent(
        work[o_at[last] + lo * k:o_at[last] + hi * k].reshape(r, k), y[lo:hi],
        ids[lo:hi] if ids.size > 0 else ids, sw[lo:hi] if sw.size > 0 else sw,
        work[d_at[last] + lo * k:d_at[last] + hi * k].reshape(r, k), scale, True)
    one = params.dtype.type(1)
    sums[:] = 0
    if has_bias:
        colsum_add(work[d_at[last] + lo * k:d_at[last] + hi * k], one,
                   sums[s_at[last]:s_at[last] + k])
    for l in range(last, 0, -1):                 # dA = dZ W^T, then f'(A)
        fi, fo = sizes[l], sizes[l + 1]
        _gemm(gemm, nt, tr, r, fi, fo, 1.0, work, d_at[l] + lo * fo, fo, params, w_at[l], fo,
              0.0, work, d_at[l - 1] + lo * fi, fi)
        gb = sums[s_at[l - 1]:s_at[l - 1] + fi]
        act_grad_rows(work[d_at[l - 1] + lo * fi:d_at[l - 1] + hi * fi],
                      work[o_at[l - 1] + lo * fi:o_at[l - 1] + hi * fi], fi, code, has_bias,
                      one, True, gb)


@jit(fastmath=FAST, parallel=True, nogil=True)
def threaded_step(gemm, x, y, ids, sw, params, grads, sizes, w_at, b_at, has_bias, code,
                  loss_scale, work, sgd_lr, cuts):
    """What ``cpu_gemm_step.gemm_step`` does, with the same arguments (but
    ``work`` laid out by :func:`threaded_layout`), on Numba's threads; each
    layer's weight gradient is cut in ``cuts`` slices (the number of
    threads: ``numba.get_num_threads()`` here would keep the kernel out of
    Numba's on-disk cache)."""
    n = x.shape[0]
    n_layers = sizes.size - 1
    dt = params.dtype.type
    scale, lr = dt(loss_scale), dt(sgd_lr)
    o_at, d_at, zero_at, _ = threaded_layout(sizes, n)
    blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    s_at, n_bias = _sums_layout(sizes)
    sums = np.empty((blocks, n_bias), params.dtype)
    losses = np.empty((blocks, 2))
    for t in numba.prange(blocks):
        _rows(gemm, x, y, ids, sw, params, sizes, w_at, b_at, has_bias, code, scale, work, o_at,
              d_at, s_at, zero_at, t * BLOCK_ROWS, min(n, (t + 1) * BLOCK_ROWS), sums[t], losses[t])

    folded = lr > 0
    target = params if folded else grads
    step = -lr if folded else dt(1)
    beta = 1.0 if folded else 0.0
    # weights: layer l's rows of W cut in `cuts` slices, the layers interleaved so
    # that each thread's share of the (static) schedule holds some of the big layer
    nt, tr, at0 = np.int64(NO_TRANS), np.int64(TRANS), np.int64(0)
    xs = x.reshape(-1)
    for it in numba.prange(n_layers * cuts):
        l, c = it % n_layers, it // n_layers
        fi, fo = sizes[l], sizes[l + 1]
        i_lo, i_hi = fi * c // cuts, fi * (c + 1) // cuts
        if i_hi > i_lo:
            if l == 0:
                _gemm(gemm, tr, nt, i_hi - i_lo, fo, n, np.float64(step), xs, at0 + i_lo, fi,
                      work, d_at[l], fo, beta, target, w_at[l] + i_lo * fo, fo)
            else:
                _gemm(gemm, tr, nt, i_hi - i_lo, fo, n, np.float64(step), work,
                      o_at[l - 1] + i_lo, fi, work, d_at[l], fo, beta, target,
                      w_at[l] + i_lo * fo, fo)

    if has_bias:
        _add_bias_sums(sums, s_at, sizes, b_at, target, step, folded)
    return _block_sums(losses)
