"""Op tables for fastmlp: ``reference`` (plain xp, the ground truth).

Importable as ``fastmlp.kernels``. Kernels are leaves: nothing here imports
``fastmlp``. Fused Numba tables (``cpu``, ``cuda``) plug into the same seam.
"""
