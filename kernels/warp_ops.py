"""The op table in NVIDIA Warp: one kernel source that Warp compiles for the
CPU (LLVM) or for CUDA (NVRTC), on NumPy or CuPy buffers, without a copy.

What each kernel computes is its spec's:

- an activation's forward pass and derivative are the spec's scalar maths
  (``Activation.device``: by default the same plain Python as
  ``Activation.cpu``), compiled by Warp as they are by Numba:
  :func:`device_func` hands Warp the same function with Warp's ``exp``,
  ``tanh``, ``log`` and ``max`` in place of the CPU ones. The constants come
  in typed, so float32 kernels do float32 arithmetic;
- the loss heads (softmax + cross-entropy, sigmoid + binary cross-entropy,
  MSE, L1) and the optimizer updates are Warp kernels here, twins of the
  specs' reference maths; each spec's ``device`` slot names its kernel
  (:data:`DEVICE`), which the op table launches; the tests hold every
  kernel equal to its reference twin on Warp's CPU device, in both dtypes,
  tails included.

Every kernel is instantiated for float32 and float64 when this module is
imported, so that Warp builds the module once (about 10 s the first time on
the CPU, then from Warp's kernel cache). ``kernels="warp"`` selects this table
(``MLP(kernels="warp")``); the layer engine then runs every op of a step in
Warp and only the products in ``xp.matmul``.

On CUDA the kernels run on CuPy's current stream (``cuda_stream`` of
``wp.Stream``), so they stay ordered with CuPy's own work. That path is
written but waits for a GPU to be measured; CI runs everything here on
Warp's CPU device. Importing this module imports ``warp``: only the backend
does, and only when asked for this table.
"""

import contextlib
import types
import typing

import numpy as np
import warp as wp

from . import activations, losses, updates
from .reference import ReferenceOps

Any = typing.Any
if wp.config.log_level == wp.LOG_INFO:   # Warp's default (a caller's own choice stays):
    wp.config.log_level = wp.LOG_WARNING  # no banner, no line per module load, in a fit

#: what the specs' scalar maths calls, as Warp builtins
_SCALAR = {"fast_exp": wp.exp, "max": wp.max, "min": wp.min,
           "math": types.SimpleNamespace(exp=wp.exp, log=wp.log, tanh=wp.tanh, sqrt=wp.sqrt)}


def device_func(fn):
    """``fn`` (a spec's scalar maths: plain Python over scalars) as a Warp
    function, generic over the float type: the same code with Warp's
    builtins for ``fast_exp``, ``math.*``, ``max`` and ``min``."""
    code = fn.__code__
    f = types.FunctionType(code, {**fn.__globals__, **_SCALAR}, fn.__name__, fn.__defaults__,
                           fn.__closure__)
    f.__annotations__ = {name: Any for name in code.co_varnames[:code.co_argcount]}
    f.__module__, f.__qualname__ = __name__, f"spec{fn.__name__}"
    return wp.func(f)


# --- activations: the specs' scalar maths, one switch over their codes -------------------

_ACTS = list(activations.ACTIVATIONS.values())
if len(_ACTS) != 4:
    raise ImportError(f"kernels/warp_ops.py: act and act_grad switch over 4 activations, the "
                      f"specs declare {[a.name for a in _ACTS]}: add the new ones")
_f0, _f1, _f2, _f3 = (device_func(a.device[0]) for a in _ACTS)
_g0, _g1, _g2, _g3 = (device_func(a.device[1]) for a in _ACTS)


@wp.func
def act(v: Any, code: int, floor: Any):
    """The activation ``code`` of ``v`` (the spec's forward maths)."""
    zero, one = type(v)(0.0), type(v)(1.0)
    if code == 0:
        return _f0(v, zero, one, floor)
    if code == 1:
        return _f1(v, zero, one, floor)
    if code == 2:
        return _f2(v, zero, one, floor)
    return _f3(v, zero, one, floor)


@wp.func
def act_grad(g: Any, a: Any, code: int):
    """``g * f'(z)`` from the output ``a = f(z)`` (the spec's derivative maths)."""
    zero, one = type(g)(0.0), type(g)(1.0)
    if code == 0:
        return _g0(g, a, zero, one)
    if code == 1:
        return _g1(g, a, zero, one)
    if code == 2:
        return _g2(g, a, zero, one)
    return _g3(g, a, zero, one)


@wp.kernel
def bias_act_kernel(z: wp.array2d(dtype=Any), b: wp.array(dtype=Any), has_b: int, code: int,
                    floor: Any):
    """z <- f(z + b), one element a thread; ``b`` unused unless ``has_b``."""
    i, j = wp.tid()
    v = z[i, j]
    if has_b != 0:
        v = v + b[j]
    z[i, j] = act(v, code, floor)


@wp.kernel
def act_grad_kernel(da: wp.array2d(dtype=Any), a: wp.array2d(dtype=Any), code: int):
    """da <- da * f'(z), from the layer's output ``a``."""
    i, j = wp.tid()
    da[i, j] = act_grad(da[i, j], a[i, j], code)


@wp.kernel
def colsum_kernel(d: wp.array2d(dtype=Any), out: wp.array(dtype=Any)):
    """out[j] = sum over the rows of d[:, j], in row order (deterministic)."""
    j = wp.tid()
    acc = d.dtype(0.0)
    for i in range(d.shape[0]):
        acc += d[i, j]
    out[j] = acc


# --- loss heads: per-row (softmax) or per-element terms, the gradient in place ----------

@wp.func
def poisson_term(v: Any, t: Any, rate: Any):
    """Half the Poisson deviance of rate ``rate`` = e^v at target ``t`` (as
    ``losses._poisson``): t log t - t - t v + rate, with 0 log 0 = 0."""
    tlogt = type(v)(0.0)
    if t > type(v)(0.0):
        tlogt = t * wp.log(t)
    return tlogt - t - t * v + rate


@wp.func
def log1p(x: Any):
    """log(1 + x), accurate for tiny x (Goldberg's trick; Warp has no log1p)."""
    u = type(x)(1.0) + x
    if u == type(x)(1.0):
        return x
    return wp.log(u) * x / (u - type(x)(1.0))


@wp.kernel
def cross_entropy_kernel(z: wp.array2d(dtype=Any), y: wp.array2d(dtype=Any),
                         w: wp.array(dtype=Any), has_w: int, scales: wp.array(dtype=Any),
                         grad: int, rows: wp.array(dtype=Any)):
    """Softmax + cross-entropy of row s: its (weighted) loss to ``rows[s]``;
    with ``grad``, (softmax(z) - y) * scale * w[s] over the row of ``z``,
    ``scale`` being ``scales[0]`` (on the device: a captured step reads the
    batch's own)."""
    s = wp.tid()
    k = z.shape[1]
    scale = scales[0]
    one = type(scale)(1.0)
    top = z[s, 0]
    for j in range(1, k):
        top = wp.max(top, z[s, j])
    # three constructors, not one zero: Warp would make the sums one variable
    acc, dot, ysum = type(scale)(0.0), type(scale)(0.0), type(scale)(0.0)
    for j in range(k):
        v = z[s, j] - top
        acc += wp.exp(v)
        dot += y[s, j] * v
        ysum += y[s, j]
    ws = one
    if has_w != 0:
        ws = w[s]
    rows[s] = ws * (ysum * wp.log(acc) - dot)
    if grad != 0:
        inv, step = one / acc, scale * ws
        for j in range(k):
            z[s, j] = (wp.exp(z[s, j] - top) * inv - y[s, j]) * step


@wp.kernel
def elementwise_loss_kernel(z: wp.array2d(dtype=Any), y: wp.array2d(dtype=Any),
                            w: wp.array(dtype=Any), has_w: int, scales: wp.array(dtype=Any),
                            grad: int, kind: int, floor: Any, terms: wp.array2d(dtype=Any)):
    """The (weighted) term of one element to ``terms``; with ``grad``,
    ``scales[0] * dLoss/dz * w[row]`` over ``z``. ``kind``: 0 sigmoid +
    binary cross-entropy, 1 MSE, 2 L1, 3 Poisson (log link)."""
    i, j = wp.tid()
    scale = scales[0]
    zero, one = type(scale)(0.0), type(scale)(1.0)
    v, t = z[i, j], y[i, j]
    ws = one
    if has_w != 0:
        ws = w[i]
    d = v - t
    term, g = zero, zero
    if kind == 0:
        term = wp.max(v, zero) - v * t + log1p(wp.exp(-wp.abs(v)))
        g = act(v, 0, floor) - t
    elif kind == 1:
        term = d * d
        g = type(scale)(2.0) * d
    elif kind == 3:
        rate = wp.exp(v)
        term = poisson_term(v, t, rate)
        g = rate - t
    else:
        term = wp.abs(d)
        if d > zero:
            g = one
        elif d < zero:
            g = -one
    terms[i, j] = term * ws
    if grad != 0:
        z[i, j] = g * scale * ws


_ELEMENTWISE = {"binary_cross_entropy": 0, "mse": 1, "l1": 2, "poisson": 3}


# --- optimizer updates over flat buffers, one element a thread ---------------------------

@wp.kernel
def sgd_kernel(p: wp.array(dtype=Any), g: wp.array(dtype=Any), v: wp.array(dtype=Any),
               hyper: wp.array(dtype=Any), momentum: Any, nesterov: int, weight_decay: Any,
               has_v: int):
    """SGD with L2 weight decay and (Nesterov) momentum (``v`` unused unless
    ``has_v``); the rate is ``hyper[0]``, on the device, so that a captured
    step follows a schedule."""
    i = wp.tid()
    lr = hyper[0]
    gi = g[i] + weight_decay * p[i]
    if has_v != 0:
        vi = momentum * v[i] + gi
        v[i] = vi
        if nesterov != 0:
            gi = gi + momentum * vi
        else:
            gi = vi
    p[i] = p[i] - lr * gi


@wp.kernel
def scaled_sq_kernel(p: wp.array(dtype=Any), g: wp.array(dtype=Any), s: wp.array(dtype=Any),
                     hyper: wp.array(dtype=Any), alpha: Any, beta: Any, eps: Any,
                     weight_decay: Any):
    """AdaGrad (alpha = beta = 1) and RMSprop (beta = 1 - alpha):
    s = alpha s + beta g^2; p -= lr * g / (sqrt(s) + eps), lr = ``hyper[0]``."""
    i = wp.tid()
    lr = hyper[0]
    gi = g[i] + weight_decay * p[i]
    si = alpha * s[i] + beta * gi * gi
    s[i] = si
    p[i] = p[i] - lr * gi / (wp.sqrt(si) + eps)


@wp.kernel
def adam_kernel(p: wp.array(dtype=Any), g: wp.array(dtype=Any), m: wp.array(dtype=Any),
                v: wp.array(dtype=Any), hyper: wp.array(dtype=Any), beta1: Any, beta2: Any,
                c1: Any, c2: Any, eps: Any, weight_decay: Any, decoupled: int):
    """Adam (L2 decay) or AdamW (``decoupled`` decay); ``hyper`` holds the
    rate and the bias corrections 1 - beta ** t (on the device: a captured
    step reads each step's); ``c1``, ``c2``: 1 - beta1, 1 - beta2, taken in
    float64 before the cast (``updates._adam_cpu`` says why)."""
    i = wp.tid()
    lr, bc1, bc2 = hyper[0], hyper[1], hyper[2]
    one = type(lr)(1.0)
    gi = g[i]
    pi = p[i]
    if decoupled != 0:
        pi = pi * (one - lr * weight_decay)
    else:
        gi = gi + weight_decay * pi
    mi = beta1 * m[i] + c1 * gi
    vi = beta2 * v[i] + c2 * gi * gi
    m[i] = mi
    v[i] = vi
    p[i] = pi - (lr / bc1) * mi / (wp.sqrt(vi / bc2) + eps)


# --- the batch gather: rows of the data set into the batch, cast and scaled ------------

@wp.kernel
def gather_kernel(a: wp.array2d(dtype=Any), idx: wp.array(dtype=wp.int64), scale: Any,
                  out: wp.array2d(dtype=Any)):
    """out[r, j] = a[idx[r], j] * scale, in ``out``'s float type (``a`` may
    hold uint8 pixels: compact inputs are cast per batch)."""
    r, j = wp.tid()
    out[r, j] = type(scale)(a[idx[r], j]) * scale


# --- every kernel for both float types, so that Warp builds the module once --------------

_FLOATS = {np.dtype(np.float32): wp.float32, np.dtype(np.float64): wp.float64}
KERNELS = (bias_act_kernel, act_grad_kernel, colsum_kernel, cross_entropy_kernel,
           elementwise_loss_kernel, sgd_kernel, scaled_sq_kernel, adam_kernel)


def _concrete(t, f):
    if t is Any:
        return f
    if isinstance(t, wp.array) and t.dtype is Any:
        return wp.array(dtype=f, ndim=t.ndim)
    return t


def instantiate(kernels):
    """Overloads of generic ``kernels`` for float32 and float64, added before
    the module is first built: Warp then builds it once, not per new type."""
    for kernel in kernels:
        for f in _FLOATS.values():
            wp.overload(kernel, [_concrete(t, f) for t in kernel.adj.arg_types.values()])


instantiate(KERNELS)
#: index and counter arrays
_INTS = {np.dtype(np.int64): wp.int64, np.dtype(np.int32): wp.int32}
#: the gather's sources: the float types, and the compact integer inputs
_SOURCES = {np.dtype(np.uint8): wp.uint8, **_FLOATS}
for _src in _SOURCES.values():
    for _f in _FLOATS.values():
        wp.overload(gather_kernel, [wp.array2d(dtype=_src), wp.array(dtype=wp.int64), _f,
                                    wp.array2d(dtype=_f)])

#: the Warp kernels behind each spec's ``device`` slot, by the slot's name
DEVICE = {"bias_act": bias_act_kernel, "act_grad": act_grad_kernel,
          "cross_entropy": cross_entropy_kernel, "elementwise_loss": elementwise_loss_kernel,
          "sgd": sgd_kernel, "scaled_sq": scaled_sq_kernel, "adam": adam_kernel}


def update_launch(kind, p, g, state, hyper, f, *, weight_decay=0.0, momentum=0.0,
                  nesterov=False, alpha=1.0, betas=(0.9, 0.999), eps=0.0):
    """``(kernel, inputs)`` of optimizer ``kind``'s update ("sgd", "adam",
    "adamw", "rmsprop", "adagrad") over the Warp arrays ``p`` and ``g`` and
    its ``state`` slots (``{slot: Warp array}``), reading its rate (and
    Adam's bias corrections) from the device array ``hyper``; ``f`` is the
    Warp float type. The op table and the ``warp`` engine both launch this."""
    spec = updates.UPDATES["adam" if kind == "adamw" else kind]
    kernel, wd = DEVICE[spec.device], f(weight_decay)
    if spec is updates.SGD:
        v = state.get("velocity")
        return kernel, [p, g, p if v is None else v, hyper, f(momentum), int(bool(nesterov)), wd,
                        int(v is not None)]
    if spec is updates.ADAM:
        return kernel, [p, g, state["m"], state["v"], hyper, f(betas[0]), f(betas[1]),
                        f(1.0 - betas[0]), f(1.0 - betas[1]), f(eps), wd, int(kind == "adamw")]
    beta = 1.0 - alpha if spec is updates.RMSPROP else 1.0     # AdaGrad: alpha = beta = 1
    return kernel, [p, g, state[spec.slots[0]], hyper, f(alpha), f(beta), f(eps), wd]


def compile_for(arch, module_dir):
    """Compile this module's kernels ahead of time for CUDA ``arch`` (80,
    90, 100, ...) into ``module_dir``; no GPU or driver is needed."""
    import sys
    wp.compile_aot_module(sys.modules[__name__], device=None, arch=arch, module_dir=module_dir)


def sees_gpu(device_id):
    """Whether Warp can launch on CUDA device ``device_id`` (a driver and the GPU)."""
    return wp.get_cuda_device_count() > device_id


# --- the op table -----------------------------------------------------------------------

class _Launch:
    """Where the kernels of one call run: Warp's device for the arrays, and
    on CUDA, CuPy's current stream."""

    def __init__(self, a):
        if isinstance(a, np.ndarray):
            self.device, self.stream = "cpu", None
        else:                                     # a CuPy array
            self.device = f"cuda:{a.device.id}"
            self.stream = self.cupy_stream()

    def cupy_stream(self):
        """CuPy's current stream, as a Warp stream (None on the CPU)."""
        if self.device == "cpu":
            return None
        import cupy
        return wp.Stream(self.device, cuda_stream=cupy.cuda.get_current_stream().ptr)

    def own_stream(self):
        """Warp's own stream on the device (None on the CPU): graphs are
        recorded there, never on CuPy's legacy default stream."""
        return None if self.device == "cpu" else wp.get_stream(self.device)

    @contextlib.contextmanager
    def ordered(self):
        """Warp's own stream for a run of launches, after the work queued on
        CuPy's current stream and before the work queued there next."""
        own = self.own_stream()
        if own is None:
            yield None
            return
        theirs = self.cupy_stream()
        own.wait_stream(theirs)
        yield own
        theirs.wait_stream(own)

    def array(self, a):
        """``a`` as a Warp array on the same memory (no copy)."""
        dtype = _INTS.get(a.dtype) or _SOURCES[a.dtype]
        return wp.array(a, dtype=dtype, device=self.device, copy=False)

    def __call__(self, kernel, dim, inputs):
        wp.launch(kernel, dim=dim, inputs=inputs, device=self.device, stream=self.stream)


class WarpOps(ReferenceOps):
    """The op table with every op a Warp kernel; what it cannot take (arrays
    that are not C-contiguous, or mixed float types) goes to the reference
    maths."""

    name = "warp"

    def _fits(self, *arrays):
        dt = arrays[0].dtype
        return dt in _FLOATS and all(a is None or (a.dtype == dt and a.flags.c_contiguous)
                                     for a in arrays)

    def take_rows(self, a, idx, out):
        return self._gather(a, idx, out, 1, super().take_rows)

    def gather_scaled(self, a, idx, out, scale):
        return self._gather(a, idx, out, scale, super().gather_scaled)

    def _gather(self, a, idx, out, scale, fallback):
        xp = self.xp
        gatherable = (a.ndim == 2 and out.ndim == 2 and a.dtype in _SOURCES
                      and out.dtype in _FLOATS and a.flags.c_contiguous
                      and out.flags.c_contiguous and out.size > 0)
        if not gatherable:
            return fallback(a, idx, out) if scale == 1 else fallback(a, idx, out, scale)
        go = _Launch(out)
        idx = xp.ascontiguousarray(idx, dtype=xp.int64)
        go(gather_kernel, out.shape, [go.array(a), go.array(idx), _FLOATS[out.dtype](scale),
                                      go.array(out)])
        return out

    def bias_act(self, activation, z, b):
        spec = activations.get(activation)
        if not self._fits(z, b) or z.ndim != 2 or z.size == 0:
            return super().bias_act(spec, z, b)
        go, f = _Launch(z), _FLOATS[z.dtype]
        bias = go.array(z[0] if b is None else b)
        go(bias_act_kernel, z.shape, [go.array(z), bias, int(b is not None), spec.code,
                                      f(activations.FLOOR[z.dtype.name])])
        return z

    def act_grad(self, activation, da, a, db):
        spec = activations.get(activation)
        if not self._fits(da, a, db) or da.ndim != 2 or da.size == 0:
            return super().act_grad(spec, da, a, db)
        go = _Launch(da)
        wda = go.array(da)
        go(act_grad_kernel, da.shape, [wda, go.array(a), spec.code])
        if db is not None:
            go(colsum_kernel, da.shape[1], [wda, go.array(db)])
        return da

    def bias_grad(self, dz, db):
        if not self._fits(dz, db) or dz.ndim != 2 or dz.size == 0:
            return super().bias_grad(dz, db)
        go = _Launch(dz)
        go(colsum_kernel, dz.shape[1], [go.array(dz), go.array(db)])
        return db

    def loss(self, loss, z, y, scale=None, weights=None):
        spec = losses.get(loss)
        fits = self._fits(z, y, weights) and z.ndim == 2 and z.size > 0
        if not fits or spec.device is None:
            return super().loss(spec, z, y, scale, weights)
        go, f, xp = _Launch(z), _FLOATS[z.dtype], self.xp
        w = go.array(z[:, 0] if weights is None else weights)   # unused without weights
        has_w, grad = int(weights is not None), int(scale is not None)
        s = go.array(xp.asarray(0.0 if scale is None else scale, z.dtype).reshape(1))
        kernel = DEVICE[spec.device]
        if kernel is cross_entropy_kernel:
            rows = xp.empty(z.shape[0], z.dtype)
            go(kernel, z.shape[0],
               [go.array(z), go.array(y), w, has_w, s, grad, go.array(rows)])
            return rows.sum()
        terms = xp.empty_like(z)
        go(kernel, z.shape,
           [go.array(z), go.array(y), w, has_w, s, grad, _ELEMENTWISE[spec.name],
            f(activations.FLOOR[z.dtype.name]), go.array(terms)])
        return terms.sum()

    def sgd(self, p, g, v, lr, momentum, nesterov, weight_decay):
        if not self._fits(p, g, v):
            return super().sgd(p, g, v, lr, momentum, nesterov, weight_decay)
        self._update("sgd", p, g, {} if v is None else {"velocity": v}, [lr],
                     momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

    def adagrad(self, p, g, s, lr, eps, weight_decay):
        if not self._fits(p, g, s):
            return super().adagrad(p, g, s, lr, eps, weight_decay)
        self._update("adagrad", p, g, {"sum_sq": s}, [lr], eps=eps, weight_decay=weight_decay)

    def rmsprop(self, p, g, s, lr, alpha, eps, weight_decay):
        if not self._fits(p, g, s):
            return super().rmsprop(p, g, s, lr, alpha, eps, weight_decay)
        self._update("rmsprop", p, g, {"mean_sq": s}, [lr], alpha=alpha, eps=eps,
                     weight_decay=weight_decay)

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t):
        if not self._fits(p, g, m, v):
            return super().adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t)
        self._update("adamw" if decoupled else "adam", p, g, {"m": m, "v": v},
                     [lr, 1 - beta1 ** t, 1 - beta2 ** t], betas=(beta1, beta2), eps=eps,
                     weight_decay=weight_decay)

    def _update(self, kind, p, g, state, hyper, **hyperparameters):
        """:func:`update_launch` over the flat arrays, ``hyper`` (the rate, and
        Adam's bias corrections) copied to the device."""
        go = _Launch(p)
        flat = {k: go.array(a.reshape(-1)) for k, a in state.items()}
        kernel, inputs = update_launch(kind, go.array(p.reshape(-1)), go.array(g.reshape(-1)),
                                       flat, go.array(self.xp.asarray(hyper, p.dtype)),
                                       _FLOATS[p.dtype], **hyperparameters)
        go(kernel, p.size, inputs)
