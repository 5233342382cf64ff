"""The multi-layer perceptron: parameters, forward, backward, inference.

All parameters live in one flat device buffer, and ``weights[i]`` /
``biases[i]`` are views into it, so an optimizer updates the whole network in
one call per state array and a checkpoint is one contiguous copy. Gradients
mirror that layout in a second buffer. Every array operation goes through
``self.backend`` (``xp`` and the op table): nothing here knows the device.
"""

from numbers import Integral, Real

import numpy as np

from fastmlp import activations, losses
from fastmlp.backend import get_backend

_DTYPES = ("float32", "float64")
_INITS = ("xavier", "glorot", "he", "normal")
_PREDICT_CHUNK = 8192


def _check_sizes(sizes):
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"sizes must be a list of layer widths such as [784, 128, 10], "
                        f"got {type(sizes).__name__}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {sizes}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, Integral):
            raise TypeError(f"layer widths must be integers, got {s!r} in {sizes}")
        if s < 1:
            raise ValueError(f"layer widths must be >= 1, got {s} in {sizes}")
    return [int(s) for s in sizes]


def _check_dtype(dtype):
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    return np.dtype(name)


def _check_dropout(dropout, n_hidden):
    if isinstance(dropout, (list, tuple)):
        rates = list(dropout)
    elif n_hidden == 0 and dropout:
        raise ValueError("dropout applies after hidden layers, and this model has none")
    else:
        rates = [dropout] * n_hidden
    if len(rates) != n_hidden:
        raise ValueError(f"dropout needs one rate per hidden layer ({n_hidden}), got {dropout!r}")
    for p in rates:
        if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p < 1:
            raise ValueError(f"dropout rates must be numbers in [0, 1), got {dropout!r}")
    return tuple(float(p) for p in rates)


def _check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise TypeError(f"seed must be None or a non-negative integer, got {seed!r}")
    return int(seed)


def _check_init(init, activation):
    if init is None:
        return activations.ACTIVATIONS[activation]
    if isinstance(init, Real) and not isinstance(init, bool):
        if not init > 0:
            raise ValueError(f"a numeric init is the std of a normal init and must be > 0, got {init}")
        return float(init)
    if init not in _INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {list(_INITS)} or a float std")
    return init


def _init_weight(rng, fan_in, fan_out, init):
    if init in ("xavier", "glorot"):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out))
    std = {"he": np.sqrt(2.0 / fan_in), "normal": 0.01}.get(init, init)
    return rng.normal(0.0, std, (fan_in, fan_out))


class MLP:
    """A fully connected network trained by backpropagation.

    Args:
        sizes: layer widths, input first: ``[784, 128, 64, 10]``.
        activation: hidden activation, "relu", "sigmoid", "tanh" or "identity".
        loss: "cross_entropy" (softmax output), "binary_cross_entropy"
            (sigmoid output, on logits), "mse" or "l1" (identity output).
        reduction: "mean" or "sum" of the per-sample losses.
        init: "xavier" (alias "glorot", uniform), "he" (normal), "normal"
            (std 0.01), or a float std; default "he" for relu, else "xavier".
        dtype: "float32" (default) or "float64".
        device: "cpu", "cuda", "cuda:N" or "auto".
        seed: seeds the init, the shuffling and dropout; None for fresh entropy.
        dropout: inverted-dropout rate after each hidden layer (one float, or
            one per hidden layer); applied only while training.
        bias: whether layers have biases.
        kernels: the op table: "auto" (the fastest measured for the device),
            "fused" (the Numba kernels) or "reference" (plain array code, the
            ground truth).

    ``weights[i]`` (fan_in, fan_out) and ``biases[i]`` (fan_out,) are the live
    parameter arrays on the model's device: change them in place.
    """

    def __init__(self, sizes, activation="relu", loss="cross_entropy", *, reduction="mean",
                 init=None, dtype="float32", device="auto", seed=None, dropout=0.0, bias=True,
                 kernels="auto"):
        self.sizes = _check_sizes(sizes)
        self.activation = activations.check(activation)
        self._loss = losses.get(loss, reduction)
        if self._loss.name == "cross_entropy" and self.sizes[-1] < 2:
            raise ValueError("cross_entropy needs at least 2 outputs; for one output use "
                             "loss='binary_cross_entropy'")
        self.reduction = reduction
        self.init = _check_init(init, self.activation)
        self.dtype = _check_dtype(dtype)
        self.dropout = _check_dropout(dropout, len(self.sizes) - 2)
        self.bias = bool(bias)
        self.seed = _check_seed(seed)
        self.optimizer = None
        self.backend = get_backend(device)
        self.kernels = kernels
        self.ops = self.backend.ops_for(kernels)
        # The host RNG draws the init and the shuffles; the device RNG, dropout masks.
        self._host_rng = np.random.default_rng(self.seed)
        parts = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            parts.append(_init_weight(self._host_rng, fan_in, fan_out, self.init).ravel())
            if self.bias:
                parts.append(np.zeros(fan_out))
        self._dropout_seed = int(self._host_rng.integers(2**63))
        self._adopt(self._place(self.backend, np.concatenate(parts)))

    # --- parameters -------------------------------------------------------

    def _place(self, be, flat):
        """Parameter and gradient buffers and a dropout RNG on backend ``be``."""
        with be.scope():
            params = be.xp.array(be.asarray(flat, dtype=self.dtype))   # always a copy
            return params, be.xp.zeros_like(params), be.rng(self._dropout_seed)

    def _adopt(self, placed):
        """Make ``_place``'s buffers the model's, with per-layer views."""
        self._params, self._grads, self._rng = placed
        self.weights, self.biases = self._views(self._params)
        self._gweights, self._gbiases = self._views(self._grads)

    def _views(self, flat):
        weights, biases, at = [], [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            weights.append(flat[at:at + fan_in * fan_out].reshape(fan_in, fan_out))
            at += fan_in * fan_out
            if self.bias:
                biases.append(flat[at:at + fan_out])
                at += fan_out
        return weights, biases if self.bias else [None] * len(weights)

    @property
    def loss(self):
        """The loss name."""
        return self._loss.name

    @property
    def n_params(self):
        """Number of trainable scalars."""
        return int(self._params.size)

    def config(self):
        """The constructor arguments that rebuild this architecture."""
        return {"sizes": self.sizes, "activation": self.activation, "loss": self.loss,
                "reduction": self.reduction, "init": self.init, "dtype": self.dtype.name,
                "dropout": list(self.dropout), "bias": self.bias, "seed": self.seed,
                "kernels": self.kernels}

    def __repr__(self):
        return (f"MLP({self.sizes}, activation={self.activation!r}, loss={self.loss!r}, "
                f"dtype={self.dtype.name!r}, device={self.backend.name!r})")

    def to(self, device):
        """Move parameters (and optimizer state) to ``device``; returns self."""
        new = get_backend(device)
        if new is self.backend:
            return self
        old, ops = self.backend, new.ops_for(self.kernels)
        placed = self._place(new, old.to_numpy(self._params))    # nothing changes until all is moved
        opt = self.optimizer
        if opt is not None and opt.state is not None:
            with new.scope():
                moved = {k: new.asarray(old.to_numpy(a)) for k, a in opt.state_arrays().items()}
                opt.load_state([placed[0]], moved, opt.t, ops)
        self.backend, self.ops = new, ops
        self._adopt(placed)
        return self

    # --- input checks (before anything changes) ---------------------------

    def _as_x(self, x):
        n_in = self.sizes[0]
        try:
            a = self.backend.asarray(x, dtype=self.dtype)
        except TypeError as e:
            raise TypeError(f"x must hold numbers: {e}") from None
        if a.ndim == 1 and n_in == 1:
            a = a.reshape(-1, 1)
        if a.ndim != 2:
            hint = " (flatten it with x.reshape(len(x), -1))" if a.ndim > 2 else ""
            raise ValueError(f"x must be 2-D (n_samples, {n_in}), got shape "
                             f"{tuple(a.shape)}{hint}")
        if a.shape[1] != n_in:
            raise ValueError(f"x has {a.shape[1]} features per sample, but the model's input "
                             f"layer takes {n_in}")
        if a.shape[0] == 0:
            raise ValueError("x is empty: it has 0 samples")
        a = self.backend.xp.ascontiguousarray(a)
        if not bool(self.backend.xp.isfinite(a).all()):
            raise ValueError("x contains NaN or inf values")
        return a

    def _as_y(self, y, n):
        """Dense targets (n, K) in the model dtype, and what ``Loss.hits`` compares to."""
        xp, k = self.backend.xp, self.sizes[-1]
        try:
            a = self.backend.asarray(y)
        except TypeError as e:
            raise TypeError(f"y must hold numbers: {e}") from None
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError(f"x and y lengths differ: x has {n} samples, y has "
                             f"{a.shape[0] if a.ndim else 'a scalar'}")
        if not bool(xp.isfinite(a).all()):
            raise ValueError("y contains NaN or inf values")
        if self.loss == "cross_entropy" and a.ndim == 1:
            if not bool((a == xp.round(a)).all()):
                raise ValueError("class labels must be integers (or pass one-hot rows)")
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= k:
                bad = lo if lo < 0 else hi
                raise ValueError(f"label {bad} is out of range: the model has {k} classes, "
                                 f"so labels must be in [0, {k - 1}]")
            ids = a.astype(xp.int64)
            dense = xp.zeros((n, k), dtype=self.dtype)
            dense[xp.arange(n), ids] = 1
            return dense, ids
        if a.ndim == 1 and k == 1:
            a = a.reshape(-1, 1)
        if a.ndim != 2 or a.shape[1] != k:
            raise ValueError(f"y must have shape ({n}, {k})" +
                             (f" or ({n},) class ids" if self.loss == "cross_entropy" else "") +
                             f", got {tuple(a.shape)}")
        if self.loss == "binary_cross_entropy" and not bool(((a >= 0) & (a <= 1)).all()):
            raise ValueError("binary_cross_entropy targets must lie in [0, 1]")
        if self.loss == "cross_entropy" and not (bool((a >= 0).all()) and
                                                 bool((xp.abs(a.sum(axis=1) - 1) < 1e-3).all())):
            raise ValueError("cross_entropy targets must be class ids, or one-hot / probability "
                             "rows (non-negative, each summing to 1)")
        dense = xp.ascontiguousarray(a, dtype=self.dtype)
        return dense, self._loss.targets(dense)

    # --- forward and backward ---------------------------------------------

    def _forward(self, x, train=False):
        """Layer outputs ``outs`` (the last holds the logits), the input each
        layer saw (after dropout) and the scaled dropout masks (or None)."""
        xp, ops = self.backend.xp, self.ops
        ins, outs, keeps = [x], [], []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = xp.matmul(ins[-1], w)
            if i == last:
                outs.append(ops.bias_act("identity", z, b))
                break
            outs.append(ops.bias_act(self.activation, z, b))
            rate = self.dropout[i]
            keep = None
            if train and rate > 0:   # inverted dropout: scale at train time, not at inference
                keep = self._rng.random(z.shape, dtype=self.dtype) >= rate
                keep = keep.astype(self.dtype) * self.dtype.type(1 / (1 - rate))
                z = z * keep
            ins.append(z)
            keeps.append(keep)
        return ins, outs, keeps

    def _backward(self, ins, outs, keeps, dz):
        """Fill the gradient buffer from the output gradient ``dz``."""
        xp, ops = self.backend.xp, self.ops
        for i in range(len(self.weights) - 1, -1, -1):
            # dot, not matmul: NumPy's matmul is ~4x slower for the (n, 1) @ (1, m)
            # outer product that a batch of one makes.
            xp.dot(ins[i].T, dz, out=self._gweights[i])
            if i == len(self.weights) - 1 and self.bias:
                ops.bias_grad(dz, self._gbiases[i])
            if i == 0:
                break
            da = xp.matmul(dz, self.weights[i].T)
            if keeps[i - 1] is not None:
                da *= keeps[i - 1]
            dz = ops.act_grad(self.activation, da, outs[i - 1], self._gbiases[i - 1])

    def _step_grad(self, x, y, t=None, train=True):
        """Forward and backward on one batch: the summed loss (0-d device array)
        and, with targets ``t``, the number of hits; gradients land in the buffer."""
        done = self._whole_step(x, y, t, train)
        if done is not None:
            return done
        ins, outs, keeps = self._forward(x, train)
        z = outs[-1]
        hits = self._loss.hits(z, t) if t is not None else None
        scale = self._loss.scale(self.reduction, *z.shape)
        loss = self.ops.loss(self.loss, z, y, scale)
        self._backward(ins, outs, keeps, z)
        return loss, hits

    def _compiled(self, op, train):
        """Whether the op table has the compiled whole-network ``op`` and it
        covers this model (cross-entropy, no dropout while training)."""
        return (hasattr(self.ops, op) and self.loss == "cross_entropy"
                and not (train and any(self.dropout)))

    def _whole_step(self, x, y, t, train, sgd_lr=0.0):
        """The op table's one-call forward + backward (and, with ``sgd_lr``, a
        plain SGD update) where the op table has one for this case; None otherwise."""
        if not self._compiled("forward_backward", train):
            return None
        scale = self._loss.scale(self.reduction, x.shape[0], self.sizes[-1])
        return self.ops.forward_backward(self.sizes, self.activation, self.bias, x, y, t,
                                         self._params, self._grads, scale, sgd_lr)

    def _train_step(self, x, y, t, optimizer):
        """One training step on device arrays: forward, backward and update.
        Returns what :meth:`_step_grad` does."""
        lr = optimizer.plain_sgd_lr()
        if lr is not None:                # the update fused into the backward pass
            done = self._whole_step(x, y, t, True, lr)
            if done is not None:
                optimizer.t += 1
                return done
        loss, hits = self._step_grad(x, y, t)
        optimizer.step([self._params], [self._grads])
        return loss, hits

    def _has_epoch_kernel(self, batch_size, optimizer):
        """Whether :meth:`_train_epoch` can run this case (plain SGD at batch
        size 1 with an op table that has ``sgd_epoch``)."""
        return (batch_size == 1 and optimizer.plain_sgd_lr() is not None
                and self._compiled("sgd_epoch", True))

    def _train_epoch(self, x, y, t, batch_size, optimizer, order=None):
        """A whole epoch in one op-table call, over the rows of x in the order
        of the index array ``order`` (row order when None), where the op table
        has one for this case (plain SGD at batch size 1 on the CPU); None
        otherwise."""
        if not self._has_epoch_kernel(batch_size, optimizer):
            return None
        lr = optimizer.plain_sgd_lr()
        scale = self._loss.scale(self.reduction, 1, self.sizes[-1])
        done = self.ops.sgd_epoch(self.sizes, self.activation, self.bias, x, y, t,
                                  self._params, self._grads, scale, lr, order)
        if done is not None:
            optimizer.t += x.shape[0]
        return done

    def _logits(self, x):
        parts = [self._forward(x[i:i + _PREDICT_CHUNK])[1][-1]
                 for i in range(0, x.shape[0], _PREDICT_CHUNK)]
        return parts[0] if len(parts) == 1 else self.backend.xp.concatenate(parts)

    # --- inference ----------------------------------------------------------

    def predict_proba(self, x):
        """Class probabilities (N, K) as NumPy: softmax or sigmoid of the logits."""
        if not self._loss.classifier:
            raise ValueError(f"predict_proba needs a classification loss; this model's loss "
                             f"is {self.loss!r}: use predict()")
        with self.backend.scope():
            z = self._logits(self._as_x(x))
            return self.backend.to_numpy(self.ops.output(self.loss, z))

    def predict(self, x):
        """Class ids (N,) for cross-entropy, 0/1 (N, K) for binary cross-entropy,
        values (N, K) for regression, as NumPy; (N,) when there is one output."""
        with self.backend.scope():
            z = self._logits(self._as_x(x))
            out = self._loss.predict(z)
            if out.ndim == 2 and out.shape[1] == 1:
                out = out[:, 0]
            return self.backend.to_numpy(out)

    def evaluate(self, x, y):
        """``{"loss": ..., "accuracy": ...}`` on (x, y); accuracy for classifiers only."""
        with self.backend.scope():
            x = self._as_x(x)
            return self._evaluate(x, *self._as_y(y, x.shape[0]))

    def _evaluate(self, x, y, t):
        z = self._logits(x)
        hits = self._loss.hits(z, t) if t is not None else None
        total = self.ops.loss(self.loss, z, y)
        return self._loss.summary(total, hits, self.reduction, *z.shape)

    # --- training and checkpoints -----------------------------------------

    def fit(self, x, y, epochs=1, batch_size=32, optimizer=None, lr=None, shuffle=True,
            validation_data=None, validation_split=0.0, progress=False, early_stopping=None):
        """Train in place; returns a :class:`fastmlp.train.History`.

        See :func:`fastmlp.train.fit` for the arguments.
        """
        from fastmlp.train import fit
        return fit(self, x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                   shuffle=shuffle, validation_data=validation_data,
                   validation_split=validation_split, progress=progress,
                   early_stopping=early_stopping)

    def save(self, path, include_optimizer=True):
        """Write a safetensors checkpoint (atomically); see :func:`fastmlp.io.save`."""
        from fastmlp.io import save
        save(self, path, include_optimizer=include_optimizer)
