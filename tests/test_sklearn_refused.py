"""fastmlp.sklearn: a refused fit, refit or partial_fit leaves the estimator as it
was (every attribute, the model's parameters and optimizer bitwise, the random
state it draws from, its predictions), and the next call runs as if the refused
one had never been made."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N = 40
CALLS = ["fit", "refit", "warm_refit", "partial_fit"]


def _data(est):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 4))
    if isinstance(est, MLPClassifier):
        return X, np.arange(N) % 3                       # 3 classes, every 5 rows hold all
    return X, X @ np.array([1.0, -2.0, 0.5, 0.0])


def _estimator(kind, call, **params):
    """An estimator as each call finds it: unfitted (fit) or fitted (the others)."""
    est = kind(hidden_layer_sizes=(8,), max_iter=3, random_state=0, device="cpu", **params)
    X, y = _data(est)
    if call == "partial_fit":
        est.partial_fit(X, y, **({"classes": [0, 1, 2]} if kind is MLPClassifier else {}))
    elif call != "fit":
        est.fit(X, y)
    if call == "warm_refit":
        est.set_params(warm_start=True)
    return est


def _call(est, call, X, y, **kw):
    return est.partial_fit(X, y, **kw) if call == "partial_fit" else est.fit(X, y, **kw)


def _deep(value, seen):
    """``value`` as plain data to compare with ==: arrays bitwise, random states by
    their state, fastmlp's objects (the model, its optimizer, ...) by their attributes."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.random.RandomState):
        return ("RandomState", repr(value.get_state(legacy=False)))
    if isinstance(value, np.random.Generator):
        return ("Generator", repr(value.bit_generator.state))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_deep(v, seen) for v in value])
    if isinstance(value, dict):
        return ("dict", sorted((repr(k), _deep(v, seen)) for k, v in value.items()))
    if type(value).__module__.startswith("fastmlp") and hasattr(value, "__dict__"):
        if id(value) in seen:
            return ("seen", type(value).__name__)
        seen.add(id(value))
        return (type(value).__name__, _deep(vars(value), seen))
    if value is None or isinstance(value, (str, bool, int, float, np.generic)):
        return ("value", type(value).__name__, repr(value))
    return ("object", type(value).__name__)               # identity is checked separately


def _snapshot(est):
    X, _ = _data(est)
    outputs = []
    if hasattr(est, "model_"):
        outputs = [est.predict(X)] + ([est.predict_proba(X)]
                                      if isinstance(est, MLPClassifier) else [])
        outputs += est.coefs_ + est.intercepts_
    return dict(vars(est)), _deep(vars(est), set()), [_deep(a, set()) for a in outputs]


def _assert_unchanged(est, before):
    attributes, deep, outputs = before
    now = dict(vars(est))
    assert now.keys() == attributes.keys(), f"attributes added or removed: " \
        f"{sorted(set(now) ^ set(attributes))}"
    after = _snapshot(est)
    changed = [k for (k, a), (_, b) in zip(deep[1], after[1][1]) if a != b]
    replaced = [k for k in attributes if now[k] is not attributes[k]]
    assert not changed and not replaced, f"changed: {changed}; replaced: {replaced}"
    assert after[2] == outputs, "predictions or parameters changed"


# --- each refusal: (parameters set before the call, the call's X, y and keywords) -------

def _negative_sample_weight(est, call):
    X, y = _data(est)
    w = np.ones(N)
    w[3] = -1.0
    return {}, X, y, {"sample_weight": w}


def _zero_sample_weight(est, call):
    X, y = _data(est)
    return {}, X, y, {"sample_weight": np.zeros(N)}


def _negative_class_weight(est, call):
    X, y = _data(est)
    return {"class_weight": {0: -1.0, 1: 1.0, 2: 1.0}}, X, y, {}


def _class_weight_of_an_unknown_label(est, call):
    X, y = _data(est)
    return {"class_weight": {0: 1.0, 1: 1.0, 7: 1.0}}, X, y % 2, {}   # a cold fit: 2 classes


def _early_stopping_on_too_little_data(est, call):
    X, y = _data(est)
    return {"early_stopping": True}, X[:5], y[:5], {}


def _nan_in_X(est, call):
    X, y = _data(est)
    X = X.copy()
    X[2, 1] = np.nan
    return {}, X, y, {}


def _other_width_with_negative_weights(est, call):
    # a warm refit or partial_fit refuses the width, a cold fit takes it, then the weights
    X, y = _data(est)
    w = np.ones(N)
    w[0] = -1.0
    return {}, np.hstack([X, X[:, :1]]), y, {"sample_weight": w}


BOTH = [_negative_sample_weight, _zero_sample_weight, _early_stopping_on_too_little_data,
        _nan_in_X, _other_width_with_negative_weights]
CLASSIFIER = [_negative_class_weight, _class_weight_of_an_unknown_label]
CASES = ([(MLPClassifier, r) for r in BOTH + CLASSIFIER] + [(MLPRegressor, r) for r in BOTH])


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("kind, refusal", CASES,
                         ids=[f"{k.__name__}-{r.__name__.strip('_')}" for k, r in CASES])
def test_a_refused_call_leaves_the_estimator_as_it_was(kind, refusal, call):
    est = _estimator(kind, call)
    twin = _estimator(kind, call)                        # never sees the refused call
    params, X, y, kw = refusal(est, call)
    original = {k: est.get_params()[k] for k in params}
    est.set_params(**params)
    before = _snapshot(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # e.g. feature-name warnings
        with pytest.raises(ValueError):
            _call(est, call, X, y, **kw)
    _assert_unchanged(est, before)
    # the next call runs as if the refused one had never been made
    est.set_params(**original)
    X, y = _data(est)
    _call(est, call, X, y)
    _call(twin, call, X, y)
    assert _snapshot(est)[1:] == _snapshot(twin)[1:]


@pytest.mark.parametrize("kind", [MLPClassifier, MLPRegressor])
def test_a_refused_call_does_not_draw_from_the_callers_random_state(kind):
    """With random_state a RandomState, a refused refit leaves it where it was, so
    the next fit starts from the weights it would have had."""
    est = kind(hidden_layer_sizes=(8,), max_iter=3, device="cpu",
               random_state=np.random.RandomState(0))
    twin = kind(hidden_layer_sizes=(8,), max_iter=3, device="cpu",
                random_state=np.random.RandomState(0))
    X, y = _data(est)
    est.fit(X, y)
    twin.fit(X, y)
    w = np.ones(N)
    w[-1] = -1.0
    before = _snapshot(est)
    with pytest.raises(ValueError, match="non-negative"):
        est.fit(X, y, sample_weight=w)
    _assert_unchanged(est, before)
    est.fit(X, y)
    twin.fit(X, y)
    assert _snapshot(est)[1:] == _snapshot(twin)[1:]


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_a_refused_refit_keeps_the_feature_names_of_the_last_fit():
    """scikit-learn's input check resets the feature names before it looks at the
    values: a refit refused for a NaN must not forget them."""
    pd = pytest.importorskip("pandas")
    est = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0, device="cpu")
    X, y = _data(est)
    est.fit(pd.DataFrame(X, columns=list("abcd")), y)
    before = _snapshot(est)
    X = X.copy()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(X, y)
    _assert_unchanged(est, before)
    assert list(est.feature_names_in_) == list("abcd")
