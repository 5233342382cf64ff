"""NumPy's own BLAS GEMM, callable from inside Numba kernels.

A training step that calls ``np.matmul`` per layer pays ~2-3 us of Python
per op, and a separate pass to apply the update; at batch 16 that overhead
was a third of the step. NumPy's wheels bundle OpenBLAS ("scipy-openblas",
64-bit integers) and export its CBLAS interface, so a compiled step can call
the same GEMM NumPy would, with ``beta = 1`` folding the SGD update into the
weight-gradient product. Numba's own ``np.dot`` would need SciPy.

The GEMM is called through its address, passed in at run time, so the
kernels that use it stay cacheable (a ctypes function would bake this
process's address into the cache). Where NumPy carries no such library
(other builds, Accelerate on macOS), ``GEMM`` is None and the kernels are
not used. Numba's on-disk cache is keyed on the files of the kernels that
call this, not on this one: after editing it, clear ``NUMBA_CACHE_DIR``.
"""

import ctypes
import glob
import os

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"),
            ("cblas_sgemm64_", "cblas_dgemm64_"))


def _find_gemm():
    """(sgemm, dgemm) addresses of NumPy's bundled ILP64 CBLAS, or None."""
    root = os.path.dirname(np.__file__)
    paths = (glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*openblas*")) +
             glob.glob(os.path.join(root, ".dylibs", "*openblas*")))
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for single, double in _SYMBOLS:
            try:
                s, d = getattr(lib, single), getattr(lib, double)
            except AttributeError:
                continue
            return (ctypes.cast(s, ctypes.c_void_p).value, ctypes.cast(d, ctypes.c_void_p).value)
    return None


GEMM = _find_gemm()

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _gemm_intrinsic(real):
    i32, i64 = ir.IntType(32), ir.IntType(64)
    ptr = ir.IntType(8).as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr,
                                           i64, real, ptr, i64])
    scalar = types.float32 if isinstance(real, ir.FloatType) else types.float64

    @intrinsic
    def gemm(typingctx, addr, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        """cblas_?gemm(RowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        at ``addr``; a, b and c are addresses (intp)."""
        sig = types.void(types.intp, types.int32, types.int32, types.int64, types.int64,
                         types.int64, scalar, types.intp, types.int64, types.intp, types.int64,
                         scalar, types.intp, types.int64)

        def codegen(context, builder, signature, args):
            (f, ta_, tb_, m_, n_, k_, al, a_, lda_, b_, ldb_, be, c_, ldc_) = args
            fn = builder.inttoptr(f, fnty.as_pointer())
            builder.call(fn, [i32(ROW_MAJOR), ta_, tb_, m_, n_, k_, al,
                              builder.inttoptr(a_, ptr), lda_, builder.inttoptr(b_, ptr), ldb_,
                              be, builder.inttoptr(c_, ptr), ldc_])
            return context.get_dummy_value()
        return sig, codegen
    return gemm


sgemm_at = _gemm_intrinsic(ir.FloatType())
dgemm_at = _gemm_intrinsic(ir.DoubleType())
