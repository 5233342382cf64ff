"""fastmlp.constraints and its use by every public constructor and fit: NumPy
scalars accepted like Python numbers, bools refused as numbers, one message
shape, and refusals (found by hypothesis) that change nothing."""

import os
import re
from numbers import Integral, Real

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmlp as fm
from fastmlp import callbacks, metrics, optim, schedules
from fastmlp.constraints import Boolean, Instance, Interval, Options, check

INTS = (np.int32, np.int64)
FLOATS = (np.float32, np.float64)
X = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
Y = np.arange(12) % 3


def _mlp(**kw):
    return fm.MLP([4, 5, 3], seed=0, device="cpu", **kw)


def _fit(**kw):
    model = _mlp()
    model.fit(X, Y, **{"epochs": 2, "batch_size": 4, **kw})
    return model.params.copy(), model.optimizer.config(), model.optimizer.t


def _sk(cls, **kw):
    import warnings

    from fastmlp.sklearn import MLPClassifier, MLPRegressor
    est = {"clf": MLPClassifier, "reg": MLPRegressor}[cls](**{"hidden_layer_sizes": (5,),
                                                               "max_iter": 3, "random_state": 0,
                                                               "device": "cpu", **kw})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Stochastic Optimizer")   # a 3-epoch fit
        est.fit(X, Y if cls == "clf" else X[:, 0])
    return est.coefs_, est.n_iter_, est.get_params()


def _schedule(s):
    return [s(e) for e in range(6)], vars(s)


# (id, name in messages, build(value) -> what to compare, Python value, NumPy kinds, bad value)
NUMERIC = [
    ("MLP sizes", "sizes[1]", lambda v: fm.MLP([4, v, 3], seed=0, device="cpu").sizes, 5, INTS,
     0),
    ("MLP seed", "seed", lambda v: fm.MLP([4, 3], seed=v, device="cpu").params, 3, INTS, -1),
    ("MLP dropout", "dropout", lambda v: _mlp(dropout=v).dropout, 0.5, FLOATS, 1.0),
    ("MLP dropout list", "dropout[0]", lambda v: _mlp(dropout=[v]).dropout, 0.25, FLOATS, -0.5),
    ("MLP input_scale", "input_scale", lambda v: _mlp(input_scale=v).input_scale, 0.5,
     FLOATS, 0.0),
    ("MLP init", "init", lambda v: _mlp(init=v).params, 0.5, FLOATS, -1.0),
    ("fit epochs", "epochs", lambda v: _fit(epochs=v), 2, INTS, 0),
    ("fit batch_size", "batch_size", lambda v: _fit(batch_size=v), 5, INTS, 0),
    ("fit early_stopping", "early_stopping", lambda v: _fit(epochs=4, early_stopping=v), 1,
     INTS, 0),
    ("fit initial_epoch", "initial_epoch",
     lambda v: _fit(lr=schedules.StepDecay(0.1, 2), initial_epoch=v), 3, INTS, -1),
    ("fit validation_split", "validation_split", lambda v: _fit(validation_split=v), 0.25,
     FLOATS, 1.0),
    ("fit lr", "lr", lambda v: _fit(optimizer="sgd", lr=v), 0.125, FLOATS, 0.0),
    ("SGD lr", "lr", lambda v: optim.SGD(lr=v).config(), 2, FLOATS + INTS, -1),
    ("SGD momentum", "momentum", lambda v: optim.SGD(momentum=v).config(), 0.5, FLOATS, 1.0),
    ("SGD weight_decay", "weight_decay", lambda v: optim.SGD(weight_decay=v).config(), 0.25,
     FLOATS, -0.25),
    ("AdaGrad lr", "lr", lambda v: optim.AdaGrad(lr=v).config(), 0.5, FLOATS, 0.0),
    ("AdaGrad eps", "eps", lambda v: optim.AdaGrad(eps=v).config(), 0.125, FLOATS, 0.0),
    ("AdaGrad weight_decay", "weight_decay", lambda v: optim.AdaGrad(weight_decay=v).config(),
     0.5, FLOATS, -1.0),
    ("RMSprop lr", "lr", lambda v: optim.RMSprop(lr=v).config(), 0.5, FLOATS, 0.0),
    ("RMSprop alpha", "alpha", lambda v: optim.RMSprop(alpha=v).config(), 0.5, FLOATS, 1.0),
    ("RMSprop eps", "eps", lambda v: optim.RMSprop(eps=v).config(), 0.5, FLOATS, -1.0),
    ("RMSprop weight_decay", "weight_decay", lambda v: optim.RMSprop(weight_decay=v).config(),
     0.5, FLOATS, -1.0),
    ("Adam lr", "lr", lambda v: optim.Adam(lr=v).config(), 0.5, FLOATS, 0.0),
    ("Adam betas", "betas[0]", lambda v: optim.Adam(betas=(v, 0.5)).config(), 0.5, FLOATS, 1.0),
    ("Adam eps", "eps", lambda v: optim.Adam(eps=v).config(), 0.5, FLOATS, 0.0),
    ("Adam weight_decay", "weight_decay", lambda v: optim.Adam(weight_decay=v).config(), 0.5,
     FLOATS, -1.0),
    ("AdamW lr", "lr", lambda v: optim.AdamW(lr=v).config(), 0.5, FLOATS, 0.0),
    ("AdamW betas", "betas[1]", lambda v: optim.AdamW(betas=(0.5, v)).config(), 0.25, FLOATS,
     1.5),
    ("AdamW eps", "eps", lambda v: optim.AdamW(eps=v).config(), 0.5, FLOATS, 0.0),
    ("AdamW weight_decay", "weight_decay", lambda v: optim.AdamW(weight_decay=v).config(), 0.5,
     FLOATS, -1.0),
    ("EarlyStopping patience", "patience", lambda v: vars(callbacks.EarlyStopping(patience=v)),
     3, INTS, 0),
    ("EarlyStopping min_delta", "min_delta",
     lambda v: vars(callbacks.EarlyStopping(min_delta=v)), 2, FLOATS + INTS, -1.0),
    ("ModelCheckpoint min_delta", "min_delta",
     lambda v: vars(callbacks.ModelCheckpoint("m.st", min_delta=v)._watch), 0.5, FLOATS, -1.0),
    ("ReduceLROnPlateau factor", "factor",
     lambda v: vars(callbacks.ReduceLROnPlateau(factor=v)), 0.5, FLOATS, 1.0),
    ("ReduceLROnPlateau patience", "patience",
     lambda v: vars(callbacks.ReduceLROnPlateau(patience=v)), 3, INTS, 0),
    ("ReduceLROnPlateau min_delta", "min_delta",
     lambda v: vars(callbacks.ReduceLROnPlateau(min_delta=v)), 0.25, FLOATS, -0.5),
    ("ReduceLROnPlateau cooldown", "cooldown",
     lambda v: vars(callbacks.ReduceLROnPlateau(cooldown=v)), 2, INTS, -1),
    ("ReduceLROnPlateau min_lr", "min_lr",
     lambda v: vars(callbacks.ReduceLROnPlateau(min_lr=v)), 0.125, FLOATS, -1.0),
    ("StepDecay lr", "lr", lambda v: _schedule(schedules.StepDecay(v, 2)), 0.5, FLOATS, 0.0),
    ("StepDecay step", "step", lambda v: _schedule(schedules.StepDecay(0.5, v)), 3, INTS, 0),
    ("StepDecay gamma", "gamma", lambda v: _schedule(schedules.StepDecay(0.5, 2, v)), 0.5,
     FLOATS, 0.0),
    ("Exponential lr", "lr", lambda v: _schedule(schedules.Exponential(v, 0.5)), 0.5, FLOATS,
     -1.0),
    ("Exponential gamma", "gamma", lambda v: _schedule(schedules.Exponential(0.5, v)), 0.5,
     FLOATS, 0.0),
    ("Cosine lr", "lr", lambda v: _schedule(schedules.Cosine(v, 4)), 0.5, FLOATS, 0.0),
    ("Cosine epochs", "epochs", lambda v: _schedule(schedules.Cosine(0.5, v)), 4, INTS, 0),
    ("Cosine min_lr", "min_lr", lambda v: _schedule(schedules.Cosine(0.5, 4, v)), 0.125,
     FLOATS, -1.0),
    ("WarmUp then", "then", lambda v: _schedule(schedules.WarmUp(v, 2))[0], 0.5, FLOATS, 0.0),
    ("WarmUp epochs", "epochs", lambda v: _schedule(schedules.WarmUp(0.5, v))[0], 2, INTS, 0),
    ("Constant lr", "lr", lambda v: _schedule(schedules.Constant(v)), 0.5, FLOATS, 0.0),
    ("TopKAccuracy k", "k", lambda v: (metrics.TopKAccuracy(v).k,
                                       metrics.TopKAccuracy(v).name), 3, INTS, 0),
]
SKLEARN = [
    ("hidden_layer_sizes", "hidden_layer_sizes[0]", lambda v: (v,), 4, INTS, 0),
    ("alpha", "alpha", None, 0.5, FLOATS, -1.0),
    ("batch_size", "batch_size", None, 4, INTS, 0),
    ("learning_rate_init", "learning_rate_init", None, 0.125, FLOATS, 0.0),
    ("power_t", "power_t", None, 0.5, FLOATS, -1.0),
    ("max_iter", "max_iter", None, 2, INTS, 0),
    ("tol", "tol", None, 0.5, FLOATS, -1.0),
    ("momentum", "momentum", None, 0.5, FLOATS, 1.5),
    ("validation_fraction", "validation_fraction", None, 0.25, FLOATS, 1.0),
    ("beta_1", "beta_1", None, 0.5, FLOATS, 1.0),
    ("beta_2", "beta_2", None, 0.5, FLOATS, 1.0),
    ("epsilon", "epsilon", None, 0.5, FLOATS, 0.0),
    ("n_iter_no_change", "n_iter_no_change", None, 2, INTS, 0),
    ("max_fun", "max_fun", None, 100, INTS, 0),
]
for _param, _name, _wrap, _value, _kinds, _bad in SKLEARN:
    for _cls in ("clf", "reg"):
        NUMERIC.append((f"{_cls} {_param}", _name,
                        lambda v, p=_param, w=_wrap, c=_cls: _sk(c, **{p: v if w is None
                                                                       else w(v)})[:2],
                        _value, _kinds, _bad))


def _same(a, b):
    """Equal, and of the same types throughout (an int stays an int)."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and (a == b or a is b or callable(a))


ROW_IDS = [row[0] for row in NUMERIC]
# parameters that may also be one of some Options: a value of another kind is no
# option, a ValueError (as for on_nonfinite=None), not a TypeError
WITH_OPTIONS = {"MLP init", "clf n_iter_no_change", "reg n_iter_no_change", "clf batch_size",
                "reg batch_size"}


@pytest.mark.parametrize("case, name, build, value, kinds, bad", NUMERIC, ids=ROW_IDS)
def test_numpy_scalars_are_taken_like_python_numbers(case, name, build, value, kinds, bad):
    want = build(value)
    for kind in kinds:
        assert _same(build(kind(value)), want), kind


@pytest.mark.parametrize("case, name, build, value, kinds, bad", NUMERIC, ids=ROW_IDS)
def test_bools_are_not_numbers(case, name, build, value, kinds, bad):
    error = ValueError if case in WITH_OPTIONS else TypeError
    for flag in (True, np.bool_(False)):
        with pytest.raises(error, match=f"^{re.escape(name)} must be .*, got (True|False)$"):
            build(flag)


@pytest.mark.parametrize("case, name, build, value, kinds, bad", NUMERIC, ids=ROW_IDS)
def test_one_message_shape(case, name, build, value, kinds, bad):
    what = r"(an integer|a number|a finite number)( in [\[(].*[\])]| [<>]=? \S+)"
    for wrong in (bad, kinds[-1](bad)):
        with pytest.raises(ValueError) as info:
            build(wrong)
        shown = repr(np.asarray(wrong).item())           # NumPy scalars shown as numbers
        assert re.fullmatch(rf"{re.escape(name)} must be (.* or )?{what}( or .*)?, got "
                            rf"{re.escape(shown)}", str(info.value)), str(info.value)
    with pytest.raises(ValueError if case in WITH_OPTIONS else TypeError,
                       match=rf"^{re.escape(name)} must be .*, got 'x'$"):
        build("x")


def test_the_issues_examples():
    with pytest.raises(ValueError, match=r"^patience must be an integer >= 1, got 0$"):
        callbacks.EarlyStopping(patience=np.int64(0))
    assert callbacks.EarlyStopping(patience=np.int64(3)).patience == 3
    assert metrics.TopKAccuracy(np.int64(3)).name == "top_3_accuracy"
    assert schedules.StepDecay(0.1, np.int64(3)).step == 3
    assert callbacks.EarlyStopping(min_delta=np.float32(.5)).min_delta == 0.5
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got nan$"):
        optim.Adam(lr=np.float64("nan"))
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got inf$"):
        optim.Adam(lr=float("inf"))


def test_check_itself():
    n = check("n", np.int64(3), Interval(Integral, 1))
    assert n == 3 and type(n) is int
    assert type(check("n", np.int32(3), Interval(Real, 0))) is float
    assert check("s", None, None, Interval(Integral, 0)) is None
    assert check("b", np.bool_(True), Boolean()) is True
    assert check("p", "bar", Boolean(), Options("bar")) == "bar"
    assert check("f", len, Instance(callable, "a callable")) is len
    with pytest.raises(ValueError, match=r"^p must be a bool \(True or False\) or one of "
                                         r"\['bar'\], got 1$"):
        check("p", 1, Boolean(), Options("bar"))      # 1 == True, but 1 is no bool
    with pytest.raises(TypeError, match=r"^f must be a callable, got 3$"):
        check("f", 3, Instance(callable, "a callable"))
    with pytest.raises(ValueError, match=r"^o must be one of \['a'\], got array"):
        check("o", np.zeros(2), Options("a"))


def test_bool_options_are_not_numbers():
    with pytest.raises(ValueError):
        _mlp().fit(X, Y, progress=1)
    with pytest.raises(TypeError, match="^shuffle must be a bool"):
        _mlp().fit(X, Y, shuffle="False")
    with pytest.raises(TypeError, match="^nesterov must be a bool"):
        optim.SGD(momentum=0.5, nesterov="no")
    with pytest.raises(TypeError, match="^restore_best_weights must be a bool"):
        callbacks.EarlyStopping(restore_best_weights="False")


# --- one answer to "can this path be written?" ----------------------------------

def _writers(path):
    """Every writer's refusal of ``path``, as (type, strerror, filename)."""
    from fastmlp import atomic, cli, export
    found = []
    for call in (lambda: atomic.check_target(path),
                 lambda: export.onnx(_mlp(), path),
                 lambda: _mlp().fit(X, Y, callbacks=[callbacks.ModelCheckpoint(path)]),
                 lambda: _mlp().fit(X, Y, callbacks=[callbacks.CSVLogger(path)]),
                 lambda: _mlp().save(path)):
        with pytest.raises(OSError) as info:
            call()
        found.append((type(info.value), info.value.strerror, info.value.filename))
    with pytest.raises(ValueError) as info:
        cli._check_save(str(path))
    found.append(str(info.value))
    return found


@pytest.mark.parametrize("case", ["no_dir", "is_dir", "dir_read_only", "file_read_only"])
def test_every_writer_refuses_a_path_alike(case, tmp_path, monkeypatch):
    path = {"no_dir": tmp_path / "no" / "m.st", "is_dir": tmp_path / "d",
            "dir_read_only": tmp_path / "ro" / "m.st", "file_read_only": tmp_path / "m.st"}[case]
    if case == "is_dir":
        path.mkdir()
    elif case == "dir_read_only":
        path.parent.mkdir()
    elif case == "file_read_only":
        path.write_bytes(b"keep")
    if case.endswith("read_only"):               # as root os.access says yes: have it say no
        denied = path.parent if case == "dir_read_only" else path
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False
                            if str(p) == str(denied) and mode & os.W_OK else access(p, mode, **kw))
    pytest.importorskip("onnx")
    found = _writers(path)
    assert len(set(found[:-1])) == 1, found
    kind, reason, filename = found[0]
    assert filename == str(path)
    assert kind is {"no_dir": FileNotFoundError, "is_dir": IsADirectoryError}.get(
        case, PermissionError)
    assert found[-1] == f"--save {path}: {reason}"
    if case == "file_read_only":
        assert path.read_bytes() == b"keep"


# --- property-based: any refusal is TypeError/ValueError and changes nothing -------

ODD = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([np.int64(2), np.int32(-1), np.float32(0.5), np.float64(np.nan),
                     np.bool_(True), "2", "auto", "raise", "bar", b"x", [1], (0.5,), {},
                     len, lambda: 0.0, lambda *a: "x"]))
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _state(model):
    opt = model.optimizer
    return (model.params.copy(), repr(model.rng.bit_generator.state),
            (opt.t, opt.config(), {k: a.copy() for k, a in opt.state_arrays().items()}))


def _unchanged(before, after):
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1] and before[2][:2] == after[2][:2]
    for key, a in before[2][2].items():
        np.testing.assert_array_equal(a, after[2][2][key])


FIT_ARGS = ["epochs", "batch_size", "early_stopping", "initial_epoch", "validation_split",
            "shuffle", "on_nonfinite", "progress", "metrics", "callbacks", "history",
            "sample_weight", "validation_data", "optimizer"]


@SETTINGS
@given(kwargs=st.fixed_dictionaries({}, optional={arg: ODD for arg in FIT_ARGS}))
def test_fit_refuses_cleanly(kwargs):
    model = _mlp()
    model.fit(X, Y, epochs=1)
    before = _state(model)
    try:
        model.fit(X, Y, **{"epochs": 1, **kwargs})
    except (TypeError, ValueError):
        _unchanged(before, _state(model))
        return
    if "shuffle" in kwargs:                      # what fit accepts as a bool is a bool
        assert isinstance(kwargs["shuffle"], (bool, np.bool_))


MLP_ARGS = ["sizes", "activation", "loss", "reduction", "init", "dtype", "seed", "dropout",
            "bias", "kernels", "engine", "input_scale"]


@SETTINGS
@given(arg=st.sampled_from(MLP_ARGS), value=ODD)
def test_the_constructor_refuses_only_with_type_or_value_errors(arg, value):
    kwargs = {"sizes": [4, 5, 3], "device": "cpu", arg: value}
    try:
        model = fm.MLP(**kwargs)
    except (TypeError, ValueError):
        return
    if arg == "bias":                          # bool("False") is True: only bools are bools
        assert isinstance(value, (bool, np.bool_)) and model.bias is bool(value)


@SETTINGS
@given(cls=st.sampled_from([optim.SGD, optim.AdaGrad, optim.RMSprop, optim.Adam, optim.AdamW,
                            callbacks.EarlyStopping, callbacks.ReduceLROnPlateau,
                            metrics.TopKAccuracy]),
       values=st.lists(ODD, min_size=1, max_size=3))
def test_other_constructors_refuse_only_with_type_or_value_errors(cls, values):
    try:
        cls(*values)
    except (TypeError, ValueError):
        pass
