"""Scalar helpers for the compiled maths that op specs declare.

Plain Python, with no Numba import, so that the specs (``activations.py``,
``losses.py``, ``updates.py``) import without Numba; ``vexp.py`` registers
the Numba implementation of :func:`fast_exp`, which the compiled kernels
use when they inline a spec's maths.
"""

import math


def fast_exp(x):
    """e**x. Compiled, float32 ``x`` takes a vectorisable polynomial
    (``vexp.py``); anything else ``math.exp``."""
    return math.exp(x)
