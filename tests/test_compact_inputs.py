"""Integer inputs (uint8 images) stay compact: cast and scaled per batch."""

import numpy as np
import pytest

import fastmlp as fm


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(300, 20), dtype=np.uint8)
    y = (x[:, :5].astype(int).sum(axis=1) > 5 * 127).astype(int) + (x[:, 5] > 200)
    return x, y


def _pair(**kw):
    return (fm.MLP([20, 32, 3], seed=0, device="cpu", input_scale=1 / 255, **kw),
            fm.MLP([20, 32, 3], seed=0, device="cpu", **kw))


def test_prepare_keeps_integer_inputs_compact(images):
    x, y = images
    data = _pair()[0].prepare(x, y)
    assert data.x.dtype == np.uint8 and data.x.nbytes == x.nbytes


@pytest.mark.parametrize("batch_size, shuffle, optimizer",
                         [(32, True, "adam"), (32, False, "sgd"), (1, True, "sgd"),
                          (None, True, "adam")])
def test_uint8_trains_like_the_same_data_scaled_to_floats(images, batch_size, shuffle, optimizer):
    x, y = images
    compact, floats = _pair()
    hc = compact.fit(x, y, epochs=3, batch_size=batch_size, shuffle=shuffle, optimizer=optimizer)
    hf = floats.fit(x.astype(np.float32) * np.float32(1 / 255), y, epochs=3,
                    batch_size=batch_size, shuffle=shuffle, optimizer=optimizer)
    np.testing.assert_allclose(compact.params, floats.params, rtol=1e-4, atol=1e-5)
    assert hc.history["train_loss"] == pytest.approx(hf.history["train_loss"], rel=1e-4)
    xf = x.astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_allclose(compact.predict_proba(x), floats.predict_proba(xf), rtol=1e-4,
                               atol=1e-6)
    assert compact.evaluate(x, y)["accuracy"] == floats.evaluate(xf, y)["accuracy"]


def test_train_step_and_gradient_take_compact_rows(images):
    x, y = images
    compact, floats = _pair()
    a, b = compact.prepare(x[:16], y[:16]), floats.prepare(x[:16] * np.float32(1 / 255), y[:16])
    compact.gradient(a.x, a.y)
    floats.gradient(b.x, b.y)
    np.testing.assert_allclose(compact.grads, floats.grads, rtol=1e-5, atol=1e-7)


def test_other_integer_dtypes_and_float_inputs_are_scaled(images):
    x, y = images
    model = fm.MLP([20, 3], seed=0, device="cpu", input_scale=0.5)
    wide = x.astype(np.int16)
    assert model.prepare(wide).x.dtype == np.int16
    xf = x.astype(np.float32)
    before = xf.copy()
    np.testing.assert_allclose(model.predict_proba(wide), model.predict_proba(xf), rtol=1e-6)
    np.testing.assert_array_equal(xf, before)                       # the user's array untouched
    np.testing.assert_allclose(model.prepare(xf).x, xf * 0.5)


def test_input_scale_is_part_of_the_model(images, tmp_path):
    x, y = images
    model = _pair()[0]
    model.fit(x, y, epochs=1)
    model.save(tmp_path / "m.st")
    loaded = fm.load(tmp_path / "m.st", device="cpu")
    assert loaded.input_scale == pytest.approx(1 / 255)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="input_scale must be a finite number > 0"):
            fm.MLP([20, 3], input_scale=bad)
    for bad in (True, "1/255"):              # not numbers at all (see fastmlp.constraints)
        with pytest.raises(TypeError, match="input_scale must be a finite number > 0"):
            fm.MLP([20, 3], input_scale=bad)


@pytest.mark.parametrize("source", [np.uint8, np.int16, np.int64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_gather_equals_its_reference_twin(source, dtype):
    from fastmlp.kernels.cpu_ops import CpuOps
    from fastmlp.kernels.reference import ReferenceOps
    rng = np.random.default_rng(1)
    a = rng.integers(-100 if source != np.uint8 else 0, 256, (50, 7)).astype(source)
    idx = rng.permutation(50)[:13]
    got, want = np.empty((13, 7), dtype), np.empty((13, 7), dtype)
    CpuOps().gather_scaled(a, idx, got, 1 / 255)
    ReferenceOps(np).gather_scaled(a, idx, want, 1 / 255)
    np.testing.assert_array_equal(got, want)


def test_big_endian_and_torch_inputs(images):
    x, y = images
    compact, floats = _pair()
    compact.fit(x.astype(">i2"), y, epochs=1)
    floats.fit(x.astype(np.float32) * np.float32(1 / 255), y, epochs=1)
    np.testing.assert_allclose(compact.params, floats.params, rtol=1e-4, atol=1e-5)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(compact.predict_proba(torch.from_numpy(x)),
                                  compact.predict_proba(x))
    np.testing.assert_allclose(floats.predict_proba(torch.from_numpy(x * np.float32(1 / 255))),
                               floats.predict_proba(x * np.float32(1 / 255)), rtol=1e-6)


def test_exports_take_what_the_model_takes(images):
    x, y = images
    model = _pair()[0]
    model.fit(x, y, epochs=1)
    from fastmlp import export
    sd = export.state_dict(model)
    z = np.maximum(x.astype(np.float32) @ sd["0.weight"].T + sd["0.bias"], 0)
    z = z @ sd["2.weight"].T + sd["2.bias"]
    np.testing.assert_allclose(z, model.logits(model.prepare(x).x), rtol=1e-4, atol=1e-4)
    raw = export.state_dict(model, layout="fastmlp")
    np.testing.assert_array_equal(raw["weights.0"], model.weights[0])
