"""Defects that property-based tests over the public API found (issue 20):
each test failed before its fix."""

import numpy as np
import pytest

import fastmlp as fm


def _data(n=24, d=4, k=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, k, n)


def _state(model):
    opt = model.optimizer
    return (model.params.copy(), model.rng.bit_generator.state,
            None if opt is None else (opt.t, {k: a.copy() for k, a in opt.state_arrays().items()}))


def _assert_same(before, after):
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]
    assert (before[2] is None) == (after[2] is None)
    if before[2] is not None:
        assert before[2][0] == after[2][0]
        for key, a in before[2][1].items():
            np.testing.assert_array_equal(a, after[2][1][key])


@pytest.mark.parametrize("bad", ["False", "no", 0, 1, None])
def test_bias_must_be_a_boolean(bad):
    with pytest.raises(TypeError, match="bias must be a bool"):
        fm.MLP([4, 3], bias=bad, device="cpu")


def test_bias_accepts_numpy_booleans():
    assert fm.MLP([4, 3], bias=np.bool_(False), device="cpu").biases == [None]


@pytest.mark.parametrize("metric", [lambda: 0.0, lambda y_true: 0.0,
                                    lambda y_true, y_pred: "high", lambda y_true, y_pred: y_pred])
def test_a_metric_function_that_cannot_work_fails_before_training(metric):
    x, y = _data()
    model = fm.MLP([4, 8, 3], seed=0, device="cpu")
    model.fit(x, y, epochs=1)
    before = _state(model)
    with pytest.raises((TypeError, ValueError)) as info:
        model.fit(x, y, epochs=2, metrics=[metric])
    _assert_same(before, _state(model))
    assert "metric" in str(info.value)


def test_bool_x_is_0_1_data_in_memory_and_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((64, 5)) > 0.5
    y = x[:, 0].astype(int)
    path = tmp_path / "x.bool"
    x.tofile(path)
    mm = np.memmap(path, dtype=bool, mode="r", shape=x.shape)
    a, b = (fm.MLP([5, 2], seed=0, device="cpu") for _ in range(2))
    a.fit(x, y, epochs=2, shuffle=False)
    b.fit(mm, y, epochs=2, shuffle=False)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.predict_proba(mm), b.predict_proba(x.astype(np.float32)))


@pytest.mark.parametrize("dtype, values, scale", [(np.int64, 2 ** 40, 1e30),
                                                  (np.int32, 1000, 1e36),
                                                  (np.uint8, 255, 1e37)])
def test_integer_x_that_overflows_the_model_dtype_is_refused_up_front(tmp_path, dtype, values,
                                                                      scale):
    x = np.full((16, 3), values, dtype=dtype)
    x[::2] = 1
    y = np.arange(16) % 2
    model = fm.MLP([3, 2], seed=0, device="cpu", input_scale=scale)
    before = _state(model)
    with pytest.raises(ValueError) as as_float:
        model.fit(x.astype(np.float64), y)
    assert "beyond the range of float32" in str(as_float.value)
    with pytest.raises(ValueError) as as_int:
        model.fit(x, y)
    assert str(as_int.value) == str(as_float.value)
    path = tmp_path / "x.bin"
    x.tofile(path)
    with pytest.raises(ValueError, match="beyond the range of float32"):
        model.fit(np.memmap(path, dtype=dtype, mode="r", shape=x.shape), y)
    _assert_same(before, _state(model))
