"""Training-step and inference throughput of 784-128-64-10 per batch size.

Each body is one training step (forward, backward, SGD update) or one forward
pass on a fixed random batch, on each device and kernel path; samples/s and
the step engine that ran go to ``benchmark.extra_info``. CI runs these with
``--benchmark-disable`` (each body once) as a smoke test; measure with::

    pytest benchmarks --benchmark-enable --benchmark-group-by=param:batch_size
"""

import numpy as np
import pytest

import fastmlp as fm

SIZES = [784, 128, 64, 10]
BATCH_SIZES = [1, 16, 64, 256, 1024, 4096]
# fused on cuda: numba.cuda kernels (gpu: skipped on the NumPy stand-in for CuPy)
KERNELS = ["reference", pytest.param("fused", marks=pytest.mark.gpu), "auto"]


def _setup(device, kernels, activation, batch_size):
    model = fm.MLP(SIZES, activation=activation, device=device, kernels=kernels, seed=0)
    rng = np.random.default_rng(0)
    data = model.prepare(rng.random((batch_size, SIZES[0]), dtype=np.float32),
                         rng.integers(0, SIZES[-1], batch_size))
    return model, data.x, data.y


def _record(benchmark, batch_size, kind):
    benchmark.extra_info["batch_size"] = batch_size
    if benchmark.stats is not None:          # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info[f"{kind}_samples_per_s"] = batch_size / median


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_train_step(benchmark, device, kernels, activation, batch_size):
    model, x, y = _setup(device, kernels, activation, batch_size)
    opt = fm.optim.SGD(lr=0.01)
    opt.init([model.params], model.ops)
    engine = model.engine_for(batch_size, sample=x)        # as fit() runs a step
    sync = model.backend.synchronize

    def step():
        engine.train_step(x, y, None, opt)
        sync()

    step()                                   # warm-up: compilation, first allocations
    benchmark.group = f"train batch={batch_size}"
    benchmark(step)
    _record(benchmark, batch_size, "train")
    benchmark.extra_info["engine"] = model.step_path.engine
    assert np.isfinite(model.backend.to_numpy(model.params)).all()


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_inference(benchmark, device, kernels, activation, batch_size):
    model, x, _ = _setup(device, kernels, activation, batch_size)
    sync = model.backend.synchronize

    def infer():
        p = model.ops.output(model.loss, model.logits(x))
        sync()
        return p

    infer()
    benchmark.group = f"infer batch={batch_size}"
    p = benchmark(infer)
    _record(benchmark, batch_size, "infer")
    np.testing.assert_allclose(model.backend.to_numpy(p).sum(axis=1), 1, rtol=1e-5)
