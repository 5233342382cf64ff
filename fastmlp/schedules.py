"""Learning-rate schedules: the learning rate of each epoch, in closed form.

A schedule is a callable ``schedule(epoch) -> lr``, where ``epoch`` counts the
epochs finished before the one about to run (0 for the first; it continues
across repeated fits and from ``fit(initial_epoch=...)``). Give one to an
optimizer in place of its learning rate, ``optim.SGD(lr=Cosine(0.1, 30))``,
or to a :class:`fastmlp.callbacks.LearningRateScheduler`; any function of
the epoch works the same way. The rate is set on the optimizer before each
epoch as a plain number, which every step reads afresh: nothing is
recompiled. Checkpoints keep the current rate, not the schedule: pass the
schedule again (and ``initial_epoch``) when resuming.
"""

import math
from abc import ABC, abstractmethod
from numbers import Integral, Real

from fastmlp.constraints import Interval, check

_RATE = Interval(Real, 0, closed="neither")      # a learning rate or a decay factor


class Schedule(ABC):
    """Base class: ``__call__(epoch)`` gives the learning rate of that epoch."""

    @abstractmethod
    def __call__(self, epoch):
        """Each subclass defines it."""

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _epochs(name, value):
    return check(name, value, Interval(Integral, 1))


class StepDecay(Schedule):
    """``lr * gamma ** (epoch // step)``: multiply by ``gamma`` every ``step`` epochs."""

    def __init__(self, lr, step, gamma=0.1):
        self.lr = check("lr", lr, _RATE)
        self.step = _epochs("step", step)
        self.gamma = check("gamma", gamma, _RATE)

    def __call__(self, epoch):
        return self.lr * self.gamma ** (epoch // self.step)


class Exponential(Schedule):
    """``lr * gamma ** epoch``."""

    def __init__(self, lr, gamma):
        self.lr = check("lr", lr, _RATE)
        self.gamma = check("gamma", gamma, _RATE)

    def __call__(self, epoch):
        return self.lr * self.gamma ** epoch


class Cosine(Schedule):
    """Cosine annealing from ``lr`` to ``min_lr`` over ``epochs`` epochs, then ``min_lr``:
    ``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``."""

    def __init__(self, lr, epochs, min_lr=0.0):
        self.lr = check("lr", lr, _RATE)
        self.epochs = _epochs("epochs", epochs)
        self.min_lr = check("min_lr", min_lr, Interval(Real, 0))
        if self.min_lr >= self.lr:
            raise ValueError(f"min_lr ({min_lr}) must be below lr ({lr})")

    def __call__(self, epoch):
        e = min(epoch, self.epochs)
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * e / self.epochs)) / 2


class WarmUp(Schedule):
    """A linear warm-up over ``epochs`` epochs, then ``then``: epoch ``e <
    epochs`` runs at ``(e + 1) / (epochs + 1)`` of ``then``'s first rate, so
    the rate climbs to it without a jump; afterwards ``then(e - epochs)``.
    ``then`` is a schedule or a constant learning rate."""

    def __init__(self, then, epochs):
        if not callable(then):
            rate = check("then", then, _RATE)
            then = Constant(rate)
        self.then = then
        self.epochs = _epochs("epochs", epochs)

    def __call__(self, epoch):
        if epoch < self.epochs:
            return self.then(0) * (epoch + 1) / (self.epochs + 1)
        return self.then(epoch - self.epochs)


class Constant(Schedule):
    """The same rate every epoch."""

    def __init__(self, lr):
        self.lr = check("lr", lr, _RATE)

    def __call__(self, epoch):
        return self.lr


def rate(schedule, epoch):
    """``schedule(epoch)`` checked: a finite learning rate >= 0 (0 at the end of
    a cosine: no update), ValueError otherwise."""
    try:
        return check("lr", schedule(epoch), Interval(Real, 0))
    except (TypeError, ValueError) as e:
        raise ValueError(f"the schedule {schedule!r} gave no valid learning rate for epoch "
                         f"{epoch}: {e}") from None
