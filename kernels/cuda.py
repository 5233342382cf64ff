"""numba.cuda fused kernels on CuPy arrays: the reference op table with its
element and row passes fused, one launch each.

``CudaOps(xp)`` subclasses ``ReferenceOps``; the sigmoid / relu / tanh
forward with the bias add, the activation derivative with the bias-gradient
column sums, softmax + cross-entropy with its (P - Y) * scale gradient, and
the SGD and Adam updates are numba.cuda kernels. Kernels take CuPy arrays
without copies (``__cuda_array_interface__``) and launch on CuPy's current
stream. Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's
simulator on NumPy arrays, which is how CI tests them without a GPU.

All ``numba.cuda`` imports of the project live in this file.
"""

import math
import os

from numba import cuda

from . import activations, losses
from .activations import FLOOR
from .reference import ReferenceOps

_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
_THREADS = 256
# the activations these kernels implement, by the specs' codes (identity: the reference)
_ACT = {a.name: a.code for a in (activations.SIGMOID, activations.RELU, activations.TANH)}
_SIGMOID, _RELU, _TANH = (_ACT[n] for n in ("sigmoid", "relu", "tanh"))


def _sigs(template):
    return [template.format(t=t) for t in ("float32", "float64")]


@cuda.jit(_sigs("void({t}[:, ::1], {t}[::1], int32, {t})"))
def _bias_act(z, b, act, floor):
    k = cuda.grid(1)
    n, m = z.shape
    if k < n * m:
        i, j = k // m, k % m
        v = z[i, j] + b[j]
        if act == _SIGMOID:
            v = 1 / (1 + math.exp(-max(v, floor)))
        elif act == _RELU:
            v = max(v, 0)
        elif act == _TANH:
            v = math.tanh(v)
        z[i, j] = v


@cuda.jit(_sigs("void({t}[:, ::1], {t}[:, ::1], {t}[::1], int32, boolean)"))
def _act_grad_colsum(da, a, db, act, sums):
    # One thread per column walking down the rows: neighbouring threads read
    # neighbouring addresses, and the column sum needs no atomics.
    j = cuda.grid(1)
    n, m = da.shape
    if j < m:
        total = 0.0
        for i in range(n):
            g = da[i, j]
            av = a[i, j]
            if act == _SIGMOID:
                g *= av * (1 - av)
            elif act == _RELU:
                g = g if av > 0 else 0
            elif act == _TANH:
                g *= 1 - av * av
            da[i, j] = g
            total += g
        if sums:
            db[j] = total


@cuda.jit(_sigs("void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}, boolean)"))
def _softmax_xent(z, y, row_loss, scale, grad):
    i = cuda.grid(1)
    n, k = z.shape
    if i < n:
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
            s += math.exp(v)
        row_loss[i] = ysum * math.log(s) - dot
        if grad:
            for j in range(k):
                z[i, j] = (math.exp(z[i, j] - top) / s - y[i, j]) * scale


@cuda.jit(_sigs("void({t}[::1], {t}[::1], {t}[::1], {t}, {t}, boolean, {t}, boolean)"))
def _sgd(p, g, v, lr, momentum, nesterov, weight_decay, has_v):
    i = cuda.grid(1)
    if i < p.size:
        gi = g[i] + weight_decay * p[i]
        if has_v:
            vi = momentum * v[i] + gi
            v[i] = vi
            gi = gi + momentum * vi if nesterov else vi
        p[i] -= lr * gi


@cuda.jit(_sigs("void({t}[::1], {t}[::1], {t}[::1], {t}[::1], {t}, {t}, {t}, {t}, {t}, "
                "boolean, {t}, {t})"))
def _adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, bc1, bc2):
    i = cuda.grid(1)
    if i < p.size:
        gi = g[i]
        if decoupled:
            p[i] *= 1 - lr * weight_decay
        else:
            gi += weight_decay * p[i]
        mi = beta1 * m[i] + (1 - beta1) * gi
        vi = beta2 * v[i] + (1 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr / bc1 * mi / (math.sqrt(vi / bc2) + eps)


def _blocks(n):
    return max(1, (n + _THREADS - 1) // _THREADS)


class CudaOps(ReferenceOps):
    """The op table with numba.cuda kernels (CuPy arrays; NumPy ones in the simulator)."""

    name = "cuda"

    def _unused(self, dtype):
        # Stands in for an absent optional array. Never an alias of a real
        # argument: the simulator copies each argument in and back out.
        return self.xp.zeros(1, dtype=dtype)

    def _launch(self, kernel, n):
        if _SIM:                    # the simulator has no external streams
            return kernel[_blocks(n), _THREADS]
        stream = cuda.external_stream(self.xp.cuda.get_current_stream().ptr)
        return kernel[_blocks(n), _THREADS, stream]

    def bias_act(self, activation, z, b):
        spec = activations.get(activation)
        if spec.name not in _ACT or b is None:
            return super().bias_act(spec, z, b)
        self._launch(_bias_act, z.size)(z, b, spec.code, z.dtype.type(FLOOR[z.dtype.name]))
        return z

    def act_grad(self, activation, da, a, db):
        spec = activations.get(activation)
        if spec.name not in _ACT:
            return super().act_grad(spec, da, a, db)
        self._launch(_act_grad_colsum, da.shape[1])(
            da, a, self._unused(da.dtype) if db is None else db, spec.code, db is not None)
        return da

    def loss(self, loss, z, y, scale=None, weights=None):
        if losses.get(loss) is not losses.CROSS_ENTROPY or weights is not None:
            return super().loss(loss, z, y, scale, weights)
        row_loss = self.xp.empty(z.shape[0], dtype=z.dtype)
        t = z.dtype.type
        self._launch(_softmax_xent, z.shape[0])(z, y, row_loss, t(scale or 0), scale is not None)
        return row_loss.sum()

    def sgd(self, p, g, v, lr, momentum, nesterov, weight_decay):
        if p.ndim != 1:
            return super().sgd(p, g, v, lr, momentum, nesterov, weight_decay)
        t = p.dtype.type
        self._launch(_sgd, p.size)(p, g, self._unused(p.dtype) if v is None else v, t(lr),
                                   t(momentum), nesterov, t(weight_decay), v is not None)

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t):
        if p.ndim != 1:
            return super().adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t)
        c = p.dtype.type
        self._launch(_adam, p.size)(p, g, m, v, c(lr), c(beta1), c(beta2), c(eps),
                                    c(weight_decay), decoupled, c(1 - beta1 ** t),
                                    c(1 - beta2 ** t))
