"""Metrics that ``fit(metrics=[...])`` reports per epoch, computed on the device.

A metric scores the model at the end of an epoch on prepared data (the
training set, and the validation set when there is one) and gives one number;
``fit`` records it as ``train_<name>`` and ``val_<name>``. Each is one
inference pass over the data, on the device, read back once per epoch.
``"accuracy"`` is the exception: the training steps count hits as they go, so
it costs nothing more (and, like ``train_loss``, it is the running figure over
the epoch, not a score of the final weights).

Built in: ``"accuracy"``, ``"top_k_accuracy"`` (k=5; ``TopKAccuracy(k)`` for
another k), ``"mae"`` and ``"mse"`` (of the model's outputs: probabilities
for classifiers, values for regression). Any function
``fn(y_true, y_pred) -> number`` is a metric too, named after the function:
``y_true`` the dense targets (N, K), ``y_pred`` the outputs (N, K), both on
the model's device; it returns a per-sample array (N,) to be averaged (with
sample weights when given) or a number (any other shape is refused). ``fit``
tries every metric on a few rows before training, so one that cannot work
fails before the model changes. Sample weights weight every built-in.
"""

import warnings
from abc import ABC, abstractmethod
from numbers import Integral

from fastmlp.constraints import Interval
from fastmlp.constraints import check as _checked
from fastmlp.kernels.losses import SOFTMAX


class Metric(ABC):
    """A named score: ``per_sample(model, z, out, data)`` gives one value per
    sample (N,) on the device, from the logits ``z`` and outputs ``out``
    (probabilities or values) of prepared ``data``; neither may be changed."""

    name = None

    @abstractmethod
    def per_sample(self, model, z, out, data):
        """Each subclass defines it."""

    def __repr__(self):
        return f"{type(self).__name__}()"


class Accuracy(Metric):
    """Correct predictions (argmax for cross-entropy, 0.5 for binary)."""

    name = "accuracy"

    def per_sample(self, model, z, out, data):
        if data.targets is None:
            raise ValueError(f"accuracy needs a classification loss; this model's is "
                             f"{model.loss!r}")
        # per output for binary
        hit = model.loss_fn.head.predict(z, model.backend.xp) == data.targets
        return hit.astype(model.dtype) if hit.ndim == 1 else hit.mean(axis=1, dtype=model.dtype)


class TopKAccuracy(Metric):
    """Whether the true class is among the ``k`` largest outputs (cross-entropy only)."""

    def __init__(self, k=5):
        self.k = k = _checked("k", k, Interval(Integral, 1))
        self.name = "top_k_accuracy" if k == 5 else f"top_{k}_accuracy"

    def __repr__(self):
        return f"TopKAccuracy(k={self.k})"

    def per_sample(self, model, z, out, data):
        if model.loss_fn.head is not SOFTMAX or data.targets is None or data.targets.ndim != 1:
            raise ValueError("top-k accuracy needs cross_entropy and class ids")
        xp, k = model.backend.xp, min(self.k, z.shape[1])
        true = xp.take_along_axis(z, data.targets[:, None], axis=1)
        # ties count against: the true class must beat all but k - 1 others
        return ((z > true).sum(axis=1) < k).astype(model.dtype)


class _Error(Metric):
    def __init__(self, name, power):
        self.name, self.power = name, power

    def __repr__(self):
        return repr(self.name)

    def per_sample(self, model, z, out, data):
        diff = out - data.y
        err = abs(diff) if self.power == 1 else diff * diff
        return err.mean(axis=1)


class _Function(Metric):
    def __init__(self, fn):
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def __repr__(self):
        return f"metric {self.name}"

    def per_sample(self, model, z, out, data):
        return self.fn(data.y, out)


BUILT_IN = {"accuracy": Accuracy, "top_k_accuracy": TopKAccuracy,
            "mae": lambda: _Error("mae", 1), "mse": lambda: _Error("mse", 2)}


def get(metrics):
    """Metric objects for ``fit(metrics=...)``: names, Metric instances or functions."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, Metric)) or callable(metrics):
        metrics = [metrics]
    found = []
    for m in metrics:
        if isinstance(m, str):
            if m not in BUILT_IN:
                raise ValueError(f"unknown metric {m!r}: choose one of {sorted(BUILT_IN)}, "
                                 "a Metric or a function fn(y_true, y_pred)")
            m = BUILT_IN[m]()
        elif not isinstance(m, Metric):
            if not callable(m):
                raise TypeError(f"a metric is a name, a Metric or a function, got {m!r}")
            m = _Function(m)
        found.append(m)
    names = [m.name for m in found]
    taken = [n for m, n in zip(found, names)
             if n in ("loss", "accuracy", "lr", "seconds") and not isinstance(m, Accuracy)]
    if taken:
        raise ValueError(f"a metric may not be named {taken[0]!r}: fit logs that figure "
                         "itself; rename the function")
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeat: {names}")
    return found


def check(model, metrics):
    """ValueError now, before training, for a metric this model cannot have."""
    for m in metrics:
        if isinstance(m, Accuracy) and not model.loss_fn.classifier:
            raise ValueError(f"metric 'accuracy' needs a classification loss; this model's "
                             f"is {model.loss!r}")
        if isinstance(m, TopKAccuracy) and model.loss_fn.head is not SOFTMAX:
            raise ValueError(f"metric {m.name!r} needs loss='cross_entropy'")


class _BadResult(ValueError):
    """A metric gave something that is not a score."""


def trial(model, data, metrics):
    """Score ``metrics`` on ``data`` (a few prepared rows) before training, so
    that one that cannot work (a function of the wrong signature, or one that
    gives neither a number nor one value per sample) raises now, TypeError or
    ValueError naming it, and not after an epoch has changed the model.

    Other errors (and warnings) on these few rows are not the metric's fault
    (scikit-learn's scores refuse a sample of one class, say): the whole
    data decides, after the first epoch."""
    for m in metrics:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores(model, data, [m])
        except (TypeError, _BadResult) as e:
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(f"metric {m.name!r} failed on {data.x.shape[0]} samples before "
                       f"training: {type(e).__name__}: {e}") from e
        except Exception:               # the data's fault, maybe: see above
            pass


def scores(model, data, metrics):
    """``{name: value}`` of ``metrics`` on prepared ``data``, one pass on the device."""
    if not metrics:
        return {}
    xp, w, n = model.backend.xp, data.weights, data.x.shape[0]
    z = model.logits(data.x)
    out = model.ops.output(model.loss, z.copy())      # in place: z stays the logits
    found = {}
    for m in metrics:
        v = m.per_sample(model, z, out, data)
        if getattr(v, "ndim", 0) == 0:
            try:
                found[m.name] = float(v)
            except (TypeError, ValueError):
                raise _BadResult(f"metric {m.name!r} must give a number or one value per "
                                 f"sample ({n},), got {v!r}") from None
        elif tuple(v.shape) != (n,):
            raise _BadResult(f"metric {m.name!r} must give a number or one value per sample "
                             f"({n},), got shape {tuple(v.shape)}")
        elif w is None:
            found[m.name] = float(xp.mean(v))
        else:
            found[m.name] = float((v * w).sum() / w.sum())
    return found
