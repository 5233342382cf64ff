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
}


class _Hook(Callback):
    def on_train_batch_end(self, batch, logs=None):
        pass


@pytest.fixture
def calls(monkeypatch):
    seen = []
    real = cpu_gemm_step.gemm_epoch

    def counted(*args):
        seen.append(args[5])                      # the batch size
        return real(*args)
    monkeypatch.setattr(cpu_gemm_step, "gemm_epoch", counted)
    return seen


def _fit(optimizer, dtype="float32", hook=False, **fit):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 40)).astype(dtype)
    y = rng.integers(0, 5, 1000)
    m = fm.MLP([40, 32, 16, 5], device="cpu", seed=0, dtype=dtype)
    opt = OPTIMIZERS[optimizer]()
    h = m.fit(x, y, epochs=3, batch_size=48, optimizer=opt, callbacks=[_Hook()] if hook else [],
              **fit)
    return m, h, opt


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_the_epoch_call_gives_the_batch_loops_model_bit_for_bit(optimizer, dtype, calls):
    one, h1, o1 = _fit(optimizer, dtype)
    assert calls == [48, 48, 48]                   # 1000 rows: 20 batches of 48 and one of 40
    loop, h2, o2 = _fit(optimizer, dtype, hook=True)
    assert len(calls) == 3
    np.testing.assert_array_equal(one.params, loop.params)
    assert h1.history["train_loss"] == h2.history["train_loss"]
    assert h1.history["train_accuracy"] == h2.history["train_accuracy"]
    assert o1.t == o2.t == 3 * 21


def test_sample_weights_and_other_optimizers_take_the_batch_loop(calls):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((200, 10)).astype(np.float32), rng.integers(0, 3, 200)
    m = fm.MLP([10, 8, 3], device="cpu", seed=0)
    m.fit(x, y, epochs=1, batch_size=16, sample_weight=np.linspace(0.5, 1.5, 200))
    m.fit(x, y, epochs=1, batch_size=16, optimizer="rmsprop")
    assert calls == []


def test_steps_that_take_more_threads_take_the_batch_loop(calls, monkeypatch):
    from fastmlp.kernels import blas
    if blas.THREADS is None or blas.THREADS[0]() < 2:
        pytest.skip("OpenBLAS has one thread here: every step takes one")
    monkeypatch.setenv("FASTMLP_THREADS", "2")
    _fit("adam")
    assert calls == []
