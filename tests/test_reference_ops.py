"""The reference op table against textbook formulas, and at extreme values."""

import warnings

import numpy as np
import pytest

from fastmlp.backend import get_backend


@pytest.fixture
def be(device):
    return get_backend(device)


def _np(be, a):
    return be.to_numpy(a)


@pytest.mark.parametrize("act, f, df", [
    ("sigmoid", lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
    ("relu", lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    ("tanh", np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    ("identity", lambda z: z, lambda z: np.ones_like(z)),
])
def test_activation_forward_and_derivative(be, act, f, df):
    rng = np.random.default_rng(0)
    z, b, da = rng.normal(size=(5, 4)), rng.normal(size=4), rng.normal(size=(5, 4))
    a = be.ops.bias_act(act, be.asarray(z.copy()), be.asarray(b))
    np.testing.assert_allclose(_np(be, a), f(z + b), rtol=1e-12, atol=1e-15)
    db = be.xp.zeros(4)
    dz = be.ops.act_grad(act, be.asarray(da.copy()), a, db)
    np.testing.assert_allclose(_np(be, dz), da * df(z + b), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(_np(be, db), (da * df(z + b)).sum(0), rtol=1e-10, atol=1e-14)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("loss, value, grad", [
    ("cross_entropy", lambda z, y: -(y * np.log(_softmax(z))).sum(), lambda z, y: _softmax(z) - y),
    ("binary_cross_entropy",
     lambda z, y: -(y * np.log(1 / (1 + np.exp(-z)))
                    + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z)))).sum(),
     lambda z, y: 1 / (1 + np.exp(-z)) - y),
    ("mse", lambda z, y: ((z - y) ** 2).sum(), lambda z, y: 2 * (z - y)),
    ("l1", lambda z, y: np.abs(z - y).sum(), lambda z, y: np.sign(z - y)),
])
def test_loss_value_and_scaled_gradient(be, loss, value, grad):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 3))
    y = np.eye(3)[rng.integers(0, 3, 6)] if loss != "mse" else rng.normal(size=(6, 3))
    total = be.ops.loss(loss, be.asarray(z.copy()), be.asarray(y))
    assert float(total) == pytest.approx(value(z, y), rel=1e-12)
    zz = be.asarray(z.copy())
    total = be.ops.loss(loss, zz, be.asarray(y), scale=0.25)
    assert float(total) == pytest.approx(value(z, y), rel=1e-12)
    np.testing.assert_allclose(_np(be, zz), 0.25 * grad(z, y), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_logits_give_no_warning_and_no_nan(be, dtype):
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]], dtype=dtype)
    y = np.array([[1.0, 0, 0], [0, 1.0, 0]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        for loss in ("cross_entropy", "binary_cross_entropy", "mse", "l1"):
            zz = be.asarray(z.copy())
            total = float(be.ops.loss(loss, zz, be.asarray(y), scale=1.0))
            assert np.isfinite(total) and np.isfinite(_np(be, zz)).all(), loss
        ce = be.asarray(z.copy())
        assert float(be.ops.loss("cross_entropy", ce, be.asarray(y))) == pytest.approx(2000)
        p = _np(be, be.ops.output("cross_entropy", be.asarray(z.copy())))
        np.testing.assert_allclose(p, [[1, 0, 0], [0, 0, 1]], atol=1e-30)
        s = _np(be, be.ops.bias_act("sigmoid", be.asarray(z.copy()), None))
        np.testing.assert_allclose(s, [[1, 0, 0.5], [0, 0, 1]], rtol=0, atol=1e-37)
        t = _np(be, be.ops.bias_act("tanh", be.asarray(z.copy()), None))
        np.testing.assert_array_equal(t, [[1, -1, 0], [-1, -1, 1]])


def test_sigmoid_keeps_relative_precision_in_the_tails(be):
    z = np.array([[-30.0, -20.0, -17.0, 17.0, 30.0]], dtype=np.float32)
    s = _np(be, be.ops.bias_act("sigmoid", be.asarray(z.copy()), None))
    exact = 1 / (1 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(s, exact, rtol=1e-6)
