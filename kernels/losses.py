"""Losses and output heads: each declared once, with every implementation of its maths.

A :class:`Loss` spec holds, for one loss:

- ``reference``: ``terms(xp, z, y, scale)``, the per-element losses of the
  logits ``z`` against dense targets ``y`` (N, K) in plain ``xp`` calls; with
  ``scale`` it also overwrites ``z`` with ``scale * dLoss/dZ`` (for
  cross-entropy the fused ``(softmax(Z) - Y) * scale``);
- ``cpu``: the fused CPU implementation, as plain Python that Numba compiles
  (``cpu_math.LOSS_KERNELS``): ``(z, y, ids, w, d, scale, grad) -> (loss sum,
  hits)``; None where the reference is used;
- ``device``: the name of its NVIDIA Warp kernel (``warp_ops.DEVICE``),
  compiled for the GPU and, in CI, for the CPU;
- its :class:`Head`, what the logits mean: the output activation, the
  targets that hits compare with, predictions, and what exports emit;
- ``per_sample``: a ``"mean"`` divides by N (cross-entropy, whose
  per-sample loss already sums over classes) or by N * K (the others, as
  PyTorch does).

Every loss returns the *sum* of its per-element losses; the caller picks
``scale`` from the reduction (:meth:`Loss.scale`). With per-sample weights,
row i's losses and gradient count ``weights[i]`` times. Kernels are leaves:
nothing here imports fastmlp (or Numba).
"""

import math
from dataclasses import dataclass
from numbers import Real
from typing import Callable, Optional

import numpy as np

from .activations import SIGMOID, lookup
from .scalar import fast_exp

REDUCTIONS = ("mean", "sum")


# --- output heads ----------------------------------------------------------------------

class Head:
    """What the output logits mean. ``classifier``: accuracy and
    probabilities apply; ``sklearn``: scikit-learn's ``out_activation_``;
    ``onnx``: the ONNX operator giving probabilities (None: none)."""

    name = None
    classifier = False
    sklearn = "identity"
    onnx = None

    def apply(self, xp, z):
        """Probabilities (or values) from logits, in place in ``z``."""

    def targets(self, y):
        """What :meth:`hits` compares logits with, from dense targets (N, K)."""
        return None

    def predictions(self, z):
        """What :meth:`hits` compares with the targets: class ids or 0/1 labels."""
        return z

    def hits(self, z, t, weights=None):
        """Correct predictions in logits ``z`` (a 0-d device array), each
        sample counting ``weights[i]`` times when given."""
        right = self.predictions(z) == t
        if weights is None:
            return right.sum()
        return (right * (weights if right.ndim == 1 else weights[:, None])).sum()

    def predict(self, z, xp=None):
        """Predictions from logits: class ids, 0/1 labels or values (``xp``:
        the arrays' module, for heads that compute)."""
        return z

    def __repr__(self):
        return f"<head {self.name}>"


class SoftmaxHead(Head):
    """One class per row: softmax probabilities, argmax predictions."""

    name, classifier, sklearn, onnx = "softmax", True, "softmax", "Softmax"

    def apply(self, xp, z):
        xp.exp(_log_softmax(xp, z), out=z)

    def targets(self, y):
        return y.argmax(axis=1)

    def predictions(self, z):
        return z.argmax(axis=1)

    def predict(self, z, xp=None):
        return z.argmax(axis=1)


class SigmoidHead(Head):
    """Independent labels: sigmoid probabilities, a label where the logit is > 0."""

    name, classifier, sklearn, onnx = "sigmoid", True, "logistic", "Sigmoid"

    def apply(self, xp, z):
        SIGMOID.forward(xp, z)

    def targets(self, y):
        return y > 0.5

    def predictions(self, z):
        return z > 0

    def predict(self, z, xp=None):
        return (z > 0).astype("int64")


class IdentityHead(Head):
    """Regression: the logits are the values."""

    name = "identity"


class ExpHead(Head):
    """Counts and rates (Poisson regression, a log link): the values are exp(logits)."""

    name, sklearn, onnx = "exp", "exp", "Exp"

    def apply(self, xp, z):
        xp.exp(z, out=z)

    def predict(self, z, xp=None):
        return xp.exp(z)


# --- the losses' maths -------------------------------------------------------------------

def _log_softmax(xp, z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy(xp, z, y, scale):
    logp = _log_softmax(xp, z)
    loss = -(y * logp)
    if scale is not None:
        xp.exp(logp, out=z)          # P = softmax(z)
        z -= y
        z *= scale                   # (P - Y) * scale
    return loss


def _cross_entropy_cpu(z, y, ids, w, d, scale, grad):
    """Softmax + cross-entropy of the logits ``z`` (n, k) against dense
    targets ``y`` (n, k): ``(loss sum, hits)``, hits counting rows whose
    argmax equals ``ids`` (0 when ``ids`` is empty). Row s counts ``w[s]``
    times, in the loss, the hits and the gradient (once when ``w`` is
    empty). With ``grad``, (softmax(z) - y) * scale * w goes to ``d`` (n, k),
    which may be ``z`` itself. One exp per logit (vectorised for float32);
    log-sum-exp stable."""
    n, k = z.shape
    # below float32's normal range fast_exp clamps (to 1.2e-38): count such terms as 0,
    # as NumPy's exp does; float64's exp underflows by itself
    one, tail = z.dtype.type(1), z.dtype.type(-87.3 if z.itemsize == 4 else -1e308)
    total, hits = 0.0, 0.0
    for s in range(n):
        zs, ys, ds = z[s], y[s], d[s]
        ws = w[s] if w.size > 0 else one
        best = 0
        for j in range(1, k):
            if zs[j] > zs[best]:
                best = j
        if ids.size > 0 and best == ids[s]:
            hits += ws
        top = zs[best]
        dot, ysum = 0.0, 0.0
        for j in range(k):                 # before d is written: d may be z
            dot += ys[j] * (zs[j] - top)
            ysum += ys[j]
        acc = one - one
        for j in range(k):
            v = zs[j] - top
            e = fast_exp(v) if v > tail else one - one
            acc += e
            if grad:
                ds[j] = e
        total += ws * (ysum * math.log(acc) - dot)
        if grad:
            inv, step = one / acc, scale * ws
            for j in range(k):
                ds[j] = (ds[j] * inv - ys[j]) * step
    return total, hits


def _binary_cross_entropy(xp, z, y, scale):
    # log(1 + exp(-|z|)) is the stable form of the softplus tail.
    loss = xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
    if scale is not None:
        SIGMOID.forward(xp, z)
        z -= y
        z *= scale
    return loss


def _mse(xp, z, y, scale):
    d = z - y
    loss = d * d
    if scale is not None:
        xp.multiply(d, 2 * scale, out=z)
    return loss


def _l1(xp, z, y, scale):
    d = z - y
    loss = xp.abs(d)
    if scale is not None:
        xp.sign(d, out=z)
        z *= scale
    return loss


def _poisson(xp, z, y, scale):
    # half the Poisson deviance of rate exp(z), as scikit-learn's: y log(y / e^z) - y + e^z,
    # 0 at a perfect fit (y log y is 0 at y = 0); the gradient is e^z - y
    rate = xp.exp(z)
    loss = y * xp.log(xp.where(y > 0, y, 1)) - y - y * z + rate
    if scale is not None:
        xp.subtract(rate, y, out=z)
        z *= scale
    return loss


@dataclass(frozen=True)
class Loss:
    """One loss: its maths per implementation, its output :class:`Head`, and
    how a mean reduction counts (``per_sample``: by N, else by N * K)."""

    name: str
    head: Head
    per_sample: bool
    reference: Callable         # terms(xp, z, y, scale) -> per-element losses
    cpu: Optional[Callable] = None
    device: Optional[str] = None

    @property
    def classifier(self):
        """Whether accuracy and probabilities apply."""
        return self.head.classifier

    def value(self, xp, z, y, scale=None, weights=None):
        """The reference loss: the (weighted) sum of the terms; with ``scale``,
        ``z`` is overwritten with ``scale * dLoss/dZ`` (times each row's weight)."""
        terms = self.reference(xp, z, y, scale)
        if weights is None:
            return terms.sum()
        if scale is not None:
            z *= weights[:, None]
        return (terms.sum(axis=1) * weights).sum()

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

    def summary(self, total, hits, reduction, n, k):
        """``{"loss", "accuracy"}`` floats from a summed loss and a hit count
        over ``n`` samples (with per-sample weights: their sum, and weighted
        hits)."""
        out = {"loss": float(total) * self.scale(reduction, n, k)}
        if hits is not None:
            out["accuracy"] = float(hits) / (n if self.per_sample else n * k)
        return out

    def __repr__(self):
        return f"<loss {self.name}>"


SOFTMAX, SIGMOID_HEAD, IDENTITY_HEAD = SoftmaxHead(), SigmoidHead(), IdentityHead()
CROSS_ENTROPY = Loss("cross_entropy", SOFTMAX, True, _cross_entropy, cpu=_cross_entropy_cpu,
                     device="cross_entropy")
BINARY_CROSS_ENTROPY = Loss("binary_cross_entropy", SIGMOID_HEAD, False, _binary_cross_entropy,
                            device="elementwise_loss")
MSE = Loss("mse", IDENTITY_HEAD, False, _mse, device="elementwise_loss")
L1 = Loss("l1", IDENTITY_HEAD, False, _l1, device="elementwise_loss")
EXP_HEAD = ExpHead()
POISSON = Loss("poisson", EXP_HEAD, False, _poisson, device="elementwise_loss")

#: every loss by name
LOSSES = {f.name: f for f in (CROSS_ENTROPY, BINARY_CROSS_ENTROPY, MSE, L1, POISSON)}


def get(name, reduction="mean"):
    """The :class:`Loss` called ``name`` (a spec passes through); TypeError /
    ValueError for an unknown name or reduction."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: choose one of {list(REDUCTIONS)}")
    return lookup("loss", name, LOSSES, Loss)
