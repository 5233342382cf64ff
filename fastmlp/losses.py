"""Losses: names, the output activation each implies, reductions, and what
"accuracy" and "predict" mean for each.

Every loss op returns the sum of its per-element losses and writes
``scale * dLoss/dZ`` over the logits; the fused softmax + cross-entropy
gradient is ``(P - Y) / N``. The maths is in the op table
(``fastmlp.kernels.reference.LOSSES`` and its fused twins).

Reductions: ``"mean"`` averages over samples for ``cross_entropy`` (whose
per-sample loss already sums over classes) and over every output element for
``binary_cross_entropy``, ``mse`` and ``l1`` (as PyTorch does); ``"sum"`` sums.
"""

from dataclasses import dataclass
from numbers import Real

import numpy as np


@dataclass(frozen=True)
class Loss:
    """One loss: ``output`` is the output activation it implies; ``classifier``
    says accuracy and predict_proba apply; ``per_sample`` says "mean" divides
    by N (True) or by N * K (False)."""

    name: str
    output: str
    classifier: bool
    per_sample: bool

    def scale(self, reduction, n, k):
        """The factor that turns a summed loss into the reduced one: ``n`` is
        the number of samples, or with per-sample weights their sum (a
        float, or a 0-d device array; a sum of 0 gives a scale of 0)."""
        if reduction == "sum":
            return 1.0
        count = n if self.per_sample else n * k
        if isinstance(count, Real):
            return 1.0 / count if count else 0.0
        # a device sum: stay on the device, in its dtype (a Python float would promote
        # a bool array to float64)
        cast = count.dtype.type
        return (cast(1) / count.clip(cast(np.finfo(count.dtype).tiny))) * (count != 0)

    def targets(self, y):
        """What :meth:`hits` compares logits with, from dense targets (N, K)."""
        if self.name == "cross_entropy":
            return y.argmax(axis=1)
        if self.name == "binary_cross_entropy":
            return y > 0.5
        return None

    def hits(self, z, t, weights=None):
        """Number of correct predictions in logits ``z`` (0-d device array),
        each sample counting ``weights[i]`` times when given."""
        right = z.argmax(axis=1) == t if self.name == "cross_entropy" else (z > 0) == t
        if weights is None:
            return right.sum()
        return (right * (weights if right.ndim == 1 else weights[:, None])).sum()

    def predict(self, z):
        """Predictions from logits: class ids, 0/1 labels or values."""
        if self.name == "cross_entropy":
            return z.argmax(axis=1)
        if self.name == "binary_cross_entropy":
            return (z > 0).astype("int64")
        return z

    def summary(self, total, hits, reduction, n, k):
        """``{"loss", "accuracy"}`` floats from a summed loss and a hit count
        over ``n`` samples (with per-sample weights: their sum, and weighted
        hits)."""
        out = {"loss": float(total) * self.scale(reduction, n, k)}
        if hits is not None:
            out["accuracy"] = float(hits) / (n if self.per_sample else n * k)
        return out


LOSSES = {
    "cross_entropy": Loss("cross_entropy", "softmax", True, True),
    "binary_cross_entropy": Loss("binary_cross_entropy", "sigmoid", True, False),
    "mse": Loss("mse", "identity", False, False),
    "l1": Loss("l1", "identity", False, False),
}
REDUCTIONS = ("mean", "sum")


def get(name, reduction="mean"):
    """The Loss called ``name``; ValueError for an unknown name or reduction."""
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string, got {type(name).__name__}")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: choose one of {sorted(LOSSES)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: choose one of {list(REDUCTIONS)}")
    return LOSSES[name]
