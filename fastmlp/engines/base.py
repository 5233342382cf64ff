"""The step-engine interface: what every way of running a training step provides."""

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    """What an engine is chosen for: batches of ``batch_size`` rows, with
    dropout (``train``) or without, on inputs of which ``density`` (a
    fraction, when it was measured) are non-zero, given as sparse rows
    (``sparse``) or dense ones; ``named``: the engine was
    asked for by name (``MLP(engine=...)``), not chosen by the factory. The
    optimizer is not part of it: an engine looks at each step's optimizer's
    declared form (``optimizer.form``) and decides then whether to run its
    update itself."""

    batch_size: int
    train: bool = True
    density: float = None
    named: bool = False
    sparse: bool = False        # the input rows come as SciPy CSR batches


@dataclass(frozen=True)
class StepPath:
    """Which engine runs the steps, why, and why each engine tried before it
    declined: ``{engine name: reason}``."""

    engine: str
    reason: str
    declined: dict = field(default_factory=dict)

    def __str__(self):
        text = f"{self.engine}: {self.reason}"
        if self.declined:
            text += "; not " + "; not ".join(f"{k} ({v})" for k, v in self.declined.items())
        return text


class Engine(ABC):
    """One way to run training steps for one model, in the spirit of
    tiny-cuda-nn's network implementations.

    A subclass names itself (``name``), says in one line what it is and
    when it wins (``summary``; an instance may say more about its own
    case), says which cases it cannot run (:meth:`declines`), owns
    whatever scratch it needs (per model: never shared between models),
    and computes gradients (:meth:`grad`). It may run the optimizer's
    update itself where the optimizer's declared form allows
    (:meth:`train_step`, through ``optimizer.step(..., run=...)``, which
    counts the step), and a whole epoch in one call
    (:meth:`train_epoch`). An engine is built from the immutable
    description of the network (``net``, a :class:`fastmlp.net.Net`) and
    the buffers it may touch (``bufs``, a :class:`fastmlp.net.Buffers`),
    never from the model.

    Every method takes device arrays as :meth:`fastmlp.MLP.prepare` makes
    them: ``x`` (n, n_in), dense targets ``y`` (n, K) in the model's dtype,
    ``targets`` (what ``loss.head.hits`` compares with, or None: no hit
    count) and ``weights`` (n,), per-sample weights, or None. ``loss`` is
    the summed, unreduced loss and ``hits`` a count, both weighted, either
    as device scalars or Python numbers; a mean reduction divides by the
    batch's weight sum.
    """

    name = None
    summary = ""
    #: whether the steps take sparse input rows (SciPy CSR batches) as they are
    sparse_inputs = False
    #: whether :meth:`train_epoch` may be called once per chunk of streamed rows (new
    #: arrays each call); an engine that builds something per data set (a graph) says no
    chunk_epochs = False

    @classmethod
    def declines(cls, net, bufs, case):
        """Why this engine cannot run ``case`` for the network ``net`` on
        ``bufs`` (a short sentence), or None when it can."""
        return None

    def __init__(self, net, bufs, case):
        self.net = net
        self.bufs = bufs
        self.case = case

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r} batch_size={self.case.batch_size}>"

    @property
    def scratch_nbytes(self):
        """Bytes of scratch this engine keeps alive between steps."""
        return 0

    def running(self):
        """A context to hold around a run of steps (``fit`` holds it for the
        whole fit): what the engine's steps need of the process meanwhile."""
        return contextlib.nullcontext()

    @abstractmethod
    def grad(self, x, y, targets=None, weights=None):
        """Forward and backward on one batch: ``(loss, hits)``; the gradient
        of the reduced loss lands in ``bufs.grads``."""

    def train_step(self, x, y, targets, optimizer, weights=None):
        """One step: gradients, then ``optimizer``'s update. ``(loss, hits)``."""
        loss, hits = self.grad(x, y, targets, weights)
        optimizer.step([self.bufs.params], [self.bufs.grads])
        return loss, hits

    def train_epoch(self, x, y, targets, order, optimizer, weights=None, x_scale=1.0):
        """Every row of ``x`` in the order of the index array ``order`` (row
        order when None), in batches of ``case.batch_size``, in one call:
        ``(loss, hits)``; None where this engine has no such call for
        ``optimizer`` or ``weights`` (the caller then loops over
        :meth:`train_step`). Compact (integer) rows of ``x`` are cast to the
        model's dtype and multiplied by ``x_scale`` as they are read."""
        return None
