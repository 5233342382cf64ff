"""Training that diverges (NaN or inf loss or weights) is caught at the end of
the epoch: the last finite state comes back, and fit raises, warns or (on
request) trains on."""

import math

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import engines

# the steps of a diverging run overflow on purpose
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(32, 4)).astype(np.float32)
TARGETS = {"mse": X[:, :1] ** 2, "cross_entropy": (X[:, 0] > 0).astype(np.int64)}
# finite float32 inputs whose products overflow
HUGE_X = (X / np.abs(X).max() * 3e38).astype(np.float32)


def _model(loss, engine="auto"):
    return fm.MLP([4, 8, 1 if loss == "mse" else 2], loss=loss, device="cpu", seed=0,
                  engine=engine)


def _state(model):
    opt = model.optimizer
    return model.params.copy(), {k: a.copy() for k, a in opt.state_arrays().items()}, opt.t


def _assert_state(model, state):
    params, arrays, t = state
    assert np.isfinite(model.params).all()        # assert_array_equal takes NaN == NaN
    np.testing.assert_array_equal(model.params, params)
    got = model.optimizer.state_arrays()
    assert set(got) == set(arrays)
    for key, a in arrays.items():
        np.testing.assert_array_equal(got[key], a, err_msg=key)
    assert model.optimizer.t == t


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_divergence_in_the_first_epoch_restores_the_state_fit_started_from(loss, optimizer):
    model = _model(loss)
    opt = fm.optim.SGD(lr=0.01, momentum=0.9) if optimizer == "sgd" else fm.optim.Adam()
    model.fit(X, TARGETS[loss], epochs=3, batch_size=8, optimizer=opt)
    before = _state(model)
    assert before[2] == 12 and all(np.abs(a).max() > 0 for a in before[1].values())
    with pytest.raises(fm.DivergedError, match="diverged in epoch 1: .* from the start of "
                                               "this fit were restored") as info:
        model.fit(HUGE_X, TARGETS[loss], epochs=3, batch_size=8)     # resumes opt
    _assert_state(model, before)
    assert isinstance(info.value, RuntimeError) and info.value.epoch == 1
    assert info.value.history.epochs == 1
    # the restored state trains on
    hist = model.fit(X, TARGETS[loss], epochs=1, batch_size=8)
    assert math.isfinite(hist.history["train_loss"][0]) and model.optimizer.t == 16


# (loss, optimizer, lr, batch size, engine, the epoch that diverges)
LATER = [("mse", "sgd", 1.0, 8, "layer", 2),
         ("cross_entropy", "sgd", 1e3, 8, "layer", 3),
         ("cross_entropy", "sgd", 1e3, 8, "cpu-gemm", 3),
         ("cross_entropy", "adam", 1e18, 8, "layer", 7),
         ("cross_entropy", "adam", 1e18, 8, "cpu-gemm", 7)]
# plain SGD at batch size 1: the compiled CPU engines run each epoch in one call
LATER += [("cross_entropy", "sgd", 30.0, 1, e, 3) for e in engines.NAMES]
#: which engines run an epoch in one call: at batch size 1, and cpu-gemm's and warp's at any
#: (cpu-gemm's where its steps take one thread: these networks are small)
WHOLE_EPOCH = ("cpu-rows", "cpu-gemm")


@pytest.mark.parametrize("loss, optimizer, lr, batch_size, engine, diverges", LATER)
def test_divergence_in_a_later_epoch_restores_the_epoch_before(
        monkeypatch, loss, optimizer, lr, batch_size, engine, diverges):
    one_call = []
    for cls in engines.ENGINES:                    # which path ran the epochs
        def spy(self, *args, _orig=cls.train_epoch, **kw):
            out = _orig(self, *args, **kw)
            one_call.append(out is not None)
            return out
        monkeypatch.setattr(cls, "train_epoch", spy)
    kw = dict(batch_size=batch_size, optimizer=optimizer, lr=lr)
    ref = _model(loss, engine)
    ref.fit(X, TARGETS[loss], epochs=diverges - 1, **kw)
    model = _model(loss, engine)
    with pytest.raises(fm.DivergedError) as info:
        model.fit(X, TARGETS[loss], epochs=10, **kw)
    assert str(info.value).startswith(
        f"training diverged in epoch {diverges}: the training loss became ")
    assert f"from the end of epoch {diverges - 1} were restored" in str(info.value)
    assert f"lr={lr:g}" in str(info.value)
    _assert_state(model, _state(ref))
    # the diverged epoch is in the history, as it came out
    losses = info.value.history.history["train_loss"]
    assert len(losses) == diverges and not math.isfinite(losses[-1])
    assert all(map(math.isfinite, losses[:-1]))
    ran = model.step_path.engine
    whole = ran in ("warp", "cpu-gemm") or (ran in WHOLE_EPOCH and batch_size == 1)
    assert any(one_call) == whole


def test_weights_that_overflow_after_a_finite_loss_are_caught():
    """One full-batch step per epoch: the loss is taken before the update that
    overflows, so only the weights show it."""
    model = _model("mse")
    start = model.params.copy()
    with pytest.raises(fm.DivergedError, match="diverged in epoch 1: the weights became "
                                               "non-finite") as info:
        model.fit(X * np.float32(1e12), TARGETS["mse"], epochs=3, batch_size=None,
                  optimizer="sgd", lr=1e15)
    assert math.isfinite(info.value.history.history["train_loss"][0])
    np.testing.assert_array_equal(model.params, start)
    assert np.isfinite(model.params).all() and model.optimizer.t == 0


def test_warn_restores_stops_and_returns_the_history():
    ref = _model("mse")
    ref.fit(X, TARGETS["mse"], epochs=1, batch_size=8, optimizer="sgd", lr=1.0)
    model = _model("mse")
    with pytest.warns(RuntimeWarning, match="training diverged in epoch 2: .* end of epoch 1"):
        hist = model.fit(X, TARGETS["mse"], epochs=10, batch_size=8, optimizer="sgd", lr=1.0,
                         on_nonfinite="warn")
    assert hist.epochs == 2 and not math.isfinite(hist.history["train_loss"][-1])
    _assert_state(model, _state(ref))


def test_ignore_trains_on_with_nans():
    model = _model("mse")
    hist = model.fit(X, TARGETS["mse"], epochs=4, batch_size=8, optimizer="sgd", lr=1.0,
                     on_nonfinite="ignore")
    assert hist.epochs == 4 and math.isnan(hist.history["train_loss"][-1])
    assert not np.isfinite(model.params).all()


@pytest.mark.parametrize("on_nonfinite", ["raise", "warn"])
def test_early_stopping_never_restores_nan_weights(on_nonfinite):
    """Divergence in the first epoch: no epoch is best, and the weights are
    the ones fit started from."""
    model = _model("mse")
    start = model.params.copy()
    raising = on_nonfinite == "raise"
    with (pytest.raises(fm.DivergedError) if raising
          else pytest.warns(RuntimeWarning, match="diverged in epoch 1")) as info:
        hist = model.fit(X, TARGETS["mse"], epochs=5, batch_size=8, optimizer="sgd", lr=1e3,
                         validation_split=0.25, early_stopping=2, on_nonfinite=on_nonfinite)
    if raising:
        hist = info.value.history
    assert hist.best_epoch is None and hist.epochs == 1
    np.testing.assert_array_equal(model.params, start)
    assert np.isfinite(model.params).all()


def test_early_stopping_with_ignore_restores_the_best_finite_epoch():
    kw = dict(batch_size=1, optimizer="sgd", lr=30.0)
    model = _model("cross_entropy")
    hist = model.fit(X, TARGETS["cross_entropy"], epochs=10, early_stopping=3,
                     on_nonfinite="ignore", **kw)
    losses = hist.history["train_loss"]          # finite for 2 epochs, then NaN
    assert all(map(math.isfinite, losses[:2])) and not any(map(math.isfinite, losses[2:]))
    assert hist.best_epoch == 1 + int(np.argmin(losses[:2]))
    assert hist.epochs == hist.best_epoch + 3
    ref = _model("cross_entropy")
    ref.fit(X, TARGETS["cross_entropy"], epochs=hist.best_epoch, **kw)
    assert np.isfinite(model.params).all()
    np.testing.assert_array_equal(model.params, ref.params)


@pytest.mark.parametrize("bad", ["loud", "RAISE", None, True])
def test_a_bad_on_nonfinite_raises_before_the_model_changes(bad):
    model = _model("mse")
    start = model.params.copy()
    with pytest.raises(ValueError, match=r"on_nonfinite must be one of \['raise', 'warn', "
                                         r"'ignore'\]"):
        model.fit(X, TARGETS["mse"], epochs=2, optimizer="sgd", lr=1.0, on_nonfinite=bad)
    np.testing.assert_array_equal(model.params, start)
    assert model.optimizer is None


def test_diverged_error_is_exported():
    assert fm.DivergedError is fm.train.DivergedError and "DivergedError" in fm.__all__
    assert issubclass(fm.DivergedError, RuntimeError)


# cases where scikit-learn's own MLP diverges (its regressor, in float64, survives HUGE_X)
SKLEARN = [pytest.param("MLPRegressor", X, "mse", dict(solver="sgd", learning_rate_init=1e3),
                        id="regressor-sgd-huge-lr"),
           pytest.param("MLPClassifier", HUGE_X, "cross_entropy", dict(solver="adam"),
                        id="classifier-adam-huge-inputs")]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind, x, loss, kw", SKLEARN)
def test_sklearn_wrapper_raises_like_scikit_learn(kind, x, loss, kw):
    neural_network = pytest.importorskip("sklearn.neural_network")
    import fastmlp.sklearn as fsk
    y = TARGETS[loss].reshape(len(x), -1)[:, 0]
    kw = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0, **kw)
    with pytest.raises(ValueError) as theirs:
        getattr(neural_network, kind)(**kw).fit(x, y)
    ours = getattr(fsk, kind)(**kw)
    with pytest.raises(ValueError) as mine:
        ours.fit(x, y)
    assert str(mine.value) == str(theirs.value)
    assert "non-finite parameter weights" in str(mine.value)
    assert isinstance(mine.value.__cause__, fm.DivergedError)
    assert np.isfinite(ours.model_.params).all()
