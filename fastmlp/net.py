"""What a step engine is built from: an immutable description of the network
(:class:`Net`) and the buffers it may touch (:class:`Buffers`), never the
model object itself.

The model makes one :class:`Net` when it is built (architecture and loss do
not change afterwards) and one :class:`Buffers` each time its parameters are
placed on a device (at build time and by ``to``); setting the model's
``dropout_rng`` changes that generator in its Buffers, which the engines
share.
"""

from dataclasses import dataclass, field

import numpy as np

from fastmlp.kernels.activations import Activation
from fastmlp.kernels.losses import Loss
from fastmlp.layout import Layout


@dataclass(frozen=True)
class Net:
    """The network as engines see it: the flat-buffer ``layout`` (widths and
    bias), the hidden ``activation`` and the ``loss`` (op specs, see
    ``fastmlp.kernels``), the loss ``reduction`` ("mean" or "sum"), the
    ``dtype``, one ``dropout`` rate per hidden layer, and the ``precision``
    of float32 products on CUDA ("fp32", or "tf32": tensor cores, in the
    engines that can)."""

    layout: Layout
    activation: Activation
    loss: Loss
    reduction: str
    dtype: np.dtype
    dropout: tuple
    precision: str = "fp32"

    @property
    def sizes(self):
        """Layer widths, input first."""
        return self.layout.sizes

    @property
    def bias(self):
        """Whether the layers have biases."""
        return self.layout.bias

    def loss_scale(self, count):
        """The factor that turns the summed loss of ``count`` samples (or
        their weights' sum) into the reduced one."""
        return self.loss.scale(self.reduction, count, self.sizes[-1])


@dataclass
class Buffers:
    """What an engine may touch: the ``backend`` (device, ``xp``), the op
    table ``ops``, the flat ``params`` and ``grads`` buffers and their
    per-layer views (``weights``, ``biases``; ``grad_weights``,
    ``grad_biases``), and the device ``dropout_rng`` (the one field that
    may be replaced: engines read it at each step)."""

    backend: object
    ops: object
    params: object
    grads: object
    dropout_rng: object
    layout: Layout
    weights: list = field(init=False, repr=False)
    biases: list = field(init=False, repr=False)
    grad_weights: list = field(init=False, repr=False)
    grad_biases: list = field(init=False, repr=False)

    def __post_init__(self):
        self.weights, self.biases = self.layout.views(self.params)
        self.grad_weights, self.grad_biases = self.layout.views(self.grads)
