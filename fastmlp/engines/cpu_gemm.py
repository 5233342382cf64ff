"""The ``cpu-gemm`` engine: the whole step in one compiled call, the
products by NumPy's own BLAS GEMM (``kernels/cpu_gemm_step.py``); from
``cpu_parallel.MIN_ROWS`` rows a batch, the same step on Numba's threads
(``kernels/cpu_threaded_step.py``, with the policy in ``cpu_parallel.py``)."""

import functools

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
        self._step = functools.partial(k.gemm_step, cpu_step.blas_gemm())
        self._threaded = cpu_parallel.threaded(case.batch_size)
        if self._threaded:
            self._step = _threaded(self._step, functools.partial(
                cpu_threaded_step.threaded_step, cpu_step.blas_gemm()))
        self._epoch = functools.partial(k.gemm_sgd_epoch, cpu_step.blas_gemm())

    def running(self):
        if not self._threaded:
            return super().running()
        from fastmlp.kernels import cpu_parallel
        return cpu_parallel.one_pool()

    def _scratch_size(self, n):
        if not self._threaded:
            return super()._scratch_size(n)
        from fastmlp.kernels import cpu_threaded_step
        # room for either step: a forked child falls back to the serial one
        return max(super()._scratch_size(n), cpu_threaded_step.threaded_layout(self._sizes, n)[-1])


def _threaded(serial, threaded):
    """``threaded``, or ``serial`` where threads cannot run (see
    ``cpu_parallel.usable``), checked per call."""
    import numba

    from fastmlp.kernels import cpu_parallel

    def step(*args):
        if not cpu_parallel.usable():
            return serial(*args)
        with cpu_parallel.launching(), cpu_parallel.one_pool():
            return threaded(*args, numba.get_num_threads())
    return step
