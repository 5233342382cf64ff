"""A whole training step of a cross-entropy network in one compiled call:
the products by the BLAS GEMM that NumPy bundles (``blas.py``), everything
between them fused (``cpu_math.py``), no Python per layer.

Driven by the ``cpu-gemm`` step engine (``fastmlp/engines/cpu_gemm.py``).
Parameters and gradients are the model's flat buffers, addressed through
the offsets of its layout (``sizes``, ``w_at``, ``b_at``); ``work`` is the
engine's scratch, laid out by ``cpu_math.scratch_layout``. With ``sgd_lr`` > 0,
plain SGD is folded into the weight-gradient GEMM (``beta = 1``): no
gradient buffer is written and no update pass runs.

The kernels release the GIL: two threads training two models run at once.
"""

import numpy as np

from .blas import GEMM, NO_TRANS, TRANS, dgemm_at, sgemm_at
from .cpu_math import (
    FAST,
    IDENTITY,
    act_grad_rows,
    bias_act_rows,
    colsum_add,
    jit,
    scratch_layout,
    softmax_xent,
)
from .cpu_ops import _adam, _scaled_sq, _sgd

#: (sgemm, dgemm) addresses of NumPy's CBLAS; empty where NumPy bundles none
GEMM_ADDRESSES = np.array(GEMM or (), np.int64)


@jit(nogil=True)
def _gemm(gemm, ta, tb, m, n, k, alpha, a, a_at, lda, b, b_at, ldb, beta, c, c_at, ldc):
    """Row-major C = alpha op(A) op(B) + beta C, on blocks starting at the
    given element offsets of 1-D buffers, by NumPy's CBLAS at ``gemm``."""
    i32, i64 = np.int32, np.int64
    pa = a.ctypes.data + a_at * a.itemsize
    pb = b.ctypes.data + b_at * b.itemsize
    pc = c.ctypes.data + c_at * c.itemsize
    if c.itemsize == 4:
        sgemm_at(gemm[0], i32(ta), i32(tb), i64(m), i64(n), i64(k), np.float32(alpha), pa,
                 i64(lda), pb, i64(ldb), np.float32(beta), pc, i64(ldc))
    else:
        dgemm_at(gemm[1], i32(ta), i32(tb), i64(m), i64(n), i64(k), np.float64(alpha), pa,
                 i64(lda), pb, i64(ldb), np.float64(beta), pc, i64(ldc))


@jit(fastmath=FAST, nogil=True)
def gemm_step(gemm, x, y, ids, sw, params, grads, sizes, w_at, b_at, has_bias, code, loss_scale,
              work, sgd_lr):
    """Forward, softmax + cross-entropy, backward (and with ``sgd_lr`` > 0
    the plain SGD update) for the batch ``x`` (n, sizes[0]) with dense
    targets ``y`` (n, k): ``(loss sum, hits)`` (hits against ``ids`` when
    it is not empty), each sample counting ``sw[s]`` times (once when
    ``sw`` is empty). The weight-gradient GEMM of a layer runs after its
    input gradient has been taken from the weights as they were."""
    n = x.shape[0]
    n_layers = sizes.size - 1
    one = params.dtype.type(1)
    # scalars come in as Python floats: converting them outside costs ~0.5 us a call
    scale, lr = params.dtype.type(loss_scale), params.dtype.type(sgd_lr)
    o_at, d0, d1, zero_at, _ = scratch_layout(sizes, n)
    xs = x.reshape(-1)
    # plain int64 / float64 arguments, so that _gemm compiles once, not once per
    # combination of literal constants (cold compile time is a cost users see)
    nt, tr, at0 = np.int64(NO_TRANS), np.int64(TRANS), np.int64(0)
    for l in range(n_layers):                    # forward: Z = A W, then bias + activation
        fi, fo = sizes[l], sizes[l + 1]
        if l == 0:
            _gemm(gemm, nt, nt, n, fo, fi, 1.0, xs, at0, fi, params, w_at[l], fo, 0.0, work,
                  o_at[l], fo)
        else:
            _gemm(gemm, nt, nt, n, fo, fi, 1.0, work, o_at[l - 1], fi, params, w_at[l], fo,
                  0.0, work, o_at[l], fo)
        b = params[b_at[l]:b_at[l] + fo] if has_bias else work[zero_at:zero_at + fo]
        bias_act_rows(work[o_at[l]:o_at[l] + n * fo], b, code if l < n_layers - 1 else IDENTITY)
    k = sizes[n_layers]
    z_at = o_at[n_layers - 1]
    total, hits = softmax_xent(work[z_at:z_at + n * k].reshape(n, k), y, ids, sw,
                               work[d0:d0 + n * k].reshape(n, k), scale, True)
    folded = lr > 0
    target = params if folded else grads
    step = -lr if folded else one
    cur, other = d0, d1
    for l in range(n_layers - 1, -1, -1):        # backward, last layer first
        fi, fo = sizes[l], sizes[l + 1]
        if has_bias and l == n_layers - 1:       # the other layers' come with f'(A) below
            gb = target[b_at[l]:b_at[l] + fo]
            if not folded:
                gb[:] = 0
            colsum_add(work[cur:cur + n * fo], step, gb)
        if l > 0:                                # dA = dZ W^T, from W as it was; then f'(A)
            _gemm(gemm, nt, tr, n, fi, fo, 1.0, work, cur, fo, params, w_at[l], fo, 0.0, work,
                  other, fi)
            act_grad_rows(work[other:other + n * fi], work[o_at[l - 1]:o_at[l - 1] + n * fi], fi,
                          code, has_bias, step, folded, target[b_at[l - 1]:b_at[l - 1] + fi])
        beta = 1.0 if folded else 0.0            # W (+)= step * A^T dZ
        if l == 0:
            _gemm(gemm, tr, nt, fi, fo, n, np.float64(step), xs, at0, fi, work, cur, fo, beta,
                  target, w_at[l], fo)
        else:
            _gemm(gemm, tr, nt, fi, fo, n, np.float64(step), work, o_at[l - 1], fi, work, cur,
                  fo, beta, target, w_at[l], fo)
        cur, other = other, cur
    return total, hits


@jit(nogil=True)
def gemm_sgd_epoch(gemm, x, y, ids, order, params, grads, sizes, w_at, b_at, has_bias, code,
                   loss_scale, work, sgd_lr):
    """Per-sample plain SGD over the rows of ``x`` in the order of ``order``
    (row order when it is empty), one compiled call for the epoch:
    ``(loss sum, hits)``."""
    total, hits = 0.0, 0.0
    no_w = np.empty(0, params.dtype)                # per-sample weights take the step loop
    for s in range(x.shape[0]):
        r = order[s] if order.size > 0 else s
        ids_r = ids[r:r + 1] if ids.size > 0 else ids
        loss, h = gemm_step(gemm, x[r:r + 1], y[r:r + 1], ids_r, no_w, params, grads, sizes, w_at,
                            b_at, has_bias, code, loss_scale, work, sgd_lr)
        total += loss
        hits += h
    return total, hits


#: the updates :func:`gemm_epoch` runs between steps
EPOCH_SGD, EPOCH_SGD_STATE, EPOCH_ADAM, EPOCH_SCALED_SQ = 0, 1, 2, 3


@jit(nogil=True)
def _block_sum(a, lo, n):
    """NumPy's pairwise sum of up to 128 elements: eight accumulators."""
    if n < 8:
        res = a.dtype.type(0)
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@jit(nogil=True)
def pairwise_sum(a, lo, n):
    """The sum of ``a[lo:lo + n]`` as NumPy's ``a.sum()`` adds it (blocks of up
    to 128, halved at multiples of 8 above that, in ``a``'s dtype): the batch
    loop scales a weighted batch's loss by ``1 / w.sum()``, and the one-call
    epoch must give its model bit for bit. No fastmath: the order is the point.
    NumPy's halving recursion runs on explicit stacks: Numba's cache breaks
    recursive functions (numba#6061, a segfault on the second run)."""
    if n <= 128:
        return _block_sum(a, lo, n)
    los, ns = np.empty(64, np.int64), np.empty(64, np.int64)
    stage, left = np.zeros(64, np.int64), np.empty(64, a.dtype)
    top = 0
    los[0], ns[0] = lo, n
    while True:
        m = ns[top]
        if m > 128:                              # split; the left half first
            half = m // 2 - (m // 2) % 8
            stage[top] = 1
            top += 1
            los[top], ns[top], stage[top] = los[top - 1], half, 0
            continue
        v = _block_sum(a, los[top], m)
        while True:                              # hand v up to the frames it completes
            top -= 1
            if top < 0:
                return v
            if stage[top] == 1:                  # a left half: now the right one
                left[top], stage[top] = v, 2
                half = ns[top] // 2 - (ns[top] // 2) % 8
                los[top + 1], ns[top + 1], stage[top + 1] = los[top] + half, ns[top] - half, 0
                top += 1
                break
            v = left[top] + v


@jit(nogil=True)
def _gather(x, y, ids, sw, order, lo, hi, x_scale, xb, yb, idsb, swb):
    """Rows ``order[lo:hi]`` (``lo:hi`` when ``order`` is empty) of x, y, ids
    and sw (each of the last two where not empty) into the batch buffers'
    first rows; x's rows multiplied by ``x_scale`` (compact integer inputs,
    cast as ``cpu_parallel.gather_rows`` casts them; 1 for float rows)."""
    for r in range(hi - lo):
        s = order[lo + r] if order.size > 0 else lo + r
        for j in range(x.shape[1]):
            xb[r, j] = x[s, j] * x_scale
        yb[r, :] = y[s, :]
        if ids.size > 0:
            idsb[r] = ids[s]
        if sw.size > 0:
            swb[r] = sw[s]


@jit(nogil=True)
def gemm_epoch(gemm, x, y, ids, sw, order, batch, params, grads, sizes, w_at, b_at, has_bias,
               code, x_scale, scale_full, scale_last, by_weight, work, xb, yb, idsb, swb, kind,
               hyper, flags, m, v, t0):
    """Every batch of ``batch`` rows of ``x`` (in ``order``; row order when it is
    empty) through :func:`gemm_step` and the optimizer's update, in one call:
    ``(loss sum, hits)``. ``sw``: per-sample weights (empty: none); with
    ``by_weight`` a batch's loss is scaled by 1 / its weights' sum, else by
    ``scale_full`` (``scale_last`` for a last, shorter batch). ``x`` may hold
    compact integers, multiplied by ``x_scale`` as they are gathered.

    ``kind``: :data:`EPOCH_SGD` (plain SGD, folded into the step at
    ``hyper[0]``), :data:`EPOCH_SGD_STATE` (``hyper`` = lr, momentum, weight
    decay; ``flags`` = nesterov, has velocity ``m``), :data:`EPOCH_ADAM`
    (``hyper`` = lr, beta1, beta2, eps, weight decay; ``flags[0]`` decoupled;
    state ``m``, ``v``; step ``t0`` + 1 first) or :data:`EPOCH_SCALED_SQ`
    (AdaGrad and RMSprop: ``hyper`` = lr, alpha, beta, eps, weight decay;
    state ``m``). The updates cast their hyperparameters and bias
    corrections as the op table's do for one step (``cpu_ops.py``), so the
    result is the step loop's."""
    n = x.shape[0]
    cast = params.dtype.type
    total, hits = 0.0, 0.0
    t = t0
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        rows = hi - lo
        _gather(x, y, ids, sw, order, lo, hi, x_scale, xb, yb, idsb, swb)
        ids_b = idsb[:rows] if ids.size > 0 else ids
        sw_b = swb[:rows] if sw.size > 0 else sw
        scale = scale_full if rows == batch else scale_last
        if by_weight:
            count = np.float64(pairwise_sum(swb, 0, rows))
            scale = 1.0 / count if count != 0 else 0.0
        fold = hyper[0] if kind == EPOCH_SGD else 0.0
        loss, h = gemm_step(gemm, xb[:rows], yb[:rows], ids_b, sw_b, params, grads, sizes,
                            w_at, b_at, has_bias, code, scale, work, fold)
        total += loss
        hits += h
        t += 1
        if kind == EPOCH_SGD_STATE:
            _sgd(params, grads, m, cast(hyper[0]), cast(hyper[1]), flags[0] != 0,
                 cast(hyper[2]), flags[1] != 0)
        elif kind == EPOCH_ADAM:
            ft = np.float64(t)
            _adam(params, grads, m, v, cast(hyper[0]), cast(hyper[1]), cast(hyper[2]),
                  cast(1.0 - hyper[1]), cast(1.0 - hyper[2]), cast(hyper[3]), cast(hyper[4]),
                  flags[0] != 0, cast(1.0 - hyper[1] ** ft), cast(1.0 - hyper[2] ** ft))
        elif kind == EPOCH_SCALED_SQ:
            _scaled_sq(params, grads, m, cast(hyper[0]), cast(hyper[1]), cast(hyper[2]),
                       cast(hyper[3]), cast(hyper[4]))
    return total, hits
