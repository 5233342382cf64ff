"""Export a trained :class:`fastmlp.MLP` to PyTorch and to ONNX.

Three ways out, none of which changes the model:

- :func:`state_dict` gives the parameters as a dict of NumPy arrays (copies),
  named and laid out for PyTorch (``layout="torch"``, the default) or as in
  fastmlp's own checkpoints (``layout="fastmlp"``). It needs nothing beyond
  NumPy: ``torch.load_state_dict`` takes it after ``torch.from_numpy``.
- :func:`to_torch` builds the equivalent ``torch.nn.Sequential`` with the
  weights copied in (needs ``pip install torch``).
- :func:`onnx` writes an ONNX file for onnxruntime and other ONNX runtimes
  (needs ``pip install "fastmlp[onnx]"``).

Layouts and names
-----------------
fastmlp stores layer ``i`` as ``weights[i]`` of shape (fan_in, fan_out) and
computes ``x @ W + b``; PyTorch's ``nn.Linear`` stores (fan_out, fan_in) and
computes ``x @ W.T + b``. The torch layout is therefore the transpose.

The PyTorch network is ``Sequential(Linear, act, Linear, act, ..., Linear)``:
one activation module after every hidden layer and none after the output
layer, so layer ``i`` is module ``2 * i`` and its keys are
``f"{2 * i}.weight"`` (fan_out, fan_in) and ``f"{2 * i}.bias"`` (fan_out,)
(absent for a model made with ``bias=False``). An ``activation="identity"``
model still gets ``nn.Identity`` modules between its layers, so that the
indices are the same for every activation. Dropout is not exported: it only
acts while training, and at inference the network is exactly this one.

``layout="fastmlp"`` gives ``weights.{i}`` (fan_in, fan_out) and
``biases.{i}`` (fan_out,), the names of :meth:`fastmlp.MLP.save`'s tensors.

Outputs
-------
The exported PyTorch network ends with the output layer's logits, as PyTorch
models do: the softmax (``cross_entropy``) or sigmoid
(``binary_cross_entropy``) belongs to the loss (``nn.CrossEntropyLoss``,
``nn.BCEWithLogitsLoss``) or is applied by the caller
(``torch.softmax(net(x), dim=1)`` equals ``model.predict_proba(x)``).

The ONNX graph takes one input ``"x"`` of shape (batch, n_in), the batch
dimension dynamic (named ``"batch"``), and gives one output ``"y"``, chosen
by ``output=``:

- ``"probabilities"``: softmax or sigmoid of the logits (batch, K), what
  :meth:`~fastmlp.MLP.predict_proba` returns (classifiers only);
- ``"logits"``: the output layer's pre-activations (batch, K);
- ``"predictions"``: what :meth:`~fastmlp.MLP.predict` returns: int64 class
  ids (batch,) for ``cross_entropy``, int64 0/1 labels (batch, K) for
  ``binary_cross_entropy``, values (batch, K) for ``mse`` and ``l1``, with
  shape (batch,) when K is 1;
- ``"auto"`` (the default): ``"probabilities"`` for classifiers,
  ``"predictions"`` for regression.

Each layer is a ``MatMul`` and, with biases, an ``Add``, followed by
``Relu``, ``Sigmoid`` or ``Tanh`` (nothing for identity) on hidden layers;
the initializers are ``layers.{i}.weight`` (fan_in, fan_out, fastmlp's
layout, so no transpose is needed) and ``layers.{i}.bias``. The graph
computes in the model's dtype: a float64 model gives a float64 graph that
takes float64 inputs, unless ``dtype="float32"`` casts the parameters.
"""


from numbers import Integral

import numpy as np

from fastmlp import atomic
from fastmlp.constraints import Interval, check
from fastmlp.kernels.losses import EXP_HEAD, SIGMOID_HEAD, SOFTMAX

__all__ = ["state_dict", "to_torch", "onnx", "LAYOUTS", "ONNX_OUTPUTS", "MIN_OPSET"]

#: the layouts :func:`state_dict` knows
LAYOUTS = ("torch", "fastmlp")
#: the ``output=`` choices of :func:`onnx`
ONNX_OUTPUTS = ("auto", "probabilities", "logits", "predictions")
#: the oldest ONNX opset :func:`onnx` writes (Softmax over one axis, Squeeze's
#: axes as an input)
MIN_OPSET = 13


def _host_parameters(model, fold_scale=True):
    """``[(W (fan_in, fan_out), b (fan_out,) or None), ...]`` as NumPy copies;
    with ``fold_scale``, the model's ``input_scale`` is folded into W0
    (``(x s) W0 = x (s W0)``), so the exported network takes the inputs the
    model takes."""
    to_numpy = model.backend.to_numpy
    found = [(np.array(to_numpy(w), copy=True),
              None if b is None else np.array(to_numpy(b), copy=True))
             for w, b in zip(model.weights, model.biases)]
    if fold_scale and model.input_scale != 1.0:
        found[0][0][...] *= found[0][0].dtype.type(model.input_scale)
    return found


def state_dict(model, layout="torch"):
    """The parameters of ``model`` as a dict of NumPy arrays (copies, in the
    model's dtype; changing them does not change the model).

    Args:
        model: a :class:`fastmlp.MLP`, on any device.
        layout: ``"torch"`` (default): the keys and shapes of the
            ``torch.nn.Sequential`` that :func:`to_torch` builds:
            ``"0.weight"`` (fan_out, fan_in), ``"0.bias"`` (fan_out,), then
            ``"2.weight"``, ``"2.bias"``, ... (layer ``i`` is module ``2 * i``:
            an activation module sits between layers, ``nn.Identity`` for
            ``activation="identity"``). ``"fastmlp"``: ``"weights.{i}"``
            (fan_in, fan_out) and ``"biases.{i}"``, as in a checkpoint. The
            torch layout folds the model's ``input_scale`` into the first
            weights (the network takes what the model takes); the fastmlp
            layout keeps the weights as they are.
            Bias keys are absent for a model made with ``bias=False``.

    Imports nothing beyond NumPy. Load it into PyTorch with
    ``net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.

    Raises:
        ValueError: for an unknown ``layout``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose one of {list(LAYOUTS)}")
    out = {}
    for i, (w, b) in enumerate(_host_parameters(model, fold_scale=layout == "torch")):
        if layout == "torch":
            out[f"{2 * i}.weight"] = np.ascontiguousarray(w.T)
            if b is not None:
                out[f"{2 * i}.bias"] = b
        else:
            out[f"weights.{i}"] = w
            if b is not None:
                out[f"biases.{i}"] = b
    return out


def to_torch(model):
    """A ``torch.nn.Sequential`` that computes ``model``'s logits.

    The modules are ``Linear, act, Linear, act, ..., Linear``: an activation
    module (``nn.ReLU``, ``nn.Sigmoid``, ``nn.Tanh`` or ``nn.Identity``) after
    each hidden layer and none after the output layer, so the network returns
    logits, as PyTorch models do; the softmax or sigmoid of fastmlp's
    classifiers belongs to the loss (``nn.CrossEntropyLoss``,
    ``nn.BCEWithLogitsLoss``), and ``torch.softmax(net(x), dim=1)`` (or
    ``torch.sigmoid``) equals ``model.predict_proba(x)``; a ``poisson``
    model's logits are log rates (``nn.PoissonNLLLoss(log_input=True)``),
    and ``torch.exp(net(x))`` equals ``model.predict(x)``. Dropout is left
    out (it does nothing at inference); insert ``nn.Dropout`` modules to
    fine-tune with it.

    The parameters are copies of the model's, in its dtype (``torch.float32``
    or ``torch.float64``), on the CPU (``.to("cuda")`` moves them); their
    keys are :func:`state_dict`'s. The network is returned in eval mode.

    Raises:
        ImportError: when PyTorch is not installed, saying ``pip install torch``.
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError("fastmlp.export.to_torch needs PyTorch: pip install torch "
                          f"(see https://pytorch.org for GPU builds) ({e})") from e
    dtype = {"float32": torch.float32, "float64": torch.float64}[model.dtype.name]
    act = getattr(torch.nn, model.net.activation.torch)
    modules = []
    last = len(model.sizes) - 2
    for i, (fan_in, fan_out) in enumerate(zip(model.sizes[:-1], model.sizes[1:])):
        modules.append(torch.nn.Linear(fan_in, fan_out, bias=model.bias, dtype=dtype))
        if i != last:
            modules.append(act())
    net = torch.nn.Sequential(*modules)
    tensors = {k: torch.from_numpy(v) for k, v in state_dict(model).items()}
    net.load_state_dict(tensors, strict=True)
    return net.eval()


def _import_onnx():
    try:
        import onnx as onnx_module
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ImportError("fastmlp.export.onnx needs the onnx package: "
                          f'pip install "fastmlp[onnx]" (or pip install onnx) ({e})') from e
    return onnx_module, helper, numpy_helper


def _check_onnx_args(model, output, opset, dtype):
    """``(output, dtype)`` resolved, or ValueError/TypeError before any work."""
    if output not in ONNX_OUTPUTS:
        raise ValueError(f"unknown output {output!r}: choose one of {list(ONNX_OUTPUTS)}")
    classifier = model.loss_fn.classifier
    if output == "auto":
        output = "probabilities" if classifier else "predictions"
    if output == "probabilities" and not classifier:
        raise ValueError(f"output='probabilities' needs a classification loss; this model's "
                         f"loss is {model.loss!r}: use output='predictions' or 'logits'")
    check("opset", opset, Interval(Integral, MIN_OPSET))
    if dtype is None:
        return output, model.dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be None (the model's), 'float32' or 'float64', "
                         f"got {dtype!r}")
    return output, np.dtype(name)


def onnx(model, path, *, output="auto", opset=17, dtype=None):
    """Write ``model`` to ``path`` as an ONNX model; returns the ``ModelProto``.

    The graph takes ``"x"`` (batch, n_in), with a dynamic batch dimension,
    and gives ``"y"``:

    Args:
        model: a :class:`fastmlp.MLP`, on any device.
        path: the file to write (str or path-like); its directory must exist.
            It is written atomically (a temp file beside it, renamed into
            place), and nothing is created when anything fails.
        output: ``"auto"`` (default: ``"probabilities"`` for classifiers,
            ``"predictions"`` for regression), ``"probabilities"`` (softmax
            for ``cross_entropy``, sigmoid for ``binary_cross_entropy``: what
            ``predict_proba`` returns), ``"logits"`` (the output layer's
            pre-activations) or ``"predictions"`` (what ``predict`` returns:
            int64 class ids (batch,), int64 0/1 labels (batch, K), or
            regression values; (batch,) when K is 1).
        opset: the ONNX opset of the default domain, >= 13 (default 17);
            the file's IR version is the oldest that opset allows, for the
            widest choice of runtimes.
        dtype: the graph's float type: None (the model's: a float64 model
            gives a float64 graph, fed float64 inputs), ``"float32"`` or
            ``"float64"`` (the parameters are cast).

    The graph is validated with ``onnx.checker.check_model`` before anything
    is written. The model's loss, activation, sizes and ``output`` are stored
    in the file's metadata (``fastmlp.*`` keys).

    Raises:
        ValueError: an unknown ``output``, ``"probabilities"`` for a
            regression model, a bad ``opset`` or ``dtype``, or parameters that
            are NaN or inf.
        OSError: ``path`` cannot be written (see
            :func:`fastmlp.atomic.check_target`): FileNotFoundError when its
            directory does not exist, IsADirectoryError, PermissionError.
        ImportError: the ``onnx`` package is missing, saying
            ``pip install "fastmlp[onnx]"``.
    """
    output, dtype = _check_onnx_args(model, output, opset, dtype)
    shown = atomic.check_target(path)
    with np.errstate(over="ignore"):          # a float64 value beyond float32: inf, refused
        params = [(w.astype(dtype, copy=False), None if b is None else b.astype(dtype, copy=False))
                  for w, b in _host_parameters(model)]
    if not all(np.isfinite(a).all() for pair in params for a in pair if a is not None):
        raise ValueError(f"the model's parameters contain NaN or inf (in {dtype.name}): "
                         "not exported")
    onnx_module, helper, numpy_helper = _import_onnx()
    if opset > onnx_module.defs.onnx_opset_version():
        raise ValueError(f"opset {opset} is newer than the installed onnx "
                         f"{onnx_module.__version__} knows "
                         f"({onnx_module.defs.onnx_opset_version()})")

    tp = onnx_module.TensorProto
    float_type = tp.FLOAT if dtype == np.float32 else tp.DOUBLE
    k = model.sizes[-1]
    last = len(params) - 1
    nodes, inits = [], []
    cur = "x"
    for i, (w, b) in enumerate(params):
        inits.append(numpy_helper.from_array(w, f"layers.{i}.weight"))
        nodes.append(helper.make_node("MatMul", [cur, f"layers.{i}.weight"],
                                      [f"layers.{i}.matmul"], name=f"layers.{i}.matmul"))
        cur = f"layers.{i}.matmul"
        if b is not None:
            inits.append(numpy_helper.from_array(b, f"layers.{i}.bias"))
            nodes.append(helper.make_node("Add", [cur, f"layers.{i}.bias"],
                                          [f"layers.{i}.add"], name=f"layers.{i}.add"))
            cur = f"layers.{i}.add"
        op = model.net.activation.onnx
        if i != last and op is not None:
            name = f"layers.{i}.{op.lower()}"
            nodes.append(helper.make_node(op, [cur], [name], name=name))
            cur = name

    out_type, out_shape = float_type, ["batch", k]
    head = model.loss_fn.head
    if output == "probabilities":        # Softmax over the classes, or Sigmoid per label
        nodes.append(helper.make_node(head.onnx, [cur], ["y"], name=f"output.{head.name}",
                                      **({"axis": 1} if head is SOFTMAX else {})))
    elif output == "predictions" and head is SOFTMAX:
        nodes.append(helper.make_node("ArgMax", [cur], ["y"], name="output.argmax",
                                      axis=1, keepdims=0))
        out_type, out_shape = tp.INT64, ["batch"]
    else:                                   # logits, or predictions of bce and regression
        if output == "predictions" and head is EXP_HEAD:         # Poisson: rates e^z
            nodes.append(helper.make_node("Exp", [cur], ["output.rates"], name="output.exp"))
            cur = "output.rates"
        if output == "predictions" and head is SIGMOID_HEAD:
            inits.append(numpy_helper.from_array(np.zeros((), dtype), "output.zero"))
            nodes.append(helper.make_node("Greater", [cur, "output.zero"], ["output.positive"],
                                          name="output.greater"))
            nodes.append(helper.make_node("Cast", ["output.positive"], ["output.labels"],
                                          name="output.cast", to=tp.INT64))
            cur, out_type = "output.labels", tp.INT64
        if output == "predictions" and k == 1:
            inits.append(numpy_helper.from_array(np.array([1], np.int64), "output.axes"))
            nodes.append(helper.make_node("Squeeze", [cur, "output.axes"], ["y"],
                                          name="output.squeeze"))
            out_shape = ["batch"]
        else:
            # the last node so far gives y directly
            nodes[-1].output[0] = "y"

    graph = helper.make_graph(
        nodes, "fastmlp_mlp",
        [helper.make_tensor_value_info("x", float_type, ["batch", model.sizes[0]])],
        [helper.make_tensor_value_info("y", out_type, out_shape)],
        initializer=inits)
    opset_id = helper.make_opsetid("", opset)
    proto = helper.make_model(graph, opset_imports=[opset_id], producer_name="fastmlp",
                              producer_version=_version(),
                              doc_string=f"fastmlp {model!r}, output={output!r}")
    proto.ir_version = helper.find_min_ir_version_for([opset_id])
    helper.set_model_props(proto, {
        "fastmlp.sizes": ",".join(str(s) for s in model.sizes),
        "fastmlp.activation": model.activation,
        "fastmlp.loss": model.loss,
        "fastmlp.output": output,
    })
    onnx_module.checker.check_model(proto, full_check=True)
    atomic.write(shown, proto.SerializeToString())
    return proto


def _version():
    from fastmlp import __version__
    return __version__
