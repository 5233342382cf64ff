"""Large batches on Numba's threads: the threaded step and gather give the
serial results, keep one thread pool at a time, and stay safe across fork
and concurrent fits (``kernels/cpu_parallel.py``)."""

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fastmlp as fm
from fastmlp import engines
from fastmlp.backend import get_backend
from fastmlp.callbacks import Callback
from fastmlp.engines import cpu_step
from fastmlp.kernels import blas, cpu_gemm_step, cpu_parallel, cpu_threaded_step

pytestmark = pytest.mark.skipif(not cpu_step.blas_gemm().size or blas.THREADS is None,
                                reason="NumPy bundles no OpenBLAS that fastmlp can call")
two_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                 reason="one CPU: Numba has one thread")
ROWS = 700            # not a multiple of the block: a short last block


def _model(activation="sigmoid", bias=True, dtype="float32", sizes=(20, 48, 24, 5)):
    return fm.MLP(list(sizes), activation=activation, bias=bias, dtype=dtype, seed=0,
                  device="cpu")


def _batch(model, weighted, rows=ROWS):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, model.sizes[0])).astype(model.dtype)
    y = rng.integers(0, model.sizes[-1], rows)
    w = rng.random(rows).astype(model.dtype) if weighted else None
    return model.prepare(x, y, sample_weight=w)


def _args(model, data, lr):
    engine = engines.create(model.net, model.buffers, ROWS, name="cpu-gemm")[0]
    args = list(engine._args(data.x, data.y, data.targets, data.weights, lr))
    args[12] = np.zeros(cpu_threaded_step.threaded_layout(engine._sizes, ROWS)[-1] +
                        args[12].size, model.dtype)
    return args


def _threaded(args, cuts):
    with cpu_parallel.one_pool():
        return cpu_threaded_step.threaded_step(cpu_step.blas_gemm(), *args, cuts)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "identity"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("lr", [0.0, 0.1])
def test_the_threaded_step_gives_the_serial_steps_results(activation, bias, dtype, weighted, lr):
    serial, threaded = _model(activation, bias, dtype), _model(activation, bias, dtype)
    data = _batch(serial, weighted)
    a, b = _args(serial, data, lr), _args(threaded, data, lr)
    loss_a, hits_a = cpu_gemm_step.gemm_step(cpu_step.blas_gemm(), *a)
    loss_b, hits_b = _threaded(b, 3)
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-11, atol=1e-13)
    assert loss_b == pytest.approx(loss_a, rel=tol["rtol"])
    assert hits_b == pytest.approx(hits_a, rel=1e-9) and hits_a > 0   # weighted: a sum
    np.testing.assert_allclose(threaded.params, serial.params, **tol)
    if lr == 0:                                  # gradients only: the parameters stay
        np.testing.assert_allclose(threaded.grads, serial.grads, **tol)
        assert np.abs(serial.grads).max() > 0


@two_threads
def test_the_threaded_results_do_not_depend_on_the_thread_count():
    found = []
    for threads in (1, 2):
        model = _model()
        args = _args(model, _batch(model, True), 0.1)
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            loss = _threaded(args, threads)
        finally:
            numba.set_num_threads(before)
        found.append((loss, model.params.copy()))
    assert found[0][0] == found[1][0]
    np.testing.assert_array_equal(found[0][1], found[1][1])


class _BlasThreads(Callback):
    def on_epoch_end(self, epoch, logs):
        self.seen = blas.THREADS[0]()


@two_threads
def test_a_large_batch_fit_runs_on_one_pool_and_gives_blas_its_threads_back():
    model = _model()
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((1500, 20)).astype(np.float32), rng.integers(0, 5, 1500)
    before = blas.THREADS[0]()
    probe = _BlasThreads()
    model.fit(x, y, epochs=2, batch_size=600, optimizer="adam", callbacks=[probe],
              validation_split=0.2)
    assert model.step_path.engine == "cpu-gemm"
    assert probe.seen == 1                       # held to one thread during the fit
    assert blas.THREADS[0]() == before           # and given back after it


@two_threads
def test_threaded_and_serial_fits_agree():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2000, 20)).astype(np.float32), rng.integers(0, 5, 2000)
    threaded, serial = _model(), _model()
    h1 = threaded.fit(x, y, epochs=2, batch_size=512, optimizer="sgd", lr=0.1)
    before = numba.get_num_threads()
    numba.set_num_threads(1)                     # no threads: the serial step
    try:
        assert not cpu_parallel.threaded(512)
        h2 = serial.fit(x, y, epochs=2, batch_size=512, optimizer="sgd", lr=0.1)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_allclose(threaded.params, serial.params, rtol=1e-4, atol=1e-6)
    assert h1.history["train_loss"] == pytest.approx(h2.history["train_loss"], rel=1e-5)


@two_threads
def test_the_threaded_gather_equals_take():
    ops = get_backend("cpu").ops_for("fused")
    rng = np.random.default_rng(4)
    a8 = rng.integers(0, 256, (3000, 33), dtype=np.uint8)
    af = rng.standard_normal((3000, 33)).astype(np.float32)
    idx = rng.permutation(3000)[:ROWS]
    with cpu_parallel.one_pool():
        assert cpu_parallel.gathers_threaded(ROWS)
        out8 = ops.gather_scaled(a8, idx, np.empty((ROWS, 33), np.float32), 1 / 255)
        outf = ops.take_rows(af, idx, np.empty((ROWS, 33), np.float32))
    np.testing.assert_array_equal(out8, a8[idx].astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_array_equal(outf, af[idx])
    assert not cpu_parallel.gathers_threaded(ROWS)     # outside one pool: serial


@two_threads
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_child_forked_after_threaded_steps_trains_serially():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((1200, 20)).astype(np.float32), rng.integers(0, 5, 1200)
    _model().fit(x, y, epochs=1, batch_size=600)         # the parent's threads have run
    pid = os.fork()
    if pid == 0:                                         # the child: any failure exits non-zero
        code = 1
        try:
            model = _model()
            model.fit(x, y, epochs=1, batch_size=600)
            fork_safe = numba.threading_layer() != "omp"
            code = 0 if np.isfinite(model.params).all() and (
                fork_safe or not cpu_parallel.usable()) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


@two_threads
def test_two_threads_fit_at_once_on_the_workqueue_layer():
    # that layer aborts the process on concurrent launches unless fastmlp serialises them
    code = textwrap.dedent("""
        import threading, numba, numpy as np, fastmlp as fm
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((3000, 20)).astype(np.float32), rng.integers(0, 5, 3000)
        def fit():
            fm.MLP([20, 48, 5], seed=0, device="cpu").fit(x, y, epochs=3, batch_size=600)
        threads = [threading.Thread(target=fit) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(numba.threading_layer())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "workqueue"
