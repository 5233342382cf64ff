"""Resuming from a checkpoint continues bit for bit: weights, optimizer state,
shuffling and dropout masks."""

import pickle
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import optim

OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.05),
    "momentum": lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda: optim.AdaGrad(lr=0.05),
    "rmsprop": lambda: optim.RMSprop(lr=0.01),
    "adam": lambda: optim.Adam(lr=0.01),
    "adamw": lambda: optim.AdamW(lr=0.01),
}


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)


def _fit(model, data, epochs, optimizer=None):
    model.fit(*data, epochs=epochs, batch_size=16, optimizer=optimizer)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("seed", [3, None])
def test_two_plus_two_epochs_with_dropout_equal_four(data, tmp_path, name, seed):
    """Save after 2 epochs, load, train 2 more: the same weights, to the bit,
    as 4 epochs without stopping (dropout masks and shuffles included)."""
    whole = fastmlp.MLP([6, 32, 16, 3], seed=seed, dropout=[0.3, 0.2], device="cpu")
    first = pickle.loads(pickle.dumps(whole))           # the same start, for seed=None too
    _fit(whole, data, 4, OPTIMIZERS[name]())
    _fit(first, data, 2, OPTIMIZERS[name]())
    first.save(tmp_path / "m.st")
    resumed = fastmlp.load(tmp_path / "m.st", device="cpu")
    _fit(resumed, data, 2)
    assert resumed.optimizer.t == whole.optimizer.t
    np.testing.assert_array_equal(resumed.params, whole.params)


def test_two_loads_of_one_file_draw_the_same_masks(data, tmp_path):
    model = fastmlp.MLP([6, 32, 3], seed=None, dropout=0.5, device="cpu")
    _fit(model, data, 1, "adam")
    model.save(tmp_path / "m.st")
    a, b = (fastmlp.load(tmp_path / "m.st", device="cpu") for _ in range(2))
    _fit(a, data, 1)
    _fit(b, data, 1)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, model.params)


def test_the_dropout_stream_is_part_of_the_checkpoint(data, tmp_path):
    """Without its dropout state the resumed run would differ: the test above
    cannot pass by accident."""
    model = fastmlp.MLP([6, 32, 3], seed=1, dropout=0.5, device="cpu")
    _fit(model, data, 1, "sgd")
    model.save(tmp_path / "m.st")
    resumed = fastmlp.load(tmp_path / "m.st", device="cpu")
    resumed.dropout_rng = resumed.backend.rng(123)
    _fit(model, data, 1)
    _fit(resumed, data, 1)
    assert not np.array_equal(resumed.params, model.params)


def test_a_new_optimizer_after_load_warns_that_the_state_is_dropped(data, tmp_path):
    model = fastmlp.MLP([6, 8, 3], seed=0, device="cpu")
    _fit(model, data, 1, "adam")
    model.save(tmp_path / "m.st")
    loaded = fastmlp.load(tmp_path / "m.st", device="cpu")
    with pytest.warns(UserWarning, match=r"discards the adam state \(step 8\) loaded from .*m\.st"):
        _fit(loaded, data, 1, "adam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(loaded, data, 1, "sgd")                     # its own, not a loaded one: silent
        resumed = fastmlp.load(tmp_path / "m.st", device="cpu")
        _fit(resumed, data, 1)                           # resuming: silent


def test_values_too_large_for_the_dtype_are_not_called_nan(data):
    model = fastmlp.MLP([6, 3], device="cpu")
    x = data[0].astype(np.float64)
    x[3, 2] = 1e300
    with pytest.raises(ValueError, match=r"values up to 1e\+300, beyond the range of float32"):
        model.fit(x, data[1])
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        model.fit(x, data[1])
    x[3, 2] = 1e300
    fastmlp.MLP([6, 3], device="cpu", dtype="float64").prepare(x, data[1])   # fits float64


def test_values_too_large_given_on_the_device_are_not_called_nan(data, device):
    """Inputs already on the model's device (CuPy arrays on cuda) are checked
    there: finite values that overflow the dtype are reported as such."""
    model = fastmlp.MLP([6, 3], device=device)
    on = model.backend.asarray
    x, y = data[0].astype(np.float64), data[1]
    x[3, 2] = 1e300
    with pytest.raises(ValueError, match=r"x holds values up to 1e\+300, beyond the range of "
                                         "float32"):
        model.fit(on(x), on(y))
    x[3, 2] = np.inf
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        model.fit(on(x), on(y))
    w = np.ones(len(y))
    w[5] = -1e300
    with pytest.raises(ValueError, match=r"sample_weight holds values up to 1e\+300"):
        model.fit(on(data[0]), on(y), sample_weight=on(w))
    regression = fastmlp.MLP([6, 2], loss="mse", device=device)
    t = np.ones((len(y), 2))
    t[0, 1] = 1e300
    with pytest.raises(ValueError, match=r"y holds values up to 1e\+300, beyond the range"):
        regression.fit(on(data[0]), on(t))


def test_targets_and_weights_too_large_for_the_dtype_say_so(data):
    x = data[0]
    model = fastmlp.MLP([6, 2], loss="mse", device="cpu")
    y = np.ones((len(x), 2))
    y[0, 1] = -1e300
    with pytest.raises(ValueError, match=r"y holds values up to 1e\+300, beyond the range"):
        model.fit(x, y)
    w = np.ones(len(x))
    w[5] = 1e300
    with pytest.raises(ValueError, match=r"sample_weight holds values up to 1e\+300"):
        model.fit(x, np.ones((len(x), 2)), sample_weight=w)
