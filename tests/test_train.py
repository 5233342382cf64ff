"""The fit loop: batching, labels, validation, early stopping, history, progress."""

import numpy as np
import pytest

import fastmlp as fm


def _model(device, **kw):
    return fm.MLP([4, 16, 3], seed=0, device=device, **kw)


def test_history_records_every_epoch(device, blobs):
    x, y = blobs
    hist = _model(device).fit(x, y, epochs=4, validation_split=0.2)
    h = hist.history
    assert set(h) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert all(len(v) == 4 for v in h.values()) and hist.epochs == 4
    assert all(s > 0 for s in h["seconds"])
    assert "History(epochs=4" in repr(hist)


def test_train_loss_is_the_epoch_mean_of_the_batches(device, blobs):
    """With lr tiny the weights barely move, so the epoch's mean training loss
    equals evaluate() on the same data."""
    x, y = blobs
    model = _model(device)
    before = model.evaluate(x, y)
    hist = model.fit(x, y, epochs=1, batch_size=7, optimizer="sgd", lr=1e-9)
    assert hist.history["train_loss"][0] == pytest.approx(before["loss"], rel=1e-5)
    assert hist.history["train_accuracy"][0] == pytest.approx(before["accuracy"])


def test_one_hot_labels_train_exactly_like_class_ids(device, blobs):
    x, y = blobs
    a, b = _model(device), _model(device)
    a.fit(x, y, epochs=2)
    b.fit(x, np.eye(3)[y], epochs=2)
    np.testing.assert_allclose(a.backend.to_numpy(a.params), b.backend.to_numpy(b.params),
                               rtol=1e-6)


@pytest.mark.parametrize("batch_size, steps", [(1, 90), (32, 3), (None, 1), (1000, 1)])
def test_batch_sizes(device, blobs, batch_size, steps):
    x, y = blobs
    model = _model(device)
    model.fit(x, y, epochs=1, batch_size=batch_size, optimizer="sgd", lr=0.01)
    assert model.optimizer.t == steps


def test_full_batch_gradient_descent_is_deterministic_without_shuffle(blobs):
    x, y = blobs
    a, b = _model("cpu"), _model("cpu")
    a.fit(x, y, epochs=3, batch_size=None, shuffle=False, optimizer="sgd", lr=0.1)
    b.fit(x[::-1], y[::-1], epochs=3, batch_size=None, shuffle=False, optimizer="sgd", lr=0.1)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-5, atol=1e-7)


def test_same_seed_same_training(blobs):
    x, y = blobs
    a, b = _model("cpu", dropout=0.3), _model("cpu", dropout=0.3)
    a.fit(x, y, epochs=2)
    b.fit(x, y, epochs=2)
    np.testing.assert_array_equal(a.params, b.params)


def test_validation_data_is_scored_each_epoch(device, blobs):
    x, y = blobs
    model = _model(device)
    hist = model.fit(x[:60], y[:60], epochs=2, validation_data=(x[60:], y[60:]))
    assert hist.history["val_accuracy"][-1] == model.evaluate(x[60:], y[60:])["accuracy"]
    with pytest.raises(ValueError, match="not both"):
        model.fit(x, y, validation_data=(x, y), validation_split=0.1)


def test_early_stopping_restores_the_best_weights(blobs):
    x, y = blobs
    model = _model("cpu")
    hist = model.fit(x[:60], y[:60], epochs=200, optimizer="sgd", lr=2.0,
                     validation_data=(x[60:], y[60:]), early_stopping=3)
    val = hist.history["val_loss"]
    assert hist.epochs < 200
    assert hist.best_epoch == int(np.argmin(val)) + 1
    assert model.evaluate(x[60:], y[60:])["loss"] == pytest.approx(min(val), rel=1e-6)


def test_fit_resumes_the_models_optimizer(blobs):
    x, y = blobs
    model = _model("cpu")
    model.fit(x, y, epochs=1, optimizer="adam")
    opt = model.optimizer
    model.fit(x, y, epochs=1)
    assert model.optimizer is opt and opt.t == 6
    model.fit(x, y, epochs=1, lr=0.5)
    assert opt.lr == 0.5
    model.fit(x, y, epochs=1, optimizer="sgd")
    assert model.optimizer.name == "sgd" and model.optimizer.t == 3


def test_regression_and_binary_targets(device):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))
    reg = fm.MLP([2, 8, 1], loss="l1", seed=0, device=device)
    h = reg.fit(x, x.sum(1), epochs=30, batch_size=16, lr=0.01).history
    assert "train_accuracy" not in h and h["train_loss"][-1] < h["train_loss"][0]
    bce = fm.MLP([2, 8, 1], loss="binary_cross_entropy", seed=0, device=device)
    h = bce.fit(x, (x[:, 0] > 0).astype(int), epochs=30, batch_size=16, lr=0.01).history
    assert h["train_accuracy"][-1] > 0.9


def test_progress_bar_and_epoch_lines(blobs, capsys):
    x, y = blobs
    _model("cpu").fit(x, y, epochs=2, validation_split=0.2, progress=True)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "epoch 1/2:" in text and "epoch 2/2:" in text and "val_accuracy" in text


def test_an_optimizer_moved_to_another_model_starts_fresh_there(blobs):
    """One instance shared by two models: each fit (re)initialises it for the
    model it trains, instead of mixing their states."""
    x, y = blobs
    a, b = _model("cpu"), fm.MLP([4, 5, 3], seed=0, device="cpu")
    opt = fm.optim.Adam(lr=0.01)
    a.fit(x, y, epochs=1, optimizer=opt)
    b.fit(x, y, epochs=1, optimizer=opt)
    assert opt.state[0]["m"].shape == b.params.shape
    a.fit(x, y, epochs=1)
    assert opt.state[0]["m"].shape == a.params.shape and opt.t == 3


def test_numpy_scalars_are_fine_everywhere(blobs):
    x, y = blobs
    model = fm.MLP([4, np.int64(8), 3], seed=np.int64(2), dropout=np.float32(0.1),
                   init=np.float64(0.1), dtype="f4", device="cpu")
    model.fit(x, y, epochs=np.int64(1), batch_size=np.int32(30), validation_split=np.float64(0.2))
    assert model.seed == 2 and type(model.seed) is int and model.dtype == np.float32


def test_shuffled_batches_are_the_permuted_rows_short_last_batch_included():
    from fastmlp.backend import get_backend
    from fastmlp.loop import _rows
    be = get_backend("cpu")
    x, t = np.arange(37 * 3, dtype=np.float32).reshape(37, 3), np.arange(37)
    perm = np.random.default_rng(1).permutation(37)
    bufs = [np.empty((8, 3), np.float32), None, np.empty(8, np.int64)]
    got = []
    for lo in range(0, 37, 8):                  # each batch reuses the buffers: copy it now
        xb, yb, tb = _rows(be, (x, None, t), perm, bufs, lo, min(lo + 8, 37), 1.0)
        got.append((xb.copy(), yb, tb.copy()))
    assert [len(b[0]) for b in got] == [8, 8, 8, 8, 5]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x[perm])
    np.testing.assert_array_equal(np.concatenate([b[2] for b in got]), t[perm])
    assert all(b[1] is None for b in got)


@pytest.mark.cuda
@pytest.mark.parametrize("options", [{}, {"weighted": True, "validation_split": 0.25,
                                          "optimizer": "sgd", "dropout": 0.5}])
def test_a_fit_on_cuda_reads_the_device_once_per_epoch_not_per_step(blobs, options):
    """The host waits for the GPU a few times per epoch (the epoch's loss and
    hits, the divergence check), never per step: counted by the CuPy stand-in,
    whose every host read of device data (float, bool, item, get,
    synchronize, ...) is one synchronisation."""
    cupy = pytest.importorskip("cupy")
    if not getattr(cupy, "__standin__", False):
        pytest.skip("host synchronisations are counted by the CuPy stand-in only")
    options = dict(options)
    weighted, dropout = options.pop("weighted", False), options.pop("dropout", 0.0)
    x, y = blobs                                   # 90 rows

    def syncs(epochs, batch_size):
        model = _model("cuda", dropout=dropout)
        data = model.prepare(x, y, np.linspace(0.5, 1.5, len(y)) if weighted else None)
        cupy.syncs.reset()
        model.fit(data, epochs=epochs, batch_size=batch_size, **options)
        return cupy.syncs.count, dict(cupy.syncs.where)

    one_step, where = syncs(1, None)
    many_steps = syncs(1, 2)                       # 45 steps an epoch (34 with validation)
    assert many_steps[0] == one_step, (where, many_steps[1])
    three_epochs = syncs(3, 2)
    per_epoch = (three_epochs[0] - many_steps[0]) / 2
    assert 0 < per_epoch <= 6, three_epochs[1]
