"""How a fused kernel is held equal to its reference twin: float64 <= 1e-10,
float32 <= 1e-5 relative, per element. Where values are sums (column sums,
GEMM outputs, parameters after updates), an absolute floor of the tolerance
times the array's largest magnitude applies too: a sum that cancels to near
zero differs by summation-order rounding of the large terms, not of itself.
Elementwise results take ``floor=False``: each element is held to its own
relative tolerance, tails included. Shared by test_cpu_kernels.py,
test_engines.py and test_op_twins.py."""

import numpy as np

TOL = {"float64": 1e-10, "float32": 1e-5}
DTYPES = ["float32", "float64"]


def close(a, b, dtype, floor=True, err_msg=""):
    """Assert ``a`` equals the reference ``b`` within the twin tolerance
    (relative only with ``floor=False``)."""
    scale = float(np.max(np.abs(b))) if np.size(b) and floor else 0.0
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=err_msg)


def random(shape, dtype, seed=0, scale=3.0):
    """Seeded normal values of ``shape`` times ``scale``, as ``dtype``."""
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(dtype)
