"""fastmlp.sklearn behaves as scikit-learn's own estimators at the edges (issue 24,
items 3-8): each case is run on both and compared."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402

from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
PAIRS = {"classifier": (MLPClassifier, sk.MLPClassifier), "regressor": (MLPRegressor,
                                                                         sk.MLPRegressor)}


def _both(kind, **params):
    ours, theirs = PAIRS[kind]
    return ours(device="cpu", **params), theirs(**params)


def test_a_diverging_fit_with_early_stopping_keeps_going_and_returns_its_best_weights():
    X, y = load_iris(return_X_y=True)
    params = dict(hidden_layer_sizes=100, activation="identity", solver="sgd",
                  learning_rate_init=1, max_iter=20, early_stopping=True, random_state=0)
    for est in _both("regressor", **params):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # overflow on the way
            est.fit(X, y)
        scores = np.array(est.validation_scores_)
        assert est.n_iter_ == 20 and len(scores) == 20
        assert np.isnan(scores[-1]) and np.isfinite(scores[0])
        assert est.best_validation_score_ == np.nanmax(scores)
        assert all(np.isfinite(w).all() for w in est.coefs_ + est.intercepts_)
        assert np.isfinite(est.predict(X)).all()


@pytest.mark.parametrize("label", [1, "only"])
def test_a_target_with_one_class_fits(label):
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.full(20, label, dtype=object if isinstance(label, str) else int)
    ours, theirs = (e.fit(X, y) for e in _both("classifier", max_iter=50, random_state=0))
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    p, q = ours.predict_proba(X), theirs.predict_proba(X)
    assert p.shape == q.shape == (20, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1)
    assert ours.score(X, y) == theirs.score(X, y) == 1.0


@pytest.mark.parametrize("attr", ["coefs_", "intercepts_"])
def test_coefs_and_intercepts_are_the_models_own(attr):
    X, y = load_iris(return_X_y=True)
    for est in _both("classifier", hidden_layer_sizes=(8,), max_iter=5, random_state=0):
        est.fit(X, y)
        getattr(est, attr)[0][...] = 0                     # in place: the model changes
        assert not getattr(est, attr)[0].any()
        before = est.predict_proba(X)
        new = [np.full_like(a, 0.5) for a in getattr(est, attr)]
        setattr(est, attr, new)                            # assigned: the model changes
        assert all((a == 0.5).all() for a in getattr(est, attr))
        assert not np.allclose(est.predict_proba(X), before)


def test_assigning_coefs_of_other_shapes_is_refused():
    X, y = load_iris(return_X_y=True)
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device="cpu")
    est.fit(X, y)
    before = [c.copy() for c in est.coefs_]
    with pytest.raises(ValueError, match="coefs_ must be 2 arrays"):
        est.coefs_ = [np.zeros((4, 8))]
    with pytest.raises(ValueError, match="coefs_ must be 2 arrays"):
        est.coefs_ = [np.zeros((4, 8)), np.zeros((8, 2))]
    assert all((a == b).all() for a, b in zip(est.coefs_, before))


@pytest.mark.parametrize("y2", [np.arange(20) % 2, np.arange(20) % 4], ids=["subset", "new"])
def test_warm_start_with_other_classes_is_refused_as_in_scikit_learn(y2):
    X = np.random.default_rng(0).normal(size=(20, 3))
    messages = []
    for est in _both("classifier", max_iter=5, random_state=0, warm_start=True):
        est.fit(X, np.arange(20) % 3)
        with pytest.raises(ValueError) as err:
            est.fit(X, y2)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_partial_fit_with_unseen_classes_is_refused_as_in_scikit_learn():
    X = np.random.default_rng(0).normal(size=(20, 3))
    messages = []
    for est in _both("classifier", max_iter=5, random_state=0):
        est.partial_fit(X, np.arange(20) % 3, classes=[0, 1, 2])
        with pytest.raises(ValueError) as err:
            est.partial_fit(X, np.arange(20) % 4)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


@pytest.mark.cuda
def test_coefs_edited_on_the_host_reach_the_model_on_a_gpu():
    X, y = load_iris(return_X_y=True)
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device="cuda")
    est.fit(X, y)
    assert isinstance(est.coefs_[0], np.ndarray)
    est.coefs_[1][...] = 0
    est.intercepts_[1][...] = [0.0, 5.0, 0.0]            # every sample: class 1
    assert (est.predict(X) == 1).all()
    est.coefs_ = [np.zeros_like(c) for c in est.coefs_]
    est.intercepts_ = [np.zeros_like(b) for b in est.intercepts_]
    np.testing.assert_allclose(est.predict_proba(X), 1 / 3)
    est.coefs_[1][...] = 1.0                              # an edit, then a pickle: kept
    import pickle
    again = pickle.loads(pickle.dumps(est))
    assert "_mirror" not in vars(again)                   # the edit went into the model
    assert (again.coefs_[1] == 1).all()
