"""Hidden-layer activations: names, and the weight init that suits each.

The maths (forward in place, derivative from the output) lives in the op
table (``fastmlp.kernels.reference.ACTIVATIONS`` and its fused twins); this
table holds what the model needs to know about each name.
"""

#: name -> default weight init
ACTIVATIONS = {
    "sigmoid": "xavier",
    "tanh": "xavier",
    "relu": "he",
    "identity": "xavier",
}


def check(name):
    """``name`` if it is a known activation, else ValueError listing them."""
    if not isinstance(name, str):
        raise TypeError(f"activation must be a string, got {type(name).__name__}")
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)}")
    return name
