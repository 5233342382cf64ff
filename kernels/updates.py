"""Optimizer updates: each declared once, with every implementation of its maths.

An :class:`Update` spec holds, for one optimizer's update of one parameter
array from its gradient and state (in place):

- ``reference``: plain ``xp`` calls (NumPy or CuPy), the ground truth;
- ``cpu``: a loop over the flat arrays, plain Python that Numba compiles
  (``cpu_ops.py``); None where the reference is used;
- ``device``: the name of its NVIDIA Warp kernel (``warp_ops.DEVICE``),
  compiled for the GPU and, in CI, for the CPU.

The op tables (``ops.sgd``, ``ops.adam``, ...) dispatch to these; the
optimizers (``fastmlp.optim``) own the state and the step count. A step
engine may run plain SGD itself, folded into its weight-gradient product
(``p -= lr * g`` as ``beta = 1``); that is its own implementation of
:data:`SGD` without momentum or decay. Kernels are leaves: nothing here
imports fastmlp (or Numba).
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Update:
    """One optimizer update: its state ``slots`` and its maths per implementation."""

    name: str
    slots: tuple
    reference: Callable
    cpu: Optional[Callable] = None
    device: Optional[str] = None

    def __repr__(self):
        return f"<update {self.name}>"


def _sgd(xp, p, g, v, lr, momentum, nesterov, weight_decay):
    """SGD with L2 weight decay and (Nesterov) momentum; ``v`` may be None."""
    if weight_decay:
        g = g + weight_decay * p
    if v is not None:
        v *= momentum
        v += g
        g = g + momentum * v if nesterov else v
    p -= lr * g


#: float32's smallest normal number: the CPU loops flush decaying state below it to zero.
#: A parameter whose gradient is 0 (an MNIST border pixel's weights, a dead ReLU's) sees its
#: momentum decay by beta each step into subnormal numbers, where each multiply costs ~100x
#: on x86: Adam's update took 255 us a step instead of 107 us late in an MNIST epoch. Such
#: state moves no parameter (lr * 1e-38 / eps is below float32's resolution of any weight).
FLUSH = 1.1754943508222875e-38


def _sgd_cpu(p, g, v, lr, momentum, nesterov, weight_decay, has_v):
    flush = p.dtype.type(FLUSH)
    for i in range(p.size):
        gi = g[i] + weight_decay * p[i]
        if has_v:
            vi = momentum * v[i] + gi
            vi = vi * (abs(vi) >= flush)    # see FLUSH
            v[i] = vi
            gi = gi + momentum * vi if nesterov else vi
        p[i] -= lr * gi


def _adagrad(xp, p, g, s, lr, eps, weight_decay):
    """AdaGrad: s += g^2; p -= lr * g / (sqrt(s) + eps)."""
    if weight_decay:
        g = g + weight_decay * p
    s += g * g
    p -= lr * g / (xp.sqrt(s) + eps)


def _rmsprop(xp, p, g, s, lr, alpha, eps, weight_decay):
    """RMSprop: s = alpha s + (1 - alpha) g^2; p -= lr * g / (sqrt(s) + eps)."""
    if weight_decay:
        g = g + weight_decay * p
    s *= alpha
    s += (1 - alpha) * g * g
    p -= lr * g / (xp.sqrt(s) + eps)


def _scaled_sq_cpu(p, g, s, lr, alpha, beta, eps, weight_decay):
    # AdaGrad (alpha = beta = 1) and RMSprop (beta = 1 - alpha), as the device kernel
    flush = p.dtype.type(FLUSH)
    for i in range(p.size):
        gi = g[i] + weight_decay * p[i]
        si = alpha * s[i] + beta * gi * gi
        si = si * (si >= flush)             # see FLUSH: RMSprop's mean decays by alpha
        s[i] = si
        p[i] -= lr * gi / (math.sqrt(si) + eps)


def _adam(xp, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t):
    """Adam (L2 decay) or AdamW (``decoupled`` decay) at step ``t`` >= 1."""
    if weight_decay and decoupled:
        p *= 1 - lr * weight_decay
    elif weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    step = lr / (1 - beta1 ** t)
    p -= step * m / (xp.sqrt(v / (1 - beta2 ** t)) + eps)


def _adam_cpu(p, g, m, v, lr, beta1, beta2, c1, c2, eps, weight_decay, decoupled, bc1, bc2):
    # c1, c2: 1 - beta1, 1 - beta2, and bc1, bc2: the bias corrections 1 - beta ** t, each
    # computed in float64 by the caller, then cast: float32's 1 - float32(0.999) is 1.3e-5 off
    # 0.001, which moved float32 fits 20x further from float64 ones than scikit-learn's
    one = p.dtype.type(1)
    step = lr / bc1
    inv_bc2 = one / bc2
    decay = one - lr * weight_decay
    flush = p.dtype.type(FLUSH)
    for i in range(p.size):
        gi = g[i]
        if decoupled:
            p[i] *= decay
        else:
            gi += weight_decay * p[i]
        mi = beta1 * m[i] + c1 * gi
        vi = beta2 * v[i] + c2 * gi * gi
        mi = mi * (abs(mi) >= flush)        # see FLUSH; a product, not a branch: it vectorizes
        vi = vi * (vi >= flush)
        m[i] = mi
        v[i] = vi
        p[i] -= step * mi / (math.sqrt(vi * inv_bc2) + eps)


SGD = Update("sgd", ("velocity",), _sgd, cpu=_sgd_cpu, device="sgd")
ADAGRAD = Update("adagrad", ("sum_sq",), _adagrad, cpu=_scaled_sq_cpu, device="scaled_sq")
RMSPROP = Update("rmsprop", ("mean_sq",), _rmsprop, cpu=_scaled_sq_cpu, device="scaled_sq")
ADAM = Update("adam", ("m", "v"), _adam, cpu=_adam_cpu, device="adam")

#: every update by name
UPDATES = {u.name: u for u in (SGD, ADAGRAD, RMSPROP, ADAM)}
