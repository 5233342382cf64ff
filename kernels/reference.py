"""Plain array-module ops: the ground truth every fused kernel is tested against.

Each op is written once against ``xp`` (NumPy or CuPy) and works on both. The
op table is an ``ReferenceOps(xp)`` instance; faster tables (Numba on the CPU,
numba.cuda on the GPU) offer the same methods with the same in-place contract.

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


# --- hidden activations: forward in place, derivative from the output -------

def _sigmoid(xp, z):
    # 1 / (1 + exp(-z)) keeps full relative precision in both tails; the floor
    # keeps exp(-z) finite (sigmoid is below the smallest normal float there).
    xp.maximum(z, -88.0 if z.dtype.itemsize == 4 else -708.0, out=z)
    xp.negative(z, out=z)
    xp.exp(z, out=z)
    z += 1
    xp.reciprocal(z, out=z)


def _sigmoid_grad(xp, da, a):
    da *= a * (1 - a)


def _relu(xp, z):
    xp.maximum(z, 0, out=z)


def _relu_grad(xp, da, a):
    da *= a > 0


def _tanh(xp, z):
    xp.tanh(z, out=z)


def _tanh_grad(xp, da, a):
    da *= 1 - a * a


def _identity(xp, z):
    pass


def _identity_grad(xp, da, a):
    pass


ACTIVATIONS = {
    "sigmoid": (_sigmoid, _sigmoid_grad),
    "relu": (_relu, _relu_grad),
    "tanh": (_tanh, _tanh_grad),
    "identity": (_identity, _identity_grad),
}


# --- output losses: per-element losses, gradient times scale in place --------

def _log_softmax(xp, z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy(xp, z, y, scale):
    logp = _log_softmax(xp, z)
    loss = -(y * logp)
    if scale is not None:
        xp.exp(logp, out=z)          # P = softmax(z)
        z -= y
        z *= scale                   # (P - Y) * scale
    return loss


def _binary_cross_entropy(xp, z, y, scale):
    # log(1 + exp(-|z|)) is the stable form of the softplus tail.
    loss = xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
    if scale is not None:
        _sigmoid(xp, z)
        z -= y
        z *= scale
    return loss


def _mse(xp, z, y, scale):
    d = z - y
    loss = d * d
    if scale is not None:
        xp.multiply(d, 2 * scale, out=z)
    return loss


def _l1(xp, z, y, scale):
    d = z - y
    loss = xp.abs(d)
    if scale is not None:
        xp.sign(d, out=z)
        z *= scale
    return loss


def _softmax(xp, z):
    xp.exp(_log_softmax(xp, z), out=z)


LOSSES = {
    "cross_entropy": (_cross_entropy, _softmax),
    "binary_cross_entropy": (_binary_cross_entropy, _sigmoid),
    "mse": (_mse, _identity),
    "l1": (_l1, _identity),
}


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
        """A = f(Z + b), in place in ``z`` (N, n_out); ``b`` may be None."""
        if b is not None:
            z += b
        ACTIVATIONS[activation][0](self.xp, z)
        return z

    def act_grad(self, activation, da, a, db):
        """dZ = dA * f'(A), in place in ``da``; the column sums go to ``db``."""
        ACTIVATIONS[activation][1](self.xp, da, a)
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
        terms = LOSSES[loss][0](self.xp, z, y, scale)
        if weights is None:
            return terms.sum()
        if scale is not None:
            z *= weights[:, None]
        return (terms.sum(axis=1) * weights).sum()

    def take_rows(self, a, idx, out):
        """Rows ``idx`` of ``a`` into ``out``, of the same dtype (callers pass
        valid indices)."""
        return self.xp.take(a, idx, axis=0, out=out)

    def gather_scaled(self, a, idx, out, scale):
        """Rows ``idx`` of integer ``a``, cast to ``out``'s dtype and multiplied by
        ``scale``, into ``out`` (compact inputs, gathered per batch)."""
        return self.xp.multiply(self.xp.take(a, idx, axis=0), out.dtype.type(scale), out=out)

    def output(self, loss, z):
        """The output activation that belongs to ``loss``, in place in ``z``."""
        LOSSES[loss][1](self.xp, z)
        return z

    # optimizer updates: one parameter array, its gradient and state, in place
    def sgd(self, p, g, v, lr, momentum, nesterov, weight_decay):
        """SGD with L2 weight decay and (Nesterov) momentum; ``v`` may be None."""
        if weight_decay:
            g = g + weight_decay * p
        if v is not None:
            v *= momentum
            v += g
            g = g + momentum * v if nesterov else v
        p -= lr * g

    def adagrad(self, p, g, s, lr, eps, weight_decay):
        """AdaGrad: s += g^2; p -= lr * g / (sqrt(s) + eps)."""
        if weight_decay:
            g = g + weight_decay * p
        s += g * g
        p -= lr * g / (self.xp.sqrt(s) + eps)

    def rmsprop(self, p, g, s, lr, alpha, eps, weight_decay):
        """RMSprop: s = alpha s + (1 - alpha) g^2; p -= lr * g / (sqrt(s) + eps)."""
        if weight_decay:
            g = g + weight_decay * p
        s *= alpha
        s += (1 - alpha) * g * g
        p -= lr * g / (self.xp.sqrt(s) + eps)

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, t):
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
        p -= step * m / (self.xp.sqrt(v / (1 - beta2 ** t)) + eps)
