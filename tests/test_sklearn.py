"""fastmlp.sklearn: scikit-learn's estimator checks, pipelines and searches,
labels, weights, partial_fit, pickling, and a sweep on a Dask cluster."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits, load_wine  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# --- scikit-learn's own checks: every one that applies, none expected to fail --------

@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


def test_every_parameter_of_scikit_learns_mlp_is_accepted():
    """Code written for sklearn.neural_network runs after changing the import."""
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from sklearn.neural_network import MLPRegressor as SkRegressor
    for ours, theirs in [(MLPClassifier, SkClassifier), (MLPRegressor, SkRegressor)]:
        missing = set(theirs().get_params()) - set(ours().get_params())
        assert not missing, missing
        defaults = {k: v for k, v in theirs().get_params().items() if k != "solver"}
        assert {k: ours().get_params()[k] for k in defaults} == defaults


# --- real data: pipelines, searches, cross-validation --------------------------------

def test_pipeline_grid_search_and_cross_validation_on_wine():
    X, y = load_wine(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPClassifier(max_iter=150, random_state=0))])
    grid = GridSearchCV(pipe, {"mlp__hidden_layer_sizes": [(16,), (32, 16)],
                               "mlp__alpha": [1e-4, 1e-2]}, cv=3)
    grid.fit(X, y)
    assert set(grid.best_params_) == {"mlp__hidden_layer_sizes", "mlp__alpha"}
    assert grid.best_score_ > 0.9
    assert grid.predict(X).shape == y.shape
    scores = cross_val_score(make_pipeline(StandardScaler(),
                                           MLPClassifier(max_iter=150, random_state=0)), X, y,
                             cv=3)
    assert scores.mean() > 0.9


def test_regressor_in_a_pipeline_on_diabetes():
    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(),
                          MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01,
                                       max_iter=300, random_state=0))
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.mean() > 0.3                         # R^2; a linear model gets about 0.48
    reg = model.fit(X, y)[-1]
    assert len(reg.loss_curve_) == reg.n_iter_ and reg.loss_ == reg.loss_curve_[-1]


def test_digits_accuracy_within_a_point_of_scikit_learns_mlp():
    from sklearn.neural_network import MLPClassifier as SkClassifier
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    kw = dict(hidden_layer_sizes=(64,), max_iter=200, random_state=0)
    ours = MLPClassifier(**kw).fit(X[:1400], y[:1400]).score(X[1400:], y[1400:])
    theirs = SkClassifier(**kw).fit(X[:1400], y[:1400]).score(X[1400:], y[1400:])
    assert ours > 0.9 and abs(ours - theirs) <= 0.01, (ours, theirs)


# --- labels --------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "emu"]), np.array([3, 7, 11]),
                                    np.array([False, True])])
def test_any_labels_round_trip(labels, blobs):
    x, y = blobs
    yl = labels[y % len(labels)]
    clf = MLPClassifier((16,), learning_rate_init=0.01, max_iter=200, random_state=0).fit(x, yl)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    pred = clf.predict(x)
    assert pred.dtype == yl.dtype and set(pred) <= set(labels)
    assert (pred == yl).mean() > 0.9
    proba = clf.predict_proba(x)
    assert proba.shape == (len(x), len(labels))
    np.testing.assert_allclose(np.log(proba), clf.predict_log_proba(x), rtol=1e-6, atol=1e-12)
    assert clf.decision_function(x).shape == ((len(x),) if len(labels) == 2
                                              else (len(x), len(labels)))


def test_multilabel_and_multioutput_targets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    Y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0, x[:, 3] > 0.5], axis=1).astype(int)
    clf = MLPClassifier((32,), max_iter=200, random_state=0).fit(x, Y)
    assert clf.predict(x).shape == Y.shape and clf.out_activation_ == "logistic"
    assert (clf.predict(x) == Y).mean() > 0.9
    assert clf.predict_proba(x).shape == Y.shape
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, learning_rate_init=0.01,
                       random_state=0)
    T = np.stack([x[:, 0] + x[:, 1], x[:, 2] - x[:, 3]], axis=1)
    assert reg.fit(x, T).predict(x).shape == T.shape and reg.score(x, T) > 0.9
    assert reg.fit(x, T[:, 0]).predict(x).shape == (200,)


def test_unknown_labels_are_refused(blobs):
    x, y = blobs                         # one class fits, as in scikit-learn: test_sklearn_edges
    clf = MLPClassifier(max_iter=5).partial_fit(x, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="classes not in `self.classes_`"):
        clf.partial_fit(x, y + 4)
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(x, y)


# --- weights -------------------------------------------------------------------------

def test_zero_sample_weights_give_the_model_of_the_remaining_rows(blobs):
    x, y = blobs
    keep = np.arange(len(x)) % 3 != 0
    kw = dict(hidden_layer_sizes=(16,), batch_size=len(x), shuffle=False, max_iter=40,
              random_state=0, dtype="float64")
    weighted = MLPClassifier(**kw).fit(x, y, sample_weight=keep.astype(float))
    dropped = MLPClassifier(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # batch_size clipped to the rows left
        dropped.fit(x[keep], y[keep])
    np.testing.assert_allclose(weighted.predict_proba(x), dropped.predict_proba(x), rtol=1e-8)
    for a, b in zip(weighted.coefs_, dropped.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_balanced_class_weight_equals_the_per_sample_weights_it_implies(blobs):
    x, y = blobs
    x, y = x[:70], y[:70]                                  # unbalanced: 30 / 30 / 10
    kw = dict(hidden_layer_sizes=(16,), max_iter=30, random_state=0)
    a = MLPClassifier(class_weight="balanced", **kw).fit(x, y)
    balanced = len(y) / (3 * np.bincount(y))               # n / (classes * count), per class
    b = MLPClassifier(**kw).fit(x, y, sample_weight=balanced[y])
    c = MLPClassifier(**kw).fit(x, y)
    np.testing.assert_allclose(a.predict_proba(x), b.predict_proba(x), rtol=1e-6)
    assert not np.allclose(a.predict_proba(x), c.predict_proba(x), rtol=1e-3)
    d = MLPClassifier(class_weight={0: 1.0, 1: 1.0, 2: 3.0}, **kw).fit(x, y)
    e = MLPClassifier(**kw).fit(x, y, sample_weight=np.where(y == 2, 3.0, 1.0))
    np.testing.assert_allclose(d.predict_proba(x), e.predict_proba(x), rtol=1e-6)
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(x, y, classes=[0, 1, 2])


# --- partial_fit, warm_start, early stopping -------------------------------------------

def test_partial_fit_over_chunks_equals_one_epoch_of_fit_without_shuffling(blobs):
    x, y = blobs
    kw = dict(hidden_layer_sizes=(16,), batch_size=15, shuffle=False, random_state=0)
    whole = MLPClassifier(max_iter=1, **kw)
    whole.fit(x, y)
    chunks = MLPClassifier(**kw)
    for lo in range(0, 90, 30):                            # chunks of whole batches
        chunks.partial_fit(x[lo:lo + 30], y[lo:lo + 30], classes=[0, 1, 2])
    for a, b in zip(whole.coefs_ + whole.intercepts_, chunks.coefs_ + chunks.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # as scikit-learn counts: n_iter_ per call, samples seen (t_) and the curve over all
    assert chunks.n_iter_ == 1 and chunks.t_ == 90 and len(chunks.loss_curve_) == 3


def test_warm_start_continues_and_a_cold_fit_starts_over(blobs):
    x, y = blobs
    clf = MLPClassifier((16,), max_iter=5, warm_start=True, random_state=0).fit(x, y)
    first = clf.coefs_[0].copy()
    clf.fit(x, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 10 and clf.t_ == 900
    assert not np.allclose(clf.coefs_[0], first)
    clf.set_params(warm_start=False).fit(x, y)
    assert clf.n_iter_ == 5
    np.testing.assert_allclose(clf.coefs_[0], first, rtol=1e-6)   # same seed, fresh start


def test_convergence_by_tol_and_early_stopping_with_validation_scores(blobs):
    x, y = blobs
    clf = MLPClassifier((16,), max_iter=500, tol=1e-2, n_iter_no_change=3,
                        random_state=0).fit(x, y)
    assert clf.n_iter_ < 500 and clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None
    es = MLPClassifier((16,), max_iter=300, early_stopping=True, validation_fraction=0.2,
                       n_iter_no_change=5, random_state=0).fit(x, y)
    assert es.best_loss_ is None and len(es.validation_scores_) == es.n_iter_
    assert es.best_validation_score_ == max(es.validation_scores_)
    with pytest.raises(ValueError, match="early_stopping"):
        es.partial_fit(x, y)
    with pytest.warns(ConvergenceWarning):
        MLPClassifier((4,), max_iter=2, random_state=0).fit(x, y)


def test_solvers_and_learning_rate_schedules(blobs):
    x, y = blobs
    for solver in ["sgd", "adam", "adamw", "rmsprop", "adagrad"]:
        clf = MLPClassifier((16,), solver=solver, learning_rate_init=0.05, max_iter=100,
                            random_state=0).fit(x, y)
        assert clf.score(x, y) > 0.9, solver
    clf = MLPClassifier((16,), solver="sgd", learning_rate="invscaling", learning_rate_init=0.1,
                        max_iter=10, random_state=0).fit(x, y)
    assert clf.model_.optimizer.lr == pytest.approx(0.1 / (900 + 1) ** 0.5)
    # adaptive: each stall divides the rate by 5 until it is 1e-6 or less, then training stops
    clf = MLPClassifier((16,), solver="sgd", learning_rate="adaptive", learning_rate_init=0.1,
                        tol=10.0, n_iter_no_change=1, max_iter=100, random_state=0).fit(x, y)
    # epoch 1 sets best_loss_; a stall is then 2 epochs; the 9th stall sees 0.1 / 5**8
    assert clf.model_.optimizer.lr == pytest.approx(0.1 / 5 ** 8) and clf.n_iter_ == 1 + 2 * 9
    # n_iter_no_change=inf never stops; validation_fraction=0 is fine without early stopping
    clf = MLPClassifier((4,), tol=10.0, n_iter_no_change=np.inf, validation_fraction=0.0,
                        max_iter=7, random_state=0).fit(x, y)
    assert clf.n_iter_ == 7
    with pytest.raises(ValueError, match="solver"):         # lbfgs: tests/test_sklearn_lbfgs.py
        MLPClassifier(solver="newton").fit(x, y)


def test_one_engine_per_fit_and_per_partial_fit_call(blobs, monkeypatch):
    """The epochs of one fit share one loop: one engine choice, not one per epoch."""
    import fastmlp.engines
    made = []

    def counting(*args, **kwargs):
        made.append(args[2])                     # the batch size (after net, buffers)
        return create(*args, **kwargs)

    create = fastmlp.engines.create
    monkeypatch.setattr(fastmlp.engines, "create", counting)
    x, y = blobs
    clf = MLPClassifier((8,), max_iter=50, tol=0, n_iter_no_change=1000, batch_size=30,
                        random_state=0).fit(x, y)
    assert clf.n_iter_ == 50 and made == [30]
    for _ in range(3):
        clf.partial_fit(x, y)
    assert made == [30] * 4


# --- pickling, cloning, devices, joblib workers -------------------------------------

def test_fitted_estimators_pickle_their_weights_and_clone_unfitted(blobs):
    x, y = blobs
    clf = MLPClassifier((16,), max_iter=20, random_state=0).fit(x, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(x), clf.predict_proba(x))
    assert again.model_.backend.name == clf.model_.backend.name
    again.partial_fit(x, y)                                # resumes with its optimizer state
    clf.partial_fit(x, y)
    np.testing.assert_array_equal(again.coefs_[0], clf.coefs_[0])
    fresh = clone(clf)
    assert not hasattr(fresh, "model_") and fresh.get_params() == clf.get_params()


@pytest.mark.cuda
def test_set_params_device_moves_a_fitted_estimator(blobs):
    x, y = blobs
    clf = MLPClassifier((16,), max_iter=20, random_state=0, device="cuda").fit(x, y)
    proba = clf.predict_proba(x)
    assert isinstance(proba, np.ndarray) and clf.model_.backend.name == "cuda:0"
    clf.set_params(device="cpu")
    assert clf.model_.backend.name == "cpu"
    np.testing.assert_allclose(clf.predict_proba(x), proba, rtol=1e-5)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(clf)).predict_proba(x), proba,
                               rtol=1e-5)


def test_set_params_device_on_a_fitted_estimator_says_what_is_wrong(blobs, without_cupy):
    x, y = blobs
    clf = MLPClassifier((8,), max_iter=2, random_state=0).fit(x, y)
    with pytest.raises(RuntimeError, match="not usable"):
        clf.set_params(device="cuda")
    assert clf.device == "auto" and clf.model_.backend.name == "cpu"     # nothing changed
    with pytest.raises(ValueError, match="Invalid parameter"):
        clf.set_params(device="cpu", no_such_parameter=1)
    assert clf.device == "auto" and clf.model_.backend.name == "cpu"


def _ran_compiled_adam():
    import importlib
    ops = importlib.import_module("fastmlp.kernels.cpu_ops")
    step = importlib.import_module("fastmlp.kernels.cpu_gemm_step")
    return len(ops._adam.signatures) + len(step.gemm_epoch.signatures) > 0


def test_grid_search_on_a_dask_cluster_of_two_worker_processes():
    """scikit-learn's joblib backends spread a search over processes or
    machines; here two local worker processes of a dask.distributed cluster."""
    pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    import joblib
    X, y = load_wine(return_X_y=True)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        # on the CPU, where a GPU is usable too: the check below reads the CPU kernels
        grid = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(max_iter=100,
                                                                          random_state=0,
                                                                          device="cpu")),
                            {"mlpclassifier__hidden_layer_sizes": [(16,), (32,)],
                             "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3, n_jobs=2)
        with joblib.parallel_backend("dask"):
            grid.fit(X, y)
        # a worker that trained has run the compiled CPU kernels (unpickling alone would
        # not): Adam's update, on its own or inside the one-call epoch
        ran = client.run(_ran_compiled_adam)
    assert len(ran) == 2 and all(ran.values())             # both workers trained models
    assert grid.best_score_ > 0.8 and len(grid.cv_results_["params"]) == 4


# --- scikit-learn's maths: one SGD step moves the last layer by lr * its gradient -----

def _sk_step(outputs, kind):
    """Fit one SGD epoch on a full batch, then one more from the weights it left,
    and compare the last layer's change with scikit-learn's gradient formula
    dW = a^T (p - y) / n (no division by the number of outputs)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    if kind == "regression":
        y = rng.normal(size=(40, outputs)) if outputs > 1 else rng.normal(size=40)
        est = MLPRegressor(hidden_layer_sizes=(5,))
    elif kind == "multilabel":
        y = (rng.random((40, outputs)) > 0.5).astype(int)
        est = MLPClassifier(hidden_layer_sizes=(5,))
    else:
        y = rng.integers(0, outputs, 40)
        est = MLPClassifier(hidden_layer_sizes=(5,))
    est.set_params(solver="sgd", momentum=0.0, alpha=0.0, learning_rate_init=0.1,
                   batch_size=40, shuffle=False, max_iter=1, warm_start=True, random_state=0,
                   dtype="float64", activation="tanh")
    est.fit(x, y)
    # copies: coefs_ are the model's own arrays (as scikit-learn's), changed by the next fit
    (w0, w1), (b0, b1) = ([a.copy() for a in est.coefs_], [a.copy() for a in est.intercepts_])
    est.fit(x, y)
    a = np.tanh(x @ w0 + b0)
    z = a @ w1 + b1
    if kind == "regression":
        p, target = z, y.reshape(40, -1)
    elif kind == "multilabel":
        p, target = 1 / (1 + np.exp(-z)), y
    else:
        e = np.exp(z - z.max(1, keepdims=True))
        p, target = e / e.sum(1, keepdims=True), np.eye(outputs)[y]
    return est.coefs_[1], w1 - 0.1 * a.T @ (p - target) / 40


@pytest.mark.parametrize("kind, outputs", [("regression", 1), ("regression", 3),
                                           ("multilabel", 3), ("multiclass", 4)])
def test_one_sgd_step_follows_scikit_learns_gradient(kind, outputs):
    got, want = _sk_step(outputs, kind)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_early_stopping_splits_as_scikit_learn_does():
    """Stratified for two classes only: ten classes of six samples train."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), np.repeat(np.arange(10), 6)
    clf = MLPClassifier((8,), early_stopping=True, validation_fraction=0.1, max_iter=3,
                        random_state=0).fit(x, y)
    assert len(clf.validation_scores_) == 3
