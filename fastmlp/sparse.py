"""Sparse inputs: SciPy CSR, CSC and COO (matrices and arrays).

:meth:`fastmlp.MLP.prepare` keeps sparse ``x`` as CSR rows in host memory, in
the model's dtype (a CSR already in that dtype is not copied), and it is
never densified whole. Each batch takes its rows from it. Then one of two
things happens:

- **Sparse path** (CPU, inputs sparse enough): the batch stays a CSR. The
  first layer's two products (``X W`` forward, ``X^T dZ`` for its weight
  gradient) are SciPy's sparse-times-dense products, and the ``layer``
  engine runs the step.
- **Dense path** (otherwise): the batch is densified into a buffer made once
  and moved to the device, and any engine runs it.

:data:`SPARSE_BELOW` says where one beats the other.
"""

import numpy as np

#: the share of non-zero inputs below which the first layer runs on the sparse rows.
#: Measured on the first layer's two products (batch 256, 64 units, one thread, float32,
#: /tmp/sp.py in issue 24's note): at 784 and 5,000 inputs the sparse products were
#: faster up to 10% non-zeros (2.8-5.9x at 1%); at 50,000 inputs up to 3% (1.8x at 3%,
#: 5.2x at 1%); at 10% there, and at 30% everywhere, densifying won (up to 4.3x).
SPARSE_BELOW = 0.05

#: rows densified at a time when a sparse ``x`` is evaluated on the dense path
#: (about 16 MB of float32 at a time, however wide the rows)
DENSE_CHUNK_ELEMENTS = 1 << 22


def is_sparse(a):
    """Whether ``a`` is a SciPy sparse matrix or array."""
    if type(a).__module__.startswith("scipy.sparse"):
        import scipy.sparse
        return scipy.sparse.issparse(a)
    return False


def density(csr):
    """The share of non-zero entries of ``csr``."""
    rows, cols = csr.shape
    return csr.nnz / max(1, rows * cols)


def as_rows(x, dtype, scale=1.0):
    """``x`` (sparse, any format) as canonical CSR rows in ``dtype``, multiplied
    by ``scale``; the caller's matrix is never modified, and a CSR already in
    that form and dtype (with ``scale`` 1) is returned as it is."""
    csr = x.tocsr()                       # no copy for a CSR
    if csr.dtype != dtype:
        csr = csr.astype(dtype)
    if not csr.has_canonical_format:      # sorted, no duplicates: on a copy
        csr = csr.copy() if csr is x else csr
        csr.sum_duplicates()
    if scale != 1.0:
        csr = csr * dtype.type(scale)
    return csr


def times(x, w):
    """``x @ w`` for CSR rows ``x`` and a host array ``w``: a new (n, fan_out) array."""
    out = np.empty((x.shape[0], w.shape[1]), w.dtype)
    if _compiled(x, w, out):
        from fastmlp.kernels.cpu_sparse import csr_times
        csr_times(x.indptr, x.indices, x.data, w, out)
        return out
    return np.asarray(x @ w)


def t_times_into(x, dz, out):
    """``out[...] = x.T @ dz`` for CSR rows ``x``, written in place (a weight
    gradient: no (fan_in, fan_out) temporary per step)."""
    if _compiled(x, dz, out):
        from fastmlp.kernels.cpu_sparse import csr_t_times
        csr_t_times(x.indptr, x.indices, x.data, dz, out)
    else:
        out[...] = x.T @ dz


def _compiled(x, a, out):
    return (x.format == "csr" and x.dtype == a.dtype == out.dtype
            and isinstance(a, np.ndarray) and a.flags.c_contiguous and out.flags.c_contiguous)


def finite(csr):
    """Whether every stored value of ``csr`` is finite."""
    return bool(np.isfinite(csr.data).all())
