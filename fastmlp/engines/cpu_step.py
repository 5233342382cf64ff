"""What the two compiled CPU engines share: what they cover, their
arguments, their scratch, the plain-SGD fold and the per-sample epoch."""

import numpy as np

from fastmlp.engines.base import Engine
from fastmlp.kernels.losses import CROSS_ENTROPY

_NO_IDS = np.empty(0, np.int64)
_NO_W = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0)}
#: scratch up to this many elements (16 MB of float32) is kept between steps;
#: a bigger block (a full-batch step) is made per call and not kept alive
KEEP_SCRATCH = 1 << 22


def blas_gemm():
    """(sgemm, dgemm) addresses of NumPy's CBLAS as an int64 array; empty
    where NumPy bundles none (then only the row loops are compiled)."""
    from fastmlp.kernels.cpu_gemm_step import GEMM_ADDRESSES
    return GEMM_ADDRESSES


class CpuStepEngine(Engine):
    """A whole step (forward, softmax + cross-entropy, backward, and plain
    SGD folded in) in one compiled call. Subclasses set ``_step`` and
    ``_epoch`` to their kernels (bound to any leading arguments)."""

    chunk_epochs = True

    @classmethod
    def declines(cls, net, bufs, case):
        if bufs.backend.kind != "cpu":
            return f"compiled for the CPU; the model is on {bufs.backend.name}"
        if bufs.ops.name != "cpu":
            return (f"goes with the fused CPU kernels; the model uses the {bufs.ops.name!r} "
                    "op table")
        if net.loss is not CROSS_ENTROPY:
            return f"fuses softmax + cross-entropy; the loss is {net.loss.name!r}"
        if case.train and any(net.dropout):
            return "draws no dropout masks; the model has dropout"
        return None

    def __init__(self, net, bufs, case):
        super().__init__(net, bufs, case)
        from fastmlp.kernels.cpu_math import scratch_layout
        # own writable copies: Numba types read-only arrays on a slow path (~1 us a call)
        self._sizes, self._w_at, self._b_at = (a.copy() for a in net.layout.arrays())
        self._code = net.activation.code
        self._layout = scratch_layout
        self._work, self._rows = None, 0
        self._scales = {}              # rows -> loss scale, as a Python float
        self._form, self._lr = None, None     # the last optimizer form seen, its folded rate
        self._updated = [bufs.params]

    @property
    def scratch_nbytes(self):
        return 0 if self._work is None else self._work.nbytes

    def _scratch_size(self, n):
        """Elements of scratch a batch of ``n`` needs."""
        return self._layout(self._sizes, n)[-1]

    def _scratch(self, n):
        """Scratch for a batch of ``n``: this engine's own, grown as needed."""
        if n <= self._rows:
            return self._work
        size = self._scratch_size(n)
        work = np.zeros(size, self.net.dtype)     # zeros: the front block is the zero bias
        if size <= KEEP_SCRATCH:
            self._work, self._rows = work, n
        return work

    def _args(self, x, y, targets, weights, lr, n=None):
        """The kernels' arguments for steps of ``n`` rows (all of ``x``'s by default)."""
        net, bufs = self.net, self.bufs
        n = x.shape[0] if n is None else n
        if weights is None:
            scale, w = self._scales.get(n), _NO_W[net.dtype]
            if scale is None:
                scale = self._scales[n] = float(net.loss_scale(n))
        else:
            w = np.ascontiguousarray(weights)
            scale = float(net.loss_scale(float(w.sum())))
        return (np.ascontiguousarray(x), np.ascontiguousarray(y),
                _NO_IDS if targets is None else targets, w, bufs.params, bufs.grads, self._sizes,
                self._w_at, self._b_at, net.bias, self._code, scale, self._scratch(n), float(lr))

    def grad(self, x, y, targets=None, weights=None):
        total, hits = self._step(*self._args(x, y, targets, weights, 0.0))
        return total, (hits if targets is not None else None)

    def _folded_lr(self, form):
        """:func:`_folded_lr`, remembered for the last form seen (an optimizer
        makes one form until a hyperparameter changes)."""
        if form is not self._form:
            self._form, self._lr = form, _folded_lr(form)
        return self._lr

    def train_step(self, x, y, targets, optimizer, weights=None):
        lr = self._folded_lr(optimizer.form)
        if lr is None:
            return super().train_step(x, y, targets, optimizer, weights)
        # the update folded into the weight-gradient GEMMs: the optimizer counts it
        total, hits = optimizer.step(self._updated, None, run=self._step,
                                     args=self._args(x, y, targets, weights, lr))
        return total, (hits if targets is not None else None)

    def train_epoch(self, x, y, targets, order, optimizer, weights=None, x_scale=1.0):
        lr = self._folded_lr(optimizer.form)
        # with weights, a mean over one sample divides by that sample's weight: the step loop
        if lr is None or self.case.batch_size != 1 or weights is not None \
                or x.dtype != self.net.dtype:        # compact inputs: the step loop casts them
            return None
        x, y, ids, _, *rest = self._args(x, y, targets, None, lr, n=1)
        order = _NO_IDS if order is None else order.astype(np.int64, copy=False)
        total, hits = optimizer.step(self._updated, None, run=self._epoch,
                                     args=(x, y, ids, order, *rest), steps=x.shape[0])
        return total, (hits if targets is not None else None)


def _folded_lr(form):
    """The learning rate where ``form`` (an optimizer's declared update) is
    plain ``p -= lr * g``, which these kernels fold into their weight-gradient
    GEMMs (``beta = 1``); else None, and the optimizer runs its own update."""
    if form.kind == "sgd" and not form.get("momentum") and not form.get("weight_decay"):
        return form.lr
    return None
