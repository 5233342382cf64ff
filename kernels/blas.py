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


_THREAD_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                   ("openblas_get_num_threads64_", "openblas_set_num_threads64_"))


def _libraries():
    root = os.path.dirname(np.__file__)
    paths = (glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*openblas*")) +
             glob.glob(os.path.join(root, ".dylibs", "*openblas*")))
    for path in sorted(paths):
        try:
            yield ctypes.CDLL(path)
        except OSError:
            continue


def _find(symbols):
    """The first pair of ``symbols`` that NumPy's bundled OpenBLAS exports, as
    ctypes functions, or None."""
    for lib in _libraries():
        for first, second in symbols:
            try:
                return getattr(lib, first), getattr(lib, second)
            except AttributeError:
                continue
    return None


def _find_gemm():
    """(sgemm, dgemm) addresses of NumPy's bundled ILP64 CBLAS, or None."""
    found = _find(_SYMBOLS)
    return found and tuple(ctypes.cast(f, ctypes.c_void_p).value for f in found)


GEMM = _find_gemm()
#: (get_num_threads, set_num_threads) of that OpenBLAS, as ctypes functions, or None
THREADS = _find(_THREAD_SYMBOLS)

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
