"""Callbacks: code that ``fit(callbacks=[...])`` runs around each epoch.

A callback subclasses :class:`Callback` and overrides what it needs::

    class StopAt(fm.callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            return logs["val_accuracy"] >= 0.98      # True stops training

Before ``on_train_begin``, ``fit`` sets ``self.model``, ``self.optimizer``,
``self.history`` (the :class:`fastmlp.History` being filled) and
``self.loop`` (the loop running the epochs; see below). ``epoch``
is the global epoch number, counting from 1 and continuing across repeated
fits and from ``fit(initial_epoch=...)``; ``logs`` holds that epoch's
figures (``train_loss``, ``val_accuracy``, ``lr``, ``seconds``, metrics, ...).
Callbacks run in the order given; ``on_epoch_end`` returning True stops
training after that epoch (the remaining callbacks still see it).

Batch hooks, as in Keras: ``on_train_batch_begin(batch, logs)`` and
``on_train_batch_end(batch, logs)`` run around each training step, with
``batch`` counting the epoch's steps from 0. Only callbacks that override
them are called, so they cost nothing unused; with one, every epoch runs
batch by batch (never as the engine's one-call epoch). ``self.loop`` is the
:class:`fastmlp.loop.EpochLoop` running the fit: setting
``self.loop.stop_training = True`` in any hook stops training after the
current batch (that epoch is then logged over the batches it ran)::

    class StopBelow(fm.callbacks.Callback):
        def on_train_batch_end(self, batch, logs):
            if logs["loss"] < 0.01:                  # one host read per batch
                self.loop.stop_training = True
"""

import csv
import math
import os
from numbers import Integral, Real

from fastmlp import atomic, schedules
from fastmlp.constraints import Boolean, Instance, Interval, Options, check

_PATIENCE = Interval(Integral, 1)
_MIN_DELTA = Interval(Real, 0)


class Callback:
    """Base class: every hook does nothing. In a data-parallel fit (``comm``)
    every rank runs the callbacks on the same logs, but one that sets
    ``writes_files`` runs on rank 0 only (``self.loop.rank`` says which rank
    a callback runs on)."""

    model = None
    optimizer = None
    history = None
    loop = None
    writes_files = False

    def check(self, names):
        """Called before ``fit`` changes anything, with the names each epoch's
        logs will hold: raise ValueError here for what cannot work."""

    def on_train_begin(self, logs):
        """Called once when ``fit`` starts, before the first epoch."""

    def on_epoch_begin(self, epoch, logs):
        """Called before each epoch (``logs`` holds its ``lr``)."""

    def on_epoch_end(self, epoch, logs):
        """Called after each epoch with its figures; return True to stop."""

    def on_train_batch_begin(self, batch, logs):
        """Called before each training step (``batch``: its index in the
        epoch, from 0; ``logs["size"]``: its rows). Overriding it makes
        every epoch run batch by batch."""

    def on_train_batch_end(self, batch, logs):
        """Called after each training step: ``logs["size"]`` and
        ``logs["loss"]``, the batch's reduced loss as a float, read from the
        device only when asked for (see :class:`fastmlp.loop.BatchLogs`).
        Overriding it makes every epoch run batch by batch."""

    def on_train_end(self, logs):
        """Called once when ``fit`` ends normally (the last epoch's ``logs``)."""


class _Monitor(Callback):
    """A callback that watches one logged figure for improvement."""

    def __init__(self, monitor, mode, min_delta, owner=None):
        self.monitor = check("monitor", monitor, Instance(str, "a logged figure's name"))
        self.mode = check("mode", mode, Options("auto", "min", "max"))
        self.min_delta = check("min_delta", min_delta, _MIN_DELTA)
        self.best = None
        self._owner = owner or type(self).__name__

    def check(self, names):
        if self.monitor not in names:
            raise ValueError(f"{self._owner} monitors {self.monitor!r}, which this fit does "
                             f"not log; it logs {names}")

    def _maximise(self):
        if self.mode == "auto":
            return "acc" in self.monitor
        return self.mode == "max"

    def _improved(self, logs):
        """Whether ``logs[monitor]`` beats the best so far (NaN and inf never do)."""
        value = logs[self.monitor]
        if not math.isfinite(value):
            return False
        if self.best is None:
            better = True
        elif self._maximise():
            better = value > self.best + self.min_delta
        else:
            better = value < self.best - self.min_delta
        if better:
            self.best = value
        return better


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs; with ``restore_best_weights``, put the best epoch's
    weights back when training ends (stopped or not; the optimizer's state
    stays that of the last epoch run). ``fit(early_stopping=N)`` is
    ``EarlyStopping("val_loss" or "train_loss", patience=N)``.

    ``mode`` "auto" maximises a figure whose name holds "acc" and minimises
    the rest. Sets ``history.best_epoch``.
    """

    def __init__(self, monitor="val_loss", patience=1, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        super().__init__(monitor, mode, min_delta)
        self.patience = check("patience", patience, _PATIENCE)
        self.restore_best_weights = check("restore_best_weights", restore_best_weights, Boolean())
        self._best_params = None

    def on_train_begin(self, logs):
        self.best, self.waited, self.best_epoch = None, 0, None

    def on_epoch_end(self, epoch, logs):
        if self._improved(logs):
            self.waited, self.best_epoch = 0, epoch
            self.history.best_epoch = epoch
            if self.restore_best_weights:
                if self._best_params is None or self._best_params.shape != self.model.params.shape:
                    self._best_params = self.model.params.copy()
                else:
                    self._best_params[...] = self.model.params
            return False
        self.waited += 1
        return self.waited >= self.patience

    def on_train_end(self, logs):
        if self.restore_best_weights and self.best_epoch is not None:
            self.model.params[...] = self._best_params


class ModelCheckpoint(Callback):
    """Save the model (with its optimizer and RNG states, so training resumes
    from the file bit for bit) after every epoch, or only when ``monitor``
    improves (``save_best_only``). ``path`` may hold ``{epoch}`` and any
    logged figure, e.g. ``"ckpt-{epoch:03d}-{val_loss:.3f}.safetensors"``.
    Each write is atomic (:func:`fastmlp.io.save`)."""

    writes_files = True

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto",
                 min_delta=0.0):
        self.path = os.fspath(path)
        self.save_best_only = check("save_best_only", save_best_only, Boolean())
        self._watch = _Monitor(monitor, mode, min_delta,
                               owner="ModelCheckpoint(save_best_only=True)")

    def check(self, names):
        atomic.check_target(self.path.format_map(_Blank(epoch=0)))
        if self.save_best_only:
            self._watch.check(names)

    def on_epoch_end(self, epoch, logs):
        if self.save_best_only and not self._watch._improved(logs):
            return False
        self.model.save(self.path.format(epoch=epoch, **logs))
        return False


class _Blank(dict):
    """Formats a path before any figure is logged: every field reads 0."""

    def __missing__(self, key):
        return 0


class CSVLogger(Callback):
    """Write one CSV row per epoch (``epoch`` then every logged figure) to
    ``path``, flushed as it goes; ``append`` keeps an existing file's rows."""

    writes_files = True

    def __init__(self, path, append=False):
        self.path = os.fspath(path)
        self.append = check("append", append, Boolean())
        self._file = self._writer = None

    def check(self, names):
        atomic.check_target(self.path)

    def on_train_begin(self, logs):
        self._file = open(self.path, "a" if self.append else "w", newline="")
        self._writer = None

    def on_epoch_end(self, epoch, logs):
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, ["epoch", *logs])
            if self._file.tell() == 0:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **logs})
        self._file.flush()
        return False

    def on_train_end(self, logs):
        self.close()

    def close(self):
        """Close the file (``fit`` does, also when training fails)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate before each epoch from
    ``schedule(epoch)`` (see :mod:`fastmlp.schedules`; ``epoch`` counts the
    epochs done before, from 0)."""

    def __init__(self, schedule):
        self.schedule = check("schedule", schedule,
                              Instance(callable, "a callable: schedule(epoch) -> lr"))

    def on_epoch_begin(self, epoch, logs):
        self.optimizer.lr = logs["lr"] = schedules.rate(self.schedule, epoch - 1)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not
    improved for ``patience`` epochs, then wait ``cooldown`` epochs before
    counting again; never below ``min_lr``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_delta=0.0,
                 cooldown=0, min_lr=0.0, mode="auto"):
        super().__init__(monitor, mode, min_delta)
        self.factor = check("factor", factor, Interval(Real, 0, 1, closed="neither"))
        self.patience = check("patience", patience, _PATIENCE)
        self.cooldown = check("cooldown", cooldown, Interval(Integral, 0))
        self.min_lr = check("min_lr", min_lr, Interval(Real, 0))

    def on_train_begin(self, logs):
        self.best, self.waited, self.cooling = None, 0, 0

    def on_epoch_end(self, epoch, logs):
        if self._improved(logs):
            self.waited = 0
        elif self.cooling > 0:
            self.cooling -= 1
        else:
            self.waited += 1
            if self.waited >= self.patience and self.optimizer.lr > self.min_lr:
                self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr)
                self.waited, self.cooling = 0, self.cooldown
        return False
