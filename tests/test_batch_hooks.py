"""The epoch loop's batch hooks and its one stop flag: when hooks are called,
what they see, how they stop training, and that the one-call epoch gives way
to batches when a hook must see each one."""

import math

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import callbacks, engines, stream


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.8)
    return x, y


def _model(**kw):
    return fm.MLP([6, 16, 3], seed=0, device="cpu", **kw)


class Batches(callbacks.Callback):
    """Records every hook; sets the loop's stop flag after batch ``stop`` of
    epoch ``epoch`` when asked to."""

    def __init__(self, stop=None, epoch=None):
        self.calls, self.losses, self.stop, self.stop_epoch = [], [], stop, epoch

    def on_epoch_begin(self, epoch, logs):
        self.epoch = epoch
        self.calls.append(("epoch", epoch))
        self.losses.append([])

    def on_train_batch_begin(self, batch, logs):
        self.calls.append(("begin", batch, logs["size"]))

    def on_train_batch_end(self, batch, logs):
        self.calls.append(("end", batch, logs["size"]))
        self.losses[-1].append((logs["loss"], logs["size"]))
        if (batch, self.epoch) == (self.stop, self.stop_epoch):
            self.loop.stop_training = True

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch_end", epoch))

    def on_train_end(self, logs):
        self.calls.append(("train_end",))


def _mean(losses):
    return sum(loss * size for loss, size in losses) / sum(size for _, size in losses)


def test_batch_hooks_run_around_each_step_in_order_every_epoch(data):
    x, y = data
    rec = Batches()
    hist = _model().fit(x, y, epochs=2, batch_size=48, callbacks=[rec])
    sizes = [48, 48, 48, 16]
    per_epoch = [c for i, n in enumerate(sizes) for c in (("begin", i, n), ("end", i, n))]
    assert rec.calls == ([("epoch", 1)] + per_epoch + [("epoch_end", 1), ("epoch", 2)]
                         + per_epoch + [("epoch_end", 2), ("train_end",)])
    # each batch's loss is the batch's mean, a float: over the epoch they make train_loss
    assert all(type(loss) is float for losses in rec.losses for loss, _ in losses)
    for losses, epoch_loss in zip(rec.losses, hist.history["train_loss"]):
        assert _mean(losses) == pytest.approx(epoch_loss, rel=1e-6)


def test_a_batch_logs_loss_is_read_only_when_asked_for(data):
    x, y = data

    class Sizes(callbacks.Callback):
        def on_train_batch_end(self, batch, logs):
            self.seen = ("loss" in logs, "loss" in logs._values, logs["size"])

    cb = Sizes()
    _model().fit(x, y, batch_size=100, callbacks=[cb])
    assert cb.seen == (True, False, 60)


def test_a_stop_flag_set_after_a_batch_stops_within_the_epoch(data):
    x, y = data
    rec = Batches(stop=2, epoch=2)
    model = _model()
    hist = model.fit(x, y, epochs=5, batch_size=32, optimizer="adam", callbacks=[rec])
    assert hist.epochs == 2 and model.optimizer.t == 5 + 3       # 5 steps, then 3
    assert rec.calls[-4:] == [("begin", 2, 32), ("end", 2, 32), ("epoch_end", 2),
                              ("train_end",)]
    assert [len(losses) for losses in rec.losses] == [5, 3]
    # the cut epoch is logged over the batches it ran
    assert hist.history["train_loss"][1] == pytest.approx(_mean(rec.losses[1]), rel=1e-6)


def test_on_epoch_end_stops_by_the_same_flag(data):
    x, y = data

    class Flag(callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            self.loop.stop_training = epoch == 2          # returns None: the flag decides

    class Returns(callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            return epoch == 3

    assert _model().fit(x, y, epochs=6, callbacks=[Flag()]).epochs == 2
    assert _model().fit(x, y, epochs=6, callbacks=[Returns()]).epochs == 3


def test_a_stop_flag_set_before_the_first_epoch_runs_none(data):
    x, y = data

    class Early(callbacks.Callback):
        def on_train_begin(self, logs):
            self.loop.stop_training = True

    model = _model()
    before = model.params.copy()
    assert model.fit(x, y, epochs=3, callbacks=[Early()]).epochs == 0
    np.testing.assert_array_equal(model.params, before)


def _spy_one_call_epochs(monkeypatch):
    ran = []
    for cls in engines.ENGINES:
        def spy(self, *args, _orig=cls.train_epoch, **kw):
            out = _orig(self, *args, **kw)
            ran.append(out is not None)
            return out
        monkeypatch.setattr(cls, "train_epoch", spy)
    return ran


def test_batch_hooks_make_the_one_call_epoch_run_batch_by_batch(data, monkeypatch):
    """Plain SGD at batch size 1 on the CPU runs each epoch in one engine call;
    with a batch hook every one of its steps is seen, and it trains the same."""
    x, y = data
    ran = _spy_one_call_epochs(monkeypatch)
    kw = dict(epochs=2, batch_size=1, optimizer="sgd", lr=0.05)
    whole = _model(engine="cpu-gemm")
    whole.fit(x, y, **kw)
    assert ran == [True, True]
    ran.clear()
    rec = Batches()
    stepped = _model(engine="cpu-gemm")
    stepped.fit(x, y, callbacks=[rec], **kw)
    assert ran == [] and [len(losses) for losses in rec.losses] == [160, 160]
    assert [c[1] for c in rec.calls if c[0] == "end"] == list(range(160)) * 2
    np.testing.assert_allclose(stepped.params, whole.params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_a_weighted_epoch_cut_short_divides_by_the_weights_it_ran(
        data, tmp_path, monkeypatch, streamed, shuffle):
    x, y = data
    w = np.linspace(0.5, 3.0, 160)
    if streamed:
        monkeypatch.setattr(stream, "CHUNK_BYTES", 6 * 4 * 64)    # chunks of 64, 64, 32 rows
        mm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="w+", shape=x.shape)
        mm[:] = x
        mm.flush()
        x = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="r", shape=x.shape)
    sums = []                                 # each step's weights' sum, as the engine saw them
    for cls in engines.ENGINES:
        def spy(self, x, y, targets, optimizer, weights=None, _orig=cls.train_step):
            sums.append(float(weights.sum()))
            return _orig(self, x, y, targets, optimizer, weights)
        monkeypatch.setattr(cls, "train_step", spy)
    rec = Batches(stop=5, epoch=1)           # 6 batches of 16: a chunk and a third, streamed
    hist = _model().fit(x, y, batch_size=16, shuffle=shuffle, sample_weight=w,
                        epochs=3, callbacks=[rec])
    assert hist.epochs == 1 and len(rec.losses[0]) == 6 == len(sums)
    # each batch's loss is its own weighted mean: weigh it by its weights' sum
    expected = sum(loss * s for (loss, _), s in zip(rec.losses[0], sums)) / sum(sums)
    assert hist.history["train_loss"][0] == pytest.approx(expected, rel=1e-6)
    assert math.isfinite(hist.history["train_accuracy"][0])
