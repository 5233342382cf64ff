"""The CPU updates flush optimizer state that decays below float32's
smallest normal number (``kernels/updates.FLUSH``): on x86 each multiply of a
subnormal costs ~100x, and a parameter whose gradient stays 0 (an MNIST
border pixel's weights, a dead ReLU's) drives its momentum there within a
few hundred steps. Late in an MNIST epoch Adam's update took 2.4x as long."""

import numpy as np
import pytest

from fastmlp.backend import get_backend

TINY = np.finfo(np.float32).tiny               # kernels/updates.FLUSH


@pytest.fixture
def ops():
    return get_backend("cpu").ops_for("fused")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_flushes_state_that_decays_below_the_smallest_normal(ops, dtype):
    n = 1000
    p = np.linspace(-1, 1, n).astype(dtype)
    g = np.zeros(n, dtype)
    g[::2] = 0.01                                   # half the parameters still learn
    m = np.full(n, TINY * 1.05, dtype)              # one decay by 0.9 from subnormal
    v = np.full(n, 1e-6, dtype)
    before = p.copy()
    ops.adam(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, 10)
    assert np.all(m[1::2] == 0)                     # no subnormal left behind
    assert np.all(m[::2] > 1e-4)
    np.testing.assert_array_equal(p[1::2], before[1::2])   # and no parameter moved by it


def test_sgd_momentum_flushes_its_velocity(ops):
    p = np.ones(64, np.float32)
    g = np.zeros(64, np.float32)
    vel = np.full(64, TINY * 1.05, np.float32)
    ops.sgd(p, g, vel, 0.1, 0.9, False, 0.0)
    assert np.all(vel == 0)
    np.testing.assert_array_equal(p, 1)


def test_a_long_adam_fit_leaves_no_subnormal_state():
    import fastmlp as fm
    rng = np.random.default_rng(0)
    x = rng.random((4000, 30), dtype=np.float32)
    x[:, :10] = 0                                   # dead inputs: their weights' gradients are 0
    x[::500, :10] = 1                               # ... but for a row now and then
    y = rng.integers(0, 3, 4000)
    m = fm.MLP([30, 16, 3], device="cpu", seed=0)
    opt = fm.optim.Adam(lr=1e-3)
    m.fit(x, y, epochs=3, batch_size=8, optimizer=opt)
    for a in opt.state[0].values():
        a = np.asarray(a)
        assert not np.any((a != 0) & (np.abs(a) < TINY))
