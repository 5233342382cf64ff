"""Every fused CPU kernel equals its reference twin (tolerances in
kernel_twins.py), extreme values included."""

import warnings

import numpy as np
import pytest

from fastmlp.kernels.cpu import CpuOps
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
    _close(CPU.bias_act(activation, z.copy(), b), REF.bias_act(activation, z.copy(), b), dtype)
    _close(CPU.bias_act(activation, z.copy(), None), REF.bias_act(activation, z.copy(), None),
           dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "identity"])
@pytest.mark.parametrize("n", [1, 7, 300])
def test_act_grad_and_bias_grad(dtype, activation, n):
    da = _random((n, 33), dtype)
    a = REF.bias_act(activation, _random((n, 33), dtype, 1), None)
    db_ref, db_cpu = np.zeros(33, dtype), np.zeros(33, dtype)
    _close(CPU.act_grad(activation, da.copy(), a, db_cpu),
           REF.act_grad(activation, da.copy(), a, db_ref), dtype)
    _close(db_cpu, db_ref, dtype)
    _close(CPU.act_grad(activation, da.copy(), a, None), REF.act_grad(activation, da.copy(), a, None),
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
                                   atol=1e-37)
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
        "from fastmlp.kernels.cpu import CpuOps\n"
        "z = np.ones((2, 3))\n"
        "CpuOps().bias_act('relu', z, np.zeros(3))\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "identity"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n", [1, 3, 40])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("blas", [True, False])
def test_forward_backward_equals_the_layer_by_layer_reference(dtype, activation, bias, n, sparse,
                                                              blas, monkeypatch):
    """``sparse``: most inputs 0, as MNIST pixels are (one such sample takes
    the row loops, which skip zero rows; dense ones take BLAS). ``blas=False``:
    as where NumPy bundles no CBLAS, one sample takes the loops and more are
    left to the layer path."""
    import fastmlp as fm
    from fastmlp.kernels import cpu
    if not blas:
        monkeypatch.setattr(cpu, "_GEMM", np.empty(0, np.int64))
    elif not cpu._GEMM.size:
        pytest.skip("this NumPy bundles no CBLAS that fastmlp can call")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, 7)), rng.integers(0, 4, n)
    if sparse:
        x[:, [0, 2, 3, 4, 6]] = 0
    fused = fm.MLP([7, 6, 5, 4], activation=activation, bias=bias, seed=0, device="cpu",
                   dtype=dtype)
    ref = fm.MLP([7, 6, 5, 4], activation=activation, bias=bias, seed=0, device="cpu",
                 dtype=dtype, kernels="reference")
    xd = fused._as_x(x)
    yd, t = fused._as_y(y, n)
    done = CPU.forward_backward(fused.sizes, activation, bias, xd, yd, t, fused._params,
                                fused._grads, 1 / n)
    if not blas and n > 1:
        assert done is None
        return
    loss, hits = done
    ref_loss, ref_hits = ref._step_grad(xd, yd, t)
    assert loss == pytest.approx(float(ref_loss), rel=TOL[dtype]) and hits == ref_hits
    _close(fused._grads, ref._grads, dtype)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [False, True])
def test_fused_sgd_step_equals_gradient_then_update(activation, bias, batch_size, shuffle, dtype,
                                                   sparse):
    """Plain SGD is applied inside the backward pass (by the GEMM's beta = 1,
    or inside the row loops for one mostly-zero sample); it must land where the
    reference gradient followed by p -= lr * g lands."""
    import fastmlp as fm
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 7)), rng.integers(0, 4, 5)
    if sparse:
        x[:, [0, 2, 5]] = 0
    fused = fm.MLP([7, 6, 5, 4], activation=activation, bias=bias, seed=0, device="cpu",
                   dtype=dtype)
    ref = fm.MLP([7, 6, 5, 4], activation=activation, bias=bias, seed=0, device="cpu",
                 dtype=dtype, kernels="reference")
    hf = fused.fit(x, y, epochs=2, batch_size=batch_size, optimizer="sgd", lr=0.1,
                   shuffle=shuffle)
    hr = ref.fit(x, y, epochs=2, batch_size=batch_size, optimizer="sgd", lr=0.1, shuffle=shuffle)
    _close(fused._params, ref._params, dtype)
    assert hf.history["train_loss"] == pytest.approx(hr.history["train_loss"], rel=TOL[dtype])
    assert hf.history["train_accuracy"] == hr.history["train_accuracy"]
    assert fused.optimizer.t == ref.optimizer.t == 2 * -(-5 // batch_size)


def test_the_compiled_steps_decline_what_they_do_not_cover(monkeypatch):
    """Non-contiguous data returns None (the caller takes the layer path), and
    a scratch block too big to keep is not kept alive after the call."""
    from fastmlp.kernels import cpu
    ops = CpuOps()
    sizes = [7, 6, 5, 4]
    params = np.zeros(7 * 6 + 6 + 6 * 5 + 5 + 5 * 4 + 4, np.float32)
    x = np.asfortranarray(np.ones((3, 7), np.float32))
    y = np.eye(4, dtype=np.float32)[[0, 1, 2]]
    assert ops.forward_backward(sizes, "relu", True, x, y, None, params, params.copy(),
                                1 / 3) is None
    monkeypatch.setattr(cpu, "_WORK_KEEP_SIZE", 10)
    done = ops.forward_backward(sizes, "relu", True, np.ascontiguousarray(x), y, None, params,
                                params.copy(), 1 / 3)
    assert done is not None and not ops._work


def test_fast_exp_is_as_accurate_as_numpys_float32_exp():
    """The vectorised float32 exp behind the fused sigmoid: within 4e-7 of the
    exact value where float32 is normal, clamped (finite, no NaN) outside."""
    import numba
    from fastmlp.kernels.vexp import fast_exp

    from fastmlp.kernels.cpu import _FAST

    @numba.njit(fastmath=_FAST, error_model="numpy")      # as the kernels compile it
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
