"""Checkpoints: safetensors tensors plus JSON metadata, checked before use.

A file holds ``weights.<i>`` and ``biases.<i>`` per layer, optionally the
optimizer's state as ``optimizer.<i>.<slot>``, and string metadata:
``format`` ("fastmlp"), ``format_version``, and as JSON the model ``config``,
the shuffling ``rng`` state, the ``dropout_rng`` state, the ``optimizer``
(name, hyperparameters, step count), and one ``digest``: the SHA-256 of
everything else the file says, the metadata (canonical JSON) and every
tensor's name, dtype, shape and bytes (:func:`digest`). With a ``key``,
``save`` writes an ``hmac`` instead (HMAC-SHA256 under that key) and
``read`` requires the same key. Nothing is ever unpickled.

What each mode protects against: the digest, against damage and against
edits by anyone who does not recompute it (a flipped bit anywhere, a
changed learning rate or input scale, a deleted field); it cannot stop
someone who rewrites the file and its digest. The HMAC, against that too,
as long as the key stays secret: use it for files that cross a trust
boundary. Files of format 1 carry no digest and format 2 covers only the
tensors: format 1 is refused unless ``verify=False`` (which warns that
nothing vouches for the file), format 2 loads with a warning to save it
again.

:func:`read` trusts nothing in a file: it opens regular files only (a FIFO
or a device is refused without blocking), reads the header alone (bounded
in size), checks every metadata field (all required, typed, range-checked,
no duplicate keys, no coercion) and every tensor's name, dtype and shape
against the stored config before it reads any tensor data, then checks
the digest, that every value is finite, and that the optimizer's state and
the RNG states are ones fastmlp could have written. A hostile or damaged
file fails in milliseconds, with memory bounded by the file's real size,
and the error names the file and the field.

This module knows files, not the model class: :func:`snapshot`, :func:`save`
and :func:`restore` work through the model's public attributes, and
:func:`fastmlp.load` (and unpickling) builds the model between :func:`read`
(or a snapshot) and :func:`restore`.
"""

import hashlib
import hmac
import json
import os
import stat
import warnings
from typing import NamedTuple

import numpy as np

from fastmlp import atomic
from fastmlp.backend import set_pcg64_state

FORMAT = "fastmlp"
FORMAT_VERSION = 3             # 3: one digest over it all; 2: per-tensor sha256; 1: none
MAX_HEADER = 1 << 20           # bytes; a fastmlp header of 1,000 layers takes ~200 KB
MAX_LAYERS = 10_000
MAX_WIDTH = 2**31 - 1
_DTYPES = {"F32": "float32", "F64": "float64"}
_FIELDS = {"format", "format_version", "config", "rng", "dropout_rng", "optimizer", "sha256",
           "digest", "hmac"}
_REQUIRED = {1: {"format", "format_version", "config"},
             2: {"format", "format_version", "config", "rng", "sha256"},
             3: {"format", "format_version", "config", "rng", "dropout_rng"}}
_VERSIONS = {"1": 1, "2": 2, "3": 3}
#: the model config's fields; ``input_scale`` came after format 2 (its files hold 1.0)
_CONFIG = {"sizes", "activation", "loss", "reduction", "init", "dtype", "dropout", "bias",
           "seed", "kernels", "input_scale"}
_LATER = {"input_scale": 1.0}


class Checkpoint(NamedTuple):
    """What :func:`read` found in a file: the tensors by name, the model
    config, the optimizer's metadata, the host RNG state and the dropout
    RNG's ``{"kind": device kind, "state": ...}`` (each None if absent)."""

    tensors: dict
    config: dict
    optimizer: dict
    rng: dict
    dropout_rng: dict = None


def snapshot(model, include_optimizer=True):
    """``model``'s state as a :class:`Checkpoint` of host arrays: what
    :func:`save` writes, and what pickling a model keeps. The optimizer's
    state is included when the model has one and ``include_optimizer`` is
    true."""
    be = model.backend
    tensors = {}
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        tensors[f"weights.{i}"] = be.to_numpy(w)
        if b is not None:
            tensors[f"biases.{i}"] = be.to_numpy(b)
    opt, opt_meta = model.optimizer, None
    if include_optimizer and opt is not None and opt.state is not None:
        opt_meta = {"name": opt.name, "config": opt.config(), "t": opt.t}
        for key, a in opt.state_arrays().items():
            tensors[f"optimizer.{key}"] = be.to_numpy(a)
    return Checkpoint(tensors, model.config(), opt_meta, model.rng.bit_generator.state,
                      {"kind": be.kind, "state": be.rng_state(model.dropout_rng)})


def save(model, path, include_optimizer=True, key=None):
    """Write ``model`` to ``path`` atomically (see :mod:`fastmlp.atomic`: the
    old file or the new one, whole, whatever happens; temp files left by
    killed saves are removed; the file keeps its mode, or gets the umask's;
    a symbolic link is followed and its target replaced).

    The optimizer's state is included when the model has one and
    ``include_optimizer`` is true, so training can resume after
    :func:`fastmlp.load`. With ``key`` (bytes or str), the file is signed
    with an HMAC under it, which :func:`read` checks with the same key.
    ValueError, writing nothing, when a parameter is NaN or inf (training
    diverged: such a model is no checkpoint).
    """
    from safetensors.numpy import save as st_save

    state = snapshot(model, include_optimizer)
    bad = [k for k, a in state.tensors.items() if not np.isfinite(a).all()]
    if bad:
        raise ValueError(f"not saved to {os.fspath(path)}: {', '.join(bad[:4])} hold NaN or "
                         "inf values (training diverged?)")
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(state.config), "rng": json.dumps(state.rng),
            "dropout_rng": json.dumps(state.dropout_rng)}
    if state.optimizer is not None:
        meta["optimizer"] = json.dumps(state.optimizer)
    meta["hmac" if key is not None else "digest"] = digest(meta, state.tensors, key)
    atomic.write(path, st_save(state.tensors, metadata=meta))


def digest(meta, tensors, key=None):
    """The hex SHA-256 (with ``key``: HMAC-SHA256) of a file's metadata
    (``{field: text}``, its ``digest`` and ``hmac`` left out, as canonical
    JSON) and of every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256() if key is None else hmac.new(_key_bytes(key), digestmod="sha256")
    said = {k: v for k, v in meta.items() if k not in ("digest", "hmac")}
    h.update(json.dumps(said, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.view(np.uint8).reshape(-1))
    return h.hexdigest()


def _key_bytes(key):
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise TypeError("key must be non-empty bytes or str")
    return bytes(key)


def _digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8)).hexdigest()


def read(path, key=None, verify=True):
    """The :class:`Checkpoint` in ``path``, every part of it checked.

    ``key``: the file must carry an HMAC under it (see :func:`save`).
    ``verify=False`` loads a file whose digest is missing or wrong (a format
    1 file, say), with a warning: nothing vouches for it then; every other
    check still applies. ValueError naming ``path`` (and the field) for a
    truncated, damaged, foreign, newer-format or inconsistent file;
    FileNotFoundError etc. as they come.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a checkpoint file")
    mode = os.stat(path).st_mode          # before open(): a FIFO would block it
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file (a FIFO, socket or device?): "
                         "checkpoints are read from files only")
    _check_header_size(path)
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            found = {k: (_DTYPES.get(s.get_dtype(), s.get_dtype()), tuple(s.get_shape()))
                     for k in f.keys() for s in [f.get_slice(k)]}
            spec = _check_meta(path, meta)
            _check_tensors(path, found, _expected(spec))
            tensors = {k: f.get_tensor(k) for k in found}
    except (FileNotFoundError, IsADirectoryError, PermissionError, ValueError):
        raise
    except Exception as e:   # safetensors raises its own error types for bad headers
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                         f"{e}") from None
    _check_digest(path, meta, tensors, spec, key, verify)
    _check_data(path, tensors, spec)
    return Checkpoint(tensors, spec["config"], spec["optimizer"], spec["rng"],
                      spec["dropout_rng"])


def _check_digest(path, meta, tensors, spec, key, verify):
    """The file's digest (or HMAC) against what it says; see :func:`read`."""
    version, fix = spec["format_version"], "load it with verify=False if you trust it"
    if key is not None:
        if "hmac" not in meta:
            raise _bad(path, "hmac", f"is missing: the file is not signed, and a key was given "
                       f"({fix})")
        if not hmac.compare_digest(meta["hmac"], digest(meta, tensors, key)):
            raise ValueError(f"{path}: its HMAC does not match: the file was changed after it "
                             "was signed, or signed with another key")
        return
    if "hmac" in meta and verify:
        raise ValueError(f"{path} is signed with a key: pass the same key to load it")
    if version == 3 and "digest" in meta:
        if meta["digest"] == digest(meta, tensors):
            return
        if verify:
            raise ValueError(f"{path}: damaged or edited: its digest does not match what the "
                             f"file says ({fix})")
    elif version == 2:
        bad = [n for n, a in tensors.items() if spec["sha256"].get(n) != _digest(a)]
        if bad and verify:
            raise ValueError(f"{path}: {bad[0]} is corrupt: its SHA-256 differs from the one "
                             "saved with it")
        if not bad:
            warnings.warn(f"{path} is a format-2 checkpoint: its tensors are verified but not "
                          "its metadata; save it again to cover everything", UserWarning,
                          stacklevel=4)
            return
    elif verify:
        raise ValueError(f"{path} carries no digest (format {version}): nothing shows it is "
                         f"what was saved; {fix}")
    warnings.warn(f"{path}: loaded without verification: nothing vouches for this file",
                  UserWarning, stacklevel=4)


def _check_header_size(path):
    """Refuse a header too large for fastmlp or longer than the file, before
    safetensors parses it."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
    if len(head) < 8:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                         f"{size} bytes")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER or n > size - 8:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                         f"its header claims {n:,} bytes (file {size:,} bytes, "
                         f"fastmlp headers are under {MAX_HEADER:,})")


def _bad(path, field, why):
    return ValueError(f"{path}: damaged fastmlp metadata: {field} {why}")


def _check_meta(path, meta):
    """Every metadata field parsed and checked; a dict of them."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not a fastmlp checkpoint "
                         f"(its metadata has no format={FORMAT!r})")
    text = meta.get("format_version")
    if text is None:
        raise _bad(path, "format_version", "is missing")
    version = _VERSIONS.get(text)
    if version is None:
        if text.isdigit() and text == str(int(text)) and int(text) > FORMAT_VERSION:
            raise ValueError(f"{path} was written by a newer fastmlp (checkpoint format "
                             f"{text}); this version reads format <= {FORMAT_VERSION}: "
                             "upgrade fastmlp")
        raise _bad(path, "format_version", f"must be one of {sorted(_VERSIONS)}, got "
                   f"{text[:40]!r}")
    missing = sorted(_REQUIRED[version] - set(meta))
    if missing:
        raise _bad(path, missing[0], "is missing")
    allowed = _FIELDS - ({"sha256"} if version == 3 else {"digest", "hmac"})
    if version == 1:
        allowed = allowed - {"sha256", "dropout_rng"}
    extra = sorted(set(meta) - allowed)
    if extra:
        raise _bad(path, extra[0], f"is not a field of format {version}")
    if version == 3 and len({"digest", "hmac"} & set(meta)) != 1:
        raise _bad(path, "digest", "is missing (or comes with an hmac: one or the other)")
    spec = {k: _json(path, k, meta[k]) if k in meta else None
            for k in _FIELDS - {"format", "digest", "hmac"}}
    spec["format_version"] = version
    for k in ("digest", "hmac"):
        if k in meta and (len(meta[k]) != 64 or set(meta[k]) - set("0123456789abcdef")):
            raise _bad(path, k, "must be 64 hex digits")
    _check_config(path, spec["config"], version)
    for key in ("rng", "dropout_rng", "optimizer", "sha256"):
        if key in meta and not isinstance(spec[key], dict):
            raise _bad(path, key, f"must be a JSON object, got {meta[key][:40]}")
    if spec["rng"] is not None:
        _check_rng(path, "rng", spec["rng"])
    if spec["dropout_rng"] is not None:
        d = spec["dropout_rng"]
        # a CUDA generator's state cannot be read out: saved as null (kind "cuda")
        if set(d) != {"kind", "state"} or d["kind"] not in ("cpu", "cuda") or (
                (d["kind"] == "cuda") != (d["state"] is None)):
            raise _bad(path, "dropout_rng", "must be {\"kind\": \"cpu\", \"state\": ...} or "
                       "{\"kind\": \"cuda\", \"state\": null}")
        if d["state"] is not None:
            _check_rng(path, "dropout_rng.state", d["state"])
    spec["slots"] = () if spec["optimizer"] is None else _check_optimizer(path, spec["optimizer"])
    return spec


def _json(path, field, text):
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        raise _bad(path, field, f"is not valid JSON ({e})") from None


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k[:40]!r} appears twice")
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _check_config(path, config, version):
    """Every field there, typed: the ones that fix the tensors' names, dtypes
    and shapes checked here, the rest also by the model constructor
    (``fastmlp.load`` names the file). No defaults, no coercion."""
    if not isinstance(config, dict):
        raise _bad(path, "config", "must be a JSON object")
    if version < 3:
        for name, value in _LATER.items():
            config.setdefault(name, value)      # did not exist when format 2 was written
    missing, extra = sorted(_CONFIG - set(config)), sorted(set(config) - _CONFIG)
    if missing:
        raise _bad(path, f"config.{missing[0]}", "is missing")
    if extra:
        raise _bad(path, f"config.{extra[0][:40]}", "is not a model setting")
    for name in ("activation", "loss", "reduction", "dtype", "kernels"):
        if not isinstance(config[name], str):
            raise _bad(path, f"config.{name}", f"must be a string, got {config[name]!r:.40}")
    if not isinstance(config["dropout"], list) or not all(
            type(r) in (int, float) for r in config["dropout"]):
        raise _bad(path, "config.dropout", "must be a list of rates")
    if config["seed"] is not None and type(config["seed"]) is not int:
        raise _bad(path, "config.seed", f"must be an integer or null, got {config['seed']!r:.40}")
    if type(config["input_scale"]) not in (int, float):
        raise _bad(path, "config.input_scale", "must be a number")
    init = config["init"]
    if not isinstance(init, str) and type(init) not in (int, float):     # saved resolved
        raise _bad(path, "config.init", f"must be a name or a number, got {init!r:.40}")
    sizes = config.get("sizes")
    if (not isinstance(sizes, list) or not 2 <= len(sizes) <= MAX_LAYERS + 1
            or not all(type(s) is int and 1 <= s <= MAX_WIDTH for s in sizes)):
        raise _bad(path, "config.sizes", f"must be a list of 2 to {MAX_LAYERS + 1} widths in "
                   f"[1, {MAX_WIDTH}], got {str(sizes)[:80]}")
    if not isinstance(config.get("bias"), bool):
        raise _bad(path, "config.bias", f"must be true or false, got {config.get('bias')!r}")
    if config.get("dtype") not in _DTYPES.values():
        raise _bad(path, "config.dtype", f"must be one of {sorted(_DTYPES.values())}, "
                   f"got {str(config.get('dtype'))[:40]!r}")


def _check_rng(path, field, state):
    try:
        set_pcg64_state(np.random.Generator(np.random.PCG64()), state)
    except (ValueError, TypeError) as e:
        raise _bad(path, field, f"is not a valid generator state ({e})") from None
    inner = state["state"]
    # NumPy's PCG64 keeps its increment odd; 0/0 would draw 0.0 for ever
    if inner["inc"] % 2 == 0:
        raise _bad(path, field, "is not a state PCG64 makes (its increment is even)")


def _check_optimizer(path, meta):
    """The state slots the stored optimizer has."""
    from fastmlp import optim

    if set(meta) != {"name", "config", "t"}:
        raise _bad(path, "optimizer", f"must have the keys name, config and t, got {sorted(meta)}")
    t = meta["t"]
    if type(t) is not int or not 0 <= t < 2**62:
        raise _bad(path, "optimizer.t", f"must be an integer step count >= 0, got {t!r}")
    if not isinstance(meta["config"], dict):
        raise _bad(path, "optimizer.config", "must be a JSON object")
    try:
        opt = optim.get(meta["name"], **meta["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: the stored optimizer is invalid ({e})") from None
    if meta["name"] != opt.name:           # as saved: the lookup would take "Sgd" too
        raise _bad(path, "optimizer.name", f"must be one of the names fastmlp saves, got "
                   f"{str(meta['name'])[:40]!r}")
    made = opt.config()                    # every hyperparameter there, as saved: no defaults
    if set(meta["config"]) != set(made) or any(
            type(v) is not type(made[k]) and not (type(v) is int and type(made[k]) is float)
            for k, v in meta["config"].items()):
        raise _bad(path, "optimizer.config", f"must hold exactly {sorted(made)}, typed as "
                   f"{opt.name} saves them")
    return opt._active_slots()


def _expected(spec):
    """``{tensor name: (dtype, shape)}`` that the config and optimizer call for."""
    config, opt = spec["config"], spec["optimizer"] is not None
    sizes, dtype = config["sizes"], config["dtype"]
    expected = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        expected[f"weights.{i}"] = (dtype, (fan_in, fan_out))
        if config["bias"]:
            expected[f"biases.{i}"] = (dtype, (fan_out,))
    if opt:
        n = sum(a * b + (b if config["bias"] else 0) for a, b in zip(sizes[:-1], sizes[1:]))
        for slot in spec["slots"]:
            expected[f"optimizer.0.{slot}"] = (dtype, (n,))
    return expected


def _check_tensors(path, found, expected):
    for name, (dtype, shape) in expected.items():
        if name not in found:
            raise ValueError(f"{path}: {name} should have shape {shape}, found missing")
        got_dtype, got_shape = found[name]
        if got_shape != shape:
            raise ValueError(f"{path}: {name} should have shape {shape}, found shape "
                             f"{got_shape}")
        if got_dtype != dtype:
            raise ValueError(f"{path}: {name} should be {dtype} as the config says, found "
                             f"{got_dtype}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ValueError(f"{path}: unexpected tensor {extra[0]!r}: the stored config and "
                         "optimizer call for no such tensor")


#: optimizer state slots that are sums or means of squares: never negative
_SQUARES = ("v", "mean_sq", "sum_sq")


def _check_data(path, tensors, spec):
    digests = spec["sha256"]
    if digests is not None and set(digests) != set(tensors):
        odd = sorted(set(digests) ^ set(tensors))
        raise _bad(path, "sha256", f"does not list exactly the file's tensors ({odd[0]!r})")
    for name, a in tensors.items():
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: {name} holds NaN or inf values")
    opt = spec["optimizer"]
    if opt is None:
        return
    for slot in spec["slots"]:
        a = tensors[f"optimizer.0.{slot}"]
        if slot in _SQUARES and (a < 0).any():
            raise ValueError(f"{path}: optimizer.0.{slot} holds negative values: a sum of "
                             "squares never does")
        if opt["t"] == 0 and a.any():
            raise ValueError(f"{path}: optimizer.0.{slot} is non-zero at step t = 0")


def restore(model, checkpoint, path):
    """Fill ``model`` (built from ``checkpoint.config``) with the stored
    parameters, RNG states and optimizer; ValueError naming ``path`` when
    they do not fit the model. A restored optimizer records ``path`` in its
    ``loaded_from``."""
    from fastmlp import optim

    tensors = checkpoint.tensors
    host = np.empty(model.layout.size, dtype=model.dtype)
    for kind, arrays in zip(("weights", "biases"), model.layout.views(host)):
        for i, view in enumerate(arrays):
            if view is None:
                continue
            stored = tensors.get(f"{kind}.{i}")
            if stored is None or stored.shape != view.shape:
                found = "missing" if stored is None else f"shape {stored.shape}"
                raise ValueError(f"{path}: {kind}.{i} should have shape {view.shape}, "
                                 f"found {found}")
            view[...] = stored
    be = model.backend
    opt_meta = checkpoint.optimizer
    opt = None
    if opt_meta is not None:
        with be.scope():
            state = {k[len("optimizer."):]: be.asarray(v, dtype=model.dtype)
                     for k, v in tensors.items() if k.startswith("optimizer.")}
        try:
            opt = optim.get(opt_meta["name"], **opt_meta["config"])
            opt.load_state([model.params], state, opt_meta["t"], model.ops)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: the stored optimizer is invalid ({e})") from None
        opt.loaded_from = path
    if checkpoint.rng is not None:       # so that resumed shuffling continues where it stopped
        try:
            set_pcg64_state(model.rng, checkpoint.rng)
        except ValueError as e:
            raise ValueError(f"{path}: the stored RNG state is invalid ({e})") from None
    dropout = checkpoint.dropout_rng
    if dropout is not None and dropout.get("kind") == be.kind \
            and dropout.get("state") is not None:               # same masks as if never saved
        try:
            be.set_rng_state(model.dropout_rng, dropout["state"])
        except ValueError as e:
            raise ValueError(f"{path}: the stored dropout RNG state is invalid ({e})") from None
    with be.scope():
        model.params[...] = be.asarray(host)
    model.optimizer = opt if opt is not None else model.optimizer
