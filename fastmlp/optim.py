"""Optimizers, in order of increasing complexity.

An optimizer is a pair of transforms over a flat list of parameter
arrays, in optax's shape: ``init`` creates its state (velocities, moments)
on the parameters' device, and ``step`` applies one update in place from
the gradients and counts it. The update maths is declared once per
optimizer (``fastmlp/kernels/updates.py``: reference and compiled) and
reached through the op table (``ops.sgd``, ``ops.adam``, ...), so fused
kernels replace it without touching this file.

Each optimizer also declares its update's :class:`Form` (its kind and
hyperparameters). A step engine reads it and decides whether to run the
update itself (plain SGD folded into its weight-gradient products, say); it
then hands its fused step to ``step(..., run=...)``, so every update, fused
or not, is counted in one place.

    opt = Adam(lr=1e-3)
    opt.init(params, ops)
    opt.step(params, grads)

``get("adam", lr=1e-3)`` builds one from its name.
"""


from dataclasses import dataclass, field
from numbers import Real

from fastmlp.constraints import Boolean, Interval, check
from fastmlp.kernels import updates


def check_number(name, value, lo, hi=None, lo_open=False):
    """``value`` as a float if it is a finite real in [lo, hi) (or (lo, hi)),
    else TypeError / ValueError naming ``name`` (see :mod:`fastmlp.constraints`)."""
    return check(name, value, Interval(Real, lo, hi, closed="neither" if lo_open else "left"))


@dataclass(frozen=True)
class Form:
    """An optimizer's update as a step engine sees it: its ``kind`` ("sgd",
    "adam", ...), its learning rate now, and its other hyperparameters by
    name (``get``)."""

    kind: str
    lr: float
    hyper: tuple = field(default=())       # ((name, value), ...)

    def get(self, name, default=None):
        """The hyperparameter ``name``, or ``default``."""
        return dict(self.hyper).get(name, default)


#: the attributes that change an optimizer's Form (its config's keys)
_HYPERPARAMETERS = frozenset({"lr", "weight_decay", "momentum", "nesterov", "eps", "betas",
                              "alpha"})


class Optimizer:
    """Base class: hyperparameters, per-parameter state slots and the step count."""

    name = None
    slots = ()
    _form = None

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in _HYPERPARAMETERS:         # a new rate or decay: a new Form, made when asked
            object.__setattr__(self, "_form", None)

    def __init__(self, lr, weight_decay=0.0):
        #: a learning-rate schedule (``schedule(epoch) -> lr``, see
        #: :mod:`fastmlp.schedules`) that ``fit`` applies before each epoch, or None
        self.schedule = lr if callable(lr) else None
        self.lr = check_number("lr", lr(0) if callable(lr) else lr, 0.0, lo_open=True)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        self.state = None
        self.ops = None
        self.t = 0
        self._params = None
        #: the checkpoint this optimizer's state was loaded from (None if none)
        self.loaded_from = None

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def config(self):
        """Hyperparameters as a dict: ``type(self)(**config())`` rebuilds it."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def init(self, params, ops):
        """Create zeroed state for ``params`` with the op table ``ops``."""
        self.ops = ops
        self.state = [{s: ops.xp.zeros_like(p) for s in self._active_slots()} for p in params]
        self.t = 0
        self._params = list(params)

    def is_for(self, params):
        """Whether this optimizer's state was made for exactly these arrays."""
        mine = self._params           # a plain loop: this runs once per train_step
        if mine is None or len(mine) != len(params):
            return False
        for a, b in zip(mine, params):
            if a is not b:
                return False
        return True

    def _active_slots(self):
        return self.slots

    @property
    def form(self):
        """This update's :class:`Form`: kind, learning rate and hyperparameters
        (one object until one of them changes: engines may cache by identity)."""
        form = self._form
        if form is None:
            hyper = tuple((k, tuple(v) if isinstance(v, list) else v)   # hashable: betas
                          for k, v in self.config().items() if k != "lr")
            form = self._form = Form(self.name, self.lr, hyper)
        return form

    def step(self, params, grads, *, run=None, args=(), steps=1):
        """Update each array of ``params`` in place from ``grads``, and count it.

        ``run``, from a step engine that runs this update itself (as its
        :attr:`form` allows), replaces the update: ``run(*args)`` is called
        once and applies ``steps`` updates to ``params``; its result is
        returned.
        """
        if self.state is None:
            raise RuntimeError(f"{self!r}.init(params, ops) must be called before step()")
        if run is not None:
            out = run(*args)
            self.t += steps
            return out
        self.t += 1
        for p, g, st in zip(params, grads, self.state):
            self._update(p, g, st)
        return None

    def state_arrays(self):
        """The state as a flat dict ``{"<i>.<slot>": array}``."""
        return {f"{i}.{k}": a for i, st in enumerate(self.state or []) for k, a in st.items()}

    def load_state(self, params, arrays, t, ops):
        """Resume from :meth:`state_arrays` output (arrays on ``params``' device).

        Raises ValueError, changing nothing, when ``arrays`` does not match
        ``params`` and this optimizer's slots.
        """
        slots = self._active_slots()
        expected = {f"{i}.{s}": p.shape for i, p in enumerate(params) for s in slots}
        if set(arrays) != set(expected):
            raise ValueError(f"{self.name} state should hold {sorted(expected)}, "
                             f"got {sorted(arrays)}")
        for key, a in arrays.items():
            if a.shape != expected[key]:
                raise ValueError(f"{self.name} state {key} should have shape "
                                 f"{expected[key]}, got {a.shape}")
        self.ops = ops
        self.state = [{s: arrays[f"{i}.{s}"] for s in slots} for i in range(len(params))]
        self.t = int(t)
        self._params = list(params)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 decay."""

    name = "sgd"

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = check_number("momentum", momentum, 0.0, 1.0)
        self.nesterov = check("nesterov", nesterov, Boolean())
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov=True needs momentum > 0")

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}

    slots = updates.SGD.slots

    def _active_slots(self):
        return self.slots if self.momentum else ()

    def _update(self, p, g, st):
        self.ops.sgd(p, g, st.get("velocity"), self.lr, self.momentum, self.nesterov,
                     self.weight_decay)


class AdaGrad(Optimizer):
    """AdaGrad: per-coordinate steps shrink with the sum of squared gradients."""

    name = "adagrad"
    slots = updates.ADAGRAD.slots

    def __init__(self, lr=0.01, eps=1e-10, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = check_number("eps", eps, 0.0, lo_open=True)

    def config(self):
        return {**super().config(), "eps": self.eps}

    def _update(self, p, g, st):
        self.ops.adagrad(p, g, st["sum_sq"], self.lr, self.eps, self.weight_decay)


class RMSprop(Optimizer):
    """RMSprop: steps scaled by a running mean of squared gradients."""

    name = "rmsprop"
    slots = updates.RMSPROP.slots

    def __init__(self, lr=0.001, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.alpha = check_number("alpha", alpha, 0.0, 1.0)
        self.eps = check_number("eps", eps, 0.0, lo_open=True)

    def config(self):
        return {**super().config(), "alpha": self.alpha, "eps": self.eps}

    def _update(self, p, g, st):
        self.ops.rmsprop(p, g, st["mean_sq"], self.lr, self.alpha, self.eps, self.weight_decay)


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient."""

    name = "adam"
    slots = updates.ADAM.slots
    decoupled = False

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        if not isinstance(betas, (list, tuple)):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(check_number(f"betas[{i}]", b, 0.0, 1.0) for i, b in enumerate(betas))
        self.eps = check_number("eps", eps, 0.0, lo_open=True)

    def config(self):
        return {**super().config(), "betas": list(self.betas), "eps": self.eps}

    def _update(self, p, g, st):
        self.ops.adam(p, g, st["m"], st["v"], self.lr, *self.betas, self.eps,
                      self.weight_decay, self.decoupled, self.t)


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay`` each step."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)


OPTIMIZERS = {cls.name: cls for cls in (SGD, AdaGrad, RMSprop, Adam, AdamW)}


def get(optimizer, lr=None, **kwargs):
    """An Optimizer from a name ("sgd", "adam", ...) or an instance.

    ``lr`` and ``kwargs`` go to the constructor when a name is given; with an
    instance, set them on its constructor instead.
    """
    if isinstance(optimizer, Optimizer):
        if lr is not None or kwargs:
            raise ValueError("lr and optimizer options go to the optimizer's constructor "
                             f"when an instance is passed, e.g. Adam(lr=...); got {optimizer!r}")
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a name such as 'adam' or an Optimizer, "
                        f"got {type(optimizer).__name__}")
    key = optimizer.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: choose one of {sorted(OPTIMIZERS)}")
    if lr is not None:
        kwargs["lr"] = lr
    return OPTIMIZERS[key](**kwargs)
