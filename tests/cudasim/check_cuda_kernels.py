"""kernels/cuda.py against the reference ops, in Numba's CUDA simulator.

Collected only by tests/test_cuda_sim.py, which runs this file in a fresh
process with NUMBA_ENABLE_CUDASIM=1 (the variable must be set before Numba
is imported). Grids stay tiny: the simulator costs ~0.2 ms per thread.
"""

import os
import warnings

import numpy as np
import pytest

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run through tests/test_cuda_sim.py"

from fastmlp.kernels.cuda import CudaOps  # noqa: E402
from fastmlp.kernels.reference import ReferenceOps  # noqa: E402
from kernel_twins import DTYPES, TOL  # noqa: E402  (tests/ is on PYTHONPATH)
from kernel_twins import close as _close  # noqa: E402
from kernel_twins import random as _random  # noqa: E402

REF, GPU = ReferenceOps(np), CudaOps(np)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_bias_act(dtype, activation):
    z, b = _random((3, 5), dtype), _random(5, dtype, 1)
    _close(GPU.bias_act(activation, z.copy(), b), REF.bias_act(activation, z.copy(), b), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_act_grad_with_column_sums(dtype, activation):
    da = _random((3, 5), dtype)
    a = REF.bias_act(activation, _random((3, 5), dtype, 1), None)
    db_gpu, db_ref = np.zeros(5, dtype), np.zeros(5, dtype)
    _close(GPU.act_grad(activation, da.copy(), a, db_gpu),
           REF.act_grad(activation, da.copy(), a, db_ref), dtype)
    _close(db_gpu, db_ref, dtype)
    _close(GPU.act_grad(activation, da.copy(), a, None),
           REF.act_grad(activation, da.copy(), a, None),
           dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(dtype):
    z = _random((4, 6), dtype)
    y = np.eye(6, dtype=dtype)[[0, 3, 5, 1]]
    zg, zr = z.copy(), z.copy()
    lg, lr = GPU.loss("cross_entropy", zg, y, 0.25), REF.loss("cross_entropy", zr, y, 0.25)
    assert float(lg) == pytest.approx(float(lr), rel=TOL[dtype])
    _close(zg, zr, dtype)
    assert float(GPU.loss("cross_entropy", z.copy(), y)) == pytest.approx(float(lr), rel=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits(dtype):
    z = np.array([[1000, -1000, 0], [-1000, -1000, 1000]], dtype=dtype)
    y = np.eye(3, dtype=dtype)[[0, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        zg = z.copy()
        loss = float(GPU.loss("cross_entropy", zg, y, 1.0))
        s = GPU.bias_act("sigmoid", z.copy(), np.zeros(3, dtype))
    assert loss == pytest.approx(2000) and np.isfinite(zg).all()
    np.testing.assert_allclose(s, [[1, 0, 0.5], [0, 0, 1]], atol=1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, nesterov, wd", [(0, False, 0), (0.9, True, 0.01)])
def test_sgd(dtype, momentum, nesterov, wd):
    p, g = _random(40, dtype), _random(40, dtype, 1)
    pr, pg = p.copy(), p.copy()
    vr, vg = (np.zeros_like(p), np.zeros_like(p)) if momentum else (None, None)
    for _ in range(2):
        REF.sgd(pr, g, vr, 0.1, momentum, nesterov, wd)
        GPU.sgd(pg, g, vg, 0.1, momentum, nesterov, wd)
    _close(pg, pr, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd, decoupled", [(0, False), (0.1, True)])
def test_adam(dtype, wd, decoupled):
    p, g = _random(40, dtype), _random(40, dtype, 1)
    ref = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    gpu = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    for t in (1, 2):
        REF.adam(ref[0], g, ref[1], ref[2], 1e-2, 0.9, 0.999, 1e-8, wd, decoupled, t)
        GPU.adam(gpu[0], g, gpu[1], gpu[2], 1e-2, 0.9, 0.999, 1e-8, wd, decoupled, t)
    for a, b in zip(gpu, ref):
        _close(a, b, dtype)
