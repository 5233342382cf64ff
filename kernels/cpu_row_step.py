"""A whole training step of a cross-entropy network in one compiled call,
by row loops that skip zero inputs: for a single mostly-zero sample (an
MNIST image is 19% non-zero) they beat a call into BLAS, and they need no
BLAS at all.

Driven by the ``cpu-rows`` step engine (``fastmlp/engines/cpu_rows.py``),
with the same arguments and scratch as ``cpu_gemm_step.gemm_step``, less
the GEMM addresses. The kernels release the GIL.
"""

import numpy as np

from .cpu_math import FAST, IDENTITY, act_grad, bias_act_rows, jit, scratch_layout, softmax_xent


@jit()
def _nonzero(a, idx):
    """The positions of ``a``'s non-zero entries into ``idx``; returns their count."""
    cnt = 0
    for i in range(a.size):
        if a[i] != 0:
            idx[cnt] = i
            cnt += 1
    return cnt


@jit(fastmath=FAST)
def _gemv_add(a, idx, w, fo, row):
    """row[:fo] += a @ W over the non-zero entries of ``a`` (W the (a.size, fo)
    row-major block ``w``); most MNIST pixels and many relu outputs are 0.

    Four rows of W per pass over ``row``: one row at a time is bound by the
    load and store of ``row``. Slices, not flat indices: Numba's
    negative-index wraparound on ``w[k + j]`` stops LLVM from vectorising.
    """
    cnt = _nonzero(a, idx)
    k = 0
    while k + 4 <= cnt:
        i0, i1, i2, i3 = idx[k], idx[k + 1], idx[k + 2], idx[k + 3]
        a0, a1, a2, a3 = a[i0], a[i1], a[i2], a[i3]
        w0 = w[i0 * fo:(i0 + 1) * fo]
        w1 = w[i1 * fo:(i1 + 1) * fo]
        w2 = w[i2 * fo:(i2 + 1) * fo]
        w3 = w[i3 * fo:(i3 + 1) * fo]
        for j in range(fo):
            row[j] += (a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j])
        k += 4
    while k < cnt:
        i0 = idx[k]
        a0 = a[i0]
        w0 = w[i0 * fo:(i0 + 1) * fo]
        for j in range(fo):
            row[j] += a0 * w0[j]
        k += 1


@jit(fastmath=FAST)
def _outer_add(a, idx, step, dz, g):
    """g += step * outer(a, dz), g being the (a.size, dz.size) row-major block,
    skipping the rows where ``a`` is 0 when there are any (the gathered loop
    is slower than the plain one on a dense block)."""
    fo = dz.size
    cnt = _nonzero(a, idx)
    if cnt == a.size:
        for i in range(a.size):
            sa = step * a[i]
            gi = g[i * fo:(i + 1) * fo]
            for j in range(fo):
                gi[j] += sa * dz[j]
        return
    for k in range(cnt):
        i = idx[k]
        sa = step * a[i]
        gi = g[i * fo:(i + 1) * fo]
        for j in range(fo):
            gi[j] += sa * dz[j]


@jit(fastmath=FAST, nogil=True)
def row_step(x, y, ids, sw, params, grads, sizes, w_at, b_at, has_bias, code, loss_scale, work,
             sgd_lr):
    """What ``gemm_step`` does, by loops over the rows of ``x``. The backward
    pass walks the rows of each W once: row i gives every sample's input
    gradient at i (from the weights as they were) and then takes its own
    update, so a weight is read once forward and read and written once
    backward."""
    n = x.shape[0]
    n_layers = sizes.size - 1
    zero, one = params.dtype.type(0), params.dtype.type(1)
    scale, lr = params.dtype.type(loss_scale), params.dtype.type(sgd_lr)
    o_at, d0, d1, zero_at, _ = scratch_layout(sizes, n)
    idx = np.empty(sizes.max(), np.int64)
    for l in range(n_layers):                    # forward
        fi, fo = sizes[l], sizes[l + 1]
        w = params[w_at[l]:w_at[l] + fi * fo]
        b = params[b_at[l]:b_at[l] + fo] if has_bias else work[zero_at:zero_at + fo]
        for s in range(n):
            row = work[o_at[l] + s * fo:o_at[l] + (s + 1) * fo]
            row[:] = zero
            if l == 0:
                _gemv_add(x[s], idx, w, fo, row)
            else:
                _gemv_add(work[o_at[l - 1] + s * fi:o_at[l - 1] + (s + 1) * fi], idx, w, fo, row)
            bias_act_rows(row, b, code if l < n_layers - 1 else IDENTITY)
    k = sizes[n_layers]
    z_at = o_at[n_layers - 1]
    total, hits = softmax_xent(work[z_at:z_at + n * k].reshape(n, k), y, ids, sw,
                               work[d0:d0 + n * k].reshape(n, k), scale, True)
    folded = lr > 0                              # backward; deltas alternate between d0 and d1
    target = params if folded else grads
    step = -lr if folded else one
    cur, other = d0, d1
    for l in range(n_layers - 1, -1, -1):
        fi, fo = sizes[l], sizes[l + 1]
        w = params[w_at[l]:w_at[l] + fi * fo]
        g = target[w_at[l]:w_at[l] + fi * fo]
        if not folded:
            g[:] = 0
        if has_bias:
            gb = target[b_at[l]:b_at[l] + fo]
            if not folded:
                gb[:] = 0
            for s in range(n):
                dz = work[cur + s * fo:cur + (s + 1) * fo]
                for j in range(fo):
                    gb[j] += step * dz[j]
        if l > 0:                                # input gradient, from the weights as they were
            for i in range(fi):
                wi = w[i * fo:(i + 1) * fo]
                for s in range(n):
                    dz = work[cur + s * fo:cur + (s + 1) * fo]
                    acc = zero
                    for j in range(fo):
                        acc += dz[j] * wi[j]
                    work[other + s * fi + i] = act_grad(acc, work[o_at[l - 1] + s * fi + i],
                                                        code)
        for s in range(n):                       # W += step * A^T dZ
            dz = work[cur + s * fo:cur + (s + 1) * fo]
            if l == 0:
                _outer_add(x[s], idx, step, dz, g)
            else:
                _outer_add(work[o_at[l - 1] + s * fi:o_at[l - 1] + (s + 1) * fi], idx, step, dz, g)
        cur, other = other, cur
    return total, hits


@jit(nogil=True)
def row_sgd_epoch(x, y, ids, order, params, grads, sizes, w_at, b_at, has_bias, code,
                  loss_scale, work, sgd_lr):
    """Per-sample plain SGD over the rows of ``x`` in the order of ``order``
    (row order when it is empty), one compiled call for the epoch, with no
    shuffled copy of the data: ``(loss sum, hits)``."""
    total, hits = 0.0, 0.0
    no_w = np.empty(0, params.dtype)                # per-sample weights take the step loop
    for s in range(x.shape[0]):
        r = order[s] if order.size > 0 else s
        ids_r = ids[r:r + 1] if ids.size > 0 else ids
        loss, h = row_step(x[r:r + 1], y[r:r + 1], ids_r, no_w, params, grads, sizes, w_at, b_at,
                           has_bias, code, loss_scale, work, sgd_lr)
        total += loss
        hits += h
    return total, hits
