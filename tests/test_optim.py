"""Optimizers: the update maths against independent float64 references of
PyTorch's documented algorithms (and torch.optim itself when installed),
construction and validation, and training through a model on every device.
"""

import math

import numpy as np
import pytest

import fastmlp
from fastmlp import optim

STEPS = 6
SHAPES = [(5, 3), (7,)]          # two arrays: state must be kept per parameter


# --- independent references (plain NumPy, float64) ---------------------------
#
# Each is a literal transcription of the algorithm box in the PyTorch docs for
# torch.optim.<Name>, with the options fastmlp does not expose pinned to the
# values fastmlp implies (dampening=0, lr_decay=0, initial_accumulator_value=0,
# centered=False, RMSprop momentum=0, amsgrad=False, maximize=False).

class RefSGD:
    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.mu, self.nesterov, self.wd = lr, momentum, nesterov, weight_decay
        self.buf = {}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.wd != 0:
                g = g + self.wd * p
            if self.mu != 0:
                if self.t > 1:
                    self.buf[i] = self.mu * self.buf[i] + g          # (1 - dampening) = 1
                else:
                    self.buf[i] = g.copy()
                g = g + self.mu * self.buf[i] if self.nesterov else self.buf[i]
            params[i] = p - self.lr * g


class RefAdagrad:
    def __init__(self, lr, eps=1e-10, weight_decay=0.0):
        self.lr, self.eps, self.wd = lr, eps, weight_decay
        self.sum = {}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        clr = self.lr / (1 + (self.t - 1) * 0.0)                    # lr_decay = 0
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.wd != 0:
                g = g + self.wd * p
            self.sum[i] = self.sum.get(i, np.zeros_like(p)) + g * g  # initial accumulator 0
            params[i] = p - clr * g / (np.sqrt(self.sum[i]) + self.eps)


class RefRMSprop:
    def __init__(self, lr, alpha=0.99, eps=1e-8, weight_decay=0.0):
        self.lr, self.alpha, self.eps, self.wd = lr, alpha, eps, weight_decay
        self.sq = {}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.wd != 0:
                g = g + self.wd * p
            v = self.sq.get(i, np.zeros_like(p))
            self.sq[i] = self.alpha * v + (1 - self.alpha) * g * g
            params[i] = p - self.lr * g / (np.sqrt(self.sq[i]) + self.eps)


class RefAdam:
    decoupled = False

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.m, self.v = {}, {}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        t = self.t
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.decoupled:
                p = p * (1 - self.lr * self.wd)
            elif self.wd != 0:
                g = g + self.wd * p
            self.m[i] = self.b1 * self.m.get(i, np.zeros_like(p)) + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v.get(i, np.zeros_like(p)) + (1 - self.b2) * g * g
            m_hat = self.m[i] / (1 - self.b1 ** t)
            v_hat = self.v[i] / (1 - self.b2 ** t)
            params[i] = p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class RefAdamW(RefAdam):
    decoupled = True


# (id, fastmlp class, kwargs, reference class, torch.optim class name)
# Non-default alphas / betas / eps are used on purpose: swapped or misplaced
# hyperparameters (eps inside the sqrt, beta1 for beta2, ...) change the result.
CASES = [
    ("sgd", optim.SGD, dict(lr=0.1), RefSGD, "SGD"),
    ("sgd_momentum", optim.SGD, dict(lr=0.1, momentum=0.9), RefSGD, "SGD"),
    ("sgd_nesterov", optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True), RefSGD, "SGD"),
    ("sgd_weight_decay", optim.SGD, dict(lr=0.1, weight_decay=0.3), RefSGD, "SGD"),
    ("sgd_nesterov_weight_decay", optim.SGD,
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.2), RefSGD, "SGD"),
    ("adagrad", optim.AdaGrad, dict(lr=0.1, eps=1e-3), RefAdagrad, "Adagrad"),
    ("adagrad_weight_decay", optim.AdaGrad, dict(lr=0.1, eps=1e-10, weight_decay=0.2),
     RefAdagrad, "Adagrad"),
    ("rmsprop", optim.RMSprop, dict(lr=0.01, alpha=0.9, eps=1e-3), RefRMSprop, "RMSprop"),
    ("rmsprop_weight_decay", optim.RMSprop, dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.2),
     RefRMSprop, "RMSprop"),
    ("adam", optim.Adam, dict(lr=0.01, betas=(0.8, 0.95), eps=1e-3), RefAdam, "Adam"),
    ("adam_default_eps", optim.Adam, dict(lr=0.01), RefAdam, "Adam"),
    ("adam_l2", optim.Adam, dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3),
     RefAdam, "Adam"),
    ("adamw", optim.AdamW, dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3),
     RefAdamW, "AdamW"),
]
CASE_IDS = [c[0] for c in CASES]

TORCH_EXTRA = {
    "SGD": dict(dampening=0.0),
    "Adagrad": dict(lr_decay=0.0, initial_accumulator_value=0.0),
    "RMSprop": dict(momentum=0.0, centered=False),
    "Adam": dict(amsgrad=False),
    "AdamW": dict(amsgrad=False),
}


def _data(seed=0):
    """Initial params and STEPS gradient lists, float64, host."""
    rng = np.random.default_rng(seed)
    p0 = [rng.normal(0.0, 1.0, s) for s in SHAPES]
    gs = [[rng.normal(0.0, 1.0, s) for s in SHAPES] for _ in range(STEPS)]
    return p0, gs


def _close(actual, expected, rtol=1e-12, atol=1e-14, msg=""):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=msg)


def _device_arrays(be, host):
    # be.asarray never copies on the CPU: copy so the test's own data stay intact.
    with be.scope():
        return [be.asarray(a.copy()) for a in host]


# --- the update maths ----------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_update_matches_pytorch_algorithm(device, case):
    _, cls, kwargs, ref_cls, _ = case
    be = fastmlp.get_backend(device)
    p0, gs = _data()
    params = _device_arrays(be, p0)
    opt = cls(**kwargs)
    opt.init(params, be.ops)
    ref = ref_cls(**kwargs)
    ref_params = [a.copy() for a in p0]
    for step, g in enumerate(gs, 1):
        grads = _device_arrays(be, g)
        opt.step(params, grads)
        ref.step(ref_params, g)
        assert opt.t == step
        for i, (p, r) in enumerate(zip(params, ref_params)):
            assert p.dtype == np.float64
            _close(be.to_numpy(p), r, msg=f"param {i} after step {step}")
    # the parameters really moved (a no-op optimizer must not pass)
    for p, start in zip(params, p0):
        assert not np.allclose(be.to_numpy(p), start)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_update_matches_torch_optim(device, case):
    torch = pytest.importorskip("torch")
    _, cls, kwargs, _, torch_name = case
    be = fastmlp.get_backend(device)
    p0, gs = _data(seed=1)
    params = _device_arrays(be, p0)
    opt = cls(**kwargs)
    opt.init(params, be.ops)
    tparams = [torch.nn.Parameter(torch.tensor(a, dtype=torch.float64)) for a in p0]
    tkwargs = {**kwargs, **TORCH_EXTRA[torch_name]}
    if "betas" in tkwargs:
        tkwargs["betas"] = tuple(tkwargs["betas"])
    if torch_name == "AdamW":
        tkwargs.setdefault("weight_decay", opt.weight_decay)
    topt = getattr(torch.optim, torch_name)(tparams, foreach=False, **tkwargs)
    for step, g in enumerate(gs, 1):
        opt.step(params, _device_arrays(be, g))
        for tp, a in zip(tparams, g):
            tp.grad = torch.tensor(a, dtype=torch.float64)
        topt.step()
        for i, (p, tp) in enumerate(zip(params, tparams)):
            _close(be.to_numpy(p), tp.detach().numpy(), rtol=1e-11, atol=1e-13,
                   msg=f"param {i} after step {step} vs torch.optim.{torch_name}")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_step_leaves_gradients_untouched(device, case):
    _, cls, kwargs, _, _ = case
    be = fastmlp.get_backend(device)
    p0, gs = _data(seed=2)
    params = _device_arrays(be, p0)
    opt = cls(**kwargs)
    opt.init(params, be.ops)
    for g in gs[:3]:
        grads = _device_arrays(be, g)
        opt.step(params, grads)
        for dg, hg in zip(grads, g):
            np.testing.assert_array_equal(be.to_numpy(dg), hg)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_state_lives_on_device_and_init_resets_it(device, case):
    _, cls, kwargs, _, _ = case
    be = fastmlp.get_backend(device)
    p0, gs = _data(seed=3)
    params = _device_arrays(be, p0)
    opt = cls(**kwargs)
    opt.init(params, be.ops)
    assert opt.t == 0
    arrays = opt.state_arrays()
    expected_slots = {"sgd": ("velocity",) if kwargs.get("momentum") else (),
                      "adagrad": ("sum_sq",), "rmsprop": ("mean_sq",),
                      "adam": ("m", "v"), "adamw": ("m", "v")}[opt.name]
    assert set(arrays) == {f"{i}.{s}" for i in range(len(params)) for s in expected_slots}
    for key, a in arrays.items():
        i = int(key.split(".")[0])
        assert type(a) is type(params[i])
        assert a.shape == params[i].shape and a.dtype == params[i].dtype
        assert not be.to_numpy(a).any()
    for g in gs[:2]:
        opt.step(params, _device_arrays(be, g))
    assert opt.t == 2
    if expected_slots:
        assert any(be.to_numpy(a).any() for a in opt.state_arrays().values())
    opt.init(params, be.ops)
    assert opt.t == 0
    assert not any(be.to_numpy(a).any() for a in opt.state_arrays().values())


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CASES])
def test_state_round_trip_through_load_state(device, case):
    """state_arrays() -> load_state() (what checkpoints and MLP.to do) resumes exactly."""
    _, cls, kwargs, _, _ = case
    be = fastmlp.get_backend(device)
    p0, gs = _data(seed=4)
    a_params = _device_arrays(be, p0)
    a = cls(**kwargs)
    a.init(a_params, be.ops)
    for g in gs[:3]:
        a.step(a_params, _device_arrays(be, g))
    b = cls(**kwargs)
    b_params = _device_arrays(be, [be.to_numpy(p) for p in a_params])
    with be.scope():
        copied = {k: be.xp.array(v) for k, v in a.state_arrays().items()}
    b.load_state(b_params, copied, a.t, be.ops)
    assert b.t == a.t == 3
    for g in gs[3:]:
        a.step(a_params, _device_arrays(be, g))
        b.step(b_params, _device_arrays(be, g))
    for pa, pb in zip(a_params, b_params):
        np.testing.assert_array_equal(be.to_numpy(pb), be.to_numpy(pa))


# --- construction, validation, repr -------------------------------------------

@pytest.mark.parametrize("name, cls", [("sgd", optim.SGD), ("SGD", optim.SGD),
                                       ("adagrad", optim.AdaGrad), ("AdaGrad", optim.AdaGrad),
                                       ("rmsprop", optim.RMSprop), ("RMSProp", optim.RMSprop),
                                       ("adam", optim.Adam), ("ADAM", optim.Adam),
                                       ("adamw", optim.AdamW), ("AdamW", optim.AdamW)])
def test_get_by_name_is_case_insensitive(name, cls):
    opt = optim.get(name, lr=0.1)
    assert type(opt) is cls
    assert opt.lr == 0.1
    assert opt.state is None and opt.t == 0


def test_get_passes_options_and_keeps_default_lr():
    opt = optim.get("sgd", lr=0.2, momentum=0.9, nesterov=True)
    assert (opt.lr, opt.momentum, opt.nesterov) == (0.2, 0.9, True)
    assert optim.get("adam").lr == optim.Adam().lr == 0.001
    assert optim.get("adamw").weight_decay == 0.01


def test_get_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown optimizer") as err:
        optim.get("lion", lr=0.1)
    for name in ("sgd", "adagrad", "rmsprop", "adam", "adamw"):
        assert repr(name) in str(err.value)


def test_get_instance():
    opt = optim.Adam(lr=0.1)
    assert optim.get(opt) is opt
    with pytest.raises(ValueError, match="instance"):
        optim.get(opt, lr=0.1)
    with pytest.raises(ValueError, match="instance"):
        optim.get(opt, eps=1e-6)
    with pytest.raises(TypeError, match="optimizer must be"):
        optim.get(3)


@pytest.mark.parametrize("cls, kwargs, exc, match", [
    (optim.SGD, dict(lr=0.0), ValueError, "lr"),
    (optim.SGD, dict(lr=-0.1), ValueError, "lr"),
    (optim.SGD, dict(lr=math.nan), ValueError, "lr"),
    (optim.Adam, dict(lr=math.nan), ValueError, "lr"),
    (optim.SGD, dict(lr=math.inf), ValueError, "lr"),
    (optim.Adam, dict(lr=1e-3, eps=math.inf), ValueError, "eps"),
    (optim.SGD, dict(lr="0.1"), TypeError, "lr"),
    (optim.SGD, dict(lr=None), TypeError, "lr"),
    (optim.SGD, dict(lr=True), TypeError, "lr"),
    (optim.SGD, dict(lr=0.1, momentum=1.0), ValueError, "momentum"),
    (optim.SGD, dict(lr=0.1, momentum=1.5), ValueError, "momentum"),
    (optim.SGD, dict(lr=0.1, momentum=-0.1), ValueError, "momentum"),
    (optim.SGD, dict(lr=0.1, momentum=math.nan), ValueError, "momentum"),
    (optim.SGD, dict(lr=0.1, nesterov=True), ValueError, "nesterov"),
    (optim.SGD, dict(lr=0.1, momentum=0.0, nesterov=True), ValueError, "nesterov"),
    (optim.SGD, dict(lr=0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (optim.AdaGrad, dict(lr=0.1, weight_decay=-1.0), ValueError, "weight_decay"),
    (optim.AdaGrad, dict(lr=0.1, eps=0.0), ValueError, "eps"),
    (optim.RMSprop, dict(lr=0.1, alpha=1.0), ValueError, "alpha"),
    (optim.RMSprop, dict(lr=0.1, alpha=-0.5), ValueError, "alpha"),
    (optim.RMSprop, dict(lr=0.1, eps=-1e-8), ValueError, "eps"),
    (optim.Adam, dict(lr=0.1, betas=(0.9, 1.0)), ValueError, "betas"),
    (optim.Adam, dict(lr=0.1, betas=(-0.1, 0.999)), ValueError, "betas"),
    (optim.Adam, dict(lr=0.1, betas=(0.9,)), ValueError, "betas"),
    (optim.Adam, dict(lr=0.1, weight_decay=-0.01), ValueError, "weight_decay"),
    (optim.AdamW, dict(lr=0.1, weight_decay=-0.01), ValueError, "weight_decay"),
    (optim.AdamW, dict(lr=-1.0), ValueError, "lr"),
])
def test_invalid_hyperparameters_raise(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)


def test_get_validates_hyperparameters_too():
    with pytest.raises(ValueError, match="lr"):
        optim.get("adam", lr=0)
    with pytest.raises(ValueError, match="momentum"):
        optim.get("sgd", lr=0.1, momentum=1)


@pytest.mark.parametrize("cls", [optim.SGD, optim.AdaGrad, optim.RMSprop, optim.Adam,
                                 optim.AdamW])
def test_step_before_init_raises(cls):
    opt = cls(lr=0.1)
    p, g = np.zeros(3), np.ones(3)
    with pytest.raises(RuntimeError, match="init"):
        opt.step([p], [g])
    assert opt.t == 0
    assert not p.any()


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_config_and_repr_round_trip(case):
    _, cls, kwargs, _, _ = case
    opt = cls(**kwargs)
    config = opt.config()
    for key, value in kwargs.items():
        got = config[key]
        assert (list(got) if key == "betas" else got) == (list(value) if key == "betas" else value)
    rebuilt = type(opt)(**config)
    assert type(rebuilt) is type(opt)
    assert rebuilt.config() == config
    text = repr(opt)
    assert text.startswith(f"{cls.__name__}(")
    assert f"lr={opt.lr!r}" in text
    again = eval(text, {cls.__name__: cls})
    assert type(again) is cls and again.config() == config


# --- training through a model --------------------------------------------------

TRAINERS = [
    ("sgd", dict(optimizer="sgd", lr=0.1)),
    ("sgd_momentum", dict(optimizer=lambda: optim.SGD(lr=0.05, momentum=0.9))),
    ("sgd_nesterov", dict(optimizer=lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True,
                                                      weight_decay=1e-4))),
    ("adagrad", dict(optimizer="adagrad", lr=0.1)),
    ("rmsprop", dict(optimizer="rmsprop", lr=0.01)),
    ("adam", dict(optimizer="adam", lr=0.01)),
    ("adamw", dict(optimizer="adamw", lr=0.01)),
]


@pytest.mark.parametrize("kwargs", [t[1] for t in TRAINERS], ids=[t[0] for t in TRAINERS])
def test_training_reduces_loss(device, blobs, kwargs):
    x, y = blobs
    kwargs = dict(kwargs)
    if callable(kwargs["optimizer"]):
        kwargs["optimizer"] = kwargs["optimizer"]()
    model = fastmlp.MLP([4, 16, 3], seed=0, device=device)
    start = model.evaluate(x, y)
    hist = model.fit(x, y, epochs=30, batch_size=32, **kwargs)
    losses = hist.history["train_loss"]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.3 * losses[0], losses
    end = model.evaluate(x, y)
    assert end["loss"] < 0.2 * start["loss"], (start, end)
    assert end["accuracy"] >= 0.95, end
    opt = model.optimizer
    assert opt is not None and opt.t == 30 * 3           # 90 samples / batch 32 -> 3 steps
    if not isinstance(kwargs["optimizer"], str):
        assert opt is kwargs["optimizer"]
    for key, a in opt.state_arrays().items():
        assert type(a) is type(model.params), key
        assert a.shape == model.params.shape and a.dtype == model.params.dtype
        if model.backend.is_cuda:
            assert a.device == model.params.device
    if opt.name != "sgd" or opt.momentum:
        assert opt.state_arrays(), "a stateful optimizer kept no state"


def test_numpy_scalars_are_accepted_as_hyperparameters():
    opt = optim.SGD(lr=np.float32(0.5), momentum=np.float64(0.9))
    assert opt.lr == 0.5 and isinstance(opt.lr, float)
    assert optim.Adam(lr=np.int64(1)).lr == 1.0
