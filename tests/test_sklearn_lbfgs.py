"""``solver="lbfgs"`` and ``loss="poisson"`` in fastmlp.sklearn, against
scikit-learn's own estimators (issue 24, items 1 and 8)."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

PAIRS = {MLPClassifier: sk.MLPClassifier, MLPRegressor: sk.MLPRegressor}


def _data(kind, n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    if kind == "multiclass":
        return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    if kind == "multilabel":
        return X, np.stack([X[:, 0] > 0, X[:, 1] > 0.3, X[:, 2] < 0], axis=1).astype(int)
    if kind == "poisson":
        return X, rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1])).astype(float)
    return X, X[:, :2] @ np.array([[1.0, 0.5], [-2.0, 1.0]])             # two outputs


CASES = {"multiclass": (MLPClassifier, {}), "multilabel": (MLPClassifier, {}),
         "squared_error": (MLPRegressor, {}), "poisson": (MLPRegressor, {"loss": "poisson"})}


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_lbfgs_minimises_scikit_learns_objective(case, weighted):
    """From the same start, L-BFGS-B (deterministic) takes the same iterates only
    if the objective and its gradient are scikit-learn's: loss units, alpha on
    the weights and not the biases, sample weights."""
    ours_cls, extra = CASES[case]
    X, y = _data(case)
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(X)) if weighted else None
    params = dict(hidden_layer_sizes=(7,), activation="tanh", solver="lbfgs", alpha=0.3,
                  random_state=0, warm_start=True, **extra)
    ours = ours_cls(device="cpu", dtype="float64", max_iter=1, **params)
    theirs = PAIRS[ours_cls](max_iter=1, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in (ours, theirs):
            est.fit(X, y, sample_weight=w)
        start = np.random.default_rng(2)
        coefs = [start.normal(scale=0.5, size=c.shape) for c in theirs.coefs_]
        biases = [start.normal(scale=0.5, size=b.shape) for b in theirs.intercepts_]
        for est in (ours, theirs):
            est.coefs_, est.intercepts_ = [c.copy() for c in coefs], [b.copy() for b in biases]
            est.set_params(max_iter=8).fit(X, y, sample_weight=w)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_lbfgs_on_digits_converges_and_warns_as_scikit_learn():
    X, y = load_digits(return_X_y=True)
    X = X[:600] / 16
    clf = MLPClassifier(hidden_layer_sizes=(32,), solver="lbfgs", random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y[:600])
    assert clf.score(X, y[:600]) == 1.0 and 0 < clf.n_iter_ < 200
    assert not hasattr(clf, "loss_curve_")                 # as scikit-learn's lbfgs
    messages = []
    for est in (MLPClassifier(device="cpu", hidden_layer_sizes=(8,), solver="lbfgs",
                              max_iter=3), sk.MLPClassifier(hidden_layer_sizes=(8,),
                                                            solver="lbfgs", max_iter=3)):
        with pytest.warns(ConvergenceWarning) as seen:
            est.fit(X, y[:600])
        messages.append(str(seen[0].message))
        assert est.n_iter_ == 3
    assert messages[0] == messages[1]


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_partial_fit_exists_for_the_minibatch_solvers_only(cls):
    for solver in ("lbfgs", "adam", "sgd"):
        assert hasattr(cls(solver=solver), "partial_fit") == (solver != "lbfgs")
        # scikit-learn 1.9.1's MLPRegressor guards it with `lambda est: est._check_solver`,
        # never called: there hasattr is True for lbfgs, and the classifier's is right
        if cls is MLPClassifier:
            assert hasattr(PAIRS[cls](solver=solver), "partial_fit") == (solver != "lbfgs")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'"):
        cls(solver="lbfgs").partial_fit  # noqa: B018  (the access itself raises)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_poisson_predicts_rates_and_refuses_negative_counts():
    X, y = _data("poisson", n=400)
    reg = MLPRegressor(hidden_layer_sizes=(16,), loss="poisson", solver="lbfgs", random_state=0,
                       device="cpu").fit(X, y)
    assert reg.out_activation_ == "exp" and (reg.predict(X) > 0).all()
    hidden = np.maximum(X @ reg.coefs_[0] + reg.intercepts_[0], 0)
    np.testing.assert_allclose(reg.predict(X),
                               np.exp(hidden @ reg.coefs_[1] + reg.intercepts_[1])[:, 0],
                               rtol=1e-5)
    theirs = sk.MLPRegressor(hidden_layer_sizes=(16,), loss="poisson", solver="lbfgs",
                             random_state=0).fit(X, y)
    assert reg.score(X, y) > theirs.score(X, y) - 0.1
    with pytest.raises(ValueError, match="poisson targets .* must be >= 0"):
        MLPRegressor(loss="poisson", device="cpu").fit(X, y - 1)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="huber", device="cpu").fit(X, y)
