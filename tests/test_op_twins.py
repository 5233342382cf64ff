"""The twin-test grid, generated from the op specs: every compiled
implementation of every activation, loss and optimizer update
(``fastmlp.kernels.activations``, ``losses``, ``updates``) against the
spec's reference maths, per dtype, on random inputs and on the tails
(sigmoid at +-88 and +-708, logits of +-1e4, all-equal logits, zero sample
weights, zero parameters and gradients). A new op, or a new implementation
of one, joins the grid by being declared; tolerances are kernel_twins'.

``test_a_perturbed_implementation_fails_the_grid`` shows that the checks
can fail: an implementation with a float32 sigmoid floor in float64, a
softmax without its max shift, and Adam without its second bias correction
are each caught.
"""

import dataclasses
import warnings

import numba
import numpy as np
import pytest

from fastmlp.kernels import activations, losses, updates
from fastmlp.kernels.cpu_math import FAST, act, act_grad
from fastmlp.kernels.cpu_ops import CpuOps
from fastmlp.kernels.reference import ReferenceOps
from kernel_twins import DTYPES, TOL
from kernel_twins import close as _close
from kernel_twins import random as _random

REF = ReferenceOps(np)


@numba.njit(fastmath=FAST, error_model="numpy")              # as the kernels compile it
def _scalar_forward(z, code):
    for i in range(z.size):
        z[i] = act(z[i], code)


@numba.njit(fastmath=FAST, error_model="numpy")
def _scalar_grad(da, a, code):
    for i in range(da.size):
        da[i] = act_grad(da[i], a[i], code)


class ScalarOps(ReferenceOps):
    """The compiled scalar maths every whole-step kernel inlines
    (``cpu_math.act``, ``act_grad``), as an op table."""

    name = "cpu-scalar"

    def __init__(self):
        super().__init__(np)

    def bias_act(self, activation, z, b):
        if b is not None:
            z += b
        _scalar_forward(z.reshape(-1), activations.get(activation).code)
        return z

    def act_grad(self, activation, da, a, db):
        _scalar_grad(da.reshape(-1), np.ascontiguousarray(a).reshape(-1),
                     activations.get(activation).code)
        if db is not None:
            np.sum(da, axis=0, out=db)
        return da


IMPLS = {"cpu": CpuOps(), "cpu-scalar": ScalarOps()}
try:                       # the Warp kernels, on Warp's CPU device (the same source as on CUDA)
    from fastmlp.kernels.warp_ops import WarpOps
    IMPLS["warp"] = WarpOps(np)
except ImportError:        # warp-lang is an optional extra
    WarpOps = None


def _has_own(impl, kind, spec, dtype, direction="forward"):
    """Whether ``impl`` runs its own maths for this op (else it hands the op
    to the reference, and there is nothing to compare)."""
    if impl.name == "cpu-scalar":
        return kind == "activation"
    if impl.name == "warp":
        return True
    if kind == "activation":
        return direction == "grad" or dtype in spec.cpu_fused
    return spec.cpu is not None


def _grid(kind, table, directions=("forward",)):
    return [pytest.param(spec, name, dtype, d, id=f"{spec.name}-{name}-{dtype}-{d}")
            for spec in table.values() for name, impl in IMPLS.items() for dtype in DTYPES
            for d in directions if _has_own(impl, kind, spec, dtype, d)]


# --- activations -------------------------------------------------------------------------

TAILS = [-708.0, -707.9, -100, -88, -87.9, -40, -17, -1e-3, 0, 1e-3, 17, 40, 87.9, 88, 100,
         707.9, 708]


def _activation_inputs(dtype):
    yield "random", _random((7, 33), dtype)
    yield "tails", np.array([TAILS], dtype)


def check_activation(impl, spec, dtype, direction):
    """``impl``'s forward (or derivative) of ``spec`` against the reference,
    each element to its own relative tolerance."""
    for what, z in _activation_inputs(dtype):
        with np.errstate(over="ignore"):
            a = REF.bias_act(spec, z.copy(), None)
        if direction == "forward":
            got = impl.bias_act(spec, z.copy(), None)
            _close(got, a, dtype, floor=False, err_msg=what)
            continue
        da = _random(z.shape, dtype, 1)
        db, db_ref = np.zeros(z.shape[1], dtype), np.zeros(z.shape[1], dtype)
        got = impl.act_grad(spec, da.copy(), a, db)
        # with the floor: 1 - a*a cancels near saturation, and FMA rounds it differently
        _close(got, REF.act_grad(spec, da.copy(), a, db_ref), dtype, err_msg=what)
        _close(db, db_ref, dtype, err_msg=what)


@pytest.mark.parametrize("spec, impl, dtype, direction",
                         _grid("activation", activations.ACTIVATIONS, ("forward", "grad")))
def test_activation_twins(spec, impl, dtype, direction):
    check_activation(IMPLS[impl], spec, dtype, direction)


# --- losses ------------------------------------------------------------------------------

def _loss_inputs(spec, dtype):
    rng = np.random.default_rng(2)
    n, k = 7, 10
    big = 1e4
    if spec.head.classifier:
        y = np.eye(k)[rng.integers(0, k, n)]
    elif spec is losses.POISSON:             # counts; logits are log rates, e^1e4 is inf
        y, big = rng.poisson(3.0, (n, k)), 30.0
    else:
        y = rng.normal(size=(n, k))
    y = y.astype(dtype)
    extreme = np.where(rng.random((n, k)) < 0.5, big, -big).astype(dtype)
    for what, z in (("random", _random((n, k), dtype)), (f"logits of +-{big:g}", extreme),
                    ("all-equal logits", np.full((n, k), 5.0, dtype)),
                    ("zero logits", np.zeros((n, k), dtype))):
        yield what, z, y, None
    weights = rng.random(n).astype(dtype)
    weights[::3] = 0                                          # zero-weight samples
    yield "zero sample weights", _random((n, k), dtype), y, weights


def check_loss(impl, spec, dtype):
    """``impl``'s loss of ``spec`` (its value alone, and with the gradient)
    against the reference, on every input; no warnings on the tails."""
    for what, z, y, w in _loss_inputs(spec, dtype):
        with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise",
                                                    divide="raise"):
            warnings.simplefilter("error")
            value = impl.loss(spec, z.copy(), y, None, w)
            ref = REF.loss(spec, z.copy(), y, None, w)
            assert np.isfinite(value), what
            assert float(value) == pytest.approx(float(ref), rel=TOL[dtype]), what
            zi, zr = z.copy(), z.copy()
            value = impl.loss(spec, zi, y, 1 / z.shape[0], w)
            ref = REF.loss(spec, zr, y, 1 / z.shape[0], w)
        assert float(value) == pytest.approx(float(ref), rel=TOL[dtype]), what
        _close(zi, zr, dtype, err_msg=what)


@pytest.mark.parametrize("spec, impl, dtype, direction", _grid("loss", losses.LOSSES))
def test_loss_twins(spec, impl, dtype, direction):
    check_loss(IMPLS[impl], spec, dtype)


# --- optimizer updates -------------------------------------------------------------------

#: per update: the op-table call for (p, g, state arrays, t), over hyperparameter variants
_UPDATE_CALLS = {
    "sgd": [lambda ops, p, g, s, t, m=m, n=n, wd=wd: ops.sgd(p, g, s[0] if m else None, 0.1, m,
                                                               n, wd)
            for m, n, wd in [(0, False, 0), (0, False, 0.1), (0.9, False, 0), (0.9, True, 0.01)]],
    "adam": [lambda ops, p, g, s, t, wd=wd, dec=dec: ops.adam(p, g, s[0], s[1], 1e-2, 0.9, 0.999,
                                                               1e-8, wd, dec, t)
             for wd, dec in [(0, False), (0.1, False), (0.1, True)]],
    "adagrad": [lambda ops, p, g, s, t: ops.adagrad(p, g, s[0], 0.1, 1e-10, 0.01)],
    "rmsprop": [lambda ops, p, g, s, t: ops.rmsprop(p, g, s[0], 0.01, 0.99, 1e-8, 0.01)],
}


def _update_inputs(dtype):
    yield "random", _random(1000, dtype), _random(1000, dtype, 1)
    yield "zero parameters", np.zeros(1000, dtype), _random(1000, dtype, 1)
    yield "zero gradients", _random(1000, dtype), np.zeros(1000, dtype)


def check_update(impl, spec, dtype):
    """Three steps of ``impl``'s update of ``spec`` (every variant of its
    hyperparameters) against the reference: parameters and state."""
    for call in _UPDATE_CALLS[spec.name]:
        for what, p, g in _update_inputs(dtype):
            runs = {}
            for name, ops in (("impl", impl), ("ref", REF)):
                state = [np.zeros_like(p) for _ in spec.slots]
                q = p.copy()
                for t in range(1, 4):
                    call(ops, q, g, state, t)
                runs[name] = [q, *state]
            for a, b in zip(runs["impl"], runs["ref"]):
                _close(a, b, dtype, err_msg=what)


@pytest.mark.parametrize("spec, impl, dtype, direction", _grid("update", updates.UPDATES))
def test_update_twins(spec, impl, dtype, direction):
    check_update(IMPLS[impl], spec, dtype)


def test_every_update_has_its_calls():
    assert set(_UPDATE_CALLS) == set(updates.UPDATES)


# --- the checks can fail -------------------------------------------------------------------

class _Float32FloorSigmoid(CpuOps):
    """float64 sigmoid floored at float32's -88 (the drift kernels/cuda.py had)."""

    def bias_act(self, activation, z, b):
        z = super().bias_act(activation, z, b)
        if activations.get(activation) is activations.SIGMOID:
            z[...] = np.maximum(z, 1 / (1 + np.exp(z.dtype.type(88))))
        return z


class _UnshiftedSoftmax(CpuOps):
    """Cross-entropy without the log-sum-exp shift."""

    def loss(self, loss, z, y, scale=None, weights=None):
        with np.errstate(over="ignore", invalid="ignore"):
            p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            value = -(y * np.log(p)).sum()
            if scale is not None:
                z[...] = (p - y) * scale
        return value


class _AdamWithoutSecondCorrection(CpuOps):
    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t):
        super().adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, 1)
        # steps after the first: as if bias-corrected with t = 1 (1 - beta2 ** 1)


def _perturbed_warp():
    """The Warp table launching its float64 sigmoid kernel with float32's floor."""
    if WarpOps is None:
        return None
    from fastmlp.kernels import warp_ops

    class _WarpFloat32FloorSigmoid(WarpOps):
        def bias_act(self, activation, z, b):
            go = warp_ops._Launch(z)
            go(warp_ops.bias_act_kernel, z.shape, [go.array(z), go.array(z[0]), 0,
                                                   activations.get(activation).code,
                                                   warp_ops.wp.float64(-88.0)])
            return z

    return _WarpFloat32FloorSigmoid(np)


@pytest.mark.parametrize("check, impl, spec, dtype", [
    (check_activation, _Float32FloorSigmoid(), activations.SIGMOID, "float64"),
    (check_loss, _UnshiftedSoftmax(), losses.CROSS_ENTROPY, "float32"),
    (check_loss, _UnshiftedSoftmax(), losses.CROSS_ENTROPY, "float64"),
    (check_update, _AdamWithoutSecondCorrection(), updates.ADAM, "float32"),
    (check_activation, _perturbed_warp(), activations.SIGMOID, "float64"),
], ids=["sigmoid-floor", "softmax-shift-f32", "softmax-shift-f64", "adam-correction",
        "warp-sigmoid-floor"])
def test_a_perturbed_implementation_fails_the_grid(check, impl, spec, dtype):
    if impl is None:
        pytest.skip("warp-lang is not installed")
    args = (impl, spec, dtype) + (("forward",) if check is check_activation else ())
    with pytest.raises((AssertionError, FloatingPointError)):
        check(*args)


def test_the_grid_covers_every_spec_and_implementation():
    """A spec with a compiled implementation is in the grid for it."""
    grid = {(p.values[0].name, p.values[1]) for kind, table in
            (("activation", activations.ACTIVATIONS), ("loss", losses.LOSSES),
             ("update", updates.UPDATES))
            for p in _grid(kind, table, ("forward", "grad"))}
    for table in (activations.ACTIVATIONS, losses.LOSSES, updates.UPDATES):
        for spec in table.values():
            if getattr(spec, "cpu", None) is not None:
                assert (spec.name, "cpu") in grid, spec
    assert dataclasses.is_dataclass(activations.SIGMOID)
