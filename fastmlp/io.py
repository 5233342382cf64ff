"""Checkpoints: safetensors tensors plus JSON metadata, written atomically.

A file holds ``weights.<i>`` and ``biases.<i>`` per layer, optionally the
optimizer's state as ``optimizer.<i>.<slot>``, and string metadata:
``format`` ("fastmlp"), ``format_version``, and as JSON the model ``config``,
the shuffling ``rng`` state and the ``optimizer`` (name, hyperparameters, step
count). Nothing is ever unpickled.

This module knows files, not the model class: :func:`snapshot`, :func:`save`
and :func:`restore` work through the model's public attributes, and
:func:`fastmlp.load` (and unpickling) builds the model between :func:`read`
(or a snapshot) and :func:`restore`.
"""

import json
import os
import tempfile
from typing import NamedTuple

import numpy as np

FORMAT = "fastmlp"
FORMAT_VERSION = 1


class Checkpoint(NamedTuple):
    """What :func:`read` found in a file: the tensors by name, the model
    config, the optimizer's metadata and the host RNG state (None if absent)."""

    tensors: dict
    config: dict
    optimizer: dict
    rng: dict


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
    return Checkpoint(tensors, model.config(), opt_meta, model.rng.bit_generator.state)


def save(model, path, include_optimizer=True):
    """Write ``model`` to ``path``: a temp file in the same directory, fsync, rename.

    The optimizer's state is included when the model has one and
    ``include_optimizer`` is true, so training can resume after
    :func:`fastmlp.load`.
    """
    from safetensors.numpy import save as st_save

    state = snapshot(model, include_optimizer)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(state.config), "rng": json.dumps(state.rng)}
    if state.optimizer is not None:
        meta["optimizer"] = json.dumps(state.optimizer)
    _atomic_write(path, st_save(state.tensors, metadata=meta))


def _atomic_write(path, data):
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastmlp-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):        # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read(path):
    """The :class:`Checkpoint` in ``path``; ValueError for a truncated,
    foreign or newer-format file (FileNotFoundError etc. as they come)."""
    from safetensors import safe_open

    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a checkpoint file")
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:   # safetensors raises its own error types for bad headers
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                         f"{e}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not a fastmlp checkpoint "
                         f"(its metadata has no format={FORMAT!r})")
    try:
        version = int(meta["format_version"])
        config = json.loads(meta["config"])
        opt_meta = json.loads(meta["optimizer"]) if "optimizer" in meta else None
        rng = json.loads(meta["rng"]) if "rng" in meta else None
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: damaged fastmlp metadata ({e!r})") from None
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer fastmlp (checkpoint format {version}); "
                         f"this version reads format <= {FORMAT_VERSION}: upgrade fastmlp")
    return Checkpoint(tensors, config, opt_meta, rng)


def restore(model, checkpoint, path):
    """Fill ``model`` (built from ``checkpoint.config``) with the stored
    parameters, RNG state and optimizer; ValueError naming ``path`` when
    they do not fit the model."""
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
    with be.scope():
        model.params[...] = be.asarray(host)
    if checkpoint.rng is not None:       # so that resumed shuffling continues where it stopped
        try:
            model.rng.bit_generator.state = checkpoint.rng
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: the stored RNG state is invalid ({e})") from None
    opt_meta = checkpoint.optimizer
    if opt_meta is not None:
        with be.scope():
            state = {k[len("optimizer."):]: be.asarray(v, dtype=model.dtype)
                     for k, v in tensors.items() if k.startswith("optimizer.")}
        try:
            opt = optim.get(opt_meta["name"], **opt_meta["config"])
            opt.load_state([model.params], state, opt_meta["t"], model.ops)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: the stored optimizer is invalid ({e})") from None
        model.optimizer = opt
