"""Per-sample weights: a weight of k counts a sample k times, a weight of 0
drops it, on every engine and device, for every loss; a mean divides by the
weights' sum (as scikit-learn does)."""

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.engines import cpu_step

LOSSES = ["cross_entropy", "binary_cross_entropy", "mse", "l1"]
HAS_BLAS = bool(cpu_step.blas_gemm().size)


def _data(loss, n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    if loss == "cross_entropy":
        y = rng.integers(0, 3, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, 3)) > 0.5).astype(float)
    else:
        y = rng.normal(size=(n, 3))
    return x, y


def _engines(loss, device):
    names = ["layer"]
    if device == "cpu" and loss == "cross_entropy":
        names += ["cpu-rows"] + (["cpu-gemm"] if HAS_BLAS else [])
    return names


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_an_integer_weight_counts_a_sample_that_many_times(device, loss, reduction):
    x, y = _data(loss)
    w = np.array([2, 1, 0, 3, 1, 1, 0, 2, 1, 1, 4, 1], float)
    rows = np.repeat(np.arange(len(x)), w.astype(int))
    for name in _engines(loss, device):
        batch = 1 if name == "cpu-rows" else len(x)
        if batch == 1:                    # one sample at a time: weight 3 triples its gradient
            x1, y1, w1 = x[3:4], y[3:4], w[3:4]
            xd, yd = x1[[0, 0, 0]], y1[[0, 0, 0]]
        else:
            x1, y1, w1, xd, yd = x, y, w, x[rows], y[rows]
        model = fm.MLP([5, 4, 3], loss=loss, reduction=reduction, seed=0, device=device,
                       dtype="float64", engine=name)
        ref = fm.MLP([5, 4, 3], loss=loss, reduction=reduction, seed=0, device=device,
                     dtype="float64", engine="layer")
        data = model.prepare(x1, y1, sample_weight=w1)
        dup = ref.prepare(xd, yd)
        loss_w, hits_w = model.gradient(data.x, data.y, data.targets, weights=data.weights)
        loss_d, hits_d = ref.gradient(dup.x, dup.y, dup.targets)
        assert model.step_path.engine == name
        be = model.backend
        assert float(loss_w) == pytest.approx(float(loss_d), rel=1e-12)
        if hits_d is not None:
            assert float(hits_w) == pytest.approx(float(hits_d))
        np.testing.assert_allclose(be.to_numpy(model.grads), be.to_numpy(ref.grads), rtol=1e-10,
                                   atol=1e-14, err_msg=name)


@pytest.mark.parametrize("loss", LOSSES)
def test_zero_weights_on_half_the_data_train_like_dropping_those_rows(device, loss):
    x, y = _data(loss, n=40)
    keep = np.arange(40) % 2 == 0
    for name in _engines(loss, device):
        batch_size = 1 if name == "cpu-rows" else None       # None: one full batch per step
        kw = dict(epochs=5, batch_size=batch_size, optimizer="adam", lr=0.01, shuffle=False)
        weighted = fm.MLP([5, 4, 3], loss=loss, seed=0, device=device, engine=name)
        dropped = fm.MLP([5, 4, 3], loss=loss, seed=0, device=device, engine=name)
        if batch_size == 1:            # a zero-weight sample still takes an Adam step there;
            kw["optimizer"] = "sgd"    # plain SGD makes its update exactly zero
        hw = weighted.fit(x, y, sample_weight=keep.astype(float), **kw)
        hd = dropped.fit(x[keep], y[keep], **kw)
        be = weighted.backend
        np.testing.assert_allclose(be.to_numpy(weighted.params), be.to_numpy(dropped.params),
                                   rtol=1e-4, atol=1e-6, err_msg=name)
        assert hw.history["train_loss"] == pytest.approx(hd.history["train_loss"], rel=1e-4)
        if "train_accuracy" in hd.history:
            assert hw.history["train_accuracy"] == pytest.approx(hd.history["train_accuracy"])


def test_evaluate_and_history_are_weighted_means(blobs):
    x, y = blobs
    w = np.linspace(0.5, 2.0, len(x))
    model = fm.MLP([4, 8, 3], seed=0, device="cpu")
    before = model.evaluate(x, y, sample_weight=w)
    plain = model.evaluate(x, y)
    assert before["loss"] != pytest.approx(plain["loss"])
    z = model.logits(model.prepare(x).x)
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    per_sample = -logp[np.arange(len(y)), y]
    assert before["loss"] == pytest.approx(np.average(per_sample, weights=w), rel=1e-5)
    right = z.argmax(1) == y
    assert before["accuracy"] == pytest.approx(np.average(right, weights=w))
    hist = model.fit(x, y, sample_weight=w, epochs=1, batch_size=16, optimizer="sgd", lr=1e-9)
    assert hist.history["train_loss"][0] == pytest.approx(before["loss"], rel=1e-4)
    assert hist.history["train_accuracy"][0] == pytest.approx(before["accuracy"])


def test_weights_travel_with_validation_split_and_validation_data(blobs):
    x, y = blobs
    w = np.ones(len(x))
    w[-9:] = 0.0
    w[-10] = 5.0
    model = fm.MLP([4, 8, 3], seed=0, device="cpu")
    hist = model.fit(x, y, sample_weight=w, validation_split=0.2, epochs=1)
    val = model.prepare(x[-18:], y[-18:], sample_weight=w[-18:])
    assert hist.history["val_loss"][0] == pytest.approx(model.evaluate(val)["loss"])
    hist = model.fit(x[:60], y[:60], validation_data=(x[60:], y[60:], w[60:]), epochs=1)
    assert hist.history["val_loss"][0] == pytest.approx(
        model.evaluate(x[60:], y[60:], sample_weight=w[60:])["loss"])
    with pytest.raises(ValueError, match="zero-weight"):
        model.fit(x, y, sample_weight=np.r_[np.ones(72), np.zeros(18)], validation_split=0.2)


def test_a_prepared_set_trains_without_being_checked_again(blobs):
    x, y = blobs
    a, b = fm.MLP([4, 8, 3], seed=0, device="cpu"), fm.MLP([4, 8, 3], seed=0, device="cpu")
    w = np.linspace(0.1, 1, len(x))
    a.fit(x, y, sample_weight=w, epochs=2)
    b.fit(b.prepare(x, y, sample_weight=w), epochs=2)
    np.testing.assert_array_equal(a.params, b.params)
    with pytest.raises(TypeError, match="pass a Prepared alone"):
        b.fit(b.prepare(x, y), y)
    with pytest.raises(TypeError, match="fit needs targets"):
        b.fit(x)
