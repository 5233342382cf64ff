"""Bad inputs raise ValueError, TypeError or RuntimeError with a message that
names the problem, and leave the model unchanged.

``python tests/test_bad_inputs.py`` prints the table of cases and outcomes.
"""

import numpy as np
import pytest

import fastmlp as fm


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 3, 20)


def _with(x, index, value):
    x = x.copy()
    x[index] = value
    return x


X, Y = _data()

# (case, call(model), exception type, words the message must contain)
CASES = [
    ("wrong feature count", lambda m: m.fit(X[:, :3], Y), ValueError, "3 features"),
    ("wrong feature count (predict)", lambda m: m.predict(np.ones((2, 5))), ValueError,
     "5 features"),
    ("x/y length mismatch", lambda m: m.fit(X, Y[:-1]), ValueError, "lengths differ"),
    ("NaN in x", lambda m: m.fit(_with(X, (3, 1), np.nan), Y), ValueError, "NaN or inf"),
    ("inf in x", lambda m: m.fit(_with(X, (0, 0), np.inf), Y), ValueError, "NaN or inf"),
    ("NaN in y (regression)", lambda m: m.evaluate(X, _with(Y.astype(float), 2, np.nan)),
     ValueError, "NaN or inf"),
    ("label out of range", lambda m: m.fit(X, _with(Y, 5, 3)), ValueError, "label 3"),
    ("negative label", lambda m: m.fit(X, _with(Y, 5, -1)), ValueError, "label -1"),
    ("non-integer label", lambda m: m.fit(X, _with(Y.astype(float), 5, 0.5)), ValueError,
     "integers"),
    ("one-hot with wrong width", lambda m: m.fit(X, np.eye(4)[Y % 4]), ValueError, "shape"),
    ("cross_entropy targets that are not probability rows",
     lambda m: m.fit(X, -5 * np.ones((20, 3))), ValueError, "summing to 1"),
    ("empty x", lambda m: m.fit(X[:0], Y[:0]), ValueError, "empty"),
    ("negative sample_weight", lambda m: m.fit(X, Y, sample_weight=_with(np.ones(20), 3, -1)),
     ValueError, "finite and non-negative"),
    ("NaN sample_weight", lambda m: m.fit(X, Y, sample_weight=_with(np.ones(20), 3, np.nan)),
     ValueError, "sample_weight contains NaN or inf"),
    ("sample_weight of the wrong length", lambda m: m.fit(X, Y, sample_weight=np.ones(19)),
     ValueError, "sample_weight must have shape (20,)"),
    ("sample_weight all zero", lambda m: m.fit(X, Y, sample_weight=np.zeros(20)), ValueError,
     "sums to zero"),
    ("x not 2-D", lambda m: m.fit(X.reshape(20, 2, 2), Y), ValueError, "x.reshape(len(x), -1)"),
    ("x of strings", lambda m: m.predict(np.array([["a"] * 4])), TypeError, "numbers"),
    ("batch_size = 0", lambda m: m.fit(X, Y, batch_size=0), ValueError, "batch_size"),
    ("batch_size < 0", lambda m: m.fit(X, Y, batch_size=-8), ValueError, "batch_size"),
    ("batch_size not an integer", lambda m: m.fit(X, Y, batch_size=1.5), TypeError,
     "batch_size"),
    ("epochs = 0", lambda m: m.fit(X, Y, epochs=0), ValueError, "epochs"),
    ("validation_split out of (0, 1)", lambda m: m.fit(X, Y, validation_split=1.5), ValueError,
     "validation_split"),
    ("validation_split not a number", lambda m: m.fit(X, Y, validation_split="0.1"), TypeError,
     "validation_split"),
    ("validation_data not a pair", lambda m: m.fit(X, Y, validation_data=5), TypeError,
     "validation_data"),
    ("unknown activation", lambda m: fm.MLP([4, 3], activation="swish"), ValueError,
     "unknown activation 'swish'"),
    ("unknown loss", lambda m: fm.MLP([4, 3], loss="hinge"), ValueError, "unknown loss 'hinge'"),
    ("unknown reduction", lambda m: fm.MLP([4, 3], reduction="avg"), ValueError,
     "unknown reduction"),
    ("unknown optimizer", lambda m: m.fit(X, Y, optimizer="adamax"), ValueError,
     "unknown optimizer 'adamax'"),
    ("bad learning rate", lambda m: m.fit(X, Y, optimizer="sgd", lr=-1), ValueError, "lr"),
    ("unknown device", lambda m: fm.MLP([4, 3], device="tpu"), ValueError, "unknown device"),
    ("unknown kernels", lambda m: fm.MLP([4, 3], kernels="fast"), ValueError,
     "kernels must be one of ['auto', 'fused', 'reference', 'warp'], got 'fast'"),
    ("unknown engine", lambda m: fm.MLP([4, 3], engine="gpu"), ValueError,
     "unknown engine 'gpu'"),
    ("engine that cannot run the case", lambda m: fm.MLP([4, 8, 3], engine="cpu-rows").fit(X, Y),
     ValueError, "engine 'cpu-rows' cannot run this model at batch size 20"),
    ("evaluate with a Prepared and targets", lambda m: m.evaluate(m.prepare(X, Y), Y), TypeError,
     "pass a Prepared alone"),
    ("bad dtype", lambda m: fm.MLP([4, 3], dtype="float16"), ValueError, "dtype"),
    ("bad sizes", lambda m: fm.MLP([4]), ValueError, "at least"),
    ("cross_entropy with one output", lambda m: fm.MLP([4, 1]), ValueError,
     "binary_cross_entropy"),
    ("dropout without hidden layers", lambda m: fm.MLP([4, 3], dropout=0.5), ValueError,
     "dropout applies after hidden layers, and this model has none"),
    ("seed not an integer", lambda m: fm.MLP([4, 3], seed="a"), TypeError, "seed"),
    ('device="cuda" without a GPU', lambda m: fm.MLP([4, 3], device="cuda"), RuntimeError,
     'pip install "fastmlp[cuda13]"'),
    ('model.to("cuda") without a GPU', lambda m: m.to("cuda"), RuntimeError, 'device="cpu"'),
]


def _snapshot(model):
    opt = model.optimizer
    return (model.backend.to_numpy(model.params).copy(), model.backend.name,
            None if opt is None else (opt.t, {k: model.backend.to_numpy(a).copy()
                                              for k, a in opt.state_arrays().items()}))


def _trained_model():
    model = fm.MLP([4, 8, 3], seed=0, device="cpu")
    model.fit(X, Y, epochs=2, optimizer="adam")
    return model


@pytest.mark.parametrize("case, call, error, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error_and_changes_nothing(request, case, call, error, words):
    if "cuda" in case:
        request.getfixturevalue("without_cupy")
    model = _trained_model()
    before = _snapshot(model)
    with pytest.raises(error) as info:
        call(model)
    assert words in str(info.value)
    after = _snapshot(model)
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]
    assert before[2][0] == after[2][0]
    for key in before[2][1]:
        np.testing.assert_array_equal(before[2][1][key], after[2][1][key])


def main():
    print("| bad input | raises | message |\n|---|---|---|")
    for case, call, _, _ in CASES:
        try:
            call(_trained_model())
            outcome, message = "nothing", ""
        except Exception as e:
            outcome, message = type(e).__name__, str(e)
        print(f"| {case} | {outcome} | {message.replace('|', '/')} |")


if __name__ == "__main__":
    main()
