"""The multi-layer perceptron: parameters, input checks, steps, inference.

All parameters live in one flat device buffer (``params``, laid out by
``layout``), and ``weights[i]`` / ``biases[i]`` are views into it, so an
optimizer updates the whole network in one call per state array and a
checkpoint is one contiguous copy. Gradients mirror that layout in a
second buffer (``grads``). How a step runs is a step engine's business
(``fastmlp.engines``); every array operation goes through ``self.backend``
(``xp`` and the op table): nothing here knows the device.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from fastmlp import engines, io, sparse, stream
from fastmlp.backend import KERNEL_PATHS, get_backend
from fastmlp.constraints import Boolean, Interval, Options, check
from fastmlp.engines.layer import forward
from fastmlp.kernels import activations, losses
from fastmlp.layout import Layout
from fastmlp.net import Buffers, Net
from fastmlp.prepared import Prepared

if TYPE_CHECKING:
    from fastmlp.callbacks import Callback
    from fastmlp.optim import Optimizer
    from fastmlp.train import History

_DTYPES = ("float32", "float64")
_INITS = ("xavier", "glorot", "he", "normal")
_PREDICT_CHUNK = 8192
_ENGINES_KEPT = 4                # engines kept per model, one per (batch size, ...) key


def _check_sizes(sizes):
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"sizes must be a list of layer widths such as [784, 128, 10], "
                        f"got {type(sizes).__name__}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {sizes}")
    return [check(f"sizes[{i}]", s, Interval(Integral, 1)) for i, s in enumerate(sizes)]


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
    rate = Interval(Real, 0, 1, closed="left")
    names = [f"dropout[{i}]" for i in range(n_hidden)] if isinstance(dropout, (list, tuple)) \
        else ["dropout"] * n_hidden
    return tuple(check(name, p, rate) for name, p in zip(names, rates))


def _all_finite(xp, a, rows=1 << 14):
    """Whether ``a`` is finite, checked in row blocks: no boolean copy of all of it."""
    return all(bool(xp.isfinite(a[i:i + rows]).all()) for i in range(0, a.shape[0], rows))


def _check_init(init, activation):
    init = check("init", init, None, Options(*_INITS), Interval(Real, 0, closed="neither"))
    return activation.init if init is None else init


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
            (sigmoid output, on logits), "mse" or "l1" (identity output), or
            "poisson" (counts or rates >= 0: the output is exp(logits), the
            loss half the Poisson deviance).
        reduction: "mean" or "sum" of the per-sample losses.
        init: "xavier" (alias "glorot", uniform), "he" (normal), "normal"
            (std 0.01), or a float std; default "he" for relu, else "xavier".
        dtype: "float32" (default) or "float64".
        device: "cpu", "cuda", "cuda:N" or "auto".
        seed: seeds the init, the shuffling and dropout; None for fresh entropy.
        dropout: inverted-dropout rate after each hidden layer (one float, or
            one per hidden layer); applied only while training.
        bias: whether layers have biases.
        kernels: the op table: "auto" (the fastest for the device: Numba's
            on the CPU, NVIDIA Warp's on CUDA where warp-lang sees the GPU),
            "fused" (the same), "reference" (plain array code, the ground
            truth) or "warp" (Warp's kernels on either device).
        input_scale: every input is multiplied by this before the first
            layer (in :meth:`prepare` for float data; as each batch is
            gathered for integer data, which stays in its compact dtype:
            ``MLP(..., input_scale=1/255)`` trains on uint8 images as they
            are). Part of the model: checkpoints keep it.
        engine: how training steps run: "auto" (the factory picks per batch
            size, see :mod:`fastmlp.engines`) or one of
            ``fastmlp.engines.NAMES``; a named engine that cannot run a case
            raises ValueError saying why. Like ``device``, it is a choice of
            this process, not part of the model: checkpoints do not keep it.
        precision: of the float32 products on CUDA: "fp32" (default, strict)
            or "tf32" (tensor cores with TF32 inputs, float32 accumulation:
            about 1e-3 relative error per product, as PyTorch's
            ``allow_tf32`` and JAX's default). The ``warp`` engine honours it
            (sm_80 and later); the other engines, float64 models and the CPU
            compute in the dtype. Like ``engine``, a choice of this process:
            checkpoints do not keep it.

    ``weights[i]`` (fan_in, fan_out) and ``biases[i]`` (fan_out,) are the live
    parameter arrays on the model's device: change them in place. ``params``
    and ``grads`` are the flat buffers behind them, laid out by ``layout``;
    ``step_path`` says which engine ran the last steps and why.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu",
                 loss: str = "cross_entropy", *, reduction: str = "mean",
                 init: str | float | None = None, dtype: str = "float32", device: str = "auto",
                 seed: int | None = None, dropout: float | Sequence[float] = 0.0,
                 bias: bool = True, kernels: str = "auto", engine: str = "auto",
                 input_scale: float = 1.0, precision: str = "fp32") -> None:
        self.sizes = _check_sizes(sizes)
        spec = activations.get(activation)
        loss_fn = losses.get(loss, reduction)
        if loss_fn is losses.CROSS_ENTROPY and self.sizes[-1] < 2:
            raise ValueError("cross_entropy needs at least 2 outputs; for one output use "
                             "loss='binary_cross_entropy'")
        self.init = _check_init(init, spec)
        self.dtype = _check_dtype(dtype)
        dropout = _check_dropout(dropout, len(self.sizes) - 2)
        self.bias = check("bias", bias, Boolean())
        self.seed = check("seed", seed, None, Interval(Integral, 0))
        self.engine = engines.check_name(engine)
        self.input_scale = check("input_scale", input_scale, Interval(Real, 0, closed="neither"))
        kernels = check("kernels", kernels, Options(*KERNEL_PATHS))
        self.precision = check("precision", precision, Options("fp32", "tf32"))
        self.layout = Layout(self.sizes, self.bias)
        #: what step engines know of this network (immutable: ``activation``,
        #: ``loss_fn``, ``reduction`` and ``dropout`` read it)
        self.net = Net(self.layout, spec, loss_fn, reduction, self.dtype, dropout,
                       self.precision)
        self.optimizer = None
        self.step_path = None
        self.backend = get_backend(device)
        self.kernels = kernels
        self.ops = self.backend.ops_for(kernels)
        #: the host RNG: draws the init and every epoch's shuffle (checkpointed)
        self.rng = np.random.default_rng(self.seed)
        parts = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            parts.append(_init_weight(self.rng, fan_in, fan_out, self.init).ravel())
            if self.bias:
                parts.append(np.zeros(fan_out))
        self._dropout_seed = int(self.rng.integers(2**63))
        self._adopt(self._place(self.backend, np.concatenate(parts)))

    # --- parameters -------------------------------------------------------

    def _place(self, be, flat):
        """Parameter and gradient buffers and a dropout RNG on backend ``be``."""
        with be.scope():
            params = be.xp.array(be.asarray(flat, dtype=self.dtype))   # always a copy
            return params, be.xp.zeros_like(params), be.rng(self._dropout_seed)

    def _adopt(self, placed):
        """Make ``_place``'s buffers the model's, with per-layer views."""
        self.params, self.grads, rng = placed
        #: what step engines may touch: the buffers, their views, the op table
        self.buffers = Buffers(self.backend, self.ops, self.params, self.grads, rng, self.layout)
        self.weights, self.biases = self.buffers.weights, self.buffers.biases
        self._engines = {}             # engines hold the buffers: choose afresh

    @property
    def dropout_rng(self):
        """The device Generator that draws dropout masks (checkpointed on the CPU)."""
        return self.buffers.dropout_rng

    @dropout_rng.setter
    def dropout_rng(self, gen):
        self.buffers.dropout_rng = gen        # in place: engines (and a running fit) share it

    @property
    def activation(self) -> str:
        """The hidden activation's name (fixed at construction)."""
        return self.net.activation.name

    @property
    def loss_fn(self) -> losses.Loss:
        """The loss spec (``fastmlp.kernels.losses``; fixed at construction)."""
        return self.net.loss

    @property
    def reduction(self) -> str:
        """"mean" or "sum" (fixed at construction)."""
        return self.net.reduction

    @property
    def dropout(self) -> tuple:
        """The dropout rate after each hidden layer (fixed at construction)."""
        return self.net.dropout

    @property
    def loss(self) -> str:
        """The loss name."""
        return self.loss_fn.name

    @property
    def n_params(self) -> int:
        """Number of trainable scalars."""
        return self.layout.size

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this architecture."""
        return {"sizes": self.sizes, "activation": self.activation, "loss": self.loss,
                "reduction": self.reduction, "init": self.init, "dtype": self.dtype.name,
                "dropout": list(self.dropout), "bias": self.bias, "seed": self.seed,
                "kernels": self.kernels, "input_scale": self.input_scale}

    def __repr__(self):
        return (f"MLP({self.sizes}, activation={self.activation!r}, loss={self.loss!r}, "
                f"dtype={self.dtype.name!r}, device={self.backend.name!r})")

    def to(self, device: str) -> MLP:
        """Move parameters (and optimizer state) to ``device``; returns self."""
        new = get_backend(device)
        if new is self.backend:
            return self
        old, ops = self.backend, new.ops_for(self.kernels)
        placed = self._place(new, old.to_numpy(self.params))    # nothing changes until all is moved
        opt = self.optimizer
        if opt is not None and opt.state is not None:
            with new.scope():
                moved = {k: new.asarray(old.to_numpy(a)) for k, a in opt.state_arrays().items()}
                opt.load_state([placed[0]], moved, opt.t, ops)
        self.backend, self.ops = new, ops
        self._adopt(placed)
        return self

    # --- input checks (before anything changes) ---------------------------

    def prepare(self, x: ArrayLike, y: ArrayLike | None = None,
                sample_weight: ArrayLike | None = None, *, stream: bool = False) -> Prepared:
        """Check and convert inputs once: a :class:`Prepared` of device arrays
        (x (N, n_in) and dense targets (N, K) in the model's dtype, the
        targets that hit counts compare with, and the per-sample weights) for
        :meth:`fit`, :meth:`train_step`, :meth:`gradient`, :meth:`logits` and
        :meth:`evaluate`.

        With ``stream``, an ``x`` that is not in memory (a memmap; see
        :mod:`fastmlp.stream`) stays on disk as a :class:`fastmlp.stream.Stream`,
        read and checked chunk by chunk by :meth:`fit`, :meth:`evaluate` and
        :meth:`logits` (not by :meth:`train_step` or :meth:`gradient`, which
        take arrays in memory); without it, ``x`` is read whole.

        Raises ValueError or TypeError naming the problem: wrong shapes,
        NaN or inf, labels out of range, targets that do not fit the loss,
        negative weights or weights that sum to zero.
        """
        with self.backend.scope():
            x = self._as_x(x, streamed=stream)
            if y is None:
                if sample_weight is not None:
                    raise TypeError("sample_weight goes with targets: prepare(x, y, sample_weight)")
                return Prepared(x)
            return Prepared(x, *self._as_y(y, x.shape[0]), self._as_weights(sample_weight, x))

    def _as_weights(self, w, x):
        if w is None:
            return None
        xp, n = self.backend.xp, x.shape[0]
        try:
            a = self.backend.asarray(w, dtype=self.dtype)
        except TypeError as e:
            raise TypeError(f"sample_weight must hold numbers: {e}") from None
        if a.ndim == 0:
            a = xp.full(n, a, dtype=self.dtype)
        if a.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), one weight per sample, "
                             f"got {tuple(a.shape)}")
        if not bool(xp.isfinite(a).all()):
            raise ValueError(self._nonfinite_message("sample_weight", w))
        if bool((a < 0).any()):
            raise ValueError("sample_weight must be finite and non-negative")
        if not bool((a > 0).any()):
            raise ValueError("sample_weight sums to zero: no sample would count")
        return xp.ascontiguousarray(a)

    def _as_x(self, x, streamed=False):
        n_in = self.sizes[0]
        if sparse.is_sparse(x):             # CSR rows on the host, never densified whole
            return self._as_sparse(x)
        if streamed and stream.wants(x):    # larger than memory: read chunk by chunk later
            return self._as_stream(x)
        # Integer data (uint8 images) stays in its compact dtype: it is scaled and
        # cast batch by batch (as_inputs), never copied whole into floats.
        try:
            source = np.dtype(getattr(x, "dtype", None)).kind
        except TypeError:                   # torch and others: convert, then look
            source = None
        try:
            if source is None:
                a = self.backend.asarray(x)
                compact = a.dtype.kind in "iu"
                a = a if compact else a.astype(self.dtype, copy=False)
            else:
                compact = source in "iu"
                a = self.backend.asarray(x) if compact else \
                    self.backend.asarray(x, dtype=self.dtype)
        except TypeError as e:
            raise TypeError(f"x must hold numbers: {e}") from None
        if compact and not a.dtype.isnative:  # compiled gathers read native byte order only
            a = a.astype(a.dtype.newbyteorder("="))
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
        if compact:                         # scaled later, per batch: its range is checked now
            top = max(abs(int(a.min())), abs(int(a.max()))) * self.input_scale
            if top > float(np.finfo(self.dtype).max):
                raise ValueError(self._too_large("x", top))
            return a
        if self.input_scale != 1.0:
            with np.errstate(over="ignore"):                   # reported below, as an overflow
                a = a * self.dtype.type(self.input_scale)      # a new array: x stays the user's
        if not _all_finite(self.backend.xp, a):
            raise ValueError(self._nonfinite_message("x", x, self.input_scale))
        return a

    def _as_sparse(self, x):
        n_in = self.sizes[0]
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"x has shape {tuple(x.shape)}, but the model's input layer takes "
                             f"(n_samples, {n_in})")
        if x.shape[0] == 0:
            raise ValueError("x is empty: it has 0 samples")
        if x.dtype.kind not in "biuf":
            raise TypeError(f"x must hold numbers, got {x.dtype}")
        with np.errstate(over="ignore"):                   # reported below, as an overflow
            rows = sparse.as_rows(x, self.dtype, self.input_scale)
        if not sparse.finite(rows):
            raise ValueError(self._nonfinite_message("x", x.data, self.input_scale))
        return rows

    def sparse_first_layer(self, x):
        """Whether the sparse rows ``x`` go through the first layer as they are
        (SciPy's products, the ``layer`` engine) rather than densified per
        batch: where this backend multiplies sparse rows and fewer than
        ``fastmlp.sparse.SPARSE_BELOW`` of the inputs are non-zero."""
        return self.backend.sparse_products and sparse.density(x) < sparse.SPARSE_BELOW

    def _as_stream(self, x):
        x = x if isinstance(x, stream.Stream) else stream.Stream(x)
        if x.dtype.kind not in "biuf":     # bool is 0/1 data, on disk as in memory
            raise TypeError(f"x must hold numbers, got {x.dtype}")
        if x.n_in != self.sizes[0]:
            raise ValueError(f"x has {x.n_in} features per sample, but the model's input "
                             f"layer takes {self.sizes[0]}")
        if len(x) == 0:
            raise ValueError("x is empty: it has 0 samples")
        return x

    def as_inputs(self, rows):
        """Prepared input rows as the first layer takes them: float rows
        pass through; integer rows (compact data) are cast to the model's
        dtype and multiplied by ``input_scale``."""
        if sparse.is_sparse(rows):          # as they are, or densified onto the device
            return rows if self.sparse_first_layer(rows) else self.backend.asarray(rows.toarray())
        if rows.dtype == self.dtype:
            return rows
        out = self.backend.xp.empty(rows.shape, self.dtype)
        return self.backend.xp.multiply(rows, self.dtype.type(self.input_scale), out=out)

    def _nonfinite_message(self, name, given, scale=1.0):
        """Why ``given`` (times ``scale``) became non-finite: NaN/inf in the
        data, or finite values too large for the model's dtype (the cast or
        the scaling overflowed)."""
        be = self.backend
        try:                        # looked at where it lies: a device array stays there
            a = be.asarray(given)
        except (TypeError, ValueError):
            return f"{name} contains NaN or inf values"
        a = a.reshape(-1) if a.ndim == 0 else a
        if not _all_finite(be.xp, a):
            return f"{name} contains NaN or inf values"
        return self._too_large(name, float(be.xp.abs(a).max()) * scale)

    def _too_large(self, name, top):
        scaled = name == "x" and self.input_scale != 1.0
        return (f"{name} holds values up to {top:.3g}{' after input_scale' if scaled else ''}, "
                f"beyond the range of {self.dtype.name} (max {np.finfo(self.dtype).max:.3g}): "
                f"scale the data{' (or lower input_scale)' if scaled else ''}, or use "
                "dtype='float64'")

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
        classes = self.loss_fn is losses.CROSS_ENTROPY        # one class id per row
        if classes and a.ndim == 1:
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
                             (f" or ({n},) class ids" if classes else "") +
                             f", got {tuple(a.shape)}")
        if self.loss_fn is losses.BINARY_CROSS_ENTROPY and not bool(((a >= 0) & (a <= 1)).all()):
            raise ValueError("binary_cross_entropy targets must lie in [0, 1]")
        if self.loss_fn is losses.POISSON and not bool((a >= 0).all()):
            raise ValueError("poisson targets (counts or rates) must be >= 0")
        if classes and not (bool((a >= 0).all()) and
                                                 bool((xp.abs(a.sum(axis=1) - 1) < 1e-3).all())):
            raise ValueError("cross_entropy targets must be class ids, or one-hot / probability "
                             "rows (non-negative, each summing to 1)")
        with np.errstate(over="ignore"):           # reported below, as an overflow
            dense = xp.ascontiguousarray(a, dtype=self.dtype)
        if dense.dtype != a.dtype and not bool(xp.isfinite(dense).all()):
            raise ValueError(self._nonfinite_message("y", y))
        targets = self.loss_fn.head.targets(dense)
        if targets is not None and targets.dtype.kind == "i":
            targets = targets.astype(xp.int64, copy=False)
        return dense, targets

    def _check_prepared(self, x, y, targets, weights):
        """TypeError unless x, y, targets and weights look like what
        :meth:`prepare` returns (a cheap look at shapes and dtypes, not at
        the values)."""
        k = self.sizes[-1]
        n = getattr(x, "shape", (0,))[0]
        ok = (getattr(x, "ndim", 0) == 2 and x.shape[1] == self.sizes[0]
              and (x.dtype == self.dtype or x.dtype.kind in "iu")
              and getattr(y, "shape", None) == (n, k) and y.dtype == self.dtype
              and (targets is None or getattr(targets, "shape", (None,))[0] == n)
              and (weights is None or (getattr(weights, "shape", None) == (n,)
                                       and weights.dtype == self.dtype)))
        if not ok:
            raise TypeError("train_step and gradient take the arrays that "
                            "model.prepare(x, y, sample_weight) returns: x (n, n_in), dense y "
                            f"(n, K), on the model's device, in {self.dtype.name}, targets of n "
                            "rows or None and weights (n,) or None; got x "
                            f"{_describe(x)}, y {_describe(y)}, targets {_describe(targets)}, "
                            f"weights {_describe(weights)}")

    # --- steps ----------------------------------------------------------------

    def engine_for(self, batch_size, *, train=True, sample=None, fresh=False):
        """The step engine that runs batches of ``batch_size`` for this model.

        Chosen by :func:`fastmlp.engines.create` from the model's ``net`` and
        ``buffers`` on first use for each (batch size, train), from
        ``sample`` (prepared inputs like those to come) when given, and kept
        (a few per model); ``fresh`` chooses again. ``step_path`` records
        the choice and why. Any optimizer runs on it: the engine reads each
        step's ``optimizer.form``.
        """
        key = (batch_size, train)
        found = None if fresh else self._engines.get(key)
        if found is None:
            found = engines.create(self.net, self.buffers, batch_size, train, sample, self.engine)
            self._engines.pop(key, None)
            while len(self._engines) >= _ENGINES_KEPT:
                self._engines.pop(next(iter(self._engines)))
            self._engines[key] = found
        self.step_path = found[1]
        return found[0]

    def train_step(self, x, y, optimizer, targets=None, *, weights=None):
        """One training step on a prepared batch: forward, backward, update.

        ``x`` and ``y`` are as :meth:`prepare` returns them (TypeError
        otherwise; their values are not checked again); ``targets``, from
        the same place, adds the hit count, and ``weights`` weights each
        sample (a mean divides by their sum). ``optimizer`` (an
        :mod:`fastmlp.optim` instance) is initialised for this model first
        if it is not yet. Returns ``(loss, hits)``: the summed (unreduced)
        loss of the batch and the number of correct predictions (None
        without ``targets``), as device scalars or numbers: ``float()`` them.
        """
        self._check_prepared(x, y, targets, weights)
        x = self.as_inputs(x)
        engine = self.engine_for(x.shape[0], sample=x)      # may refuse: before changes
        if not optimizer.is_for([self.params]):
            optimizer.init([self.params], self.ops)
        self.optimizer = optimizer
        return engine.train_step(x, y, targets, optimizer, weights)

    def gradient(self, x, y, targets=None, *, weights=None, train=False):
        """Forward and backward on a prepared batch, without an update: the
        gradient of the reduced loss lands in ``grads``; returns what
        :meth:`train_step` does. Dropout applies only with ``train``."""
        self._check_prepared(x, y, targets, weights)
        x = self.as_inputs(x)
        return self.engine_for(x.shape[0], train=train, sample=x).grad(x, y, targets, weights)

    def logits(self, x):
        """The output layer's pre-activations (N, K) for prepared inputs ``x``,
        on the device, computed in chunks."""
        chunk = _PREDICT_CHUNK
        if sparse.is_sparse(x) and not self.sparse_first_layer(x):    # densified chunk by chunk
            chunk = max(1, min(chunk, sparse.DENSE_CHUNK_ELEMENTS // self.sizes[0]))

        def rows(i):
            if isinstance(x, stream.Stream):       # read, checked and moved per chunk
                return self._as_x(x.read(i, min(i + chunk, len(x))))
            return x[i:i + chunk]

        parts = [forward(self.net, self.buffers, self.as_inputs(rows(i)))[1][-1]
                 for i in range(0, x.shape[0], chunk)]
        return parts[0] if len(parts) == 1 else self.backend.xp.concatenate(parts)

    # --- inference ----------------------------------------------------------

    def predict_proba(self, x: ArrayLike) -> np.ndarray:
        """Class probabilities (N, K) as NumPy: softmax or sigmoid of the logits."""
        if not self.loss_fn.classifier:
            raise ValueError(f"predict_proba needs a classification loss; this model's loss "
                             f"is {self.loss!r}: use predict()")
        with self.backend.scope():
            z = self.logits(self._as_x(x, streamed=True))
            return self.backend.to_numpy(self.ops.output(self.loss_fn, z))

    def predict(self, x: ArrayLike) -> np.ndarray:
        """Class ids (N,) for cross-entropy, 0/1 (N, K) for binary cross-entropy,
        values (N, K) for regression, as NumPy; (N,) when there is one output."""
        with self.backend.scope():
            z = self.logits(self._as_x(x, streamed=True))
            out = self.loss_fn.head.predict(z, self.backend.xp)
            if out.ndim == 2 and out.shape[1] == 1:
                out = out[:, 0]
            return self.backend.to_numpy(out)

    def evaluate(self, x: ArrayLike | Prepared, y: ArrayLike | None = None,
                 sample_weight: ArrayLike | None = None) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` on (x, y); accuracy for classifiers
        only; both weighted by ``sample_weight`` when given. ``x`` may instead
        be a :class:`Prepared` (with ``y`` left out), which is not checked
        again."""
        if isinstance(x, Prepared) and (y is not None or sample_weight is not None):
            raise TypeError("pass a Prepared alone: evaluate(model.prepare(x, y, sample_weight))")
        with self.backend.scope():
            data = x if isinstance(x, Prepared) else self.prepare(x, y, sample_weight,
                                                                  stream=True)
            if data.y is None:
                raise TypeError("evaluate needs targets: evaluate(x, y) or evaluate(prepare(x, y))")
            z = self.logits(data.x)
            w = data.weights
            hits = (self.loss_fn.head.hits(z, data.targets, w) if data.targets is not None
                    else None)
            total = self.ops.loss(self.loss_fn, z, data.y, None, w)
            count = z.shape[0] if w is None else float(w.sum())
            return self.loss_fn.summary(total, hits, self.reduction, count, z.shape[1])

    # --- training and checkpoints -----------------------------------------

    def fit(self, x: ArrayLike | Prepared, y: ArrayLike | None = None, epochs: int = 1,
            batch_size: int | None = 32, optimizer: str | Optimizer | None = None,
            lr: float | Callable[[int], float] | None = None, shuffle: bool = True,
            validation_data: tuple | Prepared | None = None, validation_split: float = 0.0,
            progress: bool | str = False, early_stopping: int | None = None,
            sample_weight: ArrayLike | None = None, on_nonfinite: str = "raise",
            callbacks: Sequence[Callback] | None = None, metrics: Sequence | None = None,
            initial_epoch: int | None = None, history: History | None = None,
            comm: Any = None) -> History:
        """Train in place on ``x`` (N, n_in) and targets ``y``; returns a
        :class:`fastmlp.History` of per-epoch figures.

        ``epochs`` passes of ``batch_size`` samples per step (1: per-sample
        SGD; None: the full batch) with ``optimizer`` (a name or an
        :mod:`fastmlp.optim` instance; None resumes ``self.optimizer`` or
        starts Adam) at learning rate ``lr`` (a number or a schedule).
        Validation data, early stopping, ``callbacks``, ``metrics``,
        progress, sample weights, divergence handling (``on_nonfinite``)
        and resuming (``initial_epoch``, ``history``), data-parallel
        training over MPI (``comm``): see :func:`fastmlp.train.fit`, which
        documents every argument.
        """
        from fastmlp.train import fit
        return fit(self, x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                   shuffle=shuffle, validation_data=validation_data,
                   validation_split=validation_split, progress=progress,
                   early_stopping=early_stopping, sample_weight=sample_weight,
                   on_nonfinite=on_nonfinite, callbacks=callbacks, metrics=metrics,
                   initial_epoch=initial_epoch, history=history, comm=comm)

    def summary(self) -> str:
        """A table of the layers: shapes, activations, dropout, parameter
        counts, dtype and device (a string; print it)."""
        from fastmlp.summary import summary
        return summary(self)

    def save(self, path: str | os.PathLike, include_optimizer: bool = True,
             key: bytes | str | None = None) -> None:
        """Write a safetensors checkpoint (atomically), with a digest of all it
        holds, or with ``key`` an HMAC under it; see :func:`fastmlp.io.save`."""
        io.save(self, path, include_optimizer=include_optimizer, key=key)

    def __getstate__(self):
        # Host copies of the parameters, optimizer state and RNG, the device's name
        # and the engine choice: never device pointers, compiled kernels or scratch.
        return {"checkpoint": io.snapshot(self), "device": self.backend.name,
                "engine": self.engine}

    def __setstate__(self, state):
        device = state["device"]
        try:
            get_backend(device)
        except RuntimeError as e:
            warnings.warn(f"a model pickled on {device} is unpickled on the CPU: {e}",
                          RuntimeWarning, stacklevel=2)
            device = "cpu"
        checkpoint = state["checkpoint"]
        self.__init__(**checkpoint.config, device=device, engine=state["engine"])
        io.restore(self, checkpoint, "a pickled model")


def load(path: str | os.PathLike, device: str = "auto", *, key: bytes | str | None = None,
         verify: bool = True) -> MLP:
    """A model saved by :meth:`MLP.save`, on ``device``, with its optimizer state
    (as ``model.optimizer``) when the file holds one, and the shuffling and
    dropout RNG states: ``fit(optimizer=None)`` then continues exactly as if
    training had never stopped (on the device kind it was saved on).

    Raises ValueError naming the file (and the field) for a truncated,
    corrupt, foreign, newer-format or inconsistent file, before anything
    large is allocated: see :func:`fastmlp.io.read`. A file saved with a
    ``key`` loads only with the same key; ``verify=False`` loads a file that
    carries no digest (format 1) or a wrong one, with a warning.
    """
    checkpoint = io.read(path, key=key, verify=verify)   # all checked before anything is built
    try:
        model = MLP(**checkpoint.config, device=device)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: the stored model config is invalid ({e})") from None
    io.restore(model, checkpoint, path)
    return model


def _describe(a):
    shape, dtype = getattr(a, "shape", None), getattr(a, "dtype", None)
    return f"of shape {tuple(shape)} and dtype {dtype}" if shape is not None else type(a).__name__
