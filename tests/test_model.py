"""The MLP: parameters, init, dtypes, dropout, inference, moving devices."""

import warnings

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.engines.layer import forward


def test_parameters_are_live_views_with_the_right_shapes(device):
    model = fm.MLP([5, 7, 3], seed=0, device=device)
    assert [w.shape for w in model.weights] == [(5, 7), (7, 3)]
    assert [b.shape for b in model.biases] == [(7,), (3,)]
    assert model.n_params == 5 * 7 + 7 + 7 * 3 + 3
    x = np.ones((2, 5), np.float32)
    before = model.predict_proba(x)
    model.biases[1][...] = model.backend.asarray(np.array([100.0, 0, 0], np.float32))
    after = model.predict_proba(x)
    assert not np.allclose(before, after) and np.allclose(after[:, 0], 1)


@pytest.mark.parametrize("activation, init, check", [
    ("relu", None, lambda w, fi, fo: abs(w.std() - np.sqrt(2 / fi)) < 0.1 * np.sqrt(2 / fi)),
    ("tanh", None, lambda w, fi, fo: abs(w).max() <= np.sqrt(6 / (fi + fo))),
    ("sigmoid", "glorot", lambda w, fi, fo: abs(w).max() <= np.sqrt(6 / (fi + fo))),
    ("relu", "normal", lambda w, fi, fo: abs(w.std() - 0.01) < 0.001),
    ("relu", 0.3, lambda w, fi, fo: abs(w.std() - 0.3) < 0.03),
])
def test_init_schemes(activation, init, check):
    model = fm.MLP([400, 300], activation=activation, init=init, seed=0, device="cpu")
    assert check(model.weights[0], 400, 300)
    assert not model.biases[0].any()


def test_seed_makes_init_reproducible():
    a, b, c = (fm.MLP([4, 8, 2], seed=s, device="cpu") for s in (1, 1, 2))
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float64])
def test_dtypes(device, dtype):
    model = fm.MLP([4, 3], dtype=dtype, device=device)
    assert model.params.dtype == np.dtype(dtype)
    assert model.predict_proba(np.ones((2, 4))).dtype == np.dtype(dtype)


def test_predictions_for_each_loss(device):
    x = np.random.default_rng(0).normal(size=(6, 4))
    ce = fm.MLP([4, 5, 3], seed=0, device=device)
    p = ce.predict_proba(x)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(ce.predict(x), p.argmax(1))
    bce = fm.MLP([4, 5, 1], loss="binary_cross_entropy", seed=0, device=device)
    np.testing.assert_array_equal(bce.predict(x), (bce.predict_proba(x)[:, 0] > 0.5))
    assert bce.predict(x).shape == (6,)
    reg = fm.MLP([4, 5, 2], loss="mse", seed=0, device=device)
    assert reg.predict(x).shape == (6, 2)
    assert set(reg.evaluate(x, np.zeros((6, 2)))) == {"loss"}
    with pytest.raises(ValueError, match="classification"):
        reg.predict_proba(x)


def test_dropout_only_while_training(device):
    model = fm.MLP([50, 400, 3], dropout=0.5, seed=0, device=device)
    x = model.backend.asarray(np.ones((8, 50), np.float32))
    np.testing.assert_array_equal(model.predict_proba(x), model.predict_proba(x))
    ins, outs, keeps = forward(model.net, model.buffers, x, model.dropout_rng)
    kept = model.backend.to_numpy(keeps[0])
    assert set(np.unique(kept)) == {0.0, 2.0}             # inverted: survivors scaled by 1/(1-p)
    assert 0.4 < (kept > 0).mean() < 0.6
    _, _, keeps = forward(model.net, model.buffers, x)
    assert keeps == [None]


def test_extreme_inputs_give_no_overflow_warning_or_nan(device):
    model = fm.MLP([2, 3, 2], activation="sigmoid", seed=0, device=device)
    model.weights[0][...] = 1000
    model.weights[1][...] = model.backend.asarray(np.array([[1.0, -1], [1, -1], [1, -1]]) * 1000)
    x = np.array([[1.0, 1.0], [-1.0, -1.0]])
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        p = model.predict_proba(x)
        result = model.evaluate(x, [1, 0])
        bce = fm.MLP([2, 3, 1], loss="binary_cross_entropy", init=1000.0, device=device)
        bce.evaluate(x, [1, 0])
    assert np.isfinite(p).all() and np.isfinite(result["loss"])


def test_to_moves_parameters_and_optimizer_state(device, blobs):
    x, y = blobs
    model = fm.MLP([4, 8, 3], seed=0, device="cpu")
    model.fit(x, y, epochs=2, optimizer="adam")
    params, proba = model.params.copy(), model.predict_proba(x)
    assert model.to(device) is model
    assert model.backend.name.startswith(device)
    np.testing.assert_array_equal(model.backend.to_numpy(model.params), params)
    np.testing.assert_allclose(model.predict_proba(x), proba, rtol=1e-5)
    state = model.optimizer.state_arrays()
    assert all(type(a) is type(model.params) for a in state.values())
    model.fit(x, y, epochs=1)                 # resumes on the new device
    assert model.optimizer.t == 3 * 3         # 90 samples in batches of 32, 3 epochs


def test_repr_and_config_round_trip():
    model = fm.MLP([4, 8, 3], activation="tanh", dropout=0.1, seed=3, device="cpu")
    assert repr(model) == ("MLP([4, 8, 3], activation='tanh', loss='cross_entropy', "
                           "dtype='float32', device='cpu')")
    clone = fm.MLP(**model.config(), device="cpu")
    np.testing.assert_array_equal(clone.params, model.params)
