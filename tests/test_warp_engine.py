"""The ``warp`` step engine (``fastmlp/engines/warp.py``,
``kernels/warp_step.py``) on Warp's CPU device: the whole step, update
included, recorded into a graph and replayed, against the layer engine on
the reference table. Skipped without warp-lang."""

import numpy as np
import pytest

import fastmlp as fm
from warp_cases import OPTIMIZERS, TOL, assert_same, samples

pytest.importorskip("warp")





def _pair(dtype="float64", loss="cross_entropy", activation="tanh", optimizer="adam",
          epochs=2, batch_size=20, model=None, **fit):
    """The same fit on the layer engine (reference table) and on the warp engine."""
    x, y = samples(loss)
    out = []
    for engine in ("layer", "warp"):
        m = fm.MLP([12, 16, 8, 3], activation=activation, loss=loss, dtype=dtype, seed=0,
                   device="cpu", kernels="reference", engine=engine, **(model or {}))
        hist = m.fit(x, y, epochs=epochs, batch_size=batch_size,
                     optimizer=OPTIMIZERS[optimizer](), **fit)
        out.append((m, hist))
    return out




@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_twenty_steps_of_each_optimizer_equal_the_layer_engine(optimizer, dtype):
    (ref, h_ref), (got, h_got) = _pair(dtype, optimizer=optimizer)
    assert got.step_path.engine == "warp"
    assert_same(got, ref, dtype)
    np.testing.assert_allclose(h_got.history["train_loss"], h_ref.history["train_loss"],
                               rtol=TOL[dtype])
    assert h_got.history["train_accuracy"] == h_ref.history["train_accuracy"]


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse", "l1"])
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "identity"])
def test_every_loss_and_activation_equal_the_layer_engine(loss, activation):
    (ref, h_ref), (got, h_got) = _pair(loss=loss, activation=activation)
    assert_same(got, ref, "float64")
    np.testing.assert_allclose(h_got.history["train_loss"], h_ref.history["train_loss"],
                               rtol=1e-10)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_poisson_equals_the_layer_engine(activation):
    (ref, h_ref), (got, h_got) = _pair(loss="poisson", activation=activation)
    assert_same(got, ref, "float64")
    np.testing.assert_allclose(h_got.history["train_loss"], h_ref.history["train_loss"],
                               rtol=1e-10)


@pytest.mark.parametrize("model, fit", [
    ({"bias": False}, {}),
    ({"reduction": "sum"}, {}),
    ({}, {"sample_weight": np.where(np.arange(200) % 7, np.linspace(0.1, 2, 200), 0)}),
    ({"loss": "mse", "reduction": "mean"},
     {"sample_weight": np.linspace(0.1, 2, 200)}),
], ids=["no-bias", "sum", "sample-weights", "mse-weights"])
def test_biases_reductions_and_weights_equal_the_layer_engine(model, fit):
    loss = model.pop("loss", "cross_entropy")
    (ref, _), (got, _) = _pair(loss=loss, model=model, **fit)
    assert_same(got, ref, "float64")


def test_graph_replay_equals_eager_launches(monkeypatch):
    from fastmlp.engines.warp import WarpEngine
    x, y = samples("cross_entropy")
    models, graphs = [], []
    for capture in (True, False):
        monkeypatch.setattr(WarpEngine, "capture", capture)
        m = fm.MLP([12, 16, 8, 3], dtype="float32", seed=0, device="cpu", engine="warp")
        m.fit(x, y, epochs=2, batch_size=20, optimizer="adam")
        models.append(m)
        graphs.append([e["graph"].graph for e in m.engine_for(20)._graphs.values()])
    assert graphs[0] and all(g is not None for g in graphs[0])
    assert graphs[1] and all(g is None for g in graphs[1])
    np.testing.assert_array_equal(models[0].params, models[1].params)


def test_a_schedule_changes_the_rate_without_a_new_capture():
    x, y = samples("cross_entropy")
    out = []
    for engine in ("layer", "warp"):
        m = fm.MLP([12, 16, 8, 3], dtype="float64", seed=0, device="cpu", kernels="reference",
                   engine=engine)
        hist = m.fit(x, y, epochs=3, batch_size=30,
                     optimizer=fm.optim.SGD(lr=fm.schedules.StepDecay(0.1, step=1, gamma=0.5)))
        out.append((m, hist))
    (ref, h_ref), (got, h_got) = out
    assert h_got.history["lr"] == [0.1, 0.05, 0.025] == h_ref.history["lr"]
    assert_same(got, ref, "float64")
    # three epochs at three rates (batches of 30 and a last one of 20): one epoch graph
    assert [key[0] for key in got.engine_for(30)._graphs] == ["epoch"]


def test_with_batch_hooks_the_steps_replay_one_graph_each_and_agree():
    """A callback that sees every batch takes the step graphs (one per batch
    size), not the epoch's: the same model either way."""
    class Seen(fm.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs):
            Seen.batches += 1

    x, y = samples("cross_entropy")
    models = []
    for callbacks in ([], [Seen()]):
        m = fm.MLP([12, 16, 8, 3], dtype="float64", seed=0, device="cpu", engine="warp")
        m.fit(x, y, epochs=2, batch_size=30, optimizer="adam", callbacks=callbacks)
        models.append(m)
    assert Seen.batches == 14
    kinds = [sorted(key[0] for key in m.engine_for(30)._graphs) for m in models]
    assert kinds == [["epoch"], ["step", "step"]]
    np.testing.assert_allclose(models[1].params, models[0].params, rtol=1e-12, atol=1e-15)


def test_a_step_leaves_loss_and_hits_on_the_device():
    x, y = samples("cross_entropy", n=40)
    m = fm.MLP([12, 8, 3], dtype="float32", seed=0, device="cpu", engine="warp")
    data = m.prepare(x, y)
    opt = fm.optim.Adam()
    loss, hits = m.train_step(data.x[:20], data.y[:20], opt, targets=data.targets[:20])
    # a device scalar (on NumPy, a NumPy scalar): the loop reads it once per epoch
    assert np.ndim(loss) == 0 and float(loss) > 0 and 0 <= float(hits) <= 20
    assert m.train_step(data.x[:20], data.y[:20], opt)[1] is None
    assert opt.t == 2


def test_gradients_equal_the_layer_engine_and_pass_gradcheck():
    x, y = samples("cross_entropy", n=10)
    grads = []
    for engine in ("layer", "warp"):
        m = fm.MLP([12, 5, 3], activation="sigmoid", dtype="float64", seed=0, device="cpu",
                   kernels="reference", engine=engine)
        data = m.prepare(x, y)
        m.gradient(data.x, data.y)
        grads.append(m.grads.copy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12, atol=1e-15)
    assert fm.gradcheck(m, x, y).ok


def test_the_factory_takes_it_on_the_cpu_only_when_named():
    x, y = samples("cross_entropy", n=40)
    auto = fm.MLP([12, 8, 3], device="cpu", kernels="reference")
    auto.fit(x, y, epochs=1, batch_size=20)
    assert auto.step_path.engine == "layer"
    assert "only when asked for by name" in auto.step_path.declined["warp"]
    named = fm.MLP([12, 8, 3], device="cpu", engine="warp", dropout=0.5)
    named.fit(x, y, epochs=1, batch_size=20)
    assert named.step_path.engine == "warp"


def test_the_step_module_compiles_ahead_of_time_for_the_gpu(tmp_path):
    """CUDA cubins of the step's kernels (the tile products included) for
    sm_80, sm_90 and sm_100, with no GPU or driver: a kernel that NVRTC
    refuses fails here (the TF32 products too). About 70 s of NVRTC each: the
    three run side by side."""
    import subprocess
    import sys
    code = ("import sys, warp as wp; from fastmlp.kernels import warp_step\n"
            "for module in (warp_step, wp.get_module(warp_step.TF32_MODULE)):\n"
            "    wp.compile_aot_module(module, arch=int(sys.argv[1]), module_dir=sys.argv[2])")
    jobs = {arch: subprocess.Popen([sys.executable, "-c", code, str(arch), str(tmp_path)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for arch in (80, 90, 100)}
    for arch, job in jobs.items():
        out, _ = job.communicate(timeout=600)
        assert job.returncode == 0, out[-3000:]
        # the step's module and its TF32 products
        assert len(list(tmp_path.glob(f"*.sm{arch}.cubin"))) == 2, out[-3000:]


def _warp_sees_gpu():
    import warp as wp
    return wp.get_cuda_device_count() > 0


@pytest.mark.skipif(not _warp_sees_gpu(), reason="Warp sees no CUDA GPU (this runs on a device)")
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("capture", [True, False])
def test_on_the_gpu_the_engine_equals_the_layer_engine(optimizer, capture, monkeypatch):
    from fastmlp.engines.warp import WarpEngine
    monkeypatch.setattr(WarpEngine, "capture", capture)
    x, y = samples("cross_entropy")
    models = []
    for engine in ("layer", "warp"):
        m = fm.MLP([12, 16, 8, 3], dtype="float64", seed=0, device="cuda", kernels="reference",
                   engine=engine)
        m.fit(x, y, epochs=2, batch_size=20, optimizer=OPTIMIZERS[optimizer]())
        models.append(m)
    a, b = (m.backend.to_numpy(m.params) for m in models)
    assert np.max(np.abs(a - b)) / np.max(np.abs(a)) <= TOL["float64"]


class _Masks:
    """A dropout generator whose draws reproduce given masks: 1 where kept."""

    def __init__(self, keeps):
        self.keeps = list(keeps)

    def random(self, shape, dtype=None):
        keep = self.keeps.pop(0)
        assert keep.shape == shape
        return (keep > 0).astype(dtype)


def test_dropout_masks_are_drawn_on_the_device_and_backprop_through_them():
    """The engine's masks: the rate's share dropped, the kept scaled by
    1 / (1 - rate), new ones each step; its gradient equals the layer
    engine's given the same masks."""
    from fastmlp.engines.base import Case
    from fastmlp.engines.layer import LayerEngine
    x, y = samples("cross_entropy", n=64)
    m = fm.MLP([12, 256, 128, 3], activation="relu", dtype="float64", seed=0, device="cpu",
               engine="warp", dropout=(0.3, 0.5))
    data = m.prepare(x, y)
    engine = m.engine_for(64, train=True)
    loss, _ = engine.grad(data.x, data.y)
    grads = m.grads.copy()
    entry = next(iter(engine._graphs.values()))
    keeps = [k.copy() for k in entry["keeps"]]
    for keep, rate in zip(keeps, (0.3, 0.5)):
        assert abs((keep == 0).mean() - rate) < 0.03
        np.testing.assert_allclose(keep[keep > 0], 1 / (1 - rate))
    engine.grad(data.x, data.y)
    assert not np.array_equal(entry["keeps"][0], keeps[0])        # a new draw each step
    m.buffers.dropout_rng = _Masks(keeps)
    ref_loss, _ = LayerEngine(m.net, m.buffers, Case(64, train=True)).grad(data.x, data.y)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-12)
    np.testing.assert_allclose(grads, m.grads, rtol=1e-10, atol=1e-14)


def test_a_fit_with_dropout_learns_and_stays_reproducible():
    x, y = samples("cross_entropy")
    runs = []
    for _ in range(2):
        m = fm.MLP([12, 32, 3], seed=0, device="cpu", engine="warp", dropout=0.2)
        hist = m.fit(x, y, epochs=8, batch_size=20, optimizer="adam", lr=1e-2)
        runs.append((m.params.copy(), hist.history["train_loss"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1][-1] < runs[0][1][0]


def test_tf32_is_a_choice_of_the_products_and_on_the_cpu_changes_nothing():
    """On the CPU Warp computes TF32 products in float32 (and says so when it
    builds them): the same model as fp32. On a GPU, the test below."""
    x, y = samples("cross_entropy")
    params = []
    for precision in ("fp32", "tf32"):
        m = fm.MLP([12, 16, 8, 3], seed=0, device="cpu", engine="warp", precision=precision)
        assert m.net.precision == precision
        m.fit(x, y, epochs=2, batch_size=20, optimizer="adam")
        params.append(m.params.copy())
    np.testing.assert_allclose(params[1], params[0], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="precision"):
        fm.MLP([12, 3], precision="fp16")


@pytest.mark.skipif(not _warp_sees_gpu(), reason="Warp sees no CUDA GPU (this runs on a device)")
def test_on_the_gpu_tf32_stays_within_its_tolerance_of_fp32():
    """TF32 inputs carry 10 mantissa bits: after 20 Adam steps the parameters
    stay within 1e-2 relative of the fp32 run, the final loss within 2%."""
    x, y = samples("cross_entropy")
    out = []
    for precision in ("fp32", "tf32"):
        m = fm.MLP([12, 16, 8, 3], seed=0, device="cuda", engine="warp", precision=precision)
        hist = m.fit(x, y, epochs=2, batch_size=20, optimizer="adam")
        out.append((m.backend.to_numpy(m.params), hist.history["train_loss"][-1]))
    (a, la), (b, lb) = out
    assert np.max(np.abs(a - b)) / np.max(np.abs(a)) <= 1e-2
    assert abs(la - lb) <= 0.02 * abs(la)


def test_uint8_and_streamed_inputs_equal_the_layer_engine(tmp_path, monkeypatch):
    """Compact inputs take the step graphs (each batch cast as it is
    gathered), a memmap the streamed batches: both as the layer engine."""
    from fastmlp import stream
    monkeypatch.setattr(stream, "CHUNK_BYTES", 12 * 50)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (200, 12), dtype=np.uint8)
    y = rng.integers(0, 3, 200)
    x.tofile(tmp_path / "x.u8")
    mm = np.memmap(tmp_path / "x.u8", dtype=np.uint8, mode="r", shape=x.shape)
    for data in (x, mm):
        models = []
        for engine in ("layer", "warp"):
            m = fm.MLP([12, 16, 3], dtype="float64", seed=0, device="cpu", kernels="reference",
                       engine=engine, input_scale=1 / 255)
            m.fit(data, y, epochs=2, batch_size=20, optimizer="adam")
            models.append(m)
        assert models[1].step_path.engine == "warp"
        assert_same(models[1], models[0], "float64")
