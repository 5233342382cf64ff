"""The training loop around the steps: callbacks, schedules, metrics, History,
progress and log records."""

import csv
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import callbacks, optim, schedules


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.8)
    return x[:160], y[:160], x[160:], y[160:]


def _model(**kw):
    return fm.MLP([6, 16, 3], seed=0, device="cpu", **kw)


# --- schedules -------------------------------------------------------------------

SCHEDULES = {
    "step": (schedules.StepDecay(0.1, step=3, gamma=0.5), lambda e: 0.1 * 0.5 ** (e // 3)),
    "exponential": (schedules.Exponential(0.1, 0.8), lambda e: 0.1 * 0.8 ** e),
    "cosine": (schedules.Cosine(0.1, 6, min_lr=0.01),
               lambda e: 0.01 + 0.09 * (1 + math.cos(math.pi * min(e, 6) / 6)) / 2),
    "warm-up then cosine": (schedules.WarmUp(schedules.Cosine(0.1, 4), 3),
                            lambda e: 0.1 * (e + 1) / 4 if e < 3
                            else 0.1 * (1 + math.cos(math.pi * min(e - 3, 4) / 4)) / 2 or 0.0),
    "a plain function": (lambda e: 0.05 / (1 + e), lambda e: 0.05 / (1 + e)),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("how", ["optimizer", "callback"])
def test_a_schedule_gives_the_closed_form_rate_at_every_epoch(data, name, how):
    schedule, closed = SCHEDULES[name]
    if name == "warm-up then cosine":           # cosine ends at 0: keep it positive
        schedule, closed = schedules.WarmUp(schedules.Cosine(0.1, 6, 0.001), 3), \
            (lambda e: 0.1 * (e + 1) / 4 if e < 3
             else 0.001 + 0.099 * (1 + math.cos(math.pi * min(e - 3, 6) / 6)) / 2)
    x, y, _, _ = data
    if how == "optimizer":
        opt, cbs = optim.SGD(lr=schedule), None
    else:
        opt, cbs = optim.SGD(lr=1.0), [callbacks.LearningRateScheduler(schedule)]
    hist = _model().fit(x, y, epochs=8, optimizer=opt, callbacks=cbs)
    assert hist.history["lr"] == pytest.approx([closed(e) for e in range(8)], rel=1e-12)
    assert hist.epoch == list(range(1, 9))


def test_the_scheduled_rate_is_the_one_the_steps_use(data):
    """A scheduled fit equals one-epoch fits at the closed-form rates, to the bit."""
    x, y, _, _ = data
    a, b = _model(), _model()
    a.fit(x, y, epochs=4, optimizer=optim.SGD(lr=schedules.StepDecay(0.2, 2, 0.1)))
    opt = optim.SGD(lr=0.2)
    for rate in (0.2, 0.2, 0.02, 0.02):
        opt.lr = rate
        b.fit(x, y, epochs=1, optimizer=opt)
    np.testing.assert_array_equal(a.params, b.params)


def test_schedules_continue_across_fits_and_from_initial_epoch(data):
    x, y, _, _ = data
    model = _model()
    opt = optim.SGD(lr=schedules.Exponential(0.1, 0.5))
    hist = model.fit(x, y, epochs=2, optimizer=opt)
    model.fit(x, y, epochs=2, history=hist)
    assert hist.epoch == [1, 2, 3, 4]
    assert hist.history["lr"] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    later = model.fit(x, y, epochs=1, initial_epoch=10)
    assert later.epoch == [11] and later.history["lr"] == pytest.approx([0.1 * 0.5 ** 10])


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="step must be an integer"):
        schedules.StepDecay(0.1, step=0)
    with pytest.raises(ValueError, match="min_lr"):
        schedules.Cosine(0.1, 5, min_lr=0.2)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        optim.SGD(lr=lambda e: -1.0)


# --- callbacks ------------------------------------------------------------------------

class Recorder(callbacks.Callback):
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def on_train_begin(self, logs):
        self.calls.append(("begin", self.model is not None, self.optimizer is not None))

    def on_epoch_begin(self, epoch, logs):
        self.calls.append(("epoch_begin", epoch, sorted(logs)))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch_end", epoch, "val_loss" in logs))
        return epoch == self.stop_at

    def on_train_end(self, logs):
        self.calls.append(("end",))


def test_callbacks_are_called_in_order_and_can_stop(data):
    x, y, xv, yv = data
    rec = Recorder(stop_at=3)
    hist = _model().fit(x, y, epochs=10, validation_data=(xv, yv), callbacks=[rec])
    assert hist.epochs == 3
    assert rec.calls == [("begin", True, True),
                         ("epoch_begin", 1, ["lr"]), ("epoch_end", 1, True),
                         ("epoch_begin", 2, ["lr"]), ("epoch_end", 2, True),
                         ("epoch_begin", 3, ["lr"]), ("epoch_end", 3, True), ("end",)]


def test_callbacks_must_be_callbacks(data):
    model = _model()
    before = model.params.copy()
    with pytest.raises(TypeError, match="Callback instances"):
        model.fit(*data[:2], callbacks=[print])
    np.testing.assert_array_equal(model.params, before)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_checkpoint_written_by_the_callback_resumes_bit_for_bit(data, tmp_path, optimizer):
    x, y, xv, yv = data
    kw = dict(batch_size=16, validation_data=(xv, yv))
    whole = _model(dropout=0.2)
    whole.fit(x, y, epochs=4, optimizer=optimizer, **kw)
    run = _model(dropout=0.2)
    path = str(tmp_path / "ckpt-{epoch}.safetensors")
    run.fit(x, y, epochs=3, optimizer=optimizer, callbacks=[callbacks.ModelCheckpoint(path)], **kw)
    assert sorted(os.listdir(tmp_path)) == [f"ckpt-{e}.safetensors" for e in (1, 2, 3)]
    resumed = fm.load(tmp_path / "ckpt-2.safetensors", device="cpu")
    hist = resumed.fit(x, y, epochs=2, initial_epoch=2, **kw)
    assert hist.epoch == [3, 4]
    np.testing.assert_array_equal(resumed.params, whole.params)


def test_save_best_only_writes_only_improving_epochs(data, tmp_path):
    x, y, xv, yv = data
    path = str(tmp_path / "best-{epoch}.safetensors")
    hist = _model().fit(x, y, epochs=12, optimizer="sgd", lr=0.5, validation_data=(xv, yv),
                        callbacks=[callbacks.ModelCheckpoint(path, save_best_only=True)])
    best, improved = math.inf, []
    for epoch, v in zip(hist.epoch, hist.history["val_loss"]):
        if v < best:
            best, _ = v, improved.append(epoch)
    assert sorted(os.listdir(tmp_path)) == sorted(f"best-{e}.safetensors" for e in improved)
    assert len(improved) < 12


def test_a_checkpoint_into_a_missing_directory_fails_before_training(data, tmp_path):
    model = _model()
    before = model.params.copy()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.fit(*data[:2], callbacks=[callbacks.ModelCheckpoint(tmp_path / "no" / "m.st")])
    np.testing.assert_array_equal(model.params, before)


def test_early_stopping_restores_the_best_epochs_weights(data):
    x, y, xv, yv = data
    kw = dict(optimizer="sgd", lr=2.0, batch_size=8, validation_data=(xv, yv))
    stop = callbacks.EarlyStopping("val_accuracy", patience=2)
    hist = _model().fit(x, y, epochs=40, callbacks=[stop], **kw)
    acc = hist.history["val_accuracy"]
    best = int(np.argmax(acc)) + 1                  # the first maximum: later ties do not improve
    assert hist.best_epoch == best and hist.epochs == best + 2
    ref = _model()
    ref.fit(x, y, epochs=best, **kw)
    stopped = _model()
    stopped.fit(x, y, epochs=40, callbacks=[callbacks.EarlyStopping("val_accuracy", patience=2)],
                **kw)
    np.testing.assert_array_equal(stopped.params, ref.params)


def test_early_stopping_shorthand_is_the_callback(data):
    x, y, xv, yv = data
    kw = dict(optimizer="sgd", lr=1.0, validation_data=(xv, yv))
    a, b = _model(), _model()
    ha = a.fit(x, y, epochs=30, early_stopping=3, **kw)
    hb = b.fit(x, y, epochs=30, callbacks=[callbacks.EarlyStopping(patience=3)], **kw)
    del ha.history["seconds"], hb.history["seconds"]
    assert ha.history == hb.history and ha.best_epoch == hb.best_epoch
    np.testing.assert_array_equal(a.params, b.params)


def test_early_stopping_min_delta_and_an_unlogged_monitor(data):
    x, y, _, _ = data
    big = callbacks.EarlyStopping("train_loss", patience=1, min_delta=10.0)
    assert _model().fit(x, y, epochs=5, callbacks=[big]).epochs == 2
    for cb in (callbacks.EarlyStopping("val_loss"),
               callbacks.ModelCheckpoint("m.st", save_best_only=True)):
        model = _model()
        model.fit(x, y, epochs=1, optimizer="adam")
        before, t = model.params.copy(), model.optimizer.t
        with pytest.raises(ValueError, match="monitors 'val_loss', which this fit does not log"):
            model.fit(x, y, epochs=2, callbacks=[cb])
        np.testing.assert_array_equal(model.params, before)
        assert model.optimizer.t == t


def test_csv_logger_writes_a_row_per_epoch(data, tmp_path):
    x, y, xv, yv = data
    path = tmp_path / "log.csv"
    hist = _model().fit(x, y, epochs=3, validation_data=(xv, yv),
                        callbacks=[callbacks.CSVLogger(path)])
    rows = list(csv.DictReader(open(path)))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key, values in hist.history.items():
        assert [float(r[key]) for r in rows] == pytest.approx(values)


class _Opt:
    lr = 1.0


def test_reduce_lr_on_plateau_follows_its_rule():
    cb = callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    cb.optimizer = _Opt()
    cb.on_train_begin({})
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    rates = []
    for e, v in enumerate(losses, 1):
        cb.on_epoch_end(e, {"val_loss": v})
        rates.append(cb.optimizer.lr)
    # two epochs without improvement: halve; one epoch of cool-down; then count again
    assert rates == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]


# --- metrics --------------------------------------------------------------------------

def test_metrics_are_logged_for_train_and_validation(data):
    x, y, xv, yv = data

    def mean_true_prob(y_true, y_pred):
        return (y_true * y_pred).sum(axis=1)

    model = _model()
    hist = model.fit(x, y, epochs=2, validation_data=(xv, yv),
                     metrics=["accuracy", "top_k_accuracy", fm.metrics.TopKAccuracy(2), "mse",
                              mean_true_prob])
    h = hist.history
    for split, (xs, ys) in (("train", (x, y)), ("val", (xv, yv))):
        p = model.predict_proba(xs)
        onehot = np.eye(3)[ys]
        rank = (p > p[np.arange(len(ys)), ys][:, None]).sum(axis=1)
        assert h[f"{split}_top_2_accuracy"][-1] == pytest.approx(np.mean(rank < 2))
        assert h[f"{split}_top_k_accuracy"][-1] == 1.0            # 3 classes, k=5
        assert h[f"{split}_mse"][-1] == pytest.approx(np.mean((p - onehot) ** 2), rel=1e-5)
        assert h[f"{split}_mean_true_prob"][-1] == pytest.approx(
            np.mean(p[np.arange(len(ys)), ys]), rel=1e-5)
    assert "train_accuracy" in h and "val_accuracy" in h


def test_regression_metrics_with_sample_weights(data):
    x = data[0]
    target = np.stack([x[:, 0] * 2, x[:, 1] - x[:, 2]], axis=1)
    w = np.linspace(0.1, 2, len(x))
    model = fm.MLP([6, 8, 2], loss="mse", seed=0, device="cpu")
    hist = model.fit(x, target, epochs=2, sample_weight=w, metrics=["mae", "mse"])
    err = model.predict(x) - target
    assert hist.history["train_mae"][-1] == pytest.approx(
        np.sum(np.abs(err).mean(axis=1) * w) / w.sum(), rel=1e-5)
    assert hist.history["train_mse"][-1] == pytest.approx(
        np.sum((err ** 2).mean(axis=1) * w) / w.sum(), rel=1e-5)


@pytest.mark.parametrize("metric, error", [("accuracy", "classification loss"),
                                           ("top_k_accuracy", "cross_entropy"),
                                           ("f1", "unknown metric"), (3, "a metric is a name")])
def test_bad_metrics_fail_before_training(data, metric, error):
    model = fm.MLP([6, 2], loss="mse", seed=0, device="cpu")
    before = model.params.copy()
    with pytest.raises((ValueError, TypeError), match=error):
        model.fit(data[0], np.zeros((len(data[0]), 2)), metrics=[metric])
    np.testing.assert_array_equal(model.params, before)


# --- History, progress and log records -------------------------------------------

def test_history_pads_figures_missing_from_some_epochs(data):
    x, y, xv, yv = data
    model = _model()
    hist = model.fit(x, y, epochs=1)
    model.fit(x, y, epochs=1, validation_data=(xv, yv), history=hist)
    assert hist.epoch == [1, 2]
    assert math.isnan(hist.history["val_loss"][0]) and not math.isnan(hist.history["val_loss"][1])
    assert all(len(v) == 2 for v in hist.history.values())


def test_each_epoch_is_an_info_record(data, caplog):
    x, y, xv, yv = data
    with caplog.at_level(logging.INFO, logger="fastmlp.train"):
        _model().fit(x, y, epochs=3, validation_data=(xv, yv))
    lines = [r.getMessage() for r in caplog.records if r.name == "fastmlp.train"]
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3: train_loss")
    assert all("val_accuracy" in line for line in lines)


def test_bar_and_lines_show_the_same_figures(data, capsys):
    x, y, xv, yv = data
    for mode in ("bar", "lines"):
        _model().fit(x, y, epochs=2, validation_data=(xv, yv), progress=mode)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4

    def keys(line):
        return [part.split()[0] for part in line.split(": ", 1)[1].split(", ")[:-1]]

    assert keys(out[0]) == keys(out[2]) == ["train_loss", "train_accuracy", "val_loss",
                                            "val_accuracy", "lr"]
    with pytest.raises(ValueError, match="progress must be"):
        _model().fit(x, y, progress="fancy")


def test_the_cli_writes_plain_lines_to_a_log_file(mnist_dir, tmp_path):
    """Not on a terminal: no carriage returns, one line per epoch, every figure."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    env = {**os.environ, "FASTMLP_DATA": str(mnist_dir.parent)}
    with open(out, "w") as o, open(err, "w") as e:
        subprocess.run([sys.executable, "-m", "fastmlp.cli", "train", "--epochs", "2",
                        "--sizes", "784,16,10", "--device", "cpu"], stdout=o, stderr=e,
                       env=env, check=True)
    text, errors = out.read_text(), err.read_text()
    assert "\r" not in text and "\r" not in errors
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2
    for line in epochs:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert key in line
    assert "epoch" not in errors


def test_a_failed_fit_leaves_the_optimizer_as_it_was(data, tmp_path):
    x, y, _, _ = data
    model = _model()
    model.fit(x, y, epochs=1, optimizer="adam", lr=0.01)
    opt = model.optimizer
    bad = callbacks.ModelCheckpoint(tmp_path / "no" / "m.st")
    with pytest.raises(FileNotFoundError):
        model.fit(x, y, lr=0.5, callbacks=[bad])
    with pytest.raises(FileNotFoundError):
        model.fit(x, y, optimizer="sgd", callbacks=[bad])
    with pytest.raises(ValueError, match="no valid learning rate for epoch 3"):
        model.fit(x, y, epochs=5, lr=lambda e: 0.1 if e < 3 else -1.0)
    assert model.optimizer is opt and opt.lr == 0.01 and opt.schedule is None
    model.fit(x, y)                                   # still trains as before


def test_a_cosine_to_zero_runs_past_its_end(data):
    x, y, _, _ = data
    hist = _model().fit(x, y, epochs=6, optimizer=optim.SGD(lr=schedules.Cosine(0.1, 4)))
    assert hist.history["lr"][4:] == [0.0, 0.0]


def test_a_metric_may_not_shadow_a_logged_figure(data):
    def loss(y_true, y_pred):
        return 123.0

    with pytest.raises(ValueError, match="may not be named 'loss'"):
        _model().fit(*data[:2], metrics=[loss])
