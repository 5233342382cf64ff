"""Step engines: every engine against the layer engine and against numbers
worked by hand, the factory's choices and the reasons it records, named
engines, and scratch that belongs to one model (two threads at once)."""

import logging
import threading

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import engines
from fastmlp.engines import cpu_step
from kernel_twins import DTYPES, TOL
from kernel_twins import close as _close

ACTIVATIONS = ["sigmoid", "relu", "tanh", "identity"]
HAS_BLAS = bool(cpu_step.blas_gemm().size)
needs_blas = pytest.mark.skipif(not HAS_BLAS, reason="this NumPy bundles no CBLAS fastmlp can call")
# (engine, batch size) pairs each compiled engine runs
COMPILED = [("cpu-rows", 1), pytest.param("cpu-gemm", 1, marks=needs_blas),
            pytest.param("cpu-gemm", 3, marks=needs_blas),
            pytest.param("cpu-gemm", 40, marks=needs_blas)]


def _data(n, sparse, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 7)), rng.integers(0, 4, n)
    if sparse:                     # most inputs 0, as MNIST pixels are
        x[:, [0, 2, 3, 4, 6]] = 0
    return x, y


def _model(engine="auto", **kw):
    kw = {"sizes": [7, 6, 5, 4], "seed": 0, "device": "cpu", **kw}
    return fm.MLP(kw.pop("sizes"), engine=engine, **kw)


# --- every engine computes what the layer engine does -----------------------------

@pytest.mark.parametrize("engine, n", COMPILED)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("sparse", [False, True])
def test_each_compiled_engine_computes_the_layer_engines_gradients(engine, n, dtype, activation,
                                                                   bias, sparse):
    x, y = _data(n, sparse)
    model = _model(engine, activation=activation, bias=bias, dtype=dtype)
    ref = _model(activation=activation, bias=bias, dtype=dtype, kernels="reference")
    data = model.prepare(x, y)
    loss, hits = model.gradient(data.x, data.y, data.targets)
    ref_loss, ref_hits = ref.gradient(data.x, data.y, data.targets)
    assert (model.step_path.engine, ref.step_path.engine) == (engine, "layer")
    assert loss == pytest.approx(float(ref_loss), rel=TOL[dtype]) and hits == int(ref_hits)
    _close(model.grads, ref.grads, dtype)


@pytest.mark.parametrize("engine, batch_size", [("cpu-rows", 1), ("cpu-gemm", 1),
                                                ("cpu-gemm", 2), ("layer", 2)])
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_through_each_engine_equals_the_reference(engine, batch_size, activation, bias,
                                                           shuffle, dtype, optimizer):
    """Plain SGD is folded into the step (into the GEMM's beta = 1, or the row
    loops), and at batch size 1 a whole epoch is one call; Adam takes the
    gradient then the optimizer's update. Both must land where the layer
    engine with the reference ops lands."""
    if engine == "cpu-gemm" and not HAS_BLAS:
        pytest.skip("no CBLAS")
    x, y = _data(5, sparse=True)
    model = _model(engine, activation=activation, bias=bias, dtype=dtype)
    ref = _model(activation=activation, bias=bias, dtype=dtype, kernels="reference")
    kw = dict(epochs=2, batch_size=batch_size, optimizer=optimizer, lr=0.1, shuffle=shuffle)
    hist, ref_hist = model.fit(x, y, **kw), ref.fit(x, y, **kw)
    assert model.step_path.engine == engine
    _close(model.params, ref.params, dtype)
    assert hist.history["train_loss"] == pytest.approx(ref_hist.history["train_loss"],
                                                       rel=TOL[dtype])
    assert hist.history["train_accuracy"] == ref_hist.history["train_accuracy"]
    assert model.optimizer.t == ref.optimizer.t == 2 * -(-5 // batch_size)


@pytest.mark.parametrize("engine", ["layer", "cpu-rows",
                                    pytest.param("cpu-gemm", marks=needs_blas)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_sgd_step_matches_numbers_worked_by_hand(engine, dtype):
    """2-2-2, sigmoid, softmax cross-entropy, one sample x = (1, 2) of class 1,
    SGD with lr 0.5. By hand (float64 arithmetic, rounded):
      z0 = x W0 + b0 = (0.8, 0.9)
      a0 = sigmoid(z0) = (0.6899744811, 0.7109495026)
      z1 = a0 W1 + b1 = (0.5227246162, 0.3882248864)
      p = softmax(z1) = (0.5335743339, 0.4664256661);  loss = -log p1 = 0.7626566152
      dz1 = p - (0, 1) = (0.5335743339, -0.5335743339)
      da0 = dz1 W1^T = (0.5335743339, -0.2667871670)
      dz0 = da0 a0 (1 - a0) = (0.1141367238, -0.0548248448)
      W -= 0.5 * outer(input, dz); b -= 0.5 * dz.
    """
    model = fm.MLP([2, 2, 2], activation="sigmoid", seed=0, device="cpu", dtype=dtype,
                   engine=engine)
    for w, value in zip(model.weights, ([[0.1, 0.2], [0.3, 0.4]], [[0.5, -0.5], [0.25, 0.75]])):
        w[...] = value
    for b, value in zip(model.biases, ([0.1, -0.1], [0.0, 0.2])):
        b[...] = value
    data = model.prepare([[1.0, 2.0]], [1])
    loss, hits = model.train_step(data.x, data.y, fm.optim.SGD(lr=0.5), targets=data.targets)
    assert model.step_path.engine == engine
    tol = {"float32": 1e-6, "float64": 1e-9}[dtype]
    assert float(loss) == pytest.approx(0.7626566152, abs=tol) and int(hits) == 0
    expected = [[[0.0429316381, 0.2274124224], [0.1858632762, 0.4548248448]],
                [[0.3159236629, -0.3159236629], [0.0603277963, 0.9396722037]]]
    for w, want in zip(model.weights, expected):
        np.testing.assert_allclose(w, want, atol=tol)
    for b, want in zip(model.biases, ([0.0429316381, -0.0725875776], [-0.266787167, 0.466787167])):
        np.testing.assert_allclose(b, want, atol=tol)
    assert model.optimizer.t == 1


def test_gradients_in_the_float64_tails_are_exact_on_every_engine():
    """Hidden sigmoid units driven to -40 .. -700: their outputs (1e-18 .. 1e-304)
    scale the next layer's weight gradients, held at relative tolerance with
    no absolute floor. A compiled sigmoid that clamped float64 at float32's
    -88 (6.1e-39 for sigmoid(-100), not 3.7e-44) fails here."""
    model = fm.MLP([3, 4, 3], activation="sigmoid", seed=0, device="cpu", dtype="float64")
    model.weights[0][...] = [[-40.0, -100, -300, -700], [0, 0, 0, 0], [0, 0, 0, 0]]
    model.biases[0][...] = 0
    ref = fm.MLP(**{**model.config(), "kernels": "reference"}, device="cpu")
    ref.params[...] = model.params
    data = model.prepare([[1.0, 0.5, -0.5]], [2])
    ref.gradient(data.x, data.y)
    names = ["cpu-rows"] + (["cpu-gemm"] if HAS_BLAS else [])
    for name in names:
        engine, _ = engines.create(model.net, model.buffers, 1, name=name)
        model.grads[...] = 0
        engine.grad(data.x, data.y)
        np.testing.assert_allclose(model.grads, ref.grads, rtol=1e-10, atol=0, err_msg=name)
    assert 0 < abs(ref.layout.views(ref.grads)[0][1][1, 1]) < 1e-40    # the tail is really there


# --- the factory --------------------------------------------------------------------

def test_the_factory_picks_by_batch_size_density_loss_and_dropout():
    x, y = _data(64, sparse=False)
    xs, _ = _data(64, sparse=True)
    cases = [  # (model kwargs, fit kwargs, data, expected engine)
        ({}, dict(batch_size=1), xs, "cpu-rows"),
        ({}, dict(batch_size=1), x, "cpu-gemm" if HAS_BLAS else "cpu-rows"),
        ({}, dict(batch_size=16), x, "cpu-gemm" if HAS_BLAS else "layer"),
        ({"loss": "mse"}, dict(batch_size=16), x, "layer"),
        ({"dropout": 0.2}, dict(batch_size=16), x, "layer"),
        ({"kernels": "reference"}, dict(batch_size=1), xs, "layer"),
    ]
    for model_kw, fit_kw, data, want in cases:
        model = _model(**model_kw)
        target = np.eye(4)[y] if model_kw.get("loss") == "mse" else y
        model.fit(data, target, epochs=1, optimizer="sgd", lr=0.01, **fit_kw)
        assert model.step_path.engine == want, (model_kw, fit_kw, str(model.step_path))
    # each refusal is recorded with its reason
    model = _model()
    model.fit(x, y, epochs=1, batch_size=16)
    assert model.step_path.declined["cpu-rows"].endswith("the batch size is 16")
    model = _model(dropout=0.2)
    model.fit(x, y, epochs=1, batch_size=16)
    declined = model.step_path.declined
    assert set(declined) == {"cpu-rows", "cpu-gemm", "warp"}
    assert "dropout" in declined["cpu-rows"] and "dropout" in declined["cpu-gemm"]
    assert "by name" in declined["warp"]          # the GPU's engine: on the CPU only when named
    model = _model(loss="mse")
    model.fit(x, np.eye(4)[y], epochs=1, batch_size=16)
    assert "softmax + cross-entropy" in model.step_path.declined["cpu-gemm"]
    assert "cpu-gemm (fuses softmax" in str(model.step_path)
    # dropout is off when only gradients are taken, so the compiled steps cover that
    model = _model(dropout=0.2)
    data = model.prepare(x[:8], y[:8])
    model.gradient(data.x, data.y)
    assert model.step_path.engine == ("cpu-gemm" if HAS_BLAS else "layer")


def test_without_blas_one_sample_takes_the_row_loops_and_batches_the_layer_path(monkeypatch):
    monkeypatch.setattr(cpu_step, "blas_gemm", lambda: np.empty(0, np.int64))
    x, y = _data(32, sparse=False)
    for batch_size, want in [(1, "cpu-rows"), (8, "layer")]:
        model = _model()
        model.fit(x, y, epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.01)
        assert model.step_path.engine == want
    assert "no CBLAS" in model.step_path.declined["cpu-gemm"]


def test_the_choice_is_logged_at_debug_level(caplog):
    x, y = _data(16, sparse=False)
    with caplog.at_level(logging.DEBUG, logger="fastmlp"):
        _model().fit(x, y, epochs=1, batch_size=8)
    lines = [r.getMessage() for r in caplog.records if "step engine" in r.getMessage()]
    assert len(lines) == 1 and "at batch size 8" in lines[0]
    assert ("cpu-gemm" if HAS_BLAS else "layer") in lines[0]


def test_a_named_engine_that_cannot_run_the_case_says_why_and_changes_nothing():
    x, y = _data(16, sparse=False)
    model = _model("cpu-rows")
    before = model.params.copy()
    with pytest.raises(ValueError, match="engine 'cpu-rows' cannot run this model at batch size "
                                         "8: loops win for one sample at a time"):
        model.fit(x, y, epochs=1, batch_size=8)
    np.testing.assert_array_equal(model.params, before)
    assert model.optimizer is None
    with pytest.raises(ValueError, match="fuses softmax \\+ cross-entropy; the loss is 'l1'"):
        _model("cpu-gemm", loss="l1").fit(x, np.zeros((16, 4)), epochs=1)
    with pytest.raises(ValueError, match="unknown engine 'fast'"):
        _model("fast")


def test_the_engine_choice_is_kept_and_made_afresh_where_it_must_be(blobs):
    x, y = blobs
    model = fm.MLP([4, 8, 3], seed=0, device="cpu")
    data = model.prepare(x, y)
    opt = fm.optim.SGD(lr=0.1)
    first = model.engine_for(16)
    assert model.engine_for(16) is first                      # kept per model and key
    assert model.engine_for(16, fresh=True) is not first
    assert model.engine_for(16, train=False) is not model.engine_for(16)
    model.train_step(data.x[:16], data.y[:16], opt)           # any optimizer runs on it
    assert model.engine_for(16) is model.engine_for(16)
    model.train_step(data.x[:16], data.y[:16], fm.optim.SGD(lr=0.1, momentum=0.9))
    assert model.step_path.engine == ("cpu-gemm" if HAS_BLAS else "layer")


def test_train_step_wants_prepared_arrays_and_changes_nothing_when_refused(blobs):
    x, y = blobs
    model = fm.MLP([4, 8, 3], seed=0, device="cpu")
    data = model.prepare(x, y)
    opt = fm.optim.SGD(lr=0.1)
    with pytest.raises(TypeError, match="model.prepare"):
        model.train_step(x.astype(np.float64), y, opt)
    with pytest.raises(TypeError, match="targets of n rows"):
        model.train_step(data.x[:10], data.y[:10], opt, targets=data.targets[:2])
    rows = fm.MLP([4, 8, 3], seed=0, device="cpu", engine="cpu-rows")
    with pytest.raises(ValueError, match="cannot run this model at batch size 10"):
        rows.train_step(data.x[:10], data.y[:10], opt)
    for m in (model, rows):
        np.testing.assert_array_equal(m.params, fm.MLP([4, 8, 3], seed=0, device="cpu").params)
        assert m.optimizer is None and opt.state is None


def test_the_engine_is_a_choice_of_the_process_not_of_the_checkpoint(blobs, tmp_path):
    x, y = blobs
    model = fm.MLP([4, 8, 3], seed=0, device="cpu", engine="cpu-rows")
    model.fit(x, y, epochs=1, batch_size=1, optimizer="sgd", lr=0.1)
    assert "engine" not in model.config()
    model.save(tmp_path / "m.safetensors")
    loaded = fm.load(tmp_path / "m.safetensors", device="cpu")
    loaded.fit(x, y, epochs=1, batch_size=16)                   # "auto" again: any batch size
    assert loaded.engine == "auto"
    assert fm.gradcheck(model, x[:7], y[:7]).ok                 # gradcheck picks its own engine


@needs_blas
@pytest.mark.parametrize("limit, kept", [(cpu_step.KEEP_SCRATCH, True), (10, False)])
def test_a_big_scratch_block_is_not_kept(monkeypatch, limit, kept):
    """A full-batch step's scratch is made per call, not kept alive by the engine."""
    monkeypatch.setattr(cpu_step, "KEEP_SCRATCH", limit)
    x, y = _data(8, sparse=False)
    model = _model()
    model.fit(x, y, epochs=1, batch_size=None, optimizer="sgd", lr=0.1)
    engine = model.engine_for(8)
    assert model.step_path.engine == "cpu-gemm"
    assert (engine.scratch_nbytes > 0) == kept


# --- scratch belongs to one model ---------------------------------------------------

@pytest.mark.parametrize("batch_size, optimizer", [(1, "sgd"), (16, "sgd"), (16, "adam")])
def test_two_threads_training_two_same_shaped_models_match_training_them_in_turn(batch_size,
                                                                                 optimizer):
    """The compiled steps release the GIL, so two threads really run at once;
    each model's engine owns its scratch, so neither sees the other's."""
    rng = np.random.default_rng(1)
    x = rng.random((1200, 64)).astype(np.float32)
    x[x < 0.5] = 0
    y = rng.integers(0, 10, 1200)

    def make(seed):
        return fm.MLP([64, 48, 32, 10], activation="sigmoid", seed=seed, device="cpu")

    def train(model, start=None):
        if start is not None:
            start.wait()
        model.fit(x, y, epochs=2, batch_size=batch_size, optimizer=optimizer, lr=0.05)

    alone = [make(1), make(2)]
    for model in alone:
        train(model)
    together = [make(1), make(2)]
    start = threading.Barrier(2)
    threads = [threading.Thread(target=train, args=(m, start)) for m in together]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.cuda
def test_on_cuda_the_compiled_cpu_engines_decline_and_say_why(blobs):
    x, y = blobs
    model = fm.MLP([4, 8, 3], seed=0, device="cuda")
    model.fit(x, y, epochs=1, batch_size=1)
    declined = model.step_path.declined
    assert all("compiled for the CPU" in declined[name] for name in ("cpu-rows", "cpu-gemm"))
    if model.ops.name == "warp":                 # Warp sees the GPU: its engine runs the steps
        assert model.step_path.engine == "warp"
    else:                                        # no Warp, or the stand-in: the layer path
        assert model.step_path.engine == "layer" and "Warp op table" in declined["warp"]
