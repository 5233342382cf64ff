"""Numba-jitted fused CPU kernels: the reference op table, with the passes
that win by measurement fused into one loop each.

``CpuOps`` subclasses ``ReferenceOps``: an op it does not override stays on
the reference path. The sigmoid forward keeps NumPy's ``exp``, which NumPy
vectorises and Numba's pip build does not, between two fused passes. Each kernel here has that reference twin,
and the tests hold them equal. GEMMs stay in NumPy's BLAS.

Compiled code is cached on disk when a cache location is writable
(``NUMBA_CACHE_DIR`` is honoured); otherwise the kernels compile per process
rather than fail to import (numba issue 4908).
"""

import math

import numba
import numpy as np

from .blas import GEMM, NO_TRANS, TRANS, dgemm_at, sgemm_at
from .reference import ReferenceOps
from .vexp import fast_exp


# LLVM may reorder sums and contract to FMA, but not assume away NaN or inf.
_FAST = {"reassoc", "contract", "nsz", "arcp"}


def _jit(**options):
    def wrap(f):
        try:
            return numba.njit(cache=True, error_model="numpy", **options)(f)
        except RuntimeError:       # "no locator available": no writable cache directory
            return numba.njit(cache=False, error_model="numpy", **options)(f)
    return wrap


# --- layers ---------------------------------------------------------------------

# Constants are made in the array's dtype (``z.dtype.type(1)``): a bare ``1``
# or ``88.0`` would promote float32 arithmetic to float64, at half the SIMD width.

@_jit()
def _bias_neg_clamp(z, b):
    # z <- min(-(z + b), 88): the argument of exp in sigmoid = 1 / (1 + exp(-v)),
    # floored so that exp stays finite (sigmoid is below float32's normal range there).
    n, m = z.shape
    top = z.dtype.type(88)
    for i in range(n):
        for j in range(m):
            z[i, j] = min(-(z[i, j] + b[j]), top)


@_jit()
def _one_over_one_plus(z):
    n, m = z.shape
    one = z.dtype.type(1)
    for i in range(n):
        for j in range(m):
            z[i, j] = one / (one + z[i, j])


# --- output: softmax + cross-entropy in one pass per row ------------------------

@_jit()
def _softmax_xent(z, y, scale, grad):
    """Sum of -y log softmax(z) over rows; with ``grad``, z <- (P - Y) * scale."""
    n, k = z.shape
    total = 0.0
    for i in range(n):
        top = z[i, 0]
        for j in range(1, k):
            top = max(top, z[i, j])
        s = 0.0
        dot = 0.0
        ysum = 0.0
        for j in range(k):
            v = z[i, j] - top
            dot += y[i, j] * v
            ysum += y[i, j]
            e = math.exp(v)
            s += e
            if grad:
                z[i, j] = e
        total += ysum * math.log(s) - dot
        if grad:
            inv = 1.0 / s
            for j in range(k):
                z[i, j] = (z[i, j] * inv - y[i, j]) * scale
    return total


# --- optimizer updates over one flat buffer -------------------------------------

@_jit()
def _sgd(p, g, v, lr, momentum, nesterov, weight_decay, has_v):
    for i in range(p.size):
        gi = g[i] + weight_decay * p[i]
        if has_v:
            vi = momentum * v[i] + gi
            v[i] = vi
            gi = gi + momentum * vi if nesterov else vi
        p[i] -= lr * gi


@_jit()
def _adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, bc1, bc2):
    one = p.dtype.type(1)
    step = lr / bc1
    inv_bc2 = one / bc2
    decay = one - lr * weight_decay
    for i in range(p.size):
        gi = g[i]
        if decoupled:
            p[i] *= decay
        else:
            gi += weight_decay * p[i]
        mi = beta1 * m[i] + (one - beta1) * gi
        vi = beta2 * v[i] + (one - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step * mi / (math.sqrt(vi * inv_bc2) + eps)


# --- a whole forward + backward for small batches: no Python per layer ------------

_ACT_CODES = {"sigmoid": 0, "relu": 1, "tanh": 2, "identity": 3}
_NO_IDS = np.empty(0, np.int64)
_GEMM = np.array(GEMM or (), np.int64)         # sgemm, dgemm addresses; empty: no BLAS
_WORK_KEEP = 8                                  # scratch blocks kept, one per batch shape,
_WORK_KEEP_SIZE = 1 << 22                       # of up to this many elements (16 MB float32)


@_jit()
def _nonzero(a, idx):
    """The positions of ``a``'s non-zero entries into ``idx``; returns their count."""
    cnt = 0
    for i in range(a.size):
        if a[i] != 0:
            idx[cnt] = i
            cnt += 1
    return cnt


@_jit(fastmath=_FAST)
def _gemv_add(a, idx, w, fo, row):
    """row[:fo] += a @ W over the non-zero entries of ``a`` (W the (a.size, fo)
    row-major block ``w``); most MNIST pixels and many relu outputs are 0.

    Four rows of W per pass over ``row``: one row at a time is bound by the
    load and store of ``row`` (9.1 vs 4.2 us for 784x128 here). Slices, not
    flat indices: Numba's negative-index wraparound on ``w[k + j]`` stops
    LLVM from vectorising the loop (37 us).
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


@_jit(fastmath=_FAST)
def _outer_add(a, idx, step, dz, g):
    """g += step * outer(a, dz), g being the (a.size, dz.size) row-major block,
    skipping the rows where ``a`` is 0 when there are any (the gathered loop
    is ~2 us slower than the plain one on a dense 784x128 block)."""
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


@_jit(fastmath=_FAST)
def _act_in_place(row, act):
    """Activation ``act`` (an _ACT_CODES value) of a 1-D block, in place; one
    loop per activation, so that each vectorises."""
    one, zero, low = row.dtype.type(1), row.dtype.type(0), row.dtype.type(-88)
    if act == 0:
        for j in range(row.size):
            row[j] = one / (one + fast_exp(-max(row[j], low)))
    elif act == 1:
        for j in range(row.size):
            row[j] = max(row[j], zero)
    elif act == 2:
        for j in range(row.size):
            row[j] = math.tanh(row[j])


@_jit(fastmath=_FAST)
def _bias_act_rows(z, b, act):
    """z <- f(z + b) for the rows of the flat (n, b.size) block ``z``, in one
    pass. 2-D loops, not a slice per row: a 128-wide row slice per iteration
    cost relu 43 vs 25 us on 4096x128."""
    m = b.size
    zz = z.reshape(z.size // m, m)
    one, zero, low = z.dtype.type(1), z.dtype.type(0), z.dtype.type(-88)
    if act == 0:
        for i in range(zz.shape[0]):
            for j in range(m):
                zz[i, j] = one / (one + fast_exp(-max(zz[i, j] + b[j], low)))
    elif act == 1:
        for i in range(zz.shape[0]):
            for j in range(m):
                zz[i, j] = max(zz[i, j] + b[j], zero)
    elif act == 2:
        for i in range(zz.shape[0]):
            for j in range(m):
                zz[i, j] = math.tanh(zz[i, j] + b[j])
    else:
        for i in range(zz.shape[0]):
            for j in range(m):
                zz[i, j] += b[j]


@_jit(fastmath=_FAST)
def _colsum_add(d, step, gb):
    """gb += step * (column sums of the flat (n, gb.size) block ``d``)."""
    m = gb.size
    dd = d.reshape(d.size // m, m)
    for i in range(dd.shape[0]):
        for j in range(m):
            gb[j] += step * dd[i, j]


@_jit(fastmath=_FAST)
def _act_grad_rows(da, a, act, has_bias, step, accumulate, gb):
    """da *= f'(a) over the flat (n, m) blocks and, with ``has_bias``, in the
    same pass, the bias gradient step * colsum(da) added to ``gb`` (zeroed
    first unless ``accumulate``)."""
    m = gb.size if has_bias else da.size
    if has_bias and not accumulate:
        gb[:] = 0
    one, zero = da.dtype.type(1), da.dtype.type(0)
    dd, aa = da.reshape(da.size // m, m), a.reshape(a.size // m, m)
    for i in range(dd.shape[0]):
        for j in range(m):
            g = dd[i, j]
            if act == 0:
                g *= aa[i, j] * (one - aa[i, j])
            elif act == 1:
                g = g if aa[i, j] > 0 else zero
            elif act == 2:
                g *= one - aa[i, j] * aa[i, j]
            dd[i, j] = g
            if has_bias:
                gb[j] += step * g


@_jit()
def _layout(sizes, has_bias, n):
    """Offsets of W_l and b_l in the flat parameter buffer, of each layer's
    (n, fan_out) output in ``work``, and of the two delta blocks after them."""
    n_layers = sizes.size - 1
    w_at = np.empty(n_layers, np.int64)
    b_at = np.empty(n_layers, np.int64)
    o_at = np.empty(n_layers, np.int64)
    at, out, widest = 0, 0, 0
    for l in range(n_layers):
        w_at[l] = at
        at += sizes[l] * sizes[l + 1]
        b_at[l] = at
        if has_bias:
            at += sizes[l + 1]
        o_at[l] = out
        out += n * sizes[l + 1]
        widest = max(widest, sizes[l + 1])
    return w_at, b_at, o_at, out, out + n * widest


@_jit(fastmath=_FAST)
def _softmax_delta(work, z_at, d_at, y, ids, scale):
    """Softmax + cross-entropy of the (n, k) logits at ``work[z_at:]``: the
    loss sum and hits (argmax == ids, when ids are given); (P - Y) * scale
    into ``work[d_at:]``. One (vectorised, for float32) exp per logit."""
    n, k = y.shape
    one = work.dtype.type(1)
    total, hits = 0.0, 0
    for s in range(n):
        z = work[z_at + s * k:z_at + (s + 1) * k]
        d = work[d_at + s * k:d_at + (s + 1) * k]
        t = y[s]
        best = 0
        for j in range(1, k):
            if z[j] > z[best]:
                best = j
        if ids.size > 0 and best == ids[s]:
            hits += 1
        top = z[best]
        acc = one - one
        for j in range(k):
            d[j] = fast_exp(z[j] - top)
            acc += d[j]
        dot, ysum = 0.0, 0.0
        for j in range(k):
            dot += t[j] * (z[j] - top)
            ysum += t[j]
        total += ysum * math.log(acc) - dot
        inv = one / acc
        for j in range(k):
            d[j] = (d[j] * inv - t[j]) * scale
    return total, hits


@_jit(fastmath=_FAST)
def _forward_backward(x, y, ids, params, grads, sizes, act, has_bias, loss_scale, work, lr):
    """Cross-entropy network: loss sum and hits; gradients into ``grads``, or,
    when ``sgd_lr`` > 0, a plain SGD step applied to ``params`` directly.

    ``params``/``grads`` are the flat [W0, b0, W1, b1, ...] buffers (W row-major
    (fan_in, fan_out)); ``work`` holds every layer's output and two delta rows
    per sample. The backward pass walks the rows of each W once: row i gives
    every sample's input gradient at i (from the weights as they were) and
    then takes its own update, so a weight is read once forward and read and
    written once backward.
    """
    n = x.shape[0]
    n_layers = sizes.size - 1
    zero, one = params.dtype.type(0), params.dtype.type(1)
    # The scalars come in as Python floats (converting them costs ~0.5 us per call).
    scale, sgd_lr = params.dtype.type(loss_scale), params.dtype.type(lr)
    w_at, b_at, o_at, d0, d1 = _layout(sizes, has_bias, n)
    idx = np.empty(sizes.max(), np.int64)
    # forward
    for l in range(n_layers):
        fi, fo = sizes[l], sizes[l + 1]
        w = params[w_at[l]:w_at[l] + fi * fo]
        for s in range(n):
            row = work[o_at[l] + s * fo:o_at[l] + (s + 1) * fo]
            for j in range(fo):
                row[j] = params[b_at[l] + j] if has_bias else zero
            if l == 0:
                _gemv_add(x[s], idx, w, fo, row)
            else:
                _gemv_add(work[o_at[l - 1] + s * fi:o_at[l - 1] + (s + 1) * fi], idx, w, fo, row)
            if l < n_layers - 1:
                _act_in_place(row, act)
    total, hits = _softmax_delta(work, o_at[n_layers - 1], d0, y, ids, scale)
    # backward, last layer first; deltas alternate between d0 and d1
    fused = sgd_lr > 0
    target = params if fused else grads
    step = -sgd_lr if fused else one
    cur, other = d0, d1
    for l in range(n_layers - 1, -1, -1):
        fi, fo = sizes[l], sizes[l + 1]
        w = params[w_at[l]:w_at[l] + fi * fo]
        g = target[w_at[l]:w_at[l] + fi * fo]
        if not fused:
            g[:] = 0
        if has_bias:
            gb = target[b_at[l]:b_at[l] + fo]
            if not fused:
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
                    a = work[o_at[l - 1] + s * fi + i]
                    if act == 0:
                        acc *= a * (one - a)
                    elif act == 1:
                        acc = acc if a > 0 else zero
                    elif act == 2:
                        acc *= one - a * a
                    work[other + s * fi + i] = acc
        for s in range(n):                       # W += step * A^T dZ
            dz = work[cur + s * fo:cur + (s + 1) * fo]
            if l == 0:
                _outer_add(x[s], idx, step, dz, g)
            else:
                _outer_add(work[o_at[l - 1] + s * fi:o_at[l - 1] + (s + 1) * fi], idx, step, dz, g)
        cur, other = other, cur
    return total, hits


# --- a whole step by NumPy's BLAS GEMMs, called from one kernel -----------------

@_jit()
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


@_jit(fastmath=_FAST)
def _gemm_step(gemm, x, y, ids, params, grads, sizes, act, has_bias, loss_scale, work, lr):
    """What ``_forward_backward`` does, for any batch: the products by BLAS
    GEMM and everything between them fused. With ``lr`` > 0 the weight
    gradient GEMM writes W - lr * A^T dZ straight into W (beta = 1), after
    that layer's input gradient has been taken."""
    n = x.shape[0]
    n_layers = sizes.size - 1
    one = params.dtype.type(1)
    scale, sgd_lr = params.dtype.type(loss_scale), params.dtype.type(lr)
    w_at, b_at, o_at, d0, d1 = _layout(sizes, has_bias, n)
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
        z = work[o_at[l]:o_at[l] + n * fo]
        code = act if l < n_layers - 1 else 3
        if has_bias:
            _bias_act_rows(z, params[b_at[l]:b_at[l] + fo], code)
        else:
            _act_in_place(z, code)
    total, hits = _softmax_delta(work, o_at[n_layers - 1], d0, y, ids, scale)
    fused = sgd_lr > 0
    target = params if fused else grads
    step = -sgd_lr if fused else one
    cur, other = d0, d1
    for l in range(n_layers - 1, -1, -1):        # backward, last layer first
        fi, fo = sizes[l], sizes[l + 1]
        if has_bias and l == n_layers - 1:       # the other layers' come with f'(A) below
            gb = target[b_at[l]:b_at[l] + fo]
            if not fused:
                gb[:] = 0
            _colsum_add(work[cur:cur + n * fo], step, gb)
        if l > 0:                                # dA = dZ W^T, from W as it was; then f'(A)
            _gemm(gemm, nt, tr, n, fi, fo, 1.0, work, cur, fo, params, w_at[l], fo, 0.0, work,
                  other, fi)
            _act_grad_rows(work[other:other + n * fi], work[o_at[l - 1]:o_at[l - 1] + n * fi],
                           act, has_bias, step, fused, target[b_at[l - 1]:b_at[l - 1] + fi])
        beta = 1.0 if fused else 0.0             # W (+)= step * A^T dZ
        if l == 0:
            _gemm(gemm, tr, nt, fi, fo, n, np.float64(step), xs, at0, fi, work, cur, fo, beta,
                  target, w_at[l], fo)
        else:
            _gemm(gemm, tr, nt, fi, fo, n, np.float64(step), work, o_at[l - 1], fi, work, cur,
                  fo, beta, target, w_at[l], fo)
        cur, other = other, cur
    return total, hits


@_jit()
def _step(gemm, x, y, ids, params, grads, sizes, act, has_bias, scale, work, sgd_lr):
    """One forward + backward (+ plain SGD): by BLAS, except for a single
    mostly-zero sample, where the row loops, which skip zero inputs, win
    (MNIST, 19% non-zero: 10.6 vs 15.6 us per sample; dense: 19.1 vs 16.7),
    and wherever there is no BLAS (``gemm`` empty; callers pass one sample)."""
    if gemm.size == 0:
        return _forward_backward(x, y, ids, params, grads, sizes, act, has_bias, scale, work,
                                 sgd_lr)
    if x.shape[0] == 1:
        nnz = 0
        for i in range(x.shape[1]):
            if x[0, i] != 0:
                nnz += 1
        if 4 * nnz < 3 * x.shape[1]:
            return _forward_backward(x, y, ids, params, grads, sizes, act, has_bias, scale,
                                     work, sgd_lr)
    return _gemm_step(gemm, x, y, ids, params, grads, sizes, act, has_bias, scale, work, sgd_lr)


@_jit()
def _sgd_epoch(gemm, x, y, ids, order, params, grads, sizes, act, has_bias, scale, work,
               sgd_lr):
    """Per-sample plain SGD over the rows of ``x`` in the order ``order``
    gives (row order when it is empty): one compiled call for a whole epoch at
    batch size 1, with no shuffled copy of the data. Returns the loss sum and
    hits."""
    total, hits = 0.0, 0
    for s in range(x.shape[0]):
        r = order[s] if order.size > 0 else s
        t = ids[r:r + 1] if ids.size > 0 else ids
        loss, h = _step(gemm, x[r:r + 1], y[r:r + 1], t, params, grads, sizes, act, has_bias,
                        scale, work, sgd_lr)
        total += loss
        hits += h
    return total, hits


class CpuOps(ReferenceOps):
    """The op table with Numba-fused kernels for NumPy arrays."""

    name = "cpu"

    def __init__(self):
        super().__init__(np)
        # Scratch per (layer sizes, batch, dtype), shared by every model of that
        # shape: it only holds temporaries within one call, but two threads
        # training same-shaped models at batch 1 at once would share it.
        self._work = {}

    def bias_act(self, activation, z, b):
        if b is None or activation not in ("relu", "sigmoid") or not z.flags.c_contiguous:
            return super().bias_act(activation, z, b)
        if activation == "sigmoid" and z.dtype != np.float32:
            # float64: NumPy's SIMD exp between two fused Numba passes, 3 passes not 6
            _bias_neg_clamp(z, b)
            np.exp(z, out=z)
            _one_over_one_plus(z)
        else:                                   # one pass; float32 sigmoid by the vectorised exp
            _bias_act_rows(z.reshape(-1), b, _ACT_CODES[activation])
        return z

    def act_grad(self, activation, da, a, db):
        if (activation not in ("relu", "sigmoid", "tanh")
                or not (da.flags.c_contiguous and a.flags.c_contiguous)):
            return super().act_grad(activation, da, a, db)
        _act_grad_rows(da.reshape(-1), a.reshape(-1), _ACT_CODES[activation], db is not None,
                       da.dtype.type(1), False, da[0] if db is None else db)
        return da

    def bias_grad(self, dz, db):
        if not dz.flags.c_contiguous:
            return super().bias_grad(dz, db)
        db[:] = 0
        _colsum_add(dz.reshape(-1), dz.dtype.type(1), db)

    def loss(self, loss, z, y, scale=None):
        if loss != "cross_entropy":
            return super().loss(loss, z, y, scale)
        t = z.dtype.type
        return _softmax_xent(z, y, t(0 if scale is None else scale), scale is not None)

    def _args(self, sizes, activation, x, y, params, batch):
        """(sizes array, activation code, scratch) for the compiled steps, or
        None when they do not cover these arrays."""
        if (activation not in _ACT_CODES or not (x.dtype == params.dtype == y.dtype)
                or not (x.flags.c_contiguous and y.flags.c_contiguous)):
            return None
        key = (tuple(sizes), batch, x.dtype)
        found = self._work.get(key)
        if found is None:
            widest = max(sizes[1:])
            found = (np.asarray(sizes, np.int64),
                     np.empty(batch * (sum(sizes[1:]) + 2 * widest), x.dtype))
            if found[1].size <= _WORK_KEEP_SIZE:    # a full-batch block is not kept alive
                while len(self._work) >= _WORK_KEEP:    # e.g. an epoch's short last batch
                    self._work.pop(next(iter(self._work), None), None)
                self._work[key] = found
        return found[0], _ACT_CODES[activation], found[1]

    def sgd_epoch(self, sizes, activation, bias, x, y, ids, params, grads, scale, sgd_lr,
                  order=None):
        """Plain SGD at batch size 1 over all rows of ``x`` (in the order of
        the index array ``order``, when given) in one compiled call:
        ``(loss sum, hits)``, or None when this case is not covered."""
        args = self._args(sizes, activation, x, y, params, 1)
        if args is None:
            return None
        sizes_arr, act, work = args
        total, hits = _sgd_epoch(_GEMM, x, y, _NO_IDS if ids is None else ids,
                                 _NO_IDS if order is None else order.astype(np.int64, copy=False),
                                 params, grads, sizes_arr, act, bias, float(scale), work,
                                 float(sgd_lr))
        return total, (hits if ids is not None else None)

    def forward_backward(self, sizes, activation, bias, x, y, ids, params, grads, scale,
                         sgd_lr=0.0):
        """Loss sum and hits of a cross-entropy network on batch ``x``, with
        every gradient written to ``grads`` (or, with ``sgd_lr`` > 0, a plain
        SGD step applied to ``params`` instead), in one compiled call: loops
        at batch 1, NumPy's BLAS GEMMs between fused passes above.

        ``ids`` (class ids for the hit count) may be None. Returns None when
        this case is not covered, and the caller runs the layer-by-layer path.
        """
        n = x.shape[0]
        if n > 1 and not _GEMM.size:                # the row loops lose to the layer path there
            return None
        args = self._args(sizes, activation, x, y, params, n)
        if args is None:
            return None
        sizes_arr, act, work = args
        ids = _NO_IDS if ids is None else ids
        # Batches go straight to the GEMM step: routing them through _step would
        # make a first fit compile the batch-1 loops too (~3 s with a cold cache).
        step = _step if n == 1 else _gemm_step
        total, hits = step(_GEMM, x, y, ids, params, grads, sizes_arr, act, bias, float(scale),
                           work, float(sgd_lr))
        return total, (hits if ids.size else None)

    def sgd(self, p, g, v, lr, momentum, nesterov, weight_decay):
        flat = _flat(p, g, v)
        if flat is None:
            return super().sgd(p, g, v, lr, momentum, nesterov, weight_decay)
        p, g, v = flat
        t = p.dtype.type
        _sgd(p, g, p if v is None else v, t(lr), t(momentum), nesterov, t(weight_decay),
             v is not None)

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t):
        flat = _flat(p, g, m, v)
        if flat is None:
            return super().adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t)
        c = p.dtype.type
        _adam(*flat, c(lr), c(beta1), c(beta2), c(eps), c(weight_decay), decoupled,
              c(1 - beta1 ** t), c(1 - beta2 ** t))


def _flat(*arrays):
    """1-D views of same-shape C-contiguous arrays (None stays None), or None
    when a view is impossible and the reference op must run instead."""
    shape = arrays[0].shape
    for a in arrays:
        if a is not None and (a.shape != shape or not a.flags.c_contiguous):
            return None
    return tuple(None if a is None else a.reshape(-1) for a in arrays)
