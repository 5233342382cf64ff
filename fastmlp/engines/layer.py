"""The layer engine: the general path, one layer at a time, on any device.

Each layer's product is ``xp.matmul`` (BLAS or cuBLAS) and everything else
an op of the model's op table (reference or fused), so this engine covers
every activation, loss, dropout rate and optimizer, on the CPU and on CUDA.
It is also the ground truth the compiled engines are tested against.
"""

from fastmlp.engines.base import Engine


def forward(model, x, dropout_rng=None):
    """The forward pass of ``model`` on prepared inputs ``x`` (n, n_in):
    ``(ins, outs, keeps)``, each layer's input (after dropout), its output
    (the last holds the logits) and its scaled dropout mask (or None).
    Dropout applies when ``dropout_rng`` (a device Generator) is given."""
    xp, ops, dtype = model.backend.xp, model.ops, model.dtype
    ins, outs, keeps = [x], [], []
    last = len(model.weights) - 1
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        z = xp.matmul(ins[-1], w)
        if i == last:
            outs.append(ops.bias_act("identity", z, b))
            break
        outs.append(ops.bias_act(model.activation, z, b))
        rate = model.dropout[i]
        keep = None
        if dropout_rng is not None and rate > 0:   # inverted: scaled now, not at inference
            keep = dropout_rng.random(z.shape, dtype=dtype) >= rate
            keep = keep.astype(dtype) * dtype.type(1 / (1 - rate))
            z = z * keep
        ins.append(z)
        keeps.append(keep)
    return ins, outs, keeps


class LayerEngine(Engine):
    """Layer by layer: xp matmuls between the op table's ops."""

    name = "layer"
    summary = "layer by layer, xp.matmul between the op table's ops: covers every case"

    def __init__(self, model, case):
        super().__init__(model, case)
        self._gweights, self._gbiases = model.layout.views(model.grads)

    def grad(self, x, y, targets=None, weights=None):
        m = self.model
        ins, outs, keeps = forward(m, x, m.dropout_rng if self.case.train else None)
        z = outs[-1]
        hits = m.loss_fn.hits(z, targets, weights) if targets is not None else None
        count = z.shape[0] if weights is None else weights.sum()   # stays on the device
        loss = m.ops.loss(m.loss, z, y, m.loss_fn.scale(m.reduction, count, z.shape[1]), weights)
        self._backward(ins, outs, keeps, z)
        return loss, hits

    def _backward(self, ins, outs, keeps, dz):
        """Fill the gradient buffer from the output gradient ``dz``."""
        m = self.model
        xp, ops, last = m.backend.xp, m.ops, len(m.weights) - 1
        for i in range(last, -1, -1):
            # dot, not matmul: NumPy's matmul is ~4x slower for the (n, 1) @ (1, m)
            # outer product that a batch of one makes.
            xp.dot(ins[i].T, dz, out=self._gweights[i])
            if i == last and m.bias:
                ops.bias_grad(dz, self._gbiases[i])
            if i == 0:
                break
            da = xp.matmul(dz, m.weights[i].T)
            if keeps[i - 1] is not None:
                da *= keeps[i - 1]
            dz = ops.act_grad(m.activation, da, outs[i - 1], self._gbiases[i - 1])
