"""Every fused CPU kernel equals its reference twin (tolerances in
kernel_twins.py), extreme values included."""

import warnings

import numpy as np
import pytest

from fastmlp.kernels.cpu_ops import CpuOps
from fastmlp.kernels.reference import ReferenceOps
from kernel_twins import DTYPES, TOL
from kernel_twins import close as _close
from kernel_twins import random as _random

REF, CPU = ReferenceOps(np), CpuOps()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "identity"])
@pytest.mark.parametrize("n", [1, 7, 300])
def test_bias_act(dtype, activation, n):
    z, b = _random((n, 33), dtype), _random(33, dtype, 1)
    _close(CPU.bias_act(activation, z.copy(), b), REF.bias_act(activation, z.copy(), b), dtype,
           floor=False)
    _close(CPU.bias_act(activation, z.copy(), None), REF.bias_act(activation, z.copy(), None),
           dtype, floor=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "identity"])
@pytest.mark.parametrize("n", [1, 7, 300])
def test_act_grad_and_bias_grad(dtype, activation, n):
    da = _random((n, 33), dtype)
    a = REF.bias_act(activation, _random((n, 33), dtype, 1), None)
    db_ref, db_cpu = np.zeros(33, dtype), np.zeros(33, dtype)
    # with the floor: 1 - a*a cancels near saturation, and the fused loop's FMA rounds it
    # differently from the reference (more exactly, as it happens)
    _close(CPU.act_grad(activation, da.copy(), a, db_cpu),
           REF.act_grad(activation, da.copy(), a, db_ref), dtype)
    _close(db_cpu, db_ref, dtype)
    _close(CPU.act_grad(activation, da.copy(), a, None),
           REF.act_grad(activation, da.copy(), a, None),
           dtype)
    CPU.bias_grad(da, db_cpu)
    REF.bias_grad(da, db_ref)
    _close(db_cpu, db_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse", "l1"])
@pytest.mark.parametrize("n", [1, 7, 300])
def test_losses(dtype, loss, n):
    z = _random((n, 10), dtype)
    rng = np.random.default_rng(2)
    y = (np.eye(10)[rng.integers(0, 10, n)] if loss != "mse" else rng.normal(size=(n, 10)))
    y = y.astype(dtype)
    assert float(CPU.loss(loss, z.copy(), y)) == pytest.approx(float(REF.loss(loss, z.copy(), y)),
                                                               rel=TOL[dtype])
    zc, zr = z.copy(), z.copy()
    lc, lr = CPU.loss(loss, zc, y, 1 / n), REF.loss(loss, zr, y, 1 / n)
    assert float(lc) == pytest.approx(float(lr), rel=TOL[dtype])
    _close(zc, zr, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits(dtype):
    z = np.array([[1000, -1000, 0], [-1000, -1000, 1000], [1e4, 1e4, -1e4]], dtype=dtype)
    y = np.eye(3, dtype=dtype)[[0, 1, 2]]
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        zc, zr = z.copy(), z.copy()
        lc = CPU.loss("cross_entropy", zc, y, 1.0)
        lr = REF.loss("cross_entropy", zr, y, 1.0)
        assert np.isfinite(lc) and lc == pytest.approx(float(lr))
        np.testing.assert_array_equal(zc, zr)
        relu = CPU.bias_act("relu", z.copy(), np.zeros(3, dtype))
        np.testing.assert_array_equal(relu, np.maximum(z, 0))
        sig = CPU.bias_act("sigmoid", z.copy(), np.zeros(3, dtype))
        np.testing.assert_allclose(sig, REF.bias_act("sigmoid", z.copy(), None), rtol=1e-6,
                                   atol=0)
        assert np.isfinite(sig).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, nesterov, wd", [(0, False, 0), (0, False, 0.1),
                                                    (0.9, False, 0), (0.9, True, 0.01)])
def test_sgd(dtype, momentum, nesterov, wd):
    p, g = _random(1000, dtype), _random(1000, dtype, 1)
    pr, pc = p.copy(), p.copy()
    vr, vc = (np.zeros_like(p), np.zeros_like(p)) if momentum else (None, None)
    for _ in range(3):
        REF.sgd(pr, g, vr, 0.1, momentum, nesterov, wd)
        CPU.sgd(pc, g, vc, 0.1, momentum, nesterov, wd)
    _close(pc, pr, dtype)
    if momentum:
        _close(vc, vr, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd, decoupled", [(0, False), (0.1, False), (0.1, True)])
def test_adam(dtype, wd, decoupled):
    p, g = _random(1000, dtype), _random(1000, dtype, 1)
    state = {k: (p.copy(), np.zeros_like(p), np.zeros_like(p)) for k in ("ref", "cpu")}
    for t in range(1, 4):
        REF.adam(*state["ref"][:1], g, *state["ref"][1:], 1e-2, 0.9, 0.999, 1e-8, wd, decoupled, t)
        CPU.adam(*state["cpu"][:1], g, *state["cpu"][1:], 1e-2, 0.9, 0.999, 1e-8, wd, decoupled, t)
    for a, b in zip(state["cpu"], state["ref"]):
        _close(a, b, dtype)


def test_updates_work_on_any_shape_and_layout():
    """Optimizers take arrays of any shape: 2-D ones are updated through a flat
    view, non-contiguous ones by the reference op."""
    g = _random((6, 4), "float64", 1)
    for p0 in (_random((6, 4), "float64"), _random((4, 6), "float64").T):
        pr, pc = p0.copy(order="K"), p0.copy(order="K")
        REF.sgd(pr, g, None, 0.1, 0, False, 0)
        CPU.sgd(pc, g, None, 0.1, 0, False, 0)
        np.testing.assert_array_equal(pc, pr)
        mr, vr, mc, vc = (np.zeros_like(p0) for _ in range(4))
        REF.adam(pr, g, mr, vr, 0.1, 0.9, 0.999, 1e-8, 0, False, 1)
        CPU.adam(pc, g, mc, vc, 0.1, 0.9, 0.999, 1e-8, 0, False, 1)
        _close(pc, pr, "float64")


def test_kernels_import_without_a_writable_cache(tmp_path):
    """numba issue 4908: cache=True raises when no cache location is writable;
    the kernels then compile per process instead of failing to import."""
    import subprocess
    import sys
    code = (
        "import numba\n"
        "real = numba.njit\n"
        "def njit(*a, cache=False, **k):\n"
        "    if cache:\n"
        "        raise RuntimeError('cannot cache function: no locator available')\n"
        "    return real(*a, **k)\n"
        "numba.njit = njit\n"
        "import numpy as np\n"
        "from fastmlp.kernels.cpu_ops import CpuOps\n"
        "z = np.ones((2, 3))\n"
        "CpuOps().bias_act('relu', z, np.zeros(3))\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_fast_exp_is_as_accurate_as_numpys_float32_exp():
    """The vectorised float32 exp behind the fused sigmoid: within 4e-7 of the
    exact value where float32 is normal, clamped (finite, no NaN) outside."""
    import numba

    from fastmlp.kernels.cpu_math import FAST
    from fastmlp.kernels.vexp import fast_exp

    @numba.njit(fastmath=FAST, error_model="numpy")      # as the kernels compile it
    def apply(x, out):
        for i in range(x.size):
            out[i] = fast_exp(x[i])

    x = np.concatenate([np.linspace(-87, 88, 1_000_001), [0.0, -1e-30, 1e-30]]).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    exact = np.exp(x.astype(np.float64))
    assert out.dtype == np.float32
    assert np.max(np.abs(out - exact) / exact) < 4e-7
    wild = np.array([-1000, -88, 89, 1000, -np.inf, np.inf], np.float32)
    apply(wild, out[:6])
    assert np.all(np.isfinite(out[:6])) and out[0] < 1e-37 and out[3] > 1e37
    x64 = np.linspace(-700, 700, 1001)
    out64 = np.empty_like(x64)
    apply(x64, out64)                       # float64 is libm's exp: to the last ulp or so
    np.testing.assert_allclose(out64, np.exp(x64), rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_shared_activation_maths_keeps_relative_precision_in_the_tails(dtype):
    """``cpu_math.act`` is the one definition of the activations that every
    compiled loop uses; its sigmoid clamps where the reference's does, per
    dtype, so a float64 sigmoid(-100) is 3.7e-44 (a float32 clamp at -88
    would make it 6.1e-39). Held to relative tolerance, no absolute floor."""
    import numba

    from fastmlp.kernels.cpu_math import CODES, FAST, act

    @numba.njit(fastmath=FAST, error_model="numpy")         # as the kernels compile it
    def apply(z, code, out):
        for i in range(z.size):
            out[i] = act(z[i], code)

    tails = {"float32": [-87.0, -60, -30, -17, -1e-3, 0, 1e-3, 17, 30, 80],
             "float64": [-700.0, -300, -100, -40, -17, -1e-9, 0, 1e-9, 17, 40, 100, 700]}
    z = np.array(tails[dtype], dtype)
    rtol = {"float32": 1e-6, "float64": 1e-14}[dtype]
    exact = {"sigmoid": 1 / (1 + np.exp(-z.astype(np.float64))), "relu": np.maximum(z, 0),
             "tanh": np.tanh(z.astype(np.float64)), "identity": z}
    for name, want in exact.items():
        out = np.empty_like(z)
        apply(z, CODES[name], out)
        np.testing.assert_allclose(out, want, rtol=rtol, atol=0, err_msg=name)
        np.testing.assert_allclose(out, REF.bias_act(name, z.copy()[None], None)[0], rtol=rtol,
                                   atol=0, err_msg=f"{name} vs the reference")
