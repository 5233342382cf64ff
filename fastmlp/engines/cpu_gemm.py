"""The ``cpu-gemm`` engine: the whole step in one compiled call, the
products by NumPy's own BLAS GEMM (``kernels/cpu_gemm_step.py``); from
``cpu_parallel.MIN_ROWS`` rows a batch, the same step on Numba's threads
(``kernels/cpu_threaded_step.py``, with the policy in ``cpu_parallel.py``).
During a fit each step's thread count is measured, not assumed
(``kernels/cpu_threads.py``): one thread where the cores are shared."""

import contextlib
import functools
import time

import numpy as np

from fastmlp.engines import cpu_step
from fastmlp.engines.cpu_step import CpuStepEngine


class GemmStepEngine(CpuStepEngine):
    """One compiled call per step: BLAS GEMMs, fused passes between them."""

    name = "cpu-gemm"
    summary = "one compiled call per step, NumPy's BLAS GEMMs between fused passes"

    @classmethod
    def declines(cls, net, bufs, case):
        why = super().declines(net, bufs, case)
        if why is None and not cpu_step.blas_gemm().size:
            why = "NumPy bundles no CBLAS that fastmlp can call here"
        return why

    def __init__(self, net, bufs, case):
        super().__init__(net, bufs, case)
        from fastmlp.kernels import cpu_gemm_step as k
        from fastmlp.kernels import cpu_parallel, cpu_threaded_step
        self._par = cpu_parallel               # kept: the step reads it on every call
        self._serial = functools.partial(k.gemm_step, cpu_step.blas_gemm())
        self._threaded = cpu_parallel.threaded(case.batch_size)
        self._parallel = (functools.partial(cpu_threaded_step.threaded_step,
                                            cpu_step.blas_gemm()) if self._threaded else None)
        self._tuner = None                      # while a fit runs: the thread count's tuner
        self._kept = None                       # the tuner, kept from fit to fit
        self._gathered = None                   # the one-call epoch's gather buffers
        self._step = self._run_step
        self._epoch = functools.partial(k.gemm_sgd_epoch, cpu_step.blas_gemm())

    @contextlib.contextmanager
    def running(self):
        """For the fit: NumPy's OpenBLAS on one thread outside the steps (one pool
        at a time), and each step's threads from a :class:`ThreadTuner` that
        times the steps: the faster of one thread and all the process may use
        (see ``kernels/cpu_threads.py``)."""
        import numba

        from fastmlp.kernels import cpu_parallel, cpu_threads
        if cpu_parallel.blas.THREADS is None:  # no OpenBLAS to steer: as it is
            yield
            return
        get, _ = cpu_parallel.blas.THREADS
        limit = numba.get_num_threads() if self._threaded else get()
        work = self.case.batch_size * self.net.layout.size
        most = cpu_threads.most_threads(limit, work)
        measure = cpu_threads.fixed() is None and most > 1
        kept = self._kept                       # what the last fit learnt, if it still applies
        if kept is None or (kept.most, kept.measure) != (most, measure):
            budget = cpu_threads.cpu_budget()
            kept = self._kept = cpu_threads.ThreadTuner(
                most, measure=measure, crowded=lambda n: cpu_threads.crowded(n, budget))
        outer = self._tuner
        with cpu_parallel.one_pool():
            self._tuner = kept
            try:
                yield
            finally:
                self._tuner = outer

    def _run_step(self, *args):
        """One step on the threads the tuner chooses (outside a fit: as set)."""
        cpu_parallel = self._par
        tuner = self._tuner
        if tuner is None:                       # a step called outside fit()
            if self._threaded and cpu_parallel.usable():
                with cpu_parallel.launching(), cpu_parallel.one_pool():
                    return self._parallel(*args, cpu_parallel.numba.get_num_threads())
            return self._serial(*args)
        threads = tuner.next()
        if cpu_parallel.busy():                 # another fit's steps share the cores
            threads = 1
        t = time.perf_counter()
        if threads == 1:
            out = self._serial(*args)
        elif self._threaded and cpu_parallel.usable():
            with cpu_parallel.launching():
                out = self._parallel(*args, threads)
        else:
            with cpu_parallel.blas_threads(threads):
                out = self._serial(*args)
        tuner.record(time.perf_counter() - t, args[0].shape[0])
        return out

    def train_epoch(self, x, y, targets, order, optimizer, weights=None, x_scale=1.0):
        """Batch size 1: plain SGD's per-sample epoch (``CpuStepEngine``). Larger
        batches on one thread: every batch's gather (compact inputs cast and
        scaled, sample weights), step and update (SGD with or without momentum
        and decay, Adam, AdamW, AdaGrad, RMSprop) in one compiled call
        (``gemm_epoch``), the way ``lax.scan`` runs an epoch. None, and the
        loop goes batch by batch, for steps that take more threads (there a
        step's own time dwarfs the loop's) and optimizers without a plan."""
        if self.case.batch_size == 1:
            return super().train_epoch(x, y, targets, order, optimizer, weights)
        plan = self._epoch_plan(optimizer)
        tuner = self._tuner
        if (plan is None or self._threaded or tuner is None or tuner.most != 1
                or not optimizer.is_for([self.bufs.params])):
            return None
        from fastmlp.kernels import cpu_gemm_step as k
        net, bs = self.net, self.case.batch_size
        n = x.shape[0]
        last = n - (n - 1) // bs * bs
        scale_full, scale_last = (float(net.loss_scale(r)) for r in (bs, last))
        by_weight = weights is not None and net.reduction == "mean"   # 1 / each batch's sum
        sw = cpu_step._NO_W[net.dtype] if weights is None else np.ascontiguousarray(weights)
        xb, yb, idsb, swb = self._batch_buffers(x.shape[1], y.shape[1], sw.dtype)
        kind, hyper, flags, m, v = plan
        ids = cpu_step._NO_IDS if targets is None else targets
        order = cpu_step._NO_IDS if order is None else order.astype(np.int64, copy=False)
        # compact rows are scaled in the model's dtype, as the batch loop's gather does
        x_scale = net.dtype.type(x_scale if x.dtype != net.dtype else 1.0)
        args = (cpu_step.blas_gemm(), np.ascontiguousarray(x), np.ascontiguousarray(y), ids, sw,
                order, bs, self.bufs.params, self.bufs.grads, self._sizes, self._w_at,
                self._b_at, net.bias, self._code, x_scale, scale_full, scale_last, by_weight,
                self._scratch(bs), xb, yb, idsb, swb, kind, hyper, flags, m, v, optimizer.t)
        steps = (n + bs - 1) // bs
        total, hits = optimizer.step(self._updated, None, run=k.gemm_epoch, args=args,
                                     steps=steps)
        return total, (hits if targets is not None else None)

    def _epoch_plan(self, optimizer):
        """``(kind, hyper, flags, m, v)`` of ``gemm_epoch`` for ``optimizer``, or None."""
        from fastmlp.kernels import cpu_gemm_step as k
        form, state = optimizer.form, optimizer.state
        if state is None or len(state) != 1:
            return None
        st, none = state[0], np.empty(0, self.net.dtype)
        decay = form.get("weight_decay") or 0.0
        if form.kind == "sgd":
            momentum = form.get("momentum") or 0.0
            if not momentum and not decay:
                return (k.EPOCH_SGD, np.array([form.lr], np.float64), np.zeros(2, np.int64),
                        none, none)
            velocity = st.get("velocity")
            return (k.EPOCH_SGD_STATE, np.array([form.lr, momentum, decay], np.float64),
                    np.array([bool(form.get("nesterov")), velocity is not None], np.int64),
                    self.bufs.params if velocity is None else velocity, none)
        if form.kind in ("adam", "adamw"):
            b1, b2 = form.get("betas")
            return (k.EPOCH_ADAM, np.array([form.lr, b1, b2, form.get("eps"), decay], np.float64),
                    np.array([form.kind == "adamw", 0], np.int64), st["m"], st["v"])
        if form.kind in ("adagrad", "rmsprop"):      # s = alpha s + beta g^2, as CpuOps casts
            alpha = form.get("alpha") if form.kind == "rmsprop" else 1.0
            beta = 1 - alpha if form.kind == "rmsprop" else 1.0
            s = st["mean_sq" if form.kind == "rmsprop" else "sum_sq"]
            return (k.EPOCH_SCALED_SQ,
                    np.array([form.lr, alpha, beta, form.get("eps"), decay], np.float64),
                    np.zeros(2, np.int64), s, none)
        return None

    def _batch_buffers(self, width, k, w_dtype):
        """The epoch call's gather buffers (kept while their shapes hold)."""
        bs, dt = self.case.batch_size, self.net.dtype
        bufs = self._gathered
        if (bufs is None or bufs[0].shape != (bs, width) or bufs[1].shape != (bs, k)
                or bufs[3].dtype != w_dtype):
            # zeros, not empty: a model's state holds no uninitialised bytes (an unweighted
            # fit never writes the weights' buffer; copies and pickles compare equal)
            bufs = self._gathered = (np.zeros((bs, width), dt), np.zeros((bs, k), dt),
                                     np.zeros(bs, np.int64), np.zeros(bs, w_dtype))
        return bufs

    def _scratch_size(self, n):
        if not self._threaded:
            return super()._scratch_size(n)
        from fastmlp.kernels import cpu_threaded_step
        # room for either step: a forked child falls back to the serial one
        return max(super()._scratch_size(n), cpu_threaded_step.threaded_layout(self._sizes, n)[-1])
