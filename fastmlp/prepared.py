"""What :meth:`fastmlp.MLP.prepare` returns: inputs checked and converted once."""

from typing import NamedTuple


class Prepared(NamedTuple):
    """Inputs checked and converted once by :meth:`MLP.prepare`: ``x`` (N,
    n_in) and dense targets ``y`` (N, K) as device arrays in the model's
    dtype, ``targets``, what the hit count compares predictions with
    (class ids, 0/1 labels; None for regression or without ``y``), and
    per-sample ``weights`` (N,) in the model's dtype, or None."""

    x: object
    y: object = None
    targets: object = None
    weights: object = None
