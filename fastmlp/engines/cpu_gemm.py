"""The ``cpu-gemm`` engine: the whole step in one compiled call, the
products by NumPy's own BLAS GEMM (``kernels/cpu_gemm_step.py``)."""

import functools

from fastmlp.engines import cpu_step
from fastmlp.engines.cpu_step import CpuStepEngine


class GemmStepEngine(CpuStepEngine):
    """One compiled call per step: BLAS GEMMs, fused passes between them."""

    name = "cpu-gemm"
    summary = "one compiled call per step, NumPy's BLAS GEMMs between fused passes"

    @classmethod
    def declines(cls, model, case):
        why = super().declines(model, case)
        if why is None and not cpu_step.blas_gemm().size:
            why = "NumPy bundles no CBLAS that fastmlp can call here"
        return why

    def __init__(self, model, case):
        super().__init__(model, case)
        from fastmlp.kernels import cpu_gemm_step as k
        self._step = functools.partial(k.gemm_step, cpu_step.blas_gemm())
        self._epoch = functools.partial(k.gemm_sgd_epoch, cpu_step.blas_gemm())

