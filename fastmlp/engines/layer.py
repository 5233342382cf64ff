"""The layer engine: the general path, one layer at a time, on any device.

Each layer's product is ``xp.matmul`` (BLAS or cuBLAS) and everything else
an op of the model's op table (reference or fused), so this engine covers
every activation, loss, dropout rate and optimizer, on the CPU and on CUDA.
It is also the ground truth the compiled engines are tested against.
"""

from fastmlp.engines.base import Engine
from fastmlp.kernels.activations import IDENTITY
from fastmlp.sparse import is_sparse, t_times_into, times


def forward(net, bufs, x, dropout_rng=None):
    """The forward pass of the network ``net`` with parameters ``bufs`` on
    prepared inputs ``x`` (n, n_in): ``(ins, outs, keeps)``, each layer's
    input (after dropout), its output (the last holds the logits) and its
    scaled dropout mask (or None). Dropout applies when ``dropout_rng`` (a
    device Generator) is given."""
    xp, ops, dtype = bufs.backend.xp, bufs.ops, net.dtype
    ins, outs, keeps = [x], [], []
    last = len(bufs.weights) - 1
    for i, (w, b) in enumerate(zip(bufs.weights, bufs.biases)):
        # sparse input rows (SciPy CSR, on the CPU): SciPy's sparse-times-dense product
        z = times(x, w) if i == 0 and is_sparse(x) else xp.matmul(ins[-1], w)
        if i == last:
            outs.append(ops.bias_act(IDENTITY, z, b))
            break
        outs.append(ops.bias_act(net.activation, z, b))
        rate = net.dropout[i]
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
    sparse_inputs = True

    def grad(self, x, y, targets=None, weights=None):
        net, bufs = self.net, self.bufs
        ins, outs, keeps = forward(net, bufs, x, bufs.dropout_rng if self.case.train else None)
        z = outs[-1]
        hits = net.loss.head.hits(z, targets, weights) if targets is not None else None
        count = z.shape[0] if weights is None else weights.sum()   # stays on the device
        loss = bufs.ops.loss(net.loss, z, y, net.loss_scale(count), weights)
        self._backward(ins, outs, keeps, z)
        return loss, hits

    def _backward(self, ins, outs, keeps, dz):
        """Fill the gradient buffer from the output gradient ``dz``."""
        net, bufs = self.net, self.bufs
        xp, ops, last = bufs.backend.xp, bufs.ops, len(bufs.weights) - 1
        gw, gb = bufs.grad_weights, bufs.grad_biases
        for i in range(last, -1, -1):
            # dot, not matmul: NumPy's matmul is ~4x slower for the (n, 1) @ (1, m)
            # outer product that a batch of one makes.
            if i == 0 and is_sparse(ins[0]):
                t_times_into(ins[0], dz, gw[0])     # X^T dZ over the non-zero inputs only
            else:
                xp.dot(ins[i].T, dz, out=gw[i])
            if i == last and net.bias:
                ops.bias_grad(dz, gb[i])
            if i == 0:
                break
            da = xp.matmul(dz, bufs.weights[i].T)
            if keeps[i - 1] is not None:
                da *= keeps[i - 1]
            dz = ops.act_grad(net.activation, da, outs[i - 1], gb[i - 1])
