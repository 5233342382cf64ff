"""The epoch loop: what ``fit``, the scikit-learn estimators and the command
line train through.

An :class:`EpochLoop` holds everything one training run keeps between
epochs: the step engine (chosen once), the batch source, a device copy of
the last finite state (refreshed in place each epoch), the progress report
and the callbacks. ``fit`` runs it for a number of epochs
(:meth:`EpochLoop.run`); the scikit-learn estimators call
:meth:`EpochLoop.run_epoch` once per iteration and keep their own
convergence logic between epochs.

Each epoch's body is written once, over a batch source:

- :class:`InMemory`: rows on the device, shuffled by one permutation per
  epoch and gathered batch by batch into buffers made once;
- :class:`WholeEpoch`: the same, but the epoch is first offered to the
  engine in one call (``engine.train_epoch``: on the CPU plain SGD at
  batch size 1, and ``cpu-gemm``'s batches where its steps take one
  thread; the ``warp`` engine's epoch graph), falling back to batches where
  the engine has no such call;
- :class:`Streamed`: inputs read from disk in chunks, one chunk ahead on a
  background thread (see :mod:`fastmlp.stream`); without batch hooks each
  chunk is offered to the engine in one call where the engine takes
  chunks (``engine.chunk_epochs``).

Losses and hit counts stay on the device as 0-d arrays and are read back
once per epoch, so a GPU is never made to wait per step. Batch hooks
(``on_train_batch_begin`` / ``on_train_batch_end``) are called only on the
callbacks that override them; with any, epochs run batch by batch (never
through the one-call epoch), since each batch must be seen. One flag,
``loop.stop_training``, stops training: read after every batch and before
every epoch; a callback sets it through ``self.loop`` (``on_epoch_end``
returning True sets it too).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from fastmlp import callbacks as callbacks_
from fastmlp import metrics as metrics_
from fastmlp import progress as progress_
from fastmlp import schedules
from fastmlp import sparse as sparse_
from fastmlp import stream as stream_


class EpochLoop:
    """Training epochs of ``model`` on prepared ``data`` with ``optimizer``,
    in batches of ``batch_size`` rows (None: the whole set).

    Making the loop chooses the step engine and changes nothing in the
    model; entering it (``with loop:``) initialises the optimizer for the
    model where it is not yet, makes it ``model.optimizer``, holds what the
    engine's steps need of the process (``engine.running()``) and calls the
    callbacks' ``on_train_begin``; leaving it closes the report, the
    reader thread and the callbacks. In between, :meth:`run_epoch` runs one
    epoch and :meth:`run` several.

    ``validation`` (prepared, with targets) is scored after each epoch;
    ``metrics`` (:class:`fastmlp.metrics.Metric` instances other than
    accuracy, which the steps count) are logged for both sets;
    ``on_nonfinite`` is as in :func:`fastmlp.train.fit`; epochs are
    numbered on from ``first_epoch`` up to ``last_epoch`` (what the
    progress lines show); ``history`` (a :class:`fastmlp.History`, a new
    one by default) is extended; ``progress`` is as in ``fit``.

    ``stop_training`` is the one stop flag: set it (from a callback, as
    ``self.loop.stop_training = True``) and training stops after the
    current batch; :meth:`run` reads it before each epoch.
    """

    def __init__(self, model, data, optimizer, batch_size, *, shuffle=True, validation=None,
                 callbacks=(), metrics=(), on_nonfinite="raise", first_epoch=0,
                 last_epoch=None, history=None, progress=False, comm=None):
        if history is None:
            from fastmlp.train import History  # train imports this module
            history = History()
        self.model, self.optimizer, self.data = model, optimizer, data
        self.validation, self.metrics = validation, list(metrics)
        #: this process's rank in a data-parallel fit (0 without ``comm``)
        self.rank = 0 if comm is None else comm.Get_rank()
        # the ranks' models and logs are the same: one writes the files
        self.callbacks = [cb for cb in callbacks if self.rank == 0 or not cb.writes_files]
        self.on_nonfinite = on_nonfinite
        self.epoch, self.last_epoch = first_epoch, last_epoch
        self.history, self.progress = history, progress
        #: set to True (by a callback, through ``self.loop``) to stop after this batch
        self.stop_training = False
        self._begins = [cb for cb in self.callbacks if _overrides(cb, "on_train_batch_begin")]
        self._ends = [cb for cb in self.callbacks if _overrides(cb, "on_train_batch_end")]
        n = data.x.shape[0]
        self.batch_size = bs = n if batch_size is None else min(batch_size, n)
        streamed = isinstance(data.x, stream_.Stream)
        rows_sparse = sparse_.is_sparse(data.x)
        # what the engine choice reads: rows like the batches to come
        sample = _load(model, data.x, 0, min(n, 256)) if streamed else \
            model.as_inputs(data.x[:256]) if rows_sparse else data.x
        self.engine = model.engine_for(bs, sample=sample, fresh=True)
        # a batch hook must see each batch: no epoch in one engine call then
        kind = Streamed if streamed else SparseRows if rows_sparse else \
            InMemory if self._begins or self._ends else WholeEpoch
        self.comm = comm
        if comm is not None:                     # data-parallel: fastmlp.distributed
            kind = Sharded
            if comm.Get_rank() != 0:             # one rank reports
                self.progress = progress = False
        self.source = kind(model, data, bs, shuffle)
        if comm is not None:
            from fastmlp import distributed
            self.source.comm = comm
            self.engine = distributed.AllReduceEngine(self.engine, comm, self.source)
        w = data.weights
        self._count = n if w is None else float(w.sum())   # what an epoch's mean divides by
        self._logs, self._stack, self._report = {}, None, None

    # --- the run -----------------------------------------------------------------

    def __enter__(self):
        model, opt = self.model, self.optimizer
        with contextlib.ExitStack() as stack:
            stack.callback(self._close)
            if not opt.is_for([model.params]):      # new, or last used on other arrays
                opt.init([model.params], model.ops)
            model.optimizer = opt
            self._report = progress_.Report(self.progress, self.source.batches_per_epoch,
                                            self.last_epoch)
            stack.enter_context(self.engine.running())
            # Streamed rows are checked as they are read: a bad chunk found mid-run puts the
            # model back as this run found it, as a bad argument would have left it.
            self._start = _Snapshot(model, opt) if isinstance(self.source, Streamed) else None
            self._last_good = _Snapshot(model, opt) if self.on_nonfinite != "ignore" else None
            for cb in self.callbacks:
                cb.model, cb.optimizer, cb.history, cb.loop = model, opt, self.history, self
                cb.on_train_begin({})
            self._stack = stack.pop_all()
        return self

    def __exit__(self, kind, error, traceback):
        stack, self._stack = self._stack, None
        with stack:
            if isinstance(error, BadChunk) and self._start is not None:
                self._start.restore(self.model, self.optimizer)

    def _close(self):
        if self._report is not None:
            self._report.close()
        self.source.close()
        for cb in self.callbacks:
            if hasattr(cb, "close"):
                cb.close()
            cb.loop = None          # the loop holds the data and snapshots: let them go
        self._start = self._last_good = None

    def run(self, epochs):
        """Run ``epochs`` epochs, fewer when training stops (a callback, or
        ``on_nonfinite="warn"``), then the callbacks' ``on_train_end``; the History."""
        for _ in range(epochs):
            if self.stop_training:
                break
            self.run_epoch()
        self.end()
        return self.history

    def end(self):
        """Call the callbacks' ``on_train_end`` with the last epoch's logs."""
        for cb in self.callbacks:
            cb.on_train_end(self._logs)

    def run_epoch(self):
        """Run the next epoch and return its logs (as the History records them).

        Raises :class:`fastmlp.DivergedError` when it ends non-finite with
        ``on_nonfinite="raise"``, after putting back the last finite state;
        with "warn", puts it back, warns and sets ``stop_training``. An
        optimizer's ``lr`` set between epochs is what the next one uses
        (unless the optimizer has a schedule, which sets it first).
        """
        model, opt, epoch = self.model, self.optimizer, self.epoch + 1
        if opt.schedule is not None:       # a plain float that every step reads afresh
            opt.lr = schedules.rate(opt.schedule, epoch - 1)
        begin = {"lr": opt.lr}
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, begin)
        lr, start = opt.lr, time.perf_counter()
        self._report.begin(epoch)
        total, hits, count = self._train()
        if self.comm is not None:                # every rank logs the same epoch
            from fastmlp.distributed import sum_over_ranks
            total, hits = sum_over_ranks(self.comm, total, hits)
        t, y = self.data.targets, self.data.y
        logs = _prefixed("train_", model.loss_fn.summary(total, None if t is None else hits,
                                                         model.reduction, count, y.shape[1]))
        logs.update(_prefixed("train_", self._scores(self.data, loss=False)))
        if self.validation is not None:
            logs.update(_prefixed("val_", self._scores(self.validation, loss=True)))
        logs["lr"] = lr
        logs["seconds"] = time.perf_counter() - start
        self.epoch, self._logs = epoch, logs
        self.history.append(logs, epoch)
        self._report.end(epoch, logs)
        good = self._last_good
        if good is not None:
            be = model.backend
            # the loss is already a host float; the parameters cost one pass and one sync
            if not (math.isfinite(logs["train_loss"]) and bool(be.xp.isfinite(model.params).all())):
                good.restore(model, opt)
                message = _diverged(epoch, logs["train_loss"], good.epoch, opt.lr)
                if self.on_nonfinite == "raise":
                    from fastmlp.train import DivergedError  # train imports this module
                    raise DivergedError(message, epoch, self.history)
                # run_epoch < run < train.fit < MLP.fit < the caller of fit
                warnings.warn(message, RuntimeWarning, stacklevel=5)
                self.stop_training = True
                return logs
            good.take(model, opt, epoch)
        for cb in self.callbacks:
            if cb.on_epoch_end(epoch, logs):
                self.stop_training = True
        return logs

    def _scores(self, data, loss):
        """The loss and accuracy (with ``loss``) and the metrics on ``data``; in a
        data-parallel fit each rank scores its part (``distributed.evaluate``)."""
        model = self.model
        if self.comm is not None:
            from fastmlp.distributed import evaluate
            return evaluate(model, data, self.metrics, self.comm, loss=loss)
        out = model.evaluate(data) if loss else {}
        out.update(metrics_.scores(model, data, self.metrics))
        return out

    def _train(self):
        """One pass over the source: the summed loss, the hit count and what
        their means divide by (fewer rows when the epoch was stopped early)."""
        source, engine, opt, model = self.source, self.engine, self.optimizer, self.model
        order = source.order()                   # one draw of the RNG per epoch
        done = source.whole(order, engine, opt)
        if done is not None:
            self._report.advance(source.batches_per_epoch)
            return done + (self._count,)
        if isinstance(source, Streamed) and engine.chunk_epochs and not (self._begins
                                                                         or self._ends):
            return self._train_chunks(order)
        begins, ends, advance = self._begins, self._ends, self._report.advance
        total, hits, last = 0, 0, source.batches_per_epoch - 1
        for i, (x, y, t, w) in enumerate(source.batches(order)):
            if begins:
                logs = {"size": x.shape[0]}
                for cb in begins:
                    cb.on_train_batch_begin(i, logs)
            loss, h = engine.train_step(model.as_inputs(x), y, t, opt, w)
            total = total + loss
            if h is not None:
                hits = hits + h
            advance()
            if ends:
                logs = BatchLogs(model, loss, x.shape[0], None if w is None else w.sum(),
                                 y.shape[1])
                for cb in ends:
                    cb.on_train_batch_end(i, logs)
            if self.stop_training and i < last:
                return total, hits, source.count(order, i + 1)
        return total, hits, self._count

    def _train_chunks(self, order):
        """:meth:`_train` for streamed rows without batch hooks: each chunk in
        one engine call (a chunk holds whole batches), batch by batch where
        the engine declines it."""
        source, engine, opt, model = self.source, self.engine, self.optimizer, self.model
        total, hits = 0, 0
        for arrays, perm in source.chunks(order):
            rows = arrays[0].shape[0]
            done = engine.train_epoch(*arrays[:3], perm, opt, arrays[3], model.input_scale)
            if done is None:
                done = self._steps(source._split(arrays, perm))
            else:
                self._report.advance(math.ceil(rows / self.batch_size))
            arrays = None                        # see Streamed.chunks()
            total = total + done[0]
            if done[1] is not None:
                hits = hits + done[1]
        return total, hits, self._count

    def _steps(self, batches):
        """One train_step per batch, no hooks: ``(loss sum, hit count)``."""
        engine, opt, model, advance = self.engine, self.optimizer, self.model, self._report.advance
        total, hits = 0, 0
        for x, y, t, w in batches:
            loss, h = engine.train_step(model.as_inputs(x), y, t, opt, w)
            total = total + loss
            if h is not None:
                hits = hits + h
            advance()
        return total, hits


class BatchLogs(Mapping):
    """What ``on_train_batch_end`` gets: ``size`` (the batch's rows) and
    ``loss``, the batch's reduced loss as a Python float, read from the
    device only when a hook asks for it (one host sync per read batch):
    read it in the hook, not later."""

    def __init__(self, model, total, size, weight, k):
        self._model, self._total, self._weight, self._k = model, total, weight, k
        self._values = {"size": size}

    def __getitem__(self, key):
        if key == "loss" and key not in self._values:
            m = self._model
            count = self._values["size"] if self._weight is None else self._weight
            self._values["loss"] = float(self._total) * float(
                m.loss_fn.scale(m.reduction, count, self._k))
        return self._values[key]

    def __contains__(self, key):                # without reading the loss
        return key in ("size", "loss")

    def __iter__(self):
        return iter(("size", "loss"))

    def __len__(self):
        return 2


def _overrides(cb, hook):
    return getattr(type(cb), hook) is not getattr(callbacks_.Callback, hook)


# --- batch sources ------------------------------------------------------------------------

class BatchSource(ABC):
    """Where an epoch's batches come from: ``order()`` draws an epoch's
    order (from ``model.rng``), ``batches(order)`` yields its batches as
    (x, y, targets, weights) (reused buffers: valid until the next one),
    ``whole(order, engine, optimizer)`` runs it in one engine call or
    returns None, and ``count(order, k)`` is what the mean of its first
    ``k`` batches divides by (rows, or their weights' sum)."""

    def __init__(self, model, data, bs, shuffle):
        self.model, self.data, self.bs, self.shuffle = model, data, bs, shuffle
        self.n = data.x.shape[0]
        self.batches_per_epoch = math.ceil(self.n / bs)
        # Shuffled batches are gathered into buffers made once. Copying the whole
        # shuffled set per epoch into a fresh array cost up to 0.4 s of page faults
        # per MNIST epoch here; a batch buffer stays in cache. Compact (integer)
        # inputs are gathered into a buffer of the model's dtype, cast and scaled on
        # the way: never converted whole.
        x = data.x
        self.bufs = ([None if a is None or sparse_.is_sparse(a) else model.backend.xp.empty(
                      (bs,) + a.shape[1:], model.dtype if a is x else a.dtype) for a in data]
                     if shuffle else None)

    @abstractmethod
    def order(self):
        """This epoch's order of the rows (None: as they are)."""

    @abstractmethod
    def batches(self, order):
        """The epoch's batches, (x, y, targets, weights) each."""

    @abstractmethod
    def count(self, order, k):
        """What the mean of the first ``k`` batches divides by."""

    def whole(self, order, engine, optimizer):
        return None

    def close(self):  # noqa: B027  (most sources hold nothing to release)
        """Release what the source holds (a reader thread)."""

    def _split(self, arrays, perm):
        n, bs, bufs = arrays[0].shape[0], self.bs, self.bufs
        be, scale = self.model.backend, self.model.input_scale
        for s in range(0, n, bs):
            yield _rows(be, arrays, perm, bufs, s, min(s + bs, n), scale)


class InMemory(BatchSource):
    """Rows on the device: one permutation per epoch (or row order without
    shuffling), batches gathered through it."""

    def order(self):
        m = self.model
        return m.backend.asarray(m.rng.permutation(self.n)) if self.shuffle else None

    def batches(self, order):
        return self._split(self.data, order)

    def count(self, order, k):
        rows, w = min(k * self.bs, self.n), self.data.weights
        if w is None:
            return rows
        return float(w[:rows].sum() if order is None else w[order[:rows]].sum())


class WholeEpoch(InMemory):
    """:class:`InMemory`, but each epoch is first offered to the engine in one
    call, which takes the permutation itself (it declines with None)."""

    def whole(self, order, engine, optimizer):
        x, y, t, w = self.data
        return engine.train_epoch(x, y, t, order, optimizer, w, self.model.input_scale)


class Sharded(InMemory):
    """Data-parallel batches (:mod:`fastmlp.distributed`): the epoch's order
    as for one process, each global batch cut into the ranks' consecutive
    parts, and this rank's part gathered (row order without shuffling)."""

    def __init__(self, model, data, bs, shuffle):
        super().__init__(model, data, bs, shuffle)
        self.comm = None                         # set by the loop
        #: the current global batch's rows (or weights' sum): every rank knows it
        self.batch_total = 0.0

    def batches(self, order):
        from fastmlp.distributed import part
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        be, n, bs, scale = self.model.backend, self.n, self.bs, self.model.input_scale
        x = self.data.x
        on_disk = isinstance(x, stream_.Stream)   # read this rank's rows only, checked
        rows_sparse = sparse_.is_sparse(x)        # CSR rows, as one process takes them
        on_host = None if order is None or not (on_disk or rows_sparse) else be.to_numpy(order)
        w = self.data.weights
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            a, b = part(lo, hi, rank, size)
            self.batch_total = float(hi - lo if w is None else
                                     (w[lo:hi] if order is None else w[order[lo:hi]]).sum())
            if order is None:
                part_ = tuple(None if v is None else v[a:b] for v in self.data)
            else:
                idx = order[a:b]
                part_ = tuple(None if v is None or v is x and (on_disk or rows_sparse) else
                              be.take_rows(v, idx, buf[:b - a], scale)
                              for v, buf in zip(self.data, self.bufs))
            if rows_sparse and order is not None:
                part_ = (x[on_host[a:b]],) + part_[1:]
            if on_disk:
                rows = x.read(a, b) if order is None else x.rows(on_host[a:b])
                part_ = (_checked(self.model, rows, a, b),) + part_[1:]
            yield part_


class SparseRows(InMemory):
    """Sparse inputs (CSR rows in host memory, :mod:`fastmlp.sparse`): the
    epoch's permutation drawn as for dense rows, each batch's rows taken from
    the CSR, kept as a CSR batch on the sparse path, else densified into a
    buffer made once and moved to the device. The targets and weights are
    gathered as for dense rows."""

    def __init__(self, model, data, bs, shuffle):
        super().__init__(model, data, bs, shuffle)
        dense = not model.sparse_first_layer(data.x)
        self.host = np.zeros((bs, data.x.shape[1]), model.dtype) if dense else None

    def batches(self, order):
        be, x, n, bs = self.model.backend, self.data.x, self.n, self.bs
        on_host = None if order is None else be.to_numpy(order)
        rest, bufs = self.data[1:], None if self.bufs is None else self.bufs[1:]
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            rows = x[lo:hi] if on_host is None else x[on_host[lo:hi]]
            if self.host is not None:
                out = self.host[:hi - lo]
                rows.toarray(out=out)
                rows = be.asarray(out)           # on the CPU, the buffer itself
            yield (rows,) + _rows(be, rest, order, bufs, lo, hi, 1.0)


class Streamed(BatchSource):
    """Streamed inputs: chunks of consecutive rows in a random order, each
    chunk's rows shuffled within it, read, checked and moved a chunk ahead
    on another thread (see :mod:`fastmlp.stream`)."""

    def __init__(self, model, data, bs, shuffle):
        super().__init__(model, data, bs, shuffle)
        self.rows = stream_.chunk_rows(data.x, bs)
        self.loader = stream_.Prefetch(lambda span: _load(model, data.x, *span))
        self._perm = None

    def order(self):
        starts = list(range(0, self.n, self.rows))
        if self.shuffle:
            starts = [starts[i] for i in self.model.rng.permutation(len(starts))]
        return starts

    def chunks(self, order):
        """The epoch's chunks: ``((x, y, targets, weights), perm)`` each, ``perm``
        the chunk's own shuffled order of its rows (None without shuffling)."""
        m, n = self.model, self.n
        for (lo, hi), xc in self.loader.run([(s, min(s + self.rows, n)) for s in order]):
            arrays = (xc,) + tuple(None if a is None else a[lo:hi] for a in self.data[1:])
            perm = m.backend.asarray(m.rng.permutation(hi - lo)) if self.shuffle else None
            self._perm = perm
            yield arrays, perm
            # let the chunk go before the next is taken: a third chunk in memory while the
            # one after is read costs 64 MB (tests/test_stream.py runs under a heap limit)
            arrays = xc = None

    def batches(self, order):
        for arrays, perm in self.chunks(order):
            yield from self._split(arrays, perm)
            arrays = None                      # see chunks()

    def count(self, order, k):
        w, total = self.data.weights, 0
        for lo in order:
            hi = min(lo + self.rows, self.n)
            full = math.ceil((hi - lo) / self.bs)
            rows = hi - lo if k >= full else k * self.bs
            if w is None:
                total += rows
            else:                      # a chunk cut short is the last one read
                part = w[lo:hi]
                total += float(part.sum() if rows == hi - lo else part[:rows].sum()
                               if self._perm is None else part[self._perm[:rows]].sum())
            k -= full
            if k <= 0:
                return total
        return total

    def close(self):
        self.loader.close()


def _rows(be, arrays, perm, bufs, lo, hi, scale):
    """Rows lo:hi of each array (None stays None), in the order ``perm`` gives
    when shuffling, gathered into the front of ``bufs`` (compact inputs cast
    and multiplied by ``scale`` on the way)."""
    if perm is None:
        return tuple(None if a is None else a[lo:hi] for a in arrays)
    idx = perm[lo:hi]
    return tuple(None if a is None else be.take_rows(a, idx, buf[:hi - lo], scale)
                 for a, buf in zip(arrays, bufs))


def _checked(model, rows, lo, hi):
    """Rows read from streamed inputs, checked and on the device."""
    try:
        return model.prepare(rows).x
    except ValueError as e:
        raise BadChunk(f"rows of x read for batch rows {lo}:{hi}: {e}") from None


class BadChunk(ValueError):
    """Streamed inputs that failed their check (or could not be read) mid-run."""


def _load(model, x, lo, hi):
    """Rows lo:hi of streamed inputs, read, checked and on the device."""
    try:
        return model.prepare(x.read(lo, hi)).x
    except (ValueError, OSError) as e:
        raise BadChunk(f"rows {lo}:{hi} of x: {e}") from None


# --- divergence ---------------------------------------------------------------------------

class _Snapshot:
    """A device copy of the parameters and the optimizer's state (and step
    count) at the end of the last finite epoch, refreshed in place."""

    def __init__(self, model, opt):
        self.params = model.params.copy()
        self.state = {k: a.copy() for k, a in opt.state_arrays().items()}
        self.t, self.epoch = opt.t, None         # None: the start of this run

    def take(self, model, opt, epoch):
        self.params[...] = model.params
        for k, a in opt.state_arrays().items():
            self.state[k][...] = a
        self.t, self.epoch = opt.t, epoch

    def restore(self, model, opt):
        # in place: engines and the optimizer keep references to these arrays
        model.params[...] = self.params
        for k, a in opt.state_arrays().items():
            a[...] = self.state[k]
        opt.t = self.t


def _diverged(epoch, loss, good_epoch, lr):
    what = ("the weights became non-finite" if math.isfinite(loss)
            else f"the training loss became {loss}")
    since = ("the start of this fit" if good_epoch is None
             else f"the end of epoch {good_epoch}")
    return (f"training diverged in epoch {epoch}: {what}; the weights and optimizer state "
            f"from {since} were restored. Lower the learning rate (lr={lr:g}), scale the "
            "inputs (and regression targets) to unit variance, or clip extreme values")


def _prefixed(prefix, logs):
    return {prefix + k: v for k, v in logs.items()}
