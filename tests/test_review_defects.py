"""Defects a review of the issue-20 refactor found (one seam, one epoch loop,
declarative checks): each test failed on the code before its fix."""

import gc
import weakref

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.callbacks import Callback


def _data(n=60, d=4, k=2, sort=False):
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    return rng.normal(size=(n, d)).astype(np.float32), np.sort(y) if sort else y


class _Reseed(Callback):
    """Gives the model a new dropout generator before each epoch."""

    def __init__(self, seed):
        self.seed = seed

    def on_epoch_begin(self, epoch, logs):
        self.model.dropout_rng = self.model.backend.rng(self.seed + epoch)


def test_a_dropout_generator_set_during_a_fit_is_the_one_it_draws_from():
    x, y = _data()
    found = []
    for seed in (1, 2):
        model = fm.MLP([4, 16, 2], dropout=0.5, seed=0, device="cpu")
        model.fit(x, y, epochs=2, batch_size=10, optimizer="sgd", lr=0.1,
                  callbacks=[_Reseed(seed)])
        found.append(model.params.copy())
    assert not np.array_equal(*found)


@pytest.mark.parametrize("name, value", [("dropout", (0.5,)), ("reduction", "sum"),
                                         ("activation", "tanh")])
def test_what_the_network_is_cannot_be_changed_after_it_is_built(name, value):
    """Engines are built from the model's Net: a setting changed afterwards
    would be saved and shown, but not trained with."""
    model = fm.MLP([4, 16, 2], device="cpu")
    with pytest.raises(AttributeError):
        setattr(model, name, value)


def test_a_metric_that_needs_more_than_the_first_rows_is_not_refused():
    """The trial before training runs on a few rows, sorted here: one class.
    A metric that refuses that (as scikit-learn's log_loss does) is the
    data's business, not a broken metric."""
    x, y = _data(sort=True)

    def two_classes(y_true, y_pred):
        if len(np.unique(y_true.argmax(axis=1))) < 2:
            raise ValueError("y_true contains only one label")
        return float(y_pred.max())

    hist = fm.MLP([4, 5, 2], seed=0, device="cpu").fit(x, y, epochs=2, metrics=[two_classes])
    assert len(hist.history["train_two_classes"]) == 2


def test_callbacks_let_go_of_the_loop_after_fit():
    x, y = _data()
    cb = Callback()
    model = fm.MLP([4, 5, 2], seed=0, device="cpu")
    model.fit(x, y, epochs=1, callbacks=[cb])
    loop = getattr(cb, "loop", None)
    ref = weakref.ref(loop) if loop is not None else None
    del loop
    gc.collect()
    assert ref is None or ref() is None


@pytest.mark.parametrize("make", [lambda: fm.MLP([4, 2], input_scale=10**400, device="cpu"),
                                  lambda: fm.optim.SGD(lr=10**400)])
def test_an_integer_too_large_for_a_float_is_a_value_error(make):
    with pytest.raises(ValueError, match="must be"):
        make()


def test_sklearn_momentum_of_one_is_refused_before_anything_is_built():
    pytest.importorskip("sklearn")
    from fastmlp.sklearn import MLPClassifier
    x, y = _data()
    clf = MLPClassifier(solver="sgd", momentum=1.0, max_iter=2, device="cpu")
    with pytest.raises(ValueError, match="momentum"):
        clf.fit(x, y)
    assert not hasattr(clf, "model_")
