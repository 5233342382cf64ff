"""The ``cpu-rows`` engine: a single sample's step by row loops that skip
zero inputs (``kernels/cpu_row_step.py``), and the per-sample SGD epoch."""

from fastmlp.engines import cpu_step
from fastmlp.engines.cpu_step import CpuStepEngine

#: below this fraction of non-zero inputs, the row loops beat BLAS on one sample
SPARSE = 0.75


class RowLoopEngine(CpuStepEngine):
    """One compiled call per sample, by loops over the non-zero inputs."""

    name = "cpu-rows"
    summary = "one compiled call per sample, loops that skip zero inputs"

    @classmethod
    def declines(cls, net, bufs, case):
        why = super().declines(net, bufs, case)
        if why is not None:
            return why
        if case.batch_size != 1:
            return f"loops win for one sample at a time; the batch size is {case.batch_size}"
        if case.density is not None and case.density >= SPARSE and cpu_step.blas_gemm().size:
            return (f"the inputs are {case.density:.0%} non-zero: BLAS beats the loops "
                    f"from {SPARSE:.0%}")
        return None

    def __init__(self, net, bufs, case):
        super().__init__(net, bufs, case)
        from fastmlp.kernels import cpu_row_step as k
        self._step, self._epoch = k.row_step, k.row_sgd_epoch
