"""Where every layer's weights and bias live in the flat parameter buffer.

The model keeps all parameters in one flat array, ``[W0, b0, W1, b1, ...]``
(each W row-major, of shape (fan_in, fan_out); no b when the model has no
biases), and its gradients in a second array of the same layout. This is
the one definition of that layout: the model's per-layer views, the
checkpoint code and every compiled kernel read their offsets from here.
"""

import numpy as np


class Layout:
    """Offsets of each W and b in a flat buffer, for layer widths ``sizes``.

    ``w_at[l]`` and ``b_at[l]`` are the element offsets of layer ``l``'s W
    and b (``b_at[l]`` is where b would start when ``bias`` is False);
    ``size`` is the buffer's length. ``arrays()`` gives the widths and the
    offsets as int64 arrays, the form compiled kernels take.
    """

    def __init__(self, sizes, bias=True):
        self.sizes = tuple(int(s) for s in sizes)
        self.bias = bool(bias)
        w_at, b_at, at = [], [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            w_at.append(at)
            at += fan_in * fan_out
            b_at.append(at)
            if self.bias:
                at += fan_out
        self.w_at, self.b_at, self.size = tuple(w_at), tuple(b_at), at
        self._arrays = tuple(np.asarray(a, np.int64) for a in (self.sizes, w_at, b_at))
        for a in self._arrays:
            a.flags.writeable = False

    @property
    def n_layers(self):
        """Number of weight layers (``len(sizes) - 1``)."""
        return len(self.sizes) - 1

    def arrays(self):
        """``(sizes, w_at, b_at)`` as read-only int64 arrays, for kernels."""
        return self._arrays

    def views(self, flat):
        """``(weights, biases)``: per-layer views into ``flat`` (a 1-D array of
        ``size`` elements); ``biases`` is ``[None] * n_layers`` without biases."""
        weights, biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            w, b = self.w_at[i], self.b_at[i]
            weights.append(flat[w:w + fan_in * fan_out].reshape(fan_in, fan_out))
            biases.append(flat[b:b + fan_out] if self.bias else None)
        return weights, biases

    def __repr__(self):
        return f"Layout({list(self.sizes)}, bias={self.bias})"
