"""The compiled CPU side of the op specs, and the fused passes built on it.

``act(v, code)`` and ``act_grad(g, a, code)`` run the activation ``code``'s
compiled maths (the ``cpu`` implementation of its spec in
``activations.py``, derivative from the layer's output ``a``) on one scalar:
a switch over every spec, generated from ``activations.ACTIVATIONS``. Each
loop over a layer is written once,
inlined (by Numba) into one branch per constant activation code, where LLVM
inlines ``act`` and folds it to that activation's maths, so each branch
vectorises. (Inlining ``act`` itself at Numba's level trips its SSA checks
with warnings, and gains nothing.) The sigmoid's floor per dtype is the
spec's (``activations.FLOOR``). ``LOSS_KERNELS`` are the losses' compiled
implementations (``losses.py``), ``softmax_xent`` the cross-entropy's.

``jit`` compiles with an on-disk cache when a cache location is writable
(``NUMBA_CACHE_DIR`` is honoured) and without one otherwise (numba issue
4908), instead of failing at import. Numba keys a cached function on its
own file: after editing only a module it inlines (``activations.py``,
``losses.py``, ``vexp.py``, ``blas.py``), clear ``NUMBA_CACHE_DIR`` or the
callers keep their old machine code.
"""

import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from . import vexp  # noqa: F401  (registers fast_exp's compiled form)
from .activations import ACTIVATIONS, FLOOR
from .losses import LOSSES

#: activation name -> the code the compiled loops take
CODES = {a.name: a.code for a in ACTIVATIONS.values()}
SIGMOID, RELU, TANH, IDENTITY = (CODES[n] for n in ("sigmoid", "relu", "tanh", "identity"))
# The two row passes below branch on each code by hand, so that each branch compiles
# with its activation folded in: a generated dispatch cost 0.5-2 s more cold compile.
# A new spec needs a branch in each; say so at import rather than compute nonsense.
if len(CODES) != 4:
    raise ImportError(f"kernels/cpu_math.py: bias_act_rows and act_grad_rows have a branch for "
                      f"4 activations, the specs declare {sorted(CODES)}: add the new ones")

# LLVM may reorder sums and contract to FMA, but not assume away NaN or inf.
FAST = {"reassoc", "contract", "nsz", "arcp"}

def jit(**options):
    """``numba.njit`` with the cache, error model and options every kernel uses."""
    def wrap(f):
        try:
            return numba.njit(cache=True, error_model="numpy", **options)(f)
        except RuntimeError:       # "no locator available": no writable cache directory
            return numba.njit(cache=False, error_model="numpy", **options)(f)
    return wrap


def _consts(v):
    """(zero, one, sigmoid floor) in the float type ``v``."""
    f = np.float32 if v == types.float32 else np.float64
    return f(0), f(1), f(FLOOR[np.dtype(f).name])


def _switch(fns, args, consts):
    """``impl(*args, code)`` that returns ``fns[code](*args, *consts)``: an
    if-chain over the codes, generated so that each branch is a direct call
    that LLVM inlines and, for a constant code, folds away."""
    # the specs' functions inlined by Numba: compiled apart, each cost ~0.04 s of cold compile
    names = {f"_f{i}": numba.njit(inline="always")(fn) for i, fn in enumerate(fns)}
    names.update(zip(("_c0", "_c1", "_c2"), consts))
    call = ", ".join(args + tuple(f"_c{i}" for i in range(len(consts))))
    lines = [f"def impl({', '.join(args)}, code):"]
    for i in range(len(fns) - 1):
        lines += [f"    if code == {i}:", f"        return _f{i}({call})"]
    lines.append(f"    return _f{len(fns) - 1}({call})")
    exec("\n".join(lines), names)
    return names["impl"]


def act(v, code):
    """f(v) for the activation ``code``, in v's float type. The maths is the
    spec's; a call from Python runs the compiled code too."""
    return _act_from_python(v, code)


@overload(act)
def _act(v, code):
    return _switch([a.cpu[0] for a in ACTIVATIONS.values()], ("v",), _consts(v))


def act_grad(g, a, code):
    """g * f'(z), written from the output a = f(z). The maths is the spec's;
    a call from Python runs the compiled code too."""
    return _act_grad_from_python(g, a, code)


@overload(act_grad)
def _act_grad(g, a, code):
    return _switch([s.cpu[1] for s in ACTIVATIONS.values()], ("g", "a"), _consts(g)[:2])


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
    elif code == IDENTITY:
        _bias_act_loop(zz, b, IDENTITY)
    else:
        raise ValueError("unknown activation code")


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
    elif code == IDENTITY:
        _act_grad_loop(dd, aa, IDENTITY, has_bias, step, gb)
    else:
        raise ValueError("unknown activation code")


@jit(fastmath=FAST)
def colsum_add(d, step, gb):
    """gb += step * (column sums of the flat (n, gb.size) block ``d``)."""
    m = gb.size
    dd = d.reshape(d.size // m, m)
    for i in range(dd.shape[0]):
        for j in range(m):
            gb[j] += step * dd[i, j]


#: loss name -> its compiled implementation, ``(z, y, ids, w, d, scale, grad) -> (loss
#: sum, hits)`` (see ``losses.Loss.cpu``)
LOSS_KERNELS = {f.name: jit(fastmath=FAST)(f.cpu) for f in LOSSES.values() if f.cpu is not None}
softmax_xent = LOSS_KERNELS["cross_entropy"]


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
