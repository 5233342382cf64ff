"""Checkpoints: safetensors round trips, optimizer state, atomic writes, bad files."""

import json
import pickle

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import fastmlp
import fastmlp.atomic
import fastmlp.io
from fastmlp import optim

TMP_GLOB = "*" + fastmlp.atomic.SUFFIX


def _trained(device, x, y, epochs=3, optimizer="adam", lr=0.01, **mlp_kwargs):
    sizes = mlp_kwargs.pop("sizes", [4, 16, 3])
    model = fastmlp.MLP(sizes, seed=0, device=device, **mlp_kwargs)
    model.fit(x, y, epochs=epochs, batch_size=32, optimizer=optimizer, lr=lr, shuffle=False)
    return model


def _host(model):
    be = model.backend
    return ([be.to_numpy(w).copy() for w in model.weights],
            [None if b is None else be.to_numpy(b).copy() for b in model.biases])


def _read(path):
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _temp_files(folder):
    return sorted(p.name for p in folder.glob(TMP_GLOB))


# --- round trips ----------------------------------------------------------------

ROUND_TRIPS = [
    ("float32", {}),
    ("float64", {"dtype": "float64"}),
    ("no_bias", {"bias": False}),
    ("dropout_tanh_deep", {"sizes": [4, 16, 8, 3], "activation": "tanh",
                           "dropout": [0.25, 0.1], "init": 0.3}),
]


@pytest.mark.parametrize("kwargs", [r[1] for r in ROUND_TRIPS], ids=[r[0] for r in ROUND_TRIPS])
def test_round_trip_keeps_config_weights_and_predictions(device, blobs, tmp_path, kwargs):
    x, y = blobs
    model = _trained(device, x, y, **kwargs)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = fastmlp.load(path, device=device)

    assert loaded.config() == model.config()
    assert loaded.backend is model.backend
    assert loaded.dtype == model.dtype and loaded.n_params == model.n_params
    assert type(loaded.params) is type(model.params)
    assert loaded.params is not model.params
    (w0, b0), (w1, b1) = _host(model), _host(loaded)
    assert len(w1) == len(w0)
    for a, b in zip(w0 + b0, w1 + b1):
        if a is None:
            assert b is None
            continue
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(b, a)            # bit for bit
    if model.bias:
        assert any(np.any(b) for b in b0), "biases never trained: the test would be weak"
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    # the loaded parameters are live, writable arrays independent of the file
    loaded.weights[0][...] = 0
    assert not loaded.backend.to_numpy(loaded.weights[0]).any()
    np.testing.assert_array_equal(_host(fastmlp.load(path, device=device))[0][0], w0[0])


def test_round_trip_keeps_dropout_and_other_config(blobs, tmp_path):
    x, y = blobs
    model = fastmlp.MLP([4, 8, 8, 3], activation="sigmoid", reduction="sum", init="xavier",
                        dtype="float64", dropout=[0.5, 0.2], bias=False, seed=7, device="cpu")
    model.save(str(tmp_path / "m.safetensors"))                    # a str path works too
    loaded = fastmlp.load(str(tmp_path / "m.safetensors"), device="cpu")
    assert loaded.dropout == (0.5, 0.2)
    assert loaded.config() == model.config()
    assert (loaded.activation, loaded.reduction, loaded.init, loaded.seed) == \
        ("sigmoid", "sum", "xavier", 7)
    assert loaded.optimizer is None                                  # never trained


def test_save_overwrites_existing_file(blobs, tmp_path):
    x, y = blobs
    path = tmp_path / "m.safetensors"
    first = _trained("cpu", x, y, epochs=1)
    first.save(path)
    second = _trained("cpu", x, y, epochs=4)
    second.save(path)
    np.testing.assert_array_equal(_host(fastmlp.load(path, device="cpu"))[0][0],
                                  _host(second)[0][0])
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# --- optimizer state ------------------------------------------------------------

def test_optimizer_state_is_saved_and_restored(device, blobs, tmp_path):
    x, y = blobs
    model = _trained(device, x, y, optimizer="adam", lr=0.01)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = fastmlp.load(path, device=device)
    opt, orig = loaded.optimizer, model.optimizer
    assert type(opt) is optim.Adam
    assert opt.config() == orig.config()
    assert opt.t == orig.t == 3 * 3
    a, b = orig.state_arrays(), opt.state_arrays()
    assert set(b) == set(a) == {"0.m", "0.v"}
    for key in a:
        assert type(b[key]) is type(loaded.params)
        assert b[key].dtype == a[key].dtype
        np.testing.assert_array_equal(loaded.backend.to_numpy(b[key]),
                                      model.backend.to_numpy(a[key]))
        assert model.backend.to_numpy(a[key]).any()


def _resume_cases():
    return [
        pytest.param(("adam", 0.01), id="adam"),
        pytest.param((lambda: optim.AdamW(lr=0.01, weight_decay=0.1), None), id="adamw"),
        pytest.param(("rmsprop", 0.01), id="rmsprop"),
        pytest.param(("adagrad", 0.1), id="adagrad"),
        pytest.param((lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True), None),
                     id="sgd_nesterov"),
        pytest.param(("sgd", 0.1), id="sgd_plain"),
    ]


@pytest.mark.parametrize("spec", _resume_cases())
def test_resumed_training_matches_uninterrupted(device, blobs, tmp_path, spec):
    x, y = blobs
    opt, lr = spec
    opt = opt() if callable(opt) else opt
    model = _trained(device, x, y, epochs=3, optimizer=opt, lr=lr)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = fastmlp.load(path, device=device)
    before = _host(model)[0][0]
    model.fit(x, y, epochs=2, batch_size=32, shuffle=False)          # resumes model.optimizer
    loaded.fit(x, y, epochs=2, batch_size=32, shuffle=False)
    assert not np.array_equal(_host(model)[0][0], before)           # training did move
    assert loaded.optimizer.t == model.optimizer.t == 5 * 3
    wa, ba = _host(model)
    wb, bb = _host(loaded)
    for a, b in zip(wa + ba, wb + bb):
        np.testing.assert_array_equal(b, a)


def test_include_optimizer_false_leaves_it_out(device, blobs, tmp_path):
    x, y = blobs
    model = _trained(device, x, y)
    path = tmp_path / "m.safetensors"
    model.save(path, include_optimizer=False)
    tensors, meta = _read(path)
    assert not any(k.startswith("optimizer") for k in tensors)
    assert "optimizer" not in meta
    loaded = fastmlp.load(path, device=device)
    assert loaded.optimizer is None
    np.testing.assert_array_equal(_host(loaded)[0][0], _host(model)[0][0])
    assert model.optimizer is not None and model.optimizer.t == 9   # saving changed nothing


# --- the file format --------------------------------------------------------------

def test_file_is_safetensors_with_fastmlp_metadata(blobs, tmp_path):
    x, y = blobs
    model = _trained("cpu", x, y, sizes=[4, 16, 8, 3])
    path = tmp_path / "m.safetensors"
    model.save(path)
    tensors, meta = _read(path)
    layer_keys = {f"{kind}.{i}" for kind in ("weights", "biases") for i in range(3)}
    assert set(tensors) == layer_keys | {"optimizer.0.m", "optimizer.0.v"}
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        assert tensors[f"weights.{i}"].shape == w.shape
        assert tensors[f"weights.{i}"].dtype == np.float32
        np.testing.assert_array_equal(tensors[f"weights.{i}"], w)
        np.testing.assert_array_equal(tensors[f"biases.{i}"], b)
    assert meta["format"] == "fastmlp"
    assert int(meta["format_version"]) == fastmlp.io.FORMAT_VERSION >= 1
    assert json.loads(meta["config"]) == model.config()
    opt_meta = json.loads(meta["optimizer"])
    assert opt_meta == {"name": "adam", "config": model.optimizer.config(), "t": 9}


# --- atomic writes ----------------------------------------------------------------

def test_save_leaves_no_temp_files(device, blobs, tmp_path):
    x, y = blobs
    model = _trained(device, x, y, epochs=1)
    for _ in range(2):
        model.save(tmp_path / "m.safetensors")
        assert _temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


@pytest.mark.parametrize("fails", ["replace", "fsync"])
def test_failed_write_keeps_previous_file(blobs, tmp_path, monkeypatch, fails):
    x, y = blobs
    path = tmp_path / "m.safetensors"
    model = _trained("cpu", x, y, epochs=1)
    model.save(path)
    good = path.read_bytes()
    model.fit(x, y, epochs=2, shuffle=False)                # the weights change

    def boom(*args, **kwargs):
        raise OSError(f"simulated failure in os.{fails}")

    monkeypatch.setattr(fastmlp.io.os, fails, boom)
    with pytest.raises(OSError, match="simulated failure"):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert _temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    fastmlp.load(path, device="cpu")                        # still a valid checkpoint


def test_failed_first_write_leaves_nothing(blobs, tmp_path, monkeypatch):
    x, y = blobs
    model = _trained("cpu", x, y, epochs=1)

    def boom(*args, **kwargs):
        raise OSError("simulated failure in os.replace")

    monkeypatch.setattr(fastmlp.io.os, "replace", boom)
    with pytest.raises(OSError):
        model.save(tmp_path / "m.safetensors")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# --- bad files ----------------------------------------------------------------------

@pytest.fixture
def checkpoint(blobs, tmp_path):
    """(path, tensors, metadata) of a valid checkpoint with Adam state."""
    x, y = blobs
    path = tmp_path / "good.safetensors"
    _trained("cpu", x, y).save(path)
    tensors, meta = _read(path)
    return path, tensors, meta


def _write(tmp_path, tensors, meta, name="bad.safetensors"):
    """A file with ``meta``, its digest recomputed: the fields' own checks must refuse it."""
    path = tmp_path / name
    if meta is not None and "digest" in meta:
        meta = {**meta, "digest": fastmlp.io.digest(meta, tensors)}
    save_file(tensors, str(path), metadata=meta)
    return path


def test_truncated_file_raises_value_error(checkpoint, tmp_path):
    path, _, _ = checkpoint
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 10):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a readable safetensors file"):
            fastmlp.load(bad, device="cpu")


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"", b"\x00" * 64,
                                     b"not a checkpoint at all\n"],
                         ids=["random", "empty", "zeros", "text"])
def test_garbage_file_raises_value_error(tmp_path, content):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        fastmlp.load(bad, device="cpu")


@pytest.mark.parametrize("meta", [None, {"format": "pt"}, {"format": "FASTMLP"}],
                         ids=["no_metadata", "other_format", "wrong_case"])
def test_foreign_safetensors_raises_value_error(checkpoint, tmp_path, meta):
    _, tensors, _ = checkpoint
    bad = _write(tmp_path, tensors, meta)
    with pytest.raises(ValueError, match="not a fastmlp checkpoint"):
        fastmlp.load(bad, device="cpu")


def test_newer_format_version_asks_for_upgrade(checkpoint, tmp_path):
    _, tensors, meta = checkpoint
    bad = _write(tmp_path, tensors, {**meta, "format_version": "999"})
    with pytest.raises(ValueError, match="newer") as err:
        fastmlp.load(bad, device="cpu")
    assert "upgrade" in str(err.value) and "999" in str(err.value)


@pytest.mark.parametrize("change", [{"format_version": "one"}, {"config": "{not json"}],
                         ids=["version_not_int", "config_not_json"])
def test_damaged_metadata_raises_value_error(checkpoint, tmp_path, change):
    _, tensors, meta = checkpoint
    bad = _write(tmp_path, tensors, {**meta, **change})
    with pytest.raises(ValueError, match="damaged fastmlp metadata"):
        fastmlp.load(bad, device="cpu")


def test_missing_metadata_key_raises_value_error(checkpoint, tmp_path):
    _, tensors, meta = checkpoint
    bad = _write(tmp_path, tensors, {k: v for k, v in meta.items() if k != "config"})
    with pytest.raises(ValueError, match="damaged fastmlp metadata"):
        fastmlp.load(bad, device="cpu")


def test_invalid_stored_config_raises_value_error(checkpoint, tmp_path):
    _, tensors, meta = checkpoint
    config = {**json.loads(meta["config"]), "activation": "swish"}
    bad = _write(tmp_path, tensors, {**meta, "config": json.dumps(config)})
    with pytest.raises(ValueError, match="stored model config is invalid"):
        fastmlp.load(bad, device="cpu")


@pytest.mark.parametrize("key, shape", [("weights.0", (16, 4)), ("weights.1", (16, 2)),
                                        ("biases.0", (15,)), ("biases.1", (1, 3))])
def test_wrong_tensor_shape_raises_value_error(checkpoint, tmp_path, key, shape):
    _, tensors, meta = checkpoint
    tensors = {**tensors, key: np.zeros(shape, np.float32)}
    bad = _write(tmp_path, tensors, meta)
    with pytest.raises(ValueError, match="should have shape") as err:
        fastmlp.load(bad, device="cpu")
    assert key in str(err.value)


def test_missing_tensor_raises_value_error(checkpoint, tmp_path):
    _, tensors, meta = checkpoint
    bad = _write(tmp_path, {k: v for k, v in tensors.items() if k != "biases.1"}, meta)
    with pytest.raises(ValueError, match="biases.1 .*missing"):
        fastmlp.load(bad, device="cpu")


def test_wrong_optimizer_state_shape_raises_value_error(checkpoint, tmp_path):
    _, tensors, meta = checkpoint
    tensors = {**tensors, "optimizer.0.m": tensors["optimizer.0.m"][:10]}
    bad = _write(tmp_path, tensors, meta)
    with pytest.raises(ValueError, match="optimizer"):
        fastmlp.load(bad, device="cpu")


def test_unknown_optimizer_in_checkpoint_raises_value_error(checkpoint, tmp_path):
    _, tensors, meta = checkpoint
    opt_meta = {**json.loads(meta["optimizer"]), "name": "lion"}
    bad = _write(tmp_path, tensors, {**meta, "optimizer": json.dumps(opt_meta)})
    with pytest.raises(ValueError, match="optimizer"):
        fastmlp.load(bad, device="cpu")


def test_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastmlp.load(tmp_path / "nope.safetensors", device="cpu")
    with pytest.raises(FileNotFoundError):
        fastmlp.load(str(tmp_path / "missing_dir" / "nope.safetensors"), device="cpu")


# --- nothing is unpickled ---------------------------------------------------------

def test_load_never_unpickles(device, blobs, tmp_path, monkeypatch):
    x, y = blobs
    model = _trained(device, x, y)
    path = tmp_path / "m.safetensors"
    model.save(path)

    def refuse(*args, **kwargs):
        raise AssertionError("fastmlp.load called pickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    loaded = fastmlp.load(path, device=device)
    np.testing.assert_array_equal(_host(loaded)[0][0], _host(model)[0][0])
    assert loaded.optimizer.t == model.optimizer.t


def test_loading_a_directory_says_so(tmp_path):
    with pytest.raises(IsADirectoryError, match="directory"):
        fastmlp.load(tmp_path, device="cpu")


def test_resume_after_load_matches_uninterrupted_training_with_shuffling(blobs, tmp_path):
    """The shuffling RNG state travels in the checkpoint."""
    x, y = blobs
    a = fastmlp.MLP([4, 8, 3], seed=5, device="cpu")
    a.fit(x, y, epochs=2, optimizer="adam", lr=0.01)
    a.save(tmp_path / "a.safetensors")
    b = fastmlp.load(tmp_path / "a.safetensors", device="cpu")
    a.fit(x, y, epochs=2)
    b.fit(x, y, epochs=2)
    np.testing.assert_array_equal(a.params, b.params)


# --- pickling: what joblib, multiprocessing and scikit-learn need -------------------

def test_a_pickled_model_is_its_host_arrays_and_resumes_exactly(device, blobs):
    import copy
    x, y = blobs
    model = fastmlp.MLP([4, 8, 3], seed=3, device=device, engine="layer")
    model.fit(x, y, epochs=2, optimizer="adam", lr=0.01)
    blob = pickle.dumps(model)
    assert b"cupy" not in blob and len(blob) < 20_000         # arrays on the host, no kernels
    for again in (pickle.loads(blob), copy.deepcopy(model)):
        assert again.backend is model.backend and again.engine == "layer"
        np.testing.assert_array_equal(again.backend.to_numpy(again.params),
                                      model.backend.to_numpy(model.params))
        assert again.optimizer.t == model.optimizer.t and again.params is not model.params
    again = pickle.loads(blob)
    model.fit(x, y, epochs=1)
    again.fit(x, y, epochs=1)                                 # same optimizer state and shuffle
    np.testing.assert_array_equal(again.backend.to_numpy(again.params),
                                  model.backend.to_numpy(model.params))


def test_a_model_pickled_on_a_gpu_unpickles_on_the_cpu_with_a_warning(blobs, without_cupy):
    x, y = blobs
    model = fastmlp.MLP([4, 8, 3], seed=0, device="cpu")
    state = model.__getstate__()
    state["device"] = "cuda:0"                               # as a GPU machine would write it
    again = fastmlp.MLP.__new__(fastmlp.MLP)
    with pytest.warns(RuntimeWarning, match="unpickled on the CPU"):
        again.__setstate__(state)
    assert again.backend.name == "cpu"
    np.testing.assert_array_equal(again.predict_proba(x), model.predict_proba(x))
