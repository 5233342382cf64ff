"""Hidden activations: each declared once, with every implementation of its maths.

An :class:`Activation` spec holds, for one activation:

- ``reference``: the ground truth in plain ``xp`` calls (NumPy or CuPy):
  the forward pass in place (``A = f(Z)``), and the derivative written from
  the layer's *output* (``dZ = dA * f'(A)``, sigmoid' = A(1 - A), tanh' =
  1 - A^2, relu' = [A > 0]), so Z need not be kept;
- ``cpu``: the same maths on one scalar, as plain Python that Numba compiles
  and inlines into every fused CPU loop (``cpu_math.act`` dispatches on
  ``code``, a switch generated from :data:`ACTIVATIONS`); the constants come
  in typed (``zero``, ``one``, ``floor``) so that float32 stays float32;
- ``device``: the maths that NVIDIA Warp compiles for the GPU (and for the
  CPU in CI): by default the same scalar functions as ``cpu``, which
  ``warp_ops.device_func`` hands to Warp with Warp's ``exp`` and ``tanh``;
- what the rest of fastmlp needs to know: the default weight ``init``, the
  PyTorch module and ONNX operator that export it (None: nothing to emit),
  scikit-learn's name for it, and the dtypes whose fused CPU forward pass
  beats NumPy's (``cpu_fused``: NumPy's SIMD ``tanh``, and ``exp`` in float64,
  beat Numba's scalar libm calls).

``FLOOR`` is the sigmoid's floor per dtype: ``exp(-floor)`` is still finite
there, and the sigmoid is below the smallest normal float. Kernels are
leaves: nothing here imports fastmlp (or Numba).
"""

import math
from dataclasses import dataclass
from typing import Optional

from .scalar import fast_exp

#: the sigmoid's argument is floored here, per dtype, where exp of its negation is finite
FLOOR = {"float32": -88.0, "float64": -708.0}


@dataclass(frozen=True)
class Activation:
    """One activation: its maths per implementation and what exports and
    wrappers call it. ``code`` is its index in :data:`ACTIVATIONS`, which the
    compiled loops take."""

    name: str
    code: int
    reference: tuple            # (forward(xp, z), grad(xp, da, a)), in place
    cpu: tuple                  # (forward(v, zero, one, floor), grad(g, a, zero, one)) -> scalar
    init: str
    torch: str
    onnx: Optional[str]
    sklearn: str
    cpu_fused: tuple = ("float32", "float64")
    device: Optional[tuple] = None

    def __post_init__(self):
        if self.device is None:            # one scalar source for Numba and for Warp
            object.__setattr__(self, "device", self.cpu)

    def forward(self, xp, z):
        """``z <- f(z)`` in place, by the reference maths."""
        self.reference[0](xp, z)

    def grad(self, xp, da, a):
        """``da <- da * f'(z)`` in place, from the output ``a = f(z)``."""
        self.reference[1](xp, da, a)

    def __repr__(self):
        return f"<activation {self.name}>"


# --- sigmoid -------------------------------------------------------------------------

def _sigmoid(xp, z):
    # 1 / (1 + exp(-z)) keeps full relative precision in both tails
    xp.maximum(z, FLOOR[z.dtype.name], out=z)
    xp.negative(z, out=z)
    xp.exp(z, out=z)
    z += 1
    xp.reciprocal(z, out=z)


def _sigmoid_grad(xp, da, a):
    da *= a * (1 - a)


def _sigmoid_cpu(v, zero, one, floor):
    return one / (one + fast_exp(-max(v, floor)))


def _sigmoid_cpu_grad(g, a, zero, one):
    return g * (a * (one - a))


# --- relu ----------------------------------------------------------------------------

def _relu(xp, z):
    xp.maximum(z, 0, out=z)


def _relu_grad(xp, da, a):
    da *= a > 0


def _relu_cpu(v, zero, one, floor):
    return max(v, zero)


def _relu_cpu_grad(g, a, zero, one):
    return g if a > zero else zero


# --- tanh ----------------------------------------------------------------------------

def _tanh(xp, z):
    xp.tanh(z, out=z)


def _tanh_grad(xp, da, a):
    da *= 1 - a * a


def _tanh_cpu(v, zero, one, floor):
    return math.tanh(v)


def _tanh_cpu_grad(g, a, zero, one):
    return g * (one - a * a)


# --- identity ------------------------------------------------------------------------

def _identity(xp, z):
    pass


def _identity_grad(xp, da, a):
    pass


def _identity_cpu(v, zero, one, floor):
    return v


def _identity_cpu_grad(g, a, zero, one):
    return g


SIGMOID = Activation("sigmoid", 0, (_sigmoid, _sigmoid_grad), (_sigmoid_cpu, _sigmoid_cpu_grad),
                     init="xavier", torch="Sigmoid", onnx="Sigmoid", sklearn="logistic",
                     cpu_fused=("float32",))
RELU = Activation("relu", 1, (_relu, _relu_grad), (_relu_cpu, _relu_cpu_grad),
                  init="he", torch="ReLU", onnx="Relu", sklearn="relu")
TANH = Activation("tanh", 2, (_tanh, _tanh_grad), (_tanh_cpu, _tanh_cpu_grad),
                  init="xavier", torch="Tanh", onnx="Tanh", sklearn="tanh", cpu_fused=())
IDENTITY = Activation("identity", 3, (_identity, _identity_grad),
                      (_identity_cpu, _identity_cpu_grad), init="xavier", torch="Identity",
                      onnx=None, sklearn="identity")

#: every activation by name, in code order
ACTIVATIONS = {a.name: a for a in (SIGMOID, RELU, TANH, IDENTITY)}
assert [a.code for a in ACTIVATIONS.values()] == list(range(len(ACTIVATIONS)))


def get(name):
    """The :class:`Activation` called ``name`` (a spec passes through);
    TypeError / ValueError listing the choices otherwise."""
    return lookup("activation", name, ACTIVATIONS, Activation)


def lookup(what, name, table, kind):
    """``table[name]``, or ``name`` itself when it is a ``kind`` (a spec);
    TypeError for what is not a string, ValueError listing the choices."""
    if isinstance(name, kind):
        return name
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}: choose one of {sorted(table)}")
    return table[name]
