"""The CPU op table: the reference ops, with the passes that win by
measurement fused into one Numba loop each, and the optimizer updates.

``CpuOps`` subclasses ``ReferenceOps``: an op it does not override, or a
case it hands back with ``super()``, stays on the reference path. The maths
is the specs' compiled implementations (``activations.py``, ``losses.py``,
``updates.py``); which forward passes to fuse is the activation spec's
``cpu_fused`` (the tanh forward and the float64 sigmoid forward stay on the
reference path on purpose: NumPy's SIMD ``tanh`` and ``exp`` beat Numba's
scalar libm calls), and a loss without a compiled implementation stays
there too. Every kernel here has its
reference twin, and the tests hold them equal. GEMMs stay in NumPy's BLAS.
The whole-step kernels are elsewhere: ``cpu_gemm_step.py`` and
``cpu_row_step.py``, driven by the step engines.
"""

import numpy as np

from . import activations, cpu_parallel, losses, updates
from .cpu_math import LOSS_KERNELS, act_grad_rows, bias_act_rows, colsum_add, jit
from .reference import ReferenceOps

_NO_IDS = np.empty(0, np.int64)
_NO_W = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0)}
_sgd = jit()(updates.SGD.cpu)
_adam = jit()(updates.ADAM.cpu)
_scaled_sq = jit()(updates.RMSPROP.cpu)


class CpuOps(ReferenceOps):
    """The op table with Numba-fused kernels for NumPy arrays. Stateless:
    one instance serves every model on the CPU."""

    name = "cpu"

    def __init__(self):
        super().__init__(np)

    def take_rows(self, a, idx, out):
        if _gatherable(a, out) and cpu_parallel.gathers_threaded(out.shape[0]):
            with cpu_parallel.launching():
                cpu_parallel.gather(a, idx.astype(np.int64, copy=False), out.dtype.type(1), out)
            return out
        # 'clip' writes in place; the default 'raise' gathers into a temporary first
        return np.take(a, idx, axis=0, out=out, mode="clip")

    def gather_scaled(self, a, idx, out, scale):
        # one pass from the integer rows to floats, no integer temporary
        if not _gatherable(a, out):
            return super().gather_scaled(a, idx, out, scale)
        idx, scale = idx.astype(np.int64, copy=False), out.dtype.type(scale)
        if cpu_parallel.gathers_threaded(out.shape[0]):
            with cpu_parallel.launching():
                cpu_parallel.gather(a, idx, scale, out)
        else:
            cpu_parallel.gather_rows(a, idx, scale, out, 0, idx.shape[0])
        return out

    def bias_act(self, activation, z, b):
        spec = activations.get(activation)
        if z.dtype.name not in spec.cpu_fused or not z.flags.c_contiguous:
            return super().bias_act(spec, z, b)
        if b is None:
            b = np.zeros(z.shape[1], z.dtype)
        bias_act_rows(z.reshape(-1), b, spec.code)
        return z

    def act_grad(self, activation, da, a, db):
        if not (da.flags.c_contiguous and a.flags.c_contiguous):
            return super().act_grad(activation, da, a, db)
        act_grad_rows(da.reshape(-1), a.reshape(-1), da.shape[1],
                      activations.get(activation).code,
                      db is not None, da.dtype.type(1), False, da[0] if db is None else db)
        return da

    def bias_grad(self, dz, db):
        if not dz.flags.c_contiguous:
            return super().bias_grad(dz, db)
        db[:] = 0
        colsum_add(dz.reshape(-1), dz.dtype.type(1), db)

    def loss(self, loss, z, y, scale=None, weights=None):
        kernel = LOSS_KERNELS.get(losses.get(loss).name)
        if kernel is None or not (z.flags.c_contiguous and y.flags.c_contiguous):
            return super().loss(loss, z, y, scale, weights)
        cast = z.dtype.type
        w = _NO_W[z.dtype] if weights is None else weights.astype(z.dtype, copy=False)
        total, _ = kernel(z, y.astype(z.dtype, copy=False), _NO_IDS, w, z,
                                cast(0 if scale is None else scale), scale is not None)
        return total

    def sgd(self, p, g, v, lr, momentum, nesterov, weight_decay):
        flat = _flat(p, g, v)
        if flat is None:
            return super().sgd(p, g, v, lr, momentum, nesterov, weight_decay)
        p, g, v = flat
        cast = p.dtype.type
        _sgd(p, g, p if v is None else v, cast(lr), cast(momentum), nesterov, cast(weight_decay),
             v is not None)

    def adagrad(self, p, g, s, lr, eps, weight_decay):
        flat = _flat(p, g, s)
        if flat is None:
            return super().adagrad(p, g, s, lr, eps, weight_decay)
        cast = p.dtype.type
        _scaled_sq(*flat, cast(lr), cast(1), cast(1), cast(eps), cast(weight_decay))

    def rmsprop(self, p, g, s, lr, alpha, eps, weight_decay):
        flat = _flat(p, g, s)
        if flat is None:
            return super().rmsprop(p, g, s, lr, alpha, eps, weight_decay)
        cast = p.dtype.type
        _scaled_sq(*flat, cast(lr), cast(alpha), cast(1 - alpha), cast(eps), cast(weight_decay))

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t):
        flat = _flat(p, g, m, v)
        if flat is None:
            return super().adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t)
        cast = p.dtype.type
        _adam(*flat, cast(lr), cast(beta1), cast(beta2), cast(1 - beta1), cast(1 - beta2),
              cast(eps), cast(weight_decay), decoupled, cast(1 - beta1 ** t), cast(1 - beta2 ** t))


def _gatherable(a, out):
    return a.ndim == 2 and a.flags.c_contiguous and out.flags.c_contiguous


def _flat(*arrays):
    """1-D views of same-shape C-contiguous arrays (None stays None), or None
    when a view is impossible and the reference op must run instead."""
    shape = arrays[0].shape
    for a in arrays:
        if a is not None and (a.shape != shape or not a.flags.c_contiguous):
            return None
    return tuple(None if a is None else a.reshape(-1) for a in arrays)
