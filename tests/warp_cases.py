"""What the Warp tests (``test_warp.py``, ``test_warp_engine.py``) share:
the optimizers they run, data for each loss, and how close two fits must be."""

import numpy as np

import fastmlp as fm

OPTIMIZERS = {
    "sgd": lambda: fm.optim.SGD(lr=0.05),
    "nesterov": lambda: fm.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: fm.optim.Adam(lr=1e-2, weight_decay=1e-3),
    "adamw": lambda: fm.optim.AdamW(lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda: fm.optim.RMSprop(lr=1e-2, weight_decay=1e-3),
    "adagrad": lambda: fm.optim.AdaGrad(lr=0.1),
}
#: after 20 steps, relative to the largest parameter
TOL = {"float64": 1e-10, "float32": 2e-5}


def samples(loss, n=200, seed=0):
    """Inputs (n, 12) and targets for ``loss``: class ids, 0/1 labels, counts or values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12))
    if loss == "cross_entropy":
        return x, rng.integers(0, 3, n)
    if loss == "binary_cross_entropy":
        return x, (rng.random((n, 3)) < 0.5).astype(np.float64)
    if loss == "poisson":
        return x, rng.poisson(2.0, (n, 3)).astype(np.float64)
    return x, rng.normal(size=(n, 3))


def assert_same(a, b, dtype):
    """Models ``a`` and ``b`` (on the CPU) within :data:`TOL` of each other."""
    err = np.max(np.abs(a.params - b.params)) / np.max(np.abs(a.params))
    assert err <= TOL[dtype], err
