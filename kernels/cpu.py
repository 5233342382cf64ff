"""Numba-jitted fused CPU kernels: the reference op table, with the passes
that win by measurement fused into one loop each.

``CpuOps`` subclasses ``ReferenceOps``: an op it does not override (the
sigmoid forward, whose ``exp`` NumPy vectorises and Numba's pip build does
not) stays on the reference path. Each kernel here has that reference twin,
and the tests hold them equal. GEMMs stay in NumPy's BLAS.

Compiled code is cached on disk when a cache location is writable
(``NUMBA_CACHE_DIR`` is honoured); otherwise the kernels compile per process
rather than fail to import (numba issue 4908).
"""

import math

import numba
import numpy as np

from .reference import ReferenceOps


def _jit(**options):
    def wrap(f):
        try:
            return numba.njit(cache=True, error_model="numpy", **options)(f)
        except RuntimeError:       # "no locator available": no writable cache directory
            return numba.njit(cache=False, error_model="numpy", **options)(f)
    return wrap


# --- layers ---------------------------------------------------------------------

@_jit()
def _bias_relu(z, b):
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = z[i, j] + b[j]
            z[i, j] = v if v > 0 else 0


@_jit()
def _grad_sigmoid(da, a, db, sums):
    n, m = da.shape
    if sums:
        db[:] = 0
    for i in range(n):
        for j in range(m):
            g = da[i, j] * a[i, j] * (1 - a[i, j])
            da[i, j] = g
            if sums:
                db[j] += g


@_jit()
def _grad_relu(da, a, db, sums):
    n, m = da.shape
    if sums:
        db[:] = 0
    for i in range(n):
        for j in range(m):
            g = da[i, j] if a[i, j] > 0 else 0
            da[i, j] = g
            if sums:
                db[j] += g


@_jit()
def _grad_tanh(da, a, db, sums):
    n, m = da.shape
    if sums:
        db[:] = 0
    for i in range(n):
        for j in range(m):
            g = da[i, j] * (1 - a[i, j] * a[i, j])
            da[i, j] = g
            if sums:
                db[j] += g


@_jit()
def _colsum(dz, db):
    n, m = dz.shape
    db[:] = 0
    for i in range(n):
        for j in range(m):
            db[j] += dz[i, j]


_GRADS = {"sigmoid": _grad_sigmoid, "relu": _grad_relu, "tanh": _grad_tanh}


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
    step = lr / bc1
    inv_bc2 = 1 / bc2
    for i in range(p.size):
        gi = g[i]
        if decoupled:
            p[i] *= 1 - lr * weight_decay
        else:
            gi += weight_decay * p[i]
        mi = beta1 * m[i] + (1 - beta1) * gi
        vi = beta2 * v[i] + (1 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step * mi / (math.sqrt(vi * inv_bc2) + eps)


class CpuOps(ReferenceOps):
    """The op table with Numba-fused kernels for NumPy arrays."""

    name = "cpu"

    def __init__(self):
        super().__init__(np)

    def bias_act(self, activation, z, b):
        if activation == "relu" and b is not None:
            _bias_relu(z, b)
            return z
        return super().bias_act(activation, z, b)

    def act_grad(self, activation, da, a, db):
        kernel = _GRADS.get(activation)
        if kernel is None:
            return super().act_grad(activation, da, a, db)
        kernel(da, a, da[0] if db is None else db, db is not None)
        return da

    def bias_grad(self, dz, db):
        _colsum(dz, db)

    def loss(self, loss, z, y, scale=None):
        if loss != "cross_entropy":
            return super().loss(loss, z, y, scale)
        t = z.dtype.type
        return _softmax_xent(z, y, t(0 if scale is None else scale), scale is not None)

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
