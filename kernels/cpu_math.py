"""The maths every compiled CPU loop shares, written once, and the fused
passes built on it.

``act(v, code)`` and ``act_grad(g, a, code)`` are the activations and their
derivatives (from the layer's output ``a``, as the reference computes them),
``softmax_xent`` the fused softmax + cross-entropy over rows. Each loop over
a layer is written once, inlined (by Numba) into one branch per constant
activation code, where LLVM inlines ``act`` and folds it to that
activation's maths, so each branch vectorises. (Inlining ``act`` itself at
Numba's level trips its SSA checks with warnings, and gains nothing.) The clamps
are per dtype and equal to the reference's (``reference._sigmoid``): the
sigmoid's argument is floored at -88 in float32 and -708 in float64, where
``exp`` of its negation is still finite.

``jit`` compiles with an on-disk cache when a cache location is writable
(``NUMBA_CACHE_DIR`` is honoured) and without one otherwise (numba issue
4908), instead of failing at import. Numba keys a cached function on its
own file: after editing only this module (or ``vexp.py`` or ``blas.py``),
clear ``NUMBA_CACHE_DIR`` or the callers keep their old machine code.
"""

import math

import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from .vexp import fast_exp

#: activation name -> the code the compiled loops take
CODES = {"sigmoid": 0, "relu": 1, "tanh": 2, "identity": 3}
SIGMOID, RELU, TANH, IDENTITY = 0, 1, 2, 3

# LLVM may reorder sums and contract to FMA, but not assume away NaN or inf.
FAST = {"reassoc", "contract", "nsz", "arcp"}

#: the sigmoid's floor per dtype: exp(-floor) is finite there
SIGMOID_FLOOR = {"float32": -88.0, "float64": -708.0}


def jit(**options):
    """``numba.njit`` with the cache, error model and options every kernel uses."""
    def wrap(f):
        try:
            return numba.njit(cache=True, error_model="numpy", **options)(f)
        except RuntimeError:       # "no locator available": no writable cache directory
            return numba.njit(cache=False, error_model="numpy", **options)(f)
    return wrap


def _consts(v):
    """(dtype constructor, sigmoid floor) for a float scalar type."""
    if v == types.float32:
        return np.float32, np.float32(SIGMOID_FLOOR["float32"])
    return np.float64, np.float64(SIGMOID_FLOOR["float64"])


# --- one scalar definition per activation and derivative --------------------------

def act(v, code):
    """f(v) for the activation ``code``, in v's float type. The maths is the
    overload below; a call from Python runs that compiled code too."""
    return _act_from_python(v, code)


@overload(act)
def _act(v, code):
    f, floor = _consts(v)
    one, zero = f(1), f(0)

    def impl(v, code):
        if code == SIGMOID:
            r = one / (one + fast_exp(-max(v, floor)))
        elif code == RELU:
            r = max(v, zero)
        elif code == TANH:
            r = math.tanh(v)
        else:
            r = v
        return r
    return impl


def act_grad(g, a, code):
    """g * f'(z), written from the output a = f(z). The maths is the overload
    below; a call from Python runs that compiled code too."""
    return _act_grad_from_python(g, a, code)


@overload(act_grad)
def _act_grad(g, a, code):
    f, _ = _consts(g)
    one, zero = f(1), f(0)

    def impl(g, a, code):
        if code == SIGMOID:
            r = g * (a * (one - a))
        elif code == RELU:
            r = g if a > zero else zero
        elif code == TANH:
            r = g * (one - a * a)
        else:
            r = g
        return r
    return impl


@numba.njit
def _act_from_python(v, code):
    return act(v, code)


@numba.njit
def _act_grad_from_python(g, a, code):
    return act_grad(g, a, code)


# --- fused passes -------------------------------------------------------------------

@numba.njit(inline="always")
def _bias_act_loop(zz, b, code):
    for i in range(zz.shape[0]):
        for j in range(zz.shape[1]):
            zz[i, j] = act(zz[i, j] + b[j], code)


@jit(fastmath=FAST)
def bias_act_rows(z, b, code):
    """z <- f(z + b) over the rows of the flat (n, b.size) block ``z``, in one
    pass (one loop per activation, each with its maths folded in)."""
    zz = z.reshape(z.size // b.size, b.size)
    if code == SIGMOID:
        _bias_act_loop(zz, b, SIGMOID)
    elif code == RELU:
        _bias_act_loop(zz, b, RELU)
    elif code == TANH:
        _bias_act_loop(zz, b, TANH)
    else:
        _bias_act_loop(zz, b, IDENTITY)


@numba.njit(inline="always")
def _act_grad_loop(dd, aa, code, has_bias, step, gb):
    for i in range(dd.shape[0]):
        for j in range(dd.shape[1]):
            g = act_grad(dd[i, j], aa[i, j], code)
            dd[i, j] = g
            if has_bias:
                gb[j] += step * g


@jit(fastmath=FAST)
def act_grad_rows(da, a, m, code, has_bias, step, accumulate, gb):
    """da <- da * f'(a) over the flat (n, m) blocks and, with ``has_bias``, in
    the same pass, ``step`` times the column sums added to ``gb`` (zeroed
    first unless ``accumulate``)."""
    if has_bias and not accumulate:
        gb[:] = 0
    dd, aa = da.reshape(da.size // m, m), a.reshape(a.size // m, m)
    if code == SIGMOID:
        _act_grad_loop(dd, aa, SIGMOID, has_bias, step, gb)
    elif code == RELU:
        _act_grad_loop(dd, aa, RELU, has_bias, step, gb)
    elif code == TANH:
        _act_grad_loop(dd, aa, TANH, has_bias, step, gb)
    else:
        _act_grad_loop(dd, aa, IDENTITY, has_bias, step, gb)


@jit(fastmath=FAST)
def colsum_add(d, step, gb):
    """gb += step * (column sums of the flat (n, gb.size) block ``d``)."""
    m = gb.size
    dd = d.reshape(d.size // m, m)
    for i in range(dd.shape[0]):
        for j in range(m):
            gb[j] += step * dd[i, j]


@jit(fastmath=FAST)
def softmax_xent(z, y, ids, w, d, scale, grad):
    """Softmax + cross-entropy of the logits ``z`` (n, k) against dense
    targets ``y`` (n, k): ``(loss sum, hits)``, hits counting rows whose
    argmax equals ``ids`` (0 when ``ids`` is empty). Row s counts ``w[s]``
    times, in the loss, the hits and the gradient (once when ``w`` is
    empty). With ``grad``, (softmax(z) - y) * scale * w goes to ``d`` (n, k),
    which may be ``z`` itself. One exp per logit (vectorised for float32);
    log-sum-exp stable."""
    n, k = z.shape
    # below float32's normal range fast_exp clamps (to 1.2e-38): count such terms as 0,
    # as NumPy's exp does; float64's exp underflows by itself
    one, tail = z.dtype.type(1), z.dtype.type(-87.3 if z.itemsize == 4 else -1e308)
    total, hits = 0.0, 0.0
    for s in range(n):
        zs, ys, ds = z[s], y[s], d[s]
        ws = w[s] if w.size > 0 else one
        best = 0
        for j in range(1, k):
            if zs[j] > zs[best]:
                best = j
        if ids.size > 0 and best == ids[s]:
            hits += ws
        top = zs[best]
        dot, ysum = 0.0, 0.0
        for j in range(k):                 # before d is written: d may be z
            dot += ys[j] * (zs[j] - top)
            ysum += ys[j]
        acc = one - one
        for j in range(k):
            v = zs[j] - top
            e = fast_exp(v) if v > tail else one - one
            acc += e
            if grad:
                ds[j] = e
        total += ws * (ysum * math.log(acc) - dot)
        if grad:
            inv, step = one / acc, scale * ws
            for j in range(k):
                ds[j] = (ds[j] * inv - ys[j]) * step
    return total, hits


# --- the scratch of the whole-step kernels ---------------------------------------------

@jit()
def scratch_layout(sizes, n):
    """Offsets into the scratch of a batch of ``n``: a zero bias as wide as
    the widest layer (for models without biases; at the front, so that it
    stays put whatever the batch), each layer's (n, fan_out) output, two
    delta blocks of (n, widest); and the scratch's total length."""
    n_layers = sizes.size - 1
    widest = sizes[1:].max()
    o_at = np.empty(n_layers, np.int64)
    at = widest
    for l in range(n_layers):
        o_at[l] = at
        at += n * sizes[l + 1]
    return o_at, at, at + n * widest, 0, at + 2 * n * widest
