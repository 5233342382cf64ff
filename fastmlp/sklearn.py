"""scikit-learn estimators over :class:`fastmlp.MLP`: drop-in for
``sklearn.neural_network.MLPClassifier`` and ``MLPRegressor``.

    from fastmlp.sklearn import MLPClassifier     # was: from sklearn.neural_network import ...
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=50, random_state=0)
    clf.fit(X, y).score(X_test, y_test)

The constructor takes scikit-learn's parameters with their meanings
(``solver``, ``alpha``, ``batch_size``, ``learning_rate``, ``max_iter``,
``tol``, ``n_iter_no_change``, ``early_stopping``, ...) plus fastmlp's
``device`` ("auto" takes a GPU when there is one), ``dtype`` and, for the
classifier, ``class_weight``. Training follows scikit-learn's epoch loop
(convergence by ``tol``, ``loss_curve_``, ``validation_scores_``, the best
weights restored with ``early_stopping``) on fastmlp's engines; data moves
to the device once per ``fit`` and every result comes back as NumPy.

``solver="lbfgs"`` minimises scikit-learn's objective with SciPy's L-BFGS-B on
fastmlp's full-batch gradients; ``MLPRegressor(loss="poisson")`` fits counts.
Where the two differ, on purpose: ``solver`` also takes "adamw", "rmsprop" and
"adagrad"; the initial weights follow fastmlp's scheme (He
for relu, Glorot otherwise, zero biases); ``alpha`` decays the biases too
(by alpha / batch size per step: far below anything measurable); a binary
classifier has two softmax outputs (``coefs_[-1]`` has 2 columns and
``n_outputs_`` is 2), not one logistic unit; ``class_weight="balanced"`` is
refused by ``partial_fit`` (each chunk would be balanced on its own);
``momentum`` must be below 1 (a velocity that never decays).
scikit-learn is imported here only: ``import fastmlp`` does not need it.
"""

import contextlib
import copy
import os
import warnings
from numbers import Integral, Real

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError as e:                        # an optional extra: say how to get it
    raise ImportError(f"fastmlp.sklearn needs scikit-learn ({e}): pip install "
                      "'fastmlp[sklearn]'") from e
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d

from fastmlp import optim
from fastmlp.constraints import Boolean, Interval, Options, check
from fastmlp.kernels.activations import ACTIVATIONS
from fastmlp.loop import EpochLoop
from fastmlp.model import MLP
from fastmlp.train import DivergedError

try:                                            # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:                             # older: the estimator's own method
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names (and fastmlp's own) -> fastmlp's
_ACTIVATIONS = {**{a.sklearn: a.name for a in ACTIVATIONS.values()},
                **{a.name: a.name for a in ACTIVATIONS.values()}}
_STOCHASTIC = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
_SOLVERS = ("lbfgs", *_STOCHASTIC)
_SCHEDULES = ("constant", "invscaling", "adaptive")
_DTYPES = (None, "float32", "float64")
_AT_LEAST_0, _AT_LEAST_1 = Interval(Real, 0), Interval(Integral, 1)
_FRACTION = Interval(Real, 0, 1, closed="left")
# What _check_params asks of each parameter (in scikit-learn's style); the
# checks are fastmlp's own (fastmlp.constraints), so messages read as everywhere
# else in the library.
_PARAMETER_CONSTRAINTS = {
    "solver": [Options(*_SOLVERS)],
    "activation": [Options(*sorted(_ACTIVATIONS))],
    "learning_rate": [Options(*_SCHEDULES)],
    "dtype": [Options(*_DTYPES)],
    "max_iter": [_AT_LEAST_1],
    "n_iter_no_change": [_AT_LEAST_1, Options(np.inf)],
    "batch_size": [Options("auto"), _AT_LEAST_1],
    "alpha": [_AT_LEAST_0],
    "learning_rate_init": [Interval(Real, 0, closed="neither")],
    "tol": [_AT_LEAST_0],
    "momentum": [Interval(Real, 0, 1, closed="left")],     # 1 never decays: optim.SGD refuses it
    "validation_fraction": [_FRACTION],
    "power_t": [_AT_LEAST_0],
    "epsilon": [Interval(Real, 0, closed="neither")],
    "beta_1": [_FRACTION],
    "beta_2": [_FRACTION],
    "max_fun": [_AT_LEAST_1],
    "shuffle": [Boolean()],
    "warm_start": [Boolean()],
    "nesterovs_momentum": [Boolean()],
    "early_stopping": [Boolean()],
    "verbose": [Boolean(), Interval(Integral, 0)],
}


@contextlib.contextmanager
def _other_blas_on_one_thread():
    """Every BLAS but NumPy's own (which fastmlp's engines steer) on one thread,
    through threadpoolctl (a scikit-learn dependency); put back afterwards."""
    from threadpoolctl import ThreadpoolController
    numpy_libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    others = [lib for lib in ThreadpoolController().lib_controllers
              if lib.user_api == "blas" and not lib.filepath.startswith(numpy_libs)]
    saved = [lib.num_threads for lib in others]
    for lib in others:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(others, saved):
            lib.set_num_threads(n)


def _stochastic(est):
    """``partial_fit`` exists for the minibatch solvers only, as in scikit-learn."""
    if est.solver not in _STOCHASTIC:
        raise AttributeError("partial_fit is only available for stochastic optimizers. "
                             f"{est.solver} is not stochastic.")
    return True


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the epoch
    loop, attributes. Subclasses encode targets and decode outputs."""

    # The core loss's gradient divided by scikit-learn's, and scikit-learn's loss divided
    # by the core's (set per fit by the subclasses' _encode): the same learning rate and
    # alpha then mean what they mean in scikit-learn, and loss_ is scikit-learn's.
    _grad_factor = 1.0
    _loss_factor = 1.0

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 device="auto", dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device
        self.dtype = dtype

    # --- parameters ---------------------------------------------------------------

    def _hidden(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, Integral) else list(sizes)
        return [check(f"hidden_layer_sizes[{i}]", s, Interval(Integral, 1))
                for i, s in enumerate(sizes)]

    def _check_params(self):
        """Check every parameter at fit time (scikit-learn's rule: never in
        ``__init__`` or ``set_params``); returns the hidden layer widths."""
        for name, constraints in _PARAMETER_CONSTRAINTS.items():
            check(name, getattr(self, name), *constraints)
        return self._hidden()

    def set_params(self, **params):
        """Set parameters; a new ``device`` moves a fitted model there at once
        (if it cannot, or another parameter is refused, the device stays)."""
        old = self.device
        moved = "device" in params and hasattr(self, "model_")
        if moved:
            self.model_.to(params["device"])
        try:
            return super().set_params(**params)
        except Exception:
            if moved:
                self.model_.to(old)
            self.device = old                 # the device and the model agree, as before
            raise

    # --- fitting -------------------------------------------------------------------

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        hidden = self._check_params()
        if "model_" in self.__dict__:
            self._sync()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "model_") or not (self.warm_start or incremental)
        # A refused call leaves the estimator as it was. Everything that can refuse it
        # (the inputs, targets and weights, the validation split, the model's own checks
        # in prepare) runs on a shallow copy, which builds any new model and draws from a
        # copy of the random state; the estimator takes the copy's attributes, and the
        # random state its draws, only once all of them have passed.
        new = object.__new__(type(self))
        vars(new).update(vars(self))
        X, y = _validate_data(new, X, y, reset=first, multi_output=True, dtype=_X_DTYPES,
                              accept_sparse=_SPARSE,
                              y_numeric=not isinstance(self, ClassifierMixin))
        Y = new._encode(y, first, classes)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        sample_weight = new._weights(y, sample_weight)
        rng = check_random_state(self.random_state)
        new._rng = copy.deepcopy(rng)
        if first:
            new._build(X, Y, hidden)
        X_val = y_val = w_val = None
        if self.early_stopping and self.solver != "lbfgs":    # as scikit-learn: L-BFGS ignores it
            X, X_val, Y, y_val, sample_weight, w_val = new._split(X, Y, y, sample_weight)
            X_val = new.model_.prepare(X_val).x             # on the device once, scored per epoch
        data = new.model_.prepare(X, Y, sample_weight)
        rng.set_state(new._rng.get_state())
        new._rng = rng
        vars(self).clear()
        vars(self).update(vars(new))
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)
        if self.batch_size != "auto" and self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped", UserWarning, stacklevel=3)
        model = self.model_
        weight = n if sample_weight is None else float(np.sum(sample_weight))
        if self.solver == "lbfgs":
            self._fit_lbfgs(model, data, weight)
            return self
        if not incremental or model.optimizer is None:       # the model keeps (and pickles) it
            model.optimizer = self._make_optimizer()
        if self.solver != "adamw":          # per step, as scikit-learn's alpha w / batch weight
            model.optimizer.weight_decay = (self.alpha * self._grad_factor * -(-n // batch)
                                            / weight)
        self._epochs(model, data, batch, n, weight, incremental, X_val, y_val, w_val)
        return self

    def _fit_lbfgs(self, model, data, weight):
        """scikit-learn's L-BFGS: the full-batch loss and gradient from the model's
        engine (any device), minimised by SciPy's L-BFGS-B over the parameters as
        one float64 vector, which crosses to the host once per evaluation; the
        objective is scikit-learn's (its loss's units, alpha on the weights, not
        the biases), and so are ``max_iter``, ``max_fun``, ``tol`` (as ``gtol``),
        ``n_iter_``, ``loss_`` and the ConvergenceWarning."""
        import scipy
        import scipy.optimize
        from sklearn.utils.optimize import _check_optimize_result
        be = model.backend
        with be.scope():
            start = be.to_numpy(model.params).astype(np.float64)
        decayed = np.zeros_like(start)          # 1 on the weights: alpha skips the biases
        for w in model.layout.views(decayed)[0]:
            w[...] = 1.0
        scale = float(model.net.loss_scale(weight)) * self._loss_factor

        def loss_grad(theta):
            with be.scope():
                model.params[...] = be.asarray(theta.astype(model.dtype))
                total, _ = model.gradient(data.x, data.y, data.targets, weights=data.weights)
                grad = be.to_numpy(model.grads).astype(np.float64)
            penalty = decayed * theta
            loss = float(total) * scale + 0.5 * self.alpha * float(theta @ penalty) / weight
            grad /= self._grad_factor
            grad += self.alpha / weight * penalty
            return loss, grad

        options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol}
        if tuple(int(v) for v in scipy.__version__.split(".")[:2]) < (1, 15):   # as sklearn
            options["iprint"] = 1 if self.verbose else -1
        engine = model.engine_for(data.x.shape[0], sample=data.x)
        # the fit's thread policy for the gradients; SciPy's own BLAS (L-BFGS-B's vector
        # work) on one thread: its idle workers spun beside the gradient's, which then took
        # 0.5-14 ms a call instead of 0.5 ms (load_digits, 2 cores)
        with be.scope(), engine.running(), _other_blas_on_one_thread():
            found = scipy.optimize.minimize(loss_grad, start, method="L-BFGS-B", jac=True,
                                            options=options)
        self.n_iter_ = _check_optimize_result("lbfgs", found, self.max_iter)
        self.loss_ = float(found.fun)
        with be.scope():
            model.params[...] = be.asarray(found.x.astype(model.dtype))
        if not np.isfinite(found.x).all():
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")

    def _build(self, X, Y, hidden):
        dtype = self.dtype or ("float32" if X.dtype == np.float32 else "float64")
        self.model_ = MLP([X.shape[1], *hidden, self._width(Y)],
                          activation=_ACTIVATIONS[self.activation], loss=self._loss,
                          dtype=dtype, device=self.device,
                          seed=int(self._rng.randint(np.iinfo(np.int32).max)))
        self.n_iter_, self.t_ = 0, 0
        self._best_params = None
        self.n_layers_ = len(hidden) + 2
        self.n_outputs_ = self.model_.sizes[-1]
        self.out_activation_ = self.model_.loss_fn.head.sklearn
        if self.solver == "lbfgs":               # as scikit-learn: no curve, no scores
            return
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _make_optimizer(self):
        # Plain SGD steps scale with the gradient's units; the adaptive ones do not. The
        # L2 decay is set per fit (it depends on the batch); AdamW's is alpha, decoupled.
        lr = self.learning_rate_init
        if self.solver == "sgd":
            return optim.SGD(lr=lr / self._grad_factor, momentum=self.momentum,
                             nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        if self.solver in ("adam", "adamw"):
            cls = optim.Adam if self.solver == "adam" else optim.AdamW
            return cls(lr=lr, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                       weight_decay=0.0 if self.solver == "adam" else self.alpha)
        if self.solver == "rmsprop":
            return optim.RMSprop(lr=lr, eps=self.epsilon)
        return optim.AdaGrad(lr=lr, eps=self.epsilon)

    def _split(self, X, Y, y, w):
        # as scikit-learn: stratified only where its network has one output (binary labels)
        binary = isinstance(self, ClassifierMixin) and not self._multilabel \
            and len(self.classes_) == 2
        stratify = y if binary else None
        parts = train_test_split(X, Y, y, *([] if w is None else [w]),
                                 random_state=self._rng, test_size=self.validation_fraction,
                                 stratify=stratify)
        X_tr, X_val, Y_tr, _, _, y_val = parts[:6]
        w_tr, w_val = (parts[6], parts[7]) if w is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        return X_tr, X_val, Y_tr, y_val, w_tr, w_val

    def _epochs(self, model, data, batch, n, weight, incremental, X_val, y_val, w_val):
        opt = model.optimizer
        self.n_iter_ = 0                                   # per fit, as scikit-learn counts
        epochs = 1 if incremental else self.max_iter
        # One loop for every epoch of this call: one engine, one copy of the last finite
        # state, one report. The learning rate set between epochs is read by the next.
        # With early stopping a diverged fit goes on, as scikit-learn's does: its validation
        # scores are NaN from there, and the best (finite) weights are restored at the end.
        nonfinite = "ignore" if self.early_stopping else "raise"
        with model.backend.scope(), EpochLoop(model, data, opt, batch, shuffle=bool(self.shuffle),
                                              last_epoch=epochs, on_nonfinite=nonfinite) as loop:
            for _ in range(epochs):
                try:
                    logs = loop.run_epoch()
                except DivergedError as e:  # the weights are back to the last finite epoch's
                    raise ValueError("Solver produced non-finite parameter weights. The input "
                                     "data may contain large values and need to be "
                                     "preprocessed.") from e
                if self._after_epoch(logs["train_loss"], opt, batch, n, weight, X_val, y_val,
                                     w_val):
                    break                 # converged (scikit-learn's trigger_stopping)
                if not incremental and self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  "reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning, stacklevel=4)
        if self.early_stopping and self._best_params is not None:
            with model.backend.scope():       # the best of every fit so far, as scikit-learn
                model.params[...] = model.backend.asarray(self._best_params)
        elif self.early_stopping:             # diverged before any finite score
            with model.backend.scope():
                finite = bool(model.backend.xp.isfinite(model.params).all())
            if not finite:
                raise ValueError("Solver produced non-finite parameter weights. The input data "
                                 "may contain large values and need to be preprocessed.")

    def _after_epoch(self, train_loss, opt, batch, n, weight, X_val, y_val, w_val):
        """scikit-learn's bookkeeping after an epoch: loss_, the curve, the
        learning rate's schedule; whether training has converged."""
        penalty = sum(float((w * w).sum()) for w in self.model_.weights)
        self.loss_ = (train_loss * self._loss_factor
                      + 0.5 * self.alpha * penalty * -(-n // batch) / weight)
        self.n_iter_ += 1
        self.t_ += n
        self.loss_curve_.append(self.loss_)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
        self._update_no_improvement_count(X_val, y_val, w_val)
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            opt.lr = self.learning_rate_init / (self.t_ + 1) ** self.power_t / self._grad_factor
        if self._no_improvement_count > self.n_iter_no_change:
            if (self.solver != "sgd" or self.learning_rate != "adaptive"
                    or opt.lr * self._grad_factor <= 1e-6):
                return True
            opt.lr /= 5.0
            self._no_improvement_count = 0
        return False

    def _update_no_improvement_count(self, X_val, y_val, w_val):
        if self.early_stopping:
            score = self._score(X_val, y_val, w_val)
            self.validation_scores_.append(score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                model = self.model_           # a host copy: it pickles on any machine
                self._best_params = model.backend.to_numpy(model.params).copy()
            return
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])

    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` (n_samples, n_features) and ``y``; returns self.

        ``sample_weight`` (n_samples,) weights each sample's loss term; a
        batch's mean divides by its weight sum, as scikit-learn does. A call
        refused for its inputs, weights or parameters (ValueError) leaves the
        estimator as it was, fitted or not; so does a refused ``partial_fit``.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    # --- outputs ---------------------------------------------------------------------

    def _logits(self, X, prepared=False):
        """Output logits (n, K) as NumPy; ``prepared``: X is fit's own device array."""
        if not prepared:
            check_is_fitted(self, "model_")
            X = _validate_data(self, X, reset=False, dtype=_X_DTYPES, accept_sparse=_SPARSE)
            self._sync()
        model = self.model_
        with model.backend.scope():
            return model.backend.to_numpy(model.logits(X if prepared else model.prepare(X).x))

    def _host_params(self):
        """``(weights, biases)`` as NumPy arrays that are the model's: on the CPU
        views of its parameters; on a GPU views of one host copy, written back
        to the device before the model is next used (:meth:`_sync`)."""
        check_is_fitted(self, "model_")
        model = self.model_
        mirror = self.__dict__.get("_mirror")
        if mirror is None:
            host = model.backend.to_numpy(model.params)
            if host is model.params:              # the parameters are host memory already
                return list(model.weights), list(model.biases)
            host = host.copy()
            mirror = self._mirror = (host, *model.layout.views(host))
        return list(mirror[1]), list(mirror[2])

    def _sync(self):
        """Write a host copy handed out by ``coefs_``/``intercepts_`` (on a GPU)
        back to the model, and drop it: the next read copies afresh."""
        mirror = self.__dict__.pop("_mirror", None)
        if mirror is not None:
            model = self.model_
            with model.backend.scope():
                model.params[...] = model.backend.asarray(mirror[0])

    def _set_host(self, index, name, arrays):
        current = self._host_params()[index]
        arrays = list(arrays)
        if len(arrays) != len(current) or any(np.shape(a) != c.shape
                                               for a, c in zip(arrays, current)):
            raise ValueError(f"{name} must be {len(current)} arrays of shapes "
                             f"{[c.shape for c in current]}; got shapes "
                             f"{[np.shape(a) for a in arrays]}")
        for c, a in zip(current, arrays):
            c[...] = a
        self._sync()

    @property
    def coefs_(self):
        """Weight matrices (fan_in, fan_out) per layer, as NumPy arrays that are
        the model's own, as in scikit-learn: editing one in place changes the
        model (on the CPU they are views of its parameters; on a GPU, host
        copies written back before the model's next use), and assigning a
        list of arrays of the same shapes sets them."""
        return self._host_params()[0]

    @coefs_.setter
    def coefs_(self, arrays):
        self._set_host(0, "coefs_", arrays)

    @property
    def intercepts_(self):
        """Bias vectors per layer, as :attr:`coefs_` (the model's own arrays)."""
        return self._host_params()[1]

    @intercepts_.setter
    def intercepts_(self, arrays):
        self._set_host(1, "intercepts_", arrays)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __getstate__(self):
        if "_mirror" in self.__dict__:        # a pickle holds the edits, not the host copy
            self._sync()
        return super().__getstate__()


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier, trained by fastmlp; the interface of
    ``sklearn.neural_network.MLPClassifier`` (see this module's docstring for
    the few differences) with ``device``, ``dtype`` and ``class_weight``.

    Targets: any hashable class labels (strings, integers, booleans;
    ``classes_`` keeps them), binary or multiclass (softmax outputs), or a
    multilabel indicator matrix (one sigmoid output per label).
    ``class_weight`` ("balanced" or ``{label: weight}``) multiplies
    ``sample_weight``.
    """

    _grad_factor = 1.0

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 device="auto", dtype=None, class_weight=None):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha,
                         batch_size=batch_size, learning_rate=learning_rate,
                         learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
                         verbose=verbose, warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         device=device, dtype=dtype)
        self.class_weight = class_weight

    def _encode(self, y, first, classes=None):
        """Class ids (n,) for softmax outputs, or the 0/1 matrix (n, K) of a
        multilabel problem; sets ``classes_`` on a first fit."""
        if np.ndim(y) == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind == "multilabel-indicator":
            if first:
                self.classes_, self._multilabel = np.arange(y.shape[1]), True
            elif not getattr(self, "_multilabel", False) or y.shape[1] != len(self.classes_):
                raise ValueError("y must have the label columns of the first fit")
            # the core averages over samples and labels, scikit-learn sums over labels
            k = y.shape[1]
            self._loss, self._grad_factor, self._loss_factor = "binary_cross_entropy", 1 / k, k
            return np.asarray(y, dtype=np.float64)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"Unknown label type: {kind!r}; MLPClassifier takes class labels "
                             "or a multilabel indicator matrix")
        if first:
            # one class fits too, as in scikit-learn: two softmax outputs, every target the
            # first; predict gives that class, predict_proba (n, 2)
            found = unique_labels(y) if classes is None else unique_labels(classes)
            self.classes_, self._multilabel = found, False
        elif getattr(self, "_multilabel", False):
            raise ValueError("y must be a multilabel indicator matrix, as on the first fit")
        self._loss, self._grad_factor, self._loss_factor = "cross_entropy", 1.0, 1.0
        labels = unique_labels(y)
        if not first and self.warm_start and set(labels) != set(self.classes_):
            raise ValueError("warm_start can only be used where `y` has the same classes as "
                             f"in the previous call to fit. Previously got {self.classes_}, "
                             f"`y` has {labels}")
        unseen = np.setdiff1d(labels, self.classes_)
        if unseen.size:
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                             f"{self.classes_}. 'y' has {labels}.")
        return np.searchsorted(self.classes_, y)

    def _width(self, Y):
        return Y.shape[1] if self._multilabel else max(2, len(self.classes_))

    def _weights(self, y, sample_weight):
        if self.class_weight is None:
            return sample_weight
        if self._multilabel:
            raise ValueError("class_weight applies to single-label problems; for multilabel "
                             "targets pass sample_weight")
        if np.ndim(y) == 2:
            y = column_or_1d(y)
        classes = getattr(self, "classes_", None)
        if isinstance(self.class_weight, dict) and classes is not None:
            missing = set(self.class_weight) - set(classes.tolist())
            if missing:
                raise ValueError(f"class_weight names labels that are not classes: {missing}")
        weight = compute_sample_weight(self.class_weight, y)
        return weight if sample_weight is None else weight * sample_weight

    def _score(self, X, y, sample_weight):
        from sklearn.metrics import accuracy_score
        z = self._logits(X, prepared=True)
        if not np.isfinite(z).all():              # a diverged model: as scikit-learn scores it
            return np.nan
        return accuracy_score(y, self._decode(z), sample_weight=sample_weight)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the current weights and
        optimizer; ``classes`` (every label there will be) on the first call."""
        if self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' is not supported for partial_fit: each "
                             "chunk would be balanced on its own; pass a dict of weights, e.g. "
                             "from sklearn.utils.class_weight.compute_class_weight")
        first_call = not hasattr(self, "model_")
        if first_call and classes is None and type_of_target(y) != "multilabel-indicator":
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if not first_call and classes is not None and not np.array_equal(
                self.classes_, unique_labels(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                             f"partial_fit, was: {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def predict(self, X):
        """Class labels (n,), or the 0/1 matrix (n, K) of a multilabel problem."""
        return self._decode(self._logits(X))

    def _decode(self, z):
        if self._multilabel:
            return (z > 0).astype(int)
        if len(self.classes_) == 1:               # the second output stands for no class
            return np.repeat(self.classes_, z.shape[0])
        return self.classes_[z.argmax(axis=1)]

    def predict_proba(self, X):
        """Class probabilities (n, K): softmax, or per-label sigmoid for multilabel."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X):
        """Logarithms of :meth:`predict_proba`, computed from the logits (no log of 0)."""
        z = self._logits(X).astype(np.float64)
        if self._multilabel:
            return -np.logaddexp(0.0, -z)
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def decision_function(self, X):
        """The output logits (n, K); for two classes, the log-odds of the second (n,)."""
        z = self._logits(X)
        if not self._multilabel and z.shape[1] == 2:
            return z[:, 1] - z[:, 0]
        return z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _more_tags(self):                       # scikit-learn < 1.6
        return {"multilabel": True, "X_types": ["2darray", "sparse"]}


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor, trained by fastmlp; the interface of
    ``sklearn.neural_network.MLPRegressor`` with ``device`` and ``dtype``.
    ``loss="squared_error"`` (identity output; ``loss_`` is scikit-learn's half
    mean squared error) or ``"poisson"`` (counts or rates ``y >= 0``: a log
    link, exponential output; ``loss_`` is half the mean Poisson deviance,
    summed over outputs). Single or multi-output targets."""

    _loss = "mse"

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 device="auto", dtype=None):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha,
                         batch_size=batch_size, learning_rate=learning_rate,
                         learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
                         verbose=verbose, warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         device=device, dtype=dtype)
        self.loss = loss

    def _check_params(self):
        check("loss", self.loss, Options("squared_error", "poisson"))
        return super()._check_params()

    def _width(self, Y):
        return Y.shape[1]

    def _encode(self, y, first, classes=None):
        y = np.asarray(y, dtype=np.float64)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if first:
            self._n_outputs = Y.shape[1]
        elif Y.shape[1] != self._n_outputs:
            raise ValueError(f"y has {Y.shape[1]} outputs; the model was fitted with "
                             f"{self._n_outputs}")
        if self.loss == "poisson":
            # core: half the Poisson deviance, mean over samples and outputs, gradient
            # (e^z - y) / (n k); scikit-learn: the mean over samples summed over outputs,
            # gradient (e^z - y) / n
            self._loss, self._grad_factor, self._loss_factor = "poisson", 1.0 / Y.shape[1], \
                float(Y.shape[1])
            return Y
        # core: mean((p - y)^2) over samples and outputs, gradient 2 (p - y) / (n k);
        # scikit-learn: half of that mean, gradient (p - y) / n
        self._loss, self._grad_factor, self._loss_factor = "mse", 2.0 / Y.shape[1], 0.5
        return Y

    def _weights(self, y, sample_weight):
        return sample_weight

    def _score(self, X, y, sample_weight):
        from sklearn.metrics import r2_score
        z = self._values(self._logits(X, prepared=True))
        if not np.isfinite(z).all():              # a diverged model: as scikit-learn scores it
            return np.nan
        return r2_score(y, z[:, 0] if z.shape[1] == 1 else z, sample_weight=sample_weight)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights and optimizer."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predictions (n,) for one output, (n, n_outputs) for several (with
        ``loss="poisson"``, rates: the exponential of the output layer)."""
        z = self._values(self._logits(X))
        return z[:, 0] if z.shape[1] == 1 else z

    def _values(self, z):
        """Values from host logits, as the loss's head gives them (Poisson: e^z)."""
        with np.errstate(over="ignore"):          # inf where the model has diverged
            return self.model_.loss_fn.head.predict(z, np)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _more_tags(self):                       # scikit-learn < 1.6
        return {"multioutput": True, "X_types": ["2darray", "sparse"]}


_X_DTYPES = (np.float64, np.float32)
#: sparse X is taken in these formats (others are converted to the first); fastmlp keeps
#: it as CSR rows and never densifies it whole (fastmlp.sparse)
_SPARSE = ("csr", "csc", "coo")
