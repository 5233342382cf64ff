"""Sparse input rows (CSR) times dense matrices, for the first layer of a step
on sparse inputs (``fastmlp/sparse.py``): ``X W`` and ``X^T dZ``, written into
the caller's arrays. SciPy's own products allocate their result (for
``X^T dZ`` a (fan_in, fan_out) matrix per step: 25.6 MB at 100,000 x 64 in
float32) and go through a transposed view; these write in place. The
additions run in SciPy's order (row by row, then along each row's stored
entries), so the results are SciPy's bit for bit."""

from .cpu_math import jit


@jit(nogil=True)
def csr_times(indptr, indices, data, w, out):
    """``out = X W`` for the CSR rows ``X`` (``indptr``, ``indices``, ``data``)."""
    n, h = out.shape
    zero = out.dtype.type(0)
    for i in range(n):
        for j in range(h):
            out[i, j] = zero
        for k in range(indptr[i], indptr[i + 1]):
            v, row = data[k], w[indices[k]]
            for j in range(h):
                out[i, j] += v * row[j]


@jit(nogil=True)
def csr_t_times(indptr, indices, data, dz, out):
    """``out = X^T dZ`` for the CSR rows ``X``: each row's stored entries
    scatter ``v * dZ[i]`` into the rows of ``out`` their columns name."""
    n, h = dz.shape
    out[...] = 0
    for i in range(n):
        g = dz[i]
        for k in range(indptr[i], indptr[i + 1]):
            v, target = data[k], out[indices[k]]
            for j in range(h):
                target[j] += v * g[j]
