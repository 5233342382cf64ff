"""The ``cpu-gemm`` engine's one-call epoch at batch sizes above 1
(``kernels/cpu_gemm_step.gemm_epoch``): every batch's gather, step and update
in one compiled call where the steps take one thread. It must give the batch
loop's model bit for bit; a batch hook forces the batch loop."""

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.callbacks import Callback
from fastmlp.kernels import cpu_gemm_step

OPTIMIZERS = {
    "sgd": lambda: fm.optim.SGD(lr=0.05),
    "nesterov": lambda: fm.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-decay": lambda: fm.optim.SGD(lr=0.05, weight_decay=1e-3),
    "adam": lambda: fm.optim.Adam(lr=1e-3, weight_decay=1e-4),
    "adamw": lambda: fm.optim.AdamW(lr=1e-3, weight_decay=0.1),
    "adagrad": lambda: fm.optim.AdaGrad(lr=0.05, weight_decay=1e-3),
    "rmsprop": lambda: fm.optim.RMSprop(lr=1e-3, alpha=0.9),
}


class _Hook(Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


@pytest.fixture
def calls(monkeypatch):
    seen = []
    real = cpu_gemm_step.gemm_epoch

    def counted(*args):
        seen.append(args[6])                      # the batch size
        return real(*args)
    monkeypatch.setattr(cpu_gemm_step, "gemm_epoch", counted)
    return seen


def _fit(optimizer, dtype="float32", hook=False, compact=False, weights=False, shuffle=True,
         reduction="mean"):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 40)).astype(dtype)
    if compact:                                   # integer rows, scaled as they are gathered
        x = rng.integers(0, 256, (1000, 40), dtype=np.uint8)
    y = rng.integers(0, 5, 1000)
    m = fm.MLP([40, 32, 16, 5], device="cpu", seed=0, dtype=dtype, reduction=reduction,
               input_scale=1 / 255 if compact else 1.0)
    opt = OPTIMIZERS[optimizer]()
    w = rng.uniform(0, 2, 1000) if weights else None
    if weights:
        w[:48] = 0                                # a first batch with no weight at all
    h = m.fit(x, y, epochs=3, batch_size=48, optimizer=opt, callbacks=[_Hook()] if hook else [],
              sample_weight=w, shuffle=shuffle)
    return m, h, opt


def _same(case, calls, **kw):
    one, h1, o1 = _fit(*case, **kw)
    assert calls == [48, 48, 48]                   # 1000 rows: 20 batches of 48 and one of 40
    loop, h2, o2 = _fit(*case, hook=True, **kw)
    assert len(calls) == 3
    np.testing.assert_array_equal(one.params, loop.params)
    assert h1.history["train_loss"] == h2.history["train_loss"]
    assert h1.history["train_accuracy"] == h2.history["train_accuracy"]
    assert o1.t == o2.t == 3 * 21


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_the_epoch_call_gives_the_batch_loops_model_bit_for_bit(optimizer, dtype, calls):
    _same((optimizer, dtype), calls)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sample_weights_and_compact_inputs_in_the_epoch_call(dtype, shuffle, reduction, calls):
    _same(("adam", dtype), calls, weights=True, compact=True, shuffle=shuffle,
          reduction=reduction)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_weighted_epoch_calls_per_optimizer(optimizer, calls):
    _same((optimizer,), calls, weights=True)


@pytest.mark.parametrize("n", list(range(0, 140)) + [255, 256, 257, 1000, 4099])
def test_the_pairwise_sum_is_numpys(n):
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        a = (rng.random(n + 3) * 10.0 ** rng.integers(-4, 5, n + 3)).astype(dtype)
        got = cpu_gemm_step.pairwise_sum(a, 3, n)
        assert got == a[3:].sum()              # bit for bit (a float32 sum is exact in a float)


def test_steps_that_take_more_threads_take_the_batch_loop(calls, monkeypatch):
    from fastmlp.kernels import blas
    if blas.THREADS is None or blas.THREADS[0]() < 2:
        pytest.skip("OpenBLAS has one thread here: every step takes one")
    monkeypatch.setenv("FASTMLP_THREADS", "2")
    _fit("adam")
    assert calls == []


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_streamed_rows_take_one_call_per_chunk_bit_for_bit(uint8_on_disk, monkeypatch, calls,
                                                          shuffle, optimizer):
    from fastmlp import stream
    monkeypatch.setattr(stream, "CHUNK_BYTES", 20 * 300)       # 288 rows a chunk: 4 chunks
    mm, _, y = uint8_on_disk(1000)
    w = np.random.default_rng(2).uniform(0.5, 1.5, 1000)

    def fit(hook):
        m = fm.MLP([20, 16, 2], device="cpu", seed=0, input_scale=1 / 255)
        h = m.fit(mm, y, epochs=2, batch_size=48, optimizer=OPTIMIZERS[optimizer](),
                  sample_weight=w, shuffle=shuffle, callbacks=[_Hook()] if hook else [])
        return m, h
    one, h1 = fit(False)
    assert calls == [48] * 8                           # 4 chunks x 2 epochs
    loop, h2 = fit(True)
    assert len(calls) == 8
    np.testing.assert_array_equal(one.params, loop.params)
    # the epoch's loss adds per-chunk sums: float64 addition in another order
    assert h1.history["train_loss"] == pytest.approx(h2.history["train_loss"], rel=1e-14)
    assert h1.history["train_accuracy"] == h2.history["train_accuracy"]


def test_an_engine_without_chunk_epochs_streams_batch_by_batch(uint8_on_disk, monkeypatch):
    from fastmlp import stream
    from fastmlp.engines.cpu_step import CpuStepEngine
    monkeypatch.setattr(stream, "CHUNK_BYTES", 20 * 300)
    monkeypatch.setattr(CpuStepEngine, "chunk_epochs", False)
    seen = []
    real = CpuStepEngine.train_epoch
    monkeypatch.setattr(CpuStepEngine, "train_epoch",
                        lambda self, *a, **k: seen.append(1) or real(self, *a, **k))
    mm, _, y = uint8_on_disk(1000)
    m = fm.MLP([20, 16, 2], device="cpu", seed=0, input_scale=1 / 255)
    h = m.fit(mm, y, epochs=1, batch_size=48)
    assert seen == [] and np.isfinite(h.history["train_loss"][0])
