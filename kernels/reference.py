"""The op table in plain array-module calls: the ground truth every fused
kernel is tested against.

The maths of each op is declared once, in its spec (``activations.py``,
``losses.py``, ``updates.py``), as plain ``xp`` code that works on NumPy and
CuPy; this table dispatches to those reference implementations. Faster
tables (Numba on the CPU, NVIDIA Warp on either device) subclass it and offer the
same methods with the same in-place contract, using the specs' compiled
implementations where they win.

Conventions, for every op here and in its fused twins:
- activations are applied in place: ``bias_act`` turns Z = A_prev @ W into
  A = f(Z + b) in the same buffer;
- activation derivatives are written from the layer's *output* A (sigmoid'
  = A(1 - A), tanh' = 1 - A^2, relu' = [A > 0]), so Z need not be kept;
- a loss op returns the *sum* of the per-element losses as a 0-d array (no
  host round trip) and, when ``scale`` is given, overwrites the logits with
  ``scale * dLoss/dZ``. The caller picks ``scale`` from the reduction (1/N for
  a mean over samples, 1 for a sum). With per-sample ``weights`` (N,), row i's
  losses and gradient are multiplied by ``weights[i]`` (the caller's scale
  then divides by the weights' sum for a mean).

Nothing here imports fastmlp: kernels are leaves.
"""

from . import activations as _activations
from . import losses as _losses
from . import updates as _updates


class ReferenceOps:
    """The op table written in plain ``xp`` calls.

    Arrays are 2-D, C-contiguous, of one float dtype; ``b`` and ``db`` are 1-D.
    """

    name = "reference"

    def __init__(self, xp):
        self.xp = xp

    def __repr__(self):
        return f"ReferenceOps({self.xp.__name__})"

    # layers
    def bias_act(self, activation, z, b):
        """A = f(Z + b), in place in ``z`` (N, n_out); ``b`` may be None.
        ``activation`` is a spec (``kernels.activations``) or its name."""
        if b is not None:
            z += b
        _activations.get(activation).forward(self.xp, z)
        return z

    def act_grad(self, activation, da, a, db):
        """dZ = dA * f'(A), in place in ``da``; the column sums go to ``db``."""
        _activations.get(activation).grad(self.xp, da, a)
        if db is not None:
            self.xp.sum(da, axis=0, out=db)
        return da

    def bias_grad(self, dz, db):
        """db = column sums of dZ (N, n_out)."""
        self.xp.sum(dz, axis=0, out=db)

    # output
    def loss(self, loss, z, y, scale=None, weights=None):
        """Sum of ``loss`` over logits ``z`` and dense targets ``y`` (N, K),
        each row's terms times ``weights`` (N,) when given.

        With ``scale``, ``z`` is overwritten with ``scale * dLoss/dZ``
        (for cross-entropy that is the fused ``(softmax(Z) - Y) * scale``),
        each row times its weight.
        """
        return _losses.get(loss).value(self.xp, z, y, scale, weights)

    def take_rows(self, a, idx, out):
        """Rows ``idx`` of ``a`` into ``out``, of the same dtype (callers pass
        valid indices)."""
        return self.xp.take(a, idx, axis=0, out=out)

    def gather_scaled(self, a, idx, out, scale):
        """Rows ``idx`` of integer ``a``, cast to ``out``'s dtype and multiplied by
        ``scale``, into ``out`` (compact inputs, gathered per batch)."""
        return self.xp.multiply(self.xp.take(a, idx, axis=0), out.dtype.type(scale), out=out)

    def output(self, loss, z):
        """The output head's probabilities (or values) of ``loss``, in place in ``z``."""
        _losses.get(loss).head.apply(self.xp, z)
        return z

    # optimizer updates: one parameter array, its gradient and state, in place
    # (the maths: ``kernels/updates.py``)
    def sgd(self, p, g, v, lr, momentum, nesterov, weight_decay):
        """SGD with L2 weight decay and (Nesterov) momentum; ``v`` may be None."""
        _updates.SGD.reference(self.xp, p, g, v, lr, momentum, nesterov, weight_decay)

    def adagrad(self, p, g, s, lr, eps, weight_decay):
        """AdaGrad: s += g^2; p -= lr * g / (sqrt(s) + eps)."""
        _updates.ADAGRAD.reference(self.xp, p, g, s, lr, eps, weight_decay)

    def rmsprop(self, p, g, s, lr, alpha, eps, weight_decay):
        """RMSprop: s = alpha s + (1 - alpha) g^2; p -= lr * g / (sqrt(s) + eps)."""
        _updates.RMSPROP.reference(self.xp, p, g, s, lr, alpha, eps, weight_decay)

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t):
        """Adam (L2 decay) or AdamW (``decoupled`` decay) at step ``t`` >= 1."""
        _updates.ADAM.reference(self.xp, p, g, m, v, lr, beta1, beta2, eps, weight_decay,
                                decoupled, t)
