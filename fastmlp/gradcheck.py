"""Backprop checked against central finite differences, in float64."""

from dataclasses import dataclass
from numbers import Integral

import numpy as np

from fastmlp.constraints import Interval, check


@dataclass
class GradCheck:
    """Result of :func:`gradcheck`: the largest errors over the entries checked.

    ``max_rel_error`` is ``max |a - n| / max(|a| + |n|, floor)`` over analytic
    gradients ``a`` and numerical ones ``n``.
    """

    max_rel_error: float
    max_abs_error: float
    n_checked: int
    tol: float

    @property
    def ok(self):
        """Whether ``max_rel_error <= tol``."""
        return self.max_rel_error <= self.tol

    def __bool__(self):
        return self.ok


def gradcheck(model, x, y, eps=1e-5, tol=1e-6, floor=1e-8, max_checks=None, seed=0):
    """Compare ``model``'s backprop gradients with central differences.

    The check runs on a float64 copy of the model (same weights, same device,
    dropout off), so ``model`` is not changed. ``max_checks`` samples that many
    parameter entries at random instead of all of them.
    """
    from fastmlp.model import MLP

    max_checks = check("max_checks", max_checks, None, Interval(Integral, 1))
    # engine "auto": the check's own batch may not suit an engine the model was told to use
    m = MLP(**{**model.config(), "dtype": "float64", "dropout": 0.0}, device=model.backend,
            engine="auto")
    be = m.backend
    with be.scope():
        m.params[...] = model.params
        data = m.prepare(x, y)
        m.gradient(data.x, data.y)
        analytic = be.to_numpy(m.grads).copy()
        idx = np.arange(m.n_params)
        if max_checks is not None and max_checks < m.n_params:
            idx = np.random.default_rng(seed).choice(m.n_params, max_checks, replace=False)
        numeric = np.empty(len(idx))
        p = m.params
        for j, i in enumerate(idx):
            orig = float(p[i])
            p[i] = orig + eps
            up = m.evaluate(data)["loss"]
            p[i] = orig - eps
            down = m.evaluate(data)["loss"]
            p[i] = orig
            numeric[j] = (up - down) / (2 * eps)
    a = analytic[idx]
    err = np.abs(a - numeric)
    rel = err / np.maximum(np.abs(a) + np.abs(numeric), floor)
    return GradCheck(float(rel.max()), float(err.max()), len(idx), tol)
