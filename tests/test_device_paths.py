"""The paths that the cuda tests had never covered (streaming, compact uint8
inputs, metrics, callbacks, divergence), on each device: on a GPU against
CuPy, in CI against the NumPy stand-in for CuPy (``tests/cupy_standin``),
which refuses implicit host copies as CuPy does. Each compares with the
same fit on the CPU where the result must not depend on the device."""

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import callbacks, stream


def _host(model, a):
    return model.backend.to_numpy(a)


@pytest.fixture
def images(uint8_on_disk):
    return uint8_on_disk(600)


def _fit_both(device, fit, **model_kw):
    """The same fit on the CPU and on ``device``: (cpu model, its history, the other, its)."""
    out = []
    for where in ("cpu", device):
        m = fm.MLP([20, 16, 2], seed=0, device=where, dtype="float64", **model_kw)
        out += [m, fit(m)]
    return out


def test_a_streamed_memmap_trains_alike(device, images, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_BYTES", 20 * 100)         # 100 rows: 6 chunks
    mm, _, y = images
    a, ha, b, hb = _fit_both(device, lambda m: m.fit(mm, y, epochs=2, batch_size=32, lr=0.01),
                             input_scale=1 / 255)
    np.testing.assert_allclose(hb.history["train_loss"], ha.history["train_loss"], rtol=1e-9)
    np.testing.assert_allclose(_host(b, b.params), a.params, rtol=1e-9, atol=1e-12)


def test_uint8_inputs_stay_compact_and_train_alike(device, images):
    _, x, y = images
    a, ha, b, hb = _fit_both(device, lambda m: m.fit(x, y, epochs=2, batch_size=32, lr=0.01),
                             input_scale=1 / 255)
    assert b.prepare(x, y).x.dtype == np.uint8
    np.testing.assert_allclose(_host(b, b.params), a.params, rtol=1e-9, atol=1e-12)


def test_metrics_and_validation_read_alike(device, images):
    _, x, y = images
    metrics = ["accuracy", "top_k_accuracy", fm.metrics.TopKAccuracy(1), "mse"]
    a, ha, b, hb = _fit_both(device, lambda m: m.fit(x / 255, y, epochs=2, batch_size=32,
                                                      validation_split=0.25, metrics=metrics))
    assert set(hb.history) == set(ha.history)
    for key in ha.history:
        if key != "seconds":
            np.testing.assert_allclose(hb.history[key], ha.history[key], rtol=1e-9, err_msg=key)


def test_callbacks_stop_restore_and_checkpoint_alike(device, images, tmp_path):
    _, x, y = images

    def fit(m):
        path = tmp_path / f"{m.backend.name}.safetensors"
        hist = m.fit(x / 255, y, epochs=30, batch_size=32, validation_split=0.25, lr=0.05,
                     callbacks=[callbacks.EarlyStopping(patience=2),
                                callbacks.ModelCheckpoint(path, save_best_only=True)])
        return hist, fm.load(path, device="cpu")

    a, (ha, sa), b, (hb, sb) = _fit_both(device, fit)
    assert hb.epochs == ha.epochs and hb.best_epoch == ha.best_epoch
    np.testing.assert_allclose(_host(b, b.params), a.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sb.params, sa.params, rtol=1e-9, atol=1e-12)


def test_divergence_restores_the_state_the_fit_started_from(device, images):
    _, x, y = images
    model = fm.MLP([20, 16, 2], seed=0, device=device, loss="mse")
    target = np.eye(2)[y]
    model.fit(x / 255, target, epochs=1, batch_size=32)
    before = _host(model, model.params).copy()
    with pytest.raises(fm.DivergedError, match="diverged in epoch 1"), \
            np.errstate(over="ignore", invalid="ignore"):
        model.fit(x.astype(np.float32) * 1e30, target, epochs=2, batch_size=32)
    np.testing.assert_array_equal(_host(model, model.params), before)
