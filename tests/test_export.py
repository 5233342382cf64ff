"""fastmlp.export: state_dict layouts, the PyTorch network and the ONNX file
match the model (torch, onnx and onnxruntime tests skip when those are absent)."""

import os
import sys

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import export

ACTIVATIONS = ["relu", "sigmoid", "tanh", "identity"]
LOSSES = {"cross_entropy": 3, "binary_cross_entropy": 2, "mse": 2, "l1": 1,    # loss -> K
          "poisson": 2}
CLASSIFIERS = ("cross_entropy", "binary_cross_entropy")
RTOL, ATOL = 1e-5, 1e-6


def make(sizes=(5, 8, 6, 3), activation="relu", loss="cross_entropy", bias=True,
         dtype="float32", device="cpu", seed=0, dropout=0.0):
    """A model with non-zero biases (fresh ones are zero, which would hide a
    bias that is dropped or misplaced)."""
    model = fm.MLP(list(sizes), activation, loss, bias=bias, dtype=dtype, device=device,
                   seed=seed, dropout=dropout)
    rng = np.random.default_rng(seed + 1)
    for b in model.biases:
        if b is not None:
            b[...] = model.backend.asarray(rng.normal(0, 0.5, b.shape), dtype=model.dtype)
    return model


def inputs(n, n_in=5, dtype="float32", seed=2):
    return np.random.default_rng(seed).normal(0, 1, (n, n_in)).astype(dtype)


def host(model, a):
    return model.backend.to_numpy(a)


def reference_logits(model, x):
    return host(model, model.logits(model.prepare(x).x))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- state_dict -------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(5, 3), (5, 8, 3), (5, 8, 7, 6, 3)],
                         ids=["1-layer", "2-layers", "4-layers"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_dict_torch_layout(sizes, bias, dtype):
    model = make(sizes, "identity", bias=bias, dtype=dtype)
    sd = export.state_dict(model)
    n_layers = len(sizes) - 1
    expected = []
    for i in range(n_layers):
        expected += [f"{2 * i}.weight"] + ([f"{2 * i}.bias"] if bias else [])
    assert list(sd) == expected                       # identity still interleaved: 0, 2, 4, ...
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = sd[f"{2 * i}.weight"]
        assert w.shape == (fan_out, fan_in)
        assert w.dtype == np.dtype(dtype) and w.flags.c_contiguous
        np.testing.assert_array_equal(w, host(model, model.weights[i]).T)
        if bias:
            assert sd[f"{2 * i}.bias"].shape == (fan_out,)
            np.testing.assert_array_equal(sd[f"{2 * i}.bias"], host(model, model.biases[i]))
    if n_layers > 1:                                  # a non-square layer: really transposed
        assert sd["0.weight"].shape != host(model, model.weights[0]).shape


def test_state_dict_fastmlp_layout():
    model = make((5, 8, 3))
    sd = export.state_dict(model, layout="fastmlp")
    assert list(sd) == ["weights.0", "biases.0", "weights.1", "biases.1"]
    np.testing.assert_array_equal(sd["weights.0"], host(model, model.weights[0]))
    assert sd["weights.0"].shape == (5, 8)
    assert list(export.state_dict(make((5, 8, 3), bias=False), "fastmlp")) == [
        "weights.0", "weights.1"]


def test_state_dict_copies(device):
    model = make((5, 8, 3), device=device)
    before = host(model, model.params).copy()
    for layout in export.LAYOUTS:
        for a in export.state_dict(model, layout).values():
            assert isinstance(a, np.ndarray)
            a[...] = 123.0
    np.testing.assert_array_equal(host(model, model.params), before)


def test_state_dict_bad_layout():
    with pytest.raises(ValueError, match="unknown layout 'keras'"):
        export.state_dict(make(), layout="keras")


# --- to_torch ---------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_torch_matches_model(activation, loss, bias, dtype):
    torch = pytest.importorskip("torch")
    model = make((5, 8, 6, LOSSES[loss]), activation, loss, bias=bias, dtype=dtype)
    net = export.to_torch(model)
    x = inputs(7, dtype=dtype)
    with torch.no_grad():
        z = net(torch.from_numpy(x))
    assert z.dtype == {"float32": torch.float32, "float64": torch.float64}[dtype]
    z = z.numpy()
    np.testing.assert_allclose(z, reference_logits(model, x), rtol=RTOL, atol=ATOL)
    if loss == "cross_entropy":
        np.testing.assert_allclose(softmax(z), model.predict_proba(x), rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(z.argmax(axis=1), model.predict(x))
    elif loss == "binary_cross_entropy":
        np.testing.assert_allclose(1 / (1 + np.exp(-z)), model.predict_proba(x),
                                   rtol=RTOL, atol=ATOL)
    elif loss == "poisson":                       # log rates
        np.testing.assert_allclose(np.exp(z), model.predict(x), rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_allclose(z.reshape(model.predict(x).shape), model.predict(x),
                                   rtol=RTOL, atol=ATOL)


def test_to_torch_structure():
    torch = pytest.importorskip("torch")
    model = make((5, 8, 7, 3), "tanh", dropout=0.5)      # dropout: not exported
    net = export.to_torch(model)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]   # logits: no final act
    assert not net.training
    assert list(net.state_dict()) == list(export.state_dict(model))
    # copies: changing the network leaves the model alone, and the reverse
    before = host(model, model.params).copy()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    np.testing.assert_array_equal(host(model, model.params), before)
    model.weights[2][...] = 0
    assert float(net[4].weight.detach().abs().sum()) > 0

    ident = export.to_torch(make((5, 8, 7, 3), "identity", bias=False))
    assert [type(m).__name__ for m in ident] == ["Linear", "Identity", "Linear", "Identity",
                                                  "Linear"]
    assert ident[0].bias is None
    single = export.to_torch(make((5, 3)))
    assert [type(m).__name__ for m in single] == ["Linear"]


def test_to_torch_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)      # import torch now fails
    with pytest.raises(ImportError, match="pip install torch"):
        export.to_torch(make())


# --- onnx: argument checks (no onnx needed) -------------------------------------


def test_onnx_bad_output(tmp_path):
    with pytest.raises(ValueError, match="unknown output 'probs'"):
        export.onnx(make(), tmp_path / "m.onnx", output="probs")
    with pytest.raises(ValueError, match="needs a classification loss"):
        export.onnx(make(loss="mse"), tmp_path / "m.onnx", output="probabilities")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"opset": 11}, ValueError, "opset must be an integer >= 13"),
    ({"opset": "17"}, TypeError, "opset must be an integer"),
    ({"dtype": "float16"}, ValueError, "dtype must be None"),
    ({"dtype": "nonsense"}, ValueError, "dtype must be None"),
])
def test_onnx_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export.onnx(make(), tmp_path / "m.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_onnx_missing_directory(tmp_path):
    target = tmp_path / "no" / "such" / "m.onnx"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        export.onnx(make(), target)
    assert info.value.filename == str(target)
    assert str(tmp_path / "no" / "such") in str(info.value)
    assert list(tmp_path.iterdir()) == []                # nothing created on the way


def test_onnx_target_is_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        export.onnx(make(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_onnx_nonfinite_parameters(tmp_path):
    model = make()
    model.weights[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        export.onnx(model, tmp_path / "m.onnx")
    big = make(dtype="float64")
    big.weights[0][0, 0] = 1e300                         # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"NaN or inf \(in float32\)"):
        export.onnx(big, tmp_path / "m.onnx", dtype="float32")
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_onnx(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)       # import onnx now fails
    with pytest.raises(ImportError, match=r'pip install "fastmlp\[onnx\]"'):
        export.onnx(make(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


# --- onnx: the file, run in onnxruntime ------------------------------------------


def session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


@pytest.fixture
def onnx_mod():
    pytest.importorskip("onnxruntime")
    return pytest.importorskip("onnx")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_matches_model(onnx_mod, tmp_path, activation, loss, bias, dtype):
    model = make((5, 8, 6, LOSSES[loss]), activation, loss, bias=bias, dtype=dtype)
    path = tmp_path / "m.onnx"
    export.onnx(model, path)                                    # output="auto"
    sess = session(path)
    assert sess.get_inputs()[0].type == f"tensor({'float' if dtype == 'float32' else 'double'})"
    for n in (1, 7):                                            # one graph, any batch size
        x = inputs(n, dtype=dtype)
        (y,) = sess.run(["y"], {"x": x})
        want = model.predict_proba(x) if loss in CLASSIFIERS else model.predict(x)
        assert y.shape == want.shape and y.dtype == want.dtype
        np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("loss, k", [(loss, k) for loss in LOSSES for k in (1, 3)
                                     if (loss, k) != ("cross_entropy", 1)])
def test_onnx_outputs(onnx_mod, tmp_path, loss, k):
    model = make((5, 8, k), "relu", loss)
    x = inputs(7)
    outputs = ["logits", "predictions"] + (["probabilities"] if loss in CLASSIFIERS else [])
    for output in outputs:
        path = tmp_path / f"{output}.onnx"
        export.onnx(model, path, output=output)
        (y,) = session(path).run(None, {"x": x})
        if output == "logits":
            want = reference_logits(model, x)
        elif output == "predictions":
            want = model.predict(x)
        else:
            want = model.predict_proba(x)
        assert y.shape == want.shape and y.dtype == want.dtype, output
        np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL, err_msg=output)


def test_onnx_float64_model_as_float32(onnx_mod, tmp_path):
    model = make(activation="sigmoid", dtype="float64")
    path = tmp_path / "m.onnx"
    export.onnx(model, path, dtype="float32")
    x = inputs(7, dtype="float64")
    (y,) = session(path).run(None, {"x": x.astype(np.float32)})
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, model.predict_proba(x), rtol=RTOL, atol=ATOL)


def test_onnx_single_layer(onnx_mod, tmp_path):
    model = make((5, 3), loss="binary_cross_entropy", bias=False)
    path = tmp_path / "m.onnx"
    export.onnx(model, path, opset=13)
    x = inputs(7)
    (y,) = session(path).run(None, {"x": x})
    np.testing.assert_allclose(y, model.predict_proba(x), rtol=RTOL, atol=ATOL)


def test_onnx_graph(onnx_mod, tmp_path):
    model = make((5, 8, 6, 3), "tanh")
    path = tmp_path / "m.onnx"
    proto = export.onnx(model, path, opset=17)
    loaded = onnx_mod.load(os.fspath(path))
    assert loaded.SerializeToString() == proto.SerializeToString()
    onnx_mod.checker.check_model(loaded, full_check=True)
    g = loaded.graph
    assert [i.name for i in g.input] == ["x"] and [o.name for o in g.output] == ["y"]
    dims = g.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 5
    assert [d.dim_param or d.dim_value for d in g.output[0].type.tensor_type.shape.dim] == [
        "batch", 3]
    assert [n.op_type for n in g.node] == ["MatMul", "Add", "Tanh"] * 2 + [
        "MatMul", "Add", "Softmax"]
    inits = {t.name: onnx_mod.numpy_helper.to_array(t) for t in g.initializer}
    assert sorted(inits) == sorted(f"layers.{i}.{p}" for i in range(3)
                                   for p in ("weight", "bias"))
    np.testing.assert_array_equal(inits["layers.1.weight"], host(model, model.weights[1]))
    np.testing.assert_array_equal(inits["layers.2.bias"], host(model, model.biases[2]))
    assert [(o.domain, o.version) for o in loaded.opset_import] == [("", 17)]
    assert loaded.ir_version == onnx_mod.helper.find_min_ir_version_for(loaded.opset_import)
    props = {p.key: p.value for p in loaded.metadata_props}
    assert props == {"fastmlp.sizes": "5,8,6,3", "fastmlp.activation": "tanh",
                     "fastmlp.loss": "cross_entropy", "fastmlp.output": "probabilities"}
    ident = export.onnx(make(activation="identity", bias=False), tmp_path / "i.onnx",
                        output="logits")
    assert [n.op_type for n in ident.graph.node] == ["MatMul"] * 3


def test_onnx_replaces_file_and_leaves_no_temp(onnx_mod, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    export.onnx(make(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert onnx_mod.load(os.fspath(path)).graph.output[0].name == "y"


def test_onnx_checker_failure_creates_nothing(onnx_mod, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise onnx_mod.checker.ValidationError("refused")
    monkeypatch.setattr(onnx_mod.checker, "check_model", refuse)
    with pytest.raises(onnx_mod.checker.ValidationError):
        export.onnx(make(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
