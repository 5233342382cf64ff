"""``fit``: its arguments checked, then epochs run by :mod:`fastmlp.loop`.

The data is checked and moved to the model's device once per ``fit``
(``model.prepare``); validation data is prepared or split off, the
optimizer resolved and every schedule's rate checked before anything
changes; then one :class:`fastmlp.loop.EpochLoop` (which chooses the step
engine once) runs the epochs: batching, shuffling, validation, callbacks,
divergence checks, history and progress. Only the model's public
attributes are used here.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

from fastmlp import callbacks as callbacks_
from fastmlp import metrics as metrics_
from fastmlp import optim, schedules
from fastmlp import progress as progress_
from fastmlp.constraints import Boolean, Instance, Interval, Options, check
from fastmlp.loop import BadChunk, EpochLoop
from fastmlp.prepared import Prepared


class History:
    """Per-epoch records of training, one entry per epoch run.

    ``history`` maps ``train_loss``, ``train_accuracy`` (classifiers),
    ``train_<metric>``, ``val_loss``, ``val_accuracy``, ``val_<metric>``
    (with validation data), ``lr`` and ``seconds`` to one value per epoch,
    and ``epoch`` lists the epochs' global numbers. ``fit(history=h)``
    extends ``h`` (numbering on from its last epoch), so repeated fits can
    keep one record; a figure missing from some epochs reads NaN there.
    ``best_epoch`` is set by early stopping. An epoch in which training
    diverged is recorded too, with the NaN or inf it produced.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.best_epoch = None

    def append(self, logs, epoch=None):
        """Add one epoch's ``{name: value}`` (its number: the next one unless given)."""
        epoch = (self.epoch[-1] if self.epoch else 0) + 1 if epoch is None else int(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, [math.nan] * len(self.epoch)).append(value)
        self.epoch.append(epoch)
        for values in self.history.values():
            if len(values) < len(self.epoch):
                values.append(math.nan)

    @property
    def epochs(self):
        """Number of epochs recorded."""
        return len(self.epoch)

    def __repr__(self):
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={self.epochs}, last={last})"


#: what ``fit(on_nonfinite=...)`` accepts
ON_NONFINITE = ("raise", "warn", "ignore")
_AT_LEAST_1 = Interval(Integral, 1)


class DivergedError(RuntimeError):
    """Training produced a non-finite loss or non-finite parameters.

    The model's parameters and optimizer state were put back to those of
    the last epoch that ended finite. ``epoch`` is the epoch that diverged
    and ``history`` the :class:`History` of the epochs run, that one included.
    """

    def __init__(self, message, epoch, history):
        super().__init__(message)
        self.epoch = epoch
        self.history = history




def _split(model, x, y, sample_weight, validation_data, validation_split):
    """Prepared training data, and validation data (or None)."""
    if validation_data is not None and validation_split:
        raise ValueError("pass validation_data or validation_split, not both")
    if isinstance(x, Prepared):
        if y is not None or sample_weight is not None:
            raise TypeError("pass a Prepared alone: fit(model.prepare(x, y, sample_weight))")
        if x.y is None:
            raise TypeError("fit needs targets: model.prepare(x, y)")
        train = x
    elif y is None:
        raise TypeError("fit needs targets: fit(x, y)")
    else:
        train = model.prepare(x, y, sample_weight, stream=True)
    if validation_data is not None:
        if isinstance(validation_data, Prepared) and validation_data.y is not None:
            return train, validation_data
        if not isinstance(validation_data, (list, tuple)) or len(validation_data) not in (2, 3):
            raise TypeError("validation_data must be (x_val, y_val), (x_val, y_val, "
                            "sample_weight_val) or a Prepared with targets")
        return train, model.prepare(*validation_data, stream=True)
    if not validation_split:
        return train, None
    n = train.x.shape[0]
    n_val = int(round(n * validation_split))
    if not 0 < n_val < n:
        raise ValueError(f"validation_split={validation_split} leaves no samples on one side "
                         f"of {n}")
    cut = n - n_val               # the last fraction, before shuffling, as Keras does
    parts = (Prepared(*(None if a is None else a[:cut] for a in train)),
             Prepared(*(None if a is None else a[cut:] for a in train)))
    if train.weights is not None and not all(bool((p.weights > 0).any()) for p in parts):
        raise ValueError(f"validation_split={validation_split} leaves only zero-weight samples "
                         "on one side")
    return parts


def _optimizer(model, optimizer, lr):
    """``(optimizer, change)``: the optimizer this fit uses, and a function that
    applies ``lr`` to a resumed one; nothing changes until ``change()`` runs."""
    if optimizer is None and model.optimizer is not None:
        opt = model.optimizer
        if callable(lr):
            return opt, lambda: setattr(opt, "schedule", lr)
        if lr is not None:
            return opt, lambda: (setattr(opt, "lr", lr), setattr(opt, "schedule", None))
        return opt, lambda: None
    return optim.get("adam" if optimizer is None else optimizer, lr=lr), lambda: None


def _logged(model, train, val, scored):
    """The names each epoch's logs will hold."""
    names = ["train_loss"] + (["train_accuracy"] if train.targets is not None else [])
    names += [f"train_{m.name}" for m in scored]
    if val is not None:
        names += ["val_loss"] + (["val_accuracy"] if val.targets is not None else [])
        names += [f"val_{m.name}" for m in scored]
    return names + ["lr", "seconds"]


def _warn_if_discarding(old, new):
    """Say so when a new optimizer replaces one whose state came from a checkpoint."""
    if old is not None and new is not old and old.loaded_from is not None:
        warnings.warn(f"fit(optimizer={new.name!r}) discards the {old.name} state (step "
                      f"{old.t}) loaded from {old.loaded_from}: pass optimizer=None to "
                      "resume it", UserWarning, stacklevel=4)


def fit(model, x, y=None, epochs: int = 1, batch_size: int | None = 32, optimizer=None,
        lr=None, shuffle: bool = True, validation_data=None, validation_split: float = 0.0,
        progress: bool | str = False, early_stopping: int | None = None, sample_weight=None,
        on_nonfinite: str = "raise", callbacks=None, metrics=None,
        initial_epoch: int | None = None, history: History | None = None,
        comm=None) -> History:
    """Train ``model`` in place and return a :class:`History`.

    Args:
        x: inputs (N, n_in); y: class ids (N,) or one-hot / targets (N, K).
            Or ``x`` is a :class:`fastmlp.Prepared` from ``model.prepare``
            (targets and weights included), which is not checked again.
        epochs: passes over the data.
        batch_size: samples per step; 1 is per-sample SGD, None the full batch.
        optimizer: an :mod:`fastmlp.optim` instance or a name ("sgd", "adam",
            ...); None resumes ``model.optimizer``, or starts Adam.
        lr: learning rate for an optimizer given by name (or resumed): a
            number, or a schedule ``lr(epoch)`` (:mod:`fastmlp.schedules`)
            applied before each epoch.
        shuffle: reshuffle the training data every epoch.
        validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, w_val)``
            (or a Prepared) scored after each epoch; or
        validation_split: the last fraction of (x, y) held out for that.
        progress: False (default), True (a tqdm bar on a terminal, else one
            plain line per epoch), "bar" or "lines"; see :mod:`fastmlp.progress`.
            Each epoch's line also goes to the ``fastmlp.train`` logger at INFO.
        early_stopping: patience in epochs without improvement of the
            validation loss (the training loss without validation); the best
            weights are restored at the end (the optimizer's state is kept as
            it was at the last epoch run). An epoch whose score is NaN or
            inf is never the best. Shorthand for a
            :class:`fastmlp.callbacks.EarlyStopping` callback.
        sample_weight: a weight per sample (N,): each sample's loss term
            counts that many times, and a mean divides by the weights' sum
            per batch (as scikit-learn does); ``train_loss`` and
            ``train_accuracy`` are weighted the same way.
        on_nonfinite: what to do when, at an epoch's end, the training loss
            or any parameter is NaN or inf (a learning rate too high, inputs
            too large): "raise" (default) puts the parameters and optimizer
            state (and its step count) back to those of the last epoch that
            ended finite (or of the start of this fit) and raises
            :class:`DivergedError`, which names the epoch and carries the
            History as ``history``; "warn" restores the same way, stops, warns
            (RuntimeWarning) and returns the History, after which early
            stopping still restores its best epoch; "ignore" checks nothing
            and trains on. The diverged epoch stays in the History, with its
            NaN or inf values. Checking costs a copy of the parameters and
            optimizer state on the device and a pass over them per epoch.
        callbacks: :class:`fastmlp.callbacks.Callback` instances, run around
            each epoch in order (one may stop training).
        metrics: names ("accuracy", "top_k_accuracy", "mae", "mse"),
            :class:`fastmlp.metrics.Metric` instances or functions
            ``fn(y_true, y_pred)``, logged as ``train_<name>`` and
            ``val_<name>`` each epoch; see :mod:`fastmlp.metrics`. Each is
            tried on the first rows before training, so a function that
            cannot work raises before the model changes.
        initial_epoch: epochs already done (after ``fastmlp.load``, say):
            the first epoch run is numbered ``initial_epoch + 1``, and
            schedules continue from there; ``epochs`` more are run. Default:
            where ``history`` ends, else 0.
        history: a :class:`History` to extend (and return) instead of a new one.
        comm: an mpi4py communicator: data-parallel training over its ranks,
            each on its part of every batch, the gradients summed by one
            all-reduce per step (see :mod:`fastmlp.distributed`). Every rank
            calls ``fit`` alike and ends with the same model and History.

    Every argument is checked before the model changes (numbers as
    :mod:`fastmlp.constraints` says: NumPy scalars are numbers, bools are
    not): a bad one raises ValueError or TypeError and leaves the model as
    it was.
    """
    epochs = check("epochs", epochs, _AT_LEAST_1)
    batch_size = check("batch_size", batch_size, None, _AT_LEAST_1)
    early_stopping = check("early_stopping", early_stopping, None, _AT_LEAST_1)
    lr = check("lr", lr, None, Instance(callable, "a schedule lr(epoch)"),
               Interval(Real, 0, closed="neither"))
    shuffle = check("shuffle", shuffle, Boolean())
    validation_split = check("validation_split", validation_split,
                             Interval(Real, 0, 1, closed="left"))
    on_nonfinite = check("on_nonfinite", on_nonfinite, Options(*ON_NONFINITE))
    progress = progress_.check(progress)
    cbs = _check_callbacks(callbacks)
    wanted = metrics_.get(metrics)
    scored = [m for m in wanted if not isinstance(m, metrics_.Accuracy)]
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a fastmlp.History, got {type(history).__name__}")
    if initial_epoch is None:
        initial_epoch = history.epoch[-1] if history is not None and history.epoch else 0
    initial_epoch = check("initial_epoch", initial_epoch, Interval(Integral, 0))
    if comm is not None:
        from fastmlp import distributed
        distributed.check(comm)
        distributed.announce(comm)
    be = model.backend
    with be.scope():
        def split():
            return _split(model, x, y, sample_weight, validation_data, validation_split)
        train, val = split() if comm is None else distributed.agree(comm, split)
        metrics_.check(model, wanted)
        metrics_.trial(model, _head(train), scored)     # user functions fail here, not mid-fit
        if early_stopping is not None:
            cbs.append(callbacks_.EarlyStopping("val_loss" if val is not None else "train_loss",
                                                patience=early_stopping))
        names = _logged(model, train, val, scored)
        for cb in cbs:
            cb.check(names)
        opt, change = _optimizer(model, optimizer, lr)
        schedule = lr if callable(lr) else opt.schedule
        if schedule is not None:            # every epoch's rate, before anything changes
            for e in range(initial_epoch, initial_epoch + epochs):
                schedules.rate(schedule, e)
        # the engine is chosen here, before anything changes: a named engine may refuse
        loop = EpochLoop(model, train, opt, batch_size, shuffle=shuffle, validation=val,
                         callbacks=cbs, metrics=scored, on_nonfinite=on_nonfinite,
                         first_epoch=initial_epoch, last_epoch=initial_epoch + epochs,
                         history=History() if history is None else history,
                         progress=progress, comm=comm)
        previous, rate = model.optimizer, (opt.lr, opt.schedule)
        change()
        _warn_if_discarding(model.optimizer, opt)
        try:
            with loop:
                if comm is not None:
                    return distributed.abort_on_failure(comm, lambda: loop.run(epochs))
                return loop.run(epochs)
        except BadChunk:
            # a bad streamed chunk leaves the model as this fit found it (the loop put
            # the parameters back), as a bad argument would have
            model.optimizer = previous
            opt.lr, opt.schedule = rate
            raise


def _check_callbacks(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, callbacks_.Callback):
        callbacks = [callbacks]
    found = list(callbacks)
    for cb in found:
        if not isinstance(cb, callbacks_.Callback):
            raise TypeError(f"callbacks must be fastmlp.callbacks.Callback instances, got "
                            f"{type(cb).__name__}")
    return found


def _head(data, rows=4):
    """The first few rows of prepared ``data`` (a Stream's are read when used)."""
    return Prepared(*(None if a is None else a[:rows] for a in data))
