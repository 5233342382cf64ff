"""A fuzzer for the checkpoint loader that knows the format: it mutates a
good file's metadata (JSON values, keys, raw text) and tensors (bytes,
dtypes, shapes), and recomputes the file's digest most of the time, so that
what is tested is the loader's own field checks, not only the digest.

The oracle: ``fastmlp.load`` either refuses the file with ValueError, or
returns a model that saves back to the same file (the same metadata, field
by field and typed, and the same tensors, bit for bit): a file that loads
is one fastmlp could have saved. Anything else (another exception, a file
that loads as something else, a load over 0.5 s) is a finding.

    python tests/checkpoint_fuzz.py --seconds 600 [--seed 0]

``tests/test_checkpoint_fuzz.py`` runs it for a few hundred cases in CI.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

import fastmlp
from fastmlp import io

_VALUES = [None, True, False, 0, 1, -1, 2**31, 2**63, 0.0, -0.0, 1e-300, 1e300, 0.5, -3.5,
           "", "relu", "no", " 2 ", "float64", [], [1], [0.1, 0.2], {}, {"a": 1}]


def good_files(folder):
    """Good checkpoints to mutate: with Adam state, with SGD momentum and
    dropout, without an optimizer."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype(np.float32), rng.integers(0, 3, 64)
    paths = []
    for i, (kw, fit) in enumerate([({}, {"optimizer": "adam"}),
                                   ({"dropout": 0.25, "activation": "tanh"},
                                    {"optimizer": fastmlp.optim.SGD(lr=0.1, momentum=0.9)}),
                                   ({"bias": False, "dtype": "float64"}, None)]):
        model = fastmlp.MLP([6, 5, 3], seed=i, device="cpu", **kw)
        if fit is not None:
            model.fit(x, y, epochs=1, **fit)
        path = os.path.join(folder, f"good{i}.st")
        model.save(path, include_optimizer=fit is not None)
        paths.append(path)
    return paths


def parts(path):
    with safe_open(path, framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _mutate_json(value, rng, depth=0):
    """``value`` with one random change somewhere inside it."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = list(value)[rng.integers(len(value))]
        value = dict(value)
        roll = rng.random()
        if roll < 0.2:
            del value[key]
        elif roll < 0.3:
            value[key + "x"] = value.pop(key)
        elif roll < 0.35:
            value["extra"] = _VALUES[rng.integers(len(_VALUES))]
        else:
            value[key] = _mutate_json(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        value = list(value)
        i = rng.integers(len(value))
        value[i] = _mutate_json(value[i], rng, depth + 1)
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and rng.random() < 0.5:
        return type(value)(value * rng.choice([-1, 0, 2, 10, 1e10]) + rng.integers(-2, 3))
    return _VALUES[rng.integers(len(_VALUES))]


def mutate(tensors, meta, rng):
    """One mutant: ``(tensors, meta)``; the digest recomputed 90% of the time."""
    tensors, meta = dict(tensors), dict(meta)
    roll = rng.random()
    fields = [k for k in meta if k not in ("digest", "hmac")]
    if roll < 0.6:                                   # a JSON value somewhere
        key = fields[rng.integers(len(fields))]
        try:
            meta[key] = json.dumps(_mutate_json(json.loads(meta[key]), rng))
        except ValueError:
            meta[key] = meta[key] + " "
    elif roll < 0.7:                                 # raw text
        key = fields[rng.integers(len(fields))]
        text = meta[key]
        i = int(rng.integers(len(text) + 1))
        meta[key] = text[:i] + chr(int(rng.integers(32, 127))) + text[i + 1:]
    elif roll < 0.78:                                # a whole field gone, or one added
        if rng.random() < 0.5:
            del meta[fields[rng.integers(len(fields))]]
        else:
            meta[rng.choice(["sha256", "engine", "extra", "hmac"])] = "{}"
    else:                                            # a tensor
        name = list(tensors)[rng.integers(len(tensors))]
        a = tensors[name].copy()
        r = rng.random()
        if r < 0.4 and a.size:
            a.reshape(-1).view(np.uint8)[rng.integers(a.nbytes)] ^= np.uint8(1 << rng.integers(8))
        elif r < 0.6:
            a = -a
        elif r < 0.7:
            a = a.astype(rng.choice([np.float32, np.float64, np.int32]))
        elif r < 0.8:
            a = a.reshape(-1)[:-1].copy() if a.size > 1 else np.zeros(2, a.dtype)
        elif r < 0.9:
            a = np.zeros_like(a)
        else:
            del tensors[name]
            return tensors, _rehash(meta, tensors, rng)
        tensors[name] = a
    return tensors, _rehash(meta, tensors, rng)


def _rehash(meta, tensors, rng):
    if "digest" in meta and rng.random() < 0.9:
        meta["digest"] = io.digest(meta, tensors)
    return meta


def _same(a, b):
    """JSON values equal and of the same kind (True is not 1, 1 is 1.0)."""
    kind = {bool: "b", int: "n", float: "n", str: "s", type(None): "0", list: "l", dict: "d"}
    if kind.get(type(a)) != kind.get(type(b)):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check(path, tensors, meta, folder):
    """The oracle for one mutant written at ``path``: None, or what is wrong."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fastmlp.load(path, device="cpu")
    except ValueError:
        if time.perf_counter() - start > 0.5:
            return f"refused after {time.perf_counter() - start:.2f} s"
        return None
    except Exception as e:                          # any other is a finding
        return f"{type(e).__name__}: {e}"
    again = os.path.join(folder, "again.st")
    model.save(again, include_optimizer=any(k.startswith("optimizer.") for k in tensors))
    t2, m2 = parts(again)
    if set(m2) != set(meta):
        return f"loaded, but saves back other fields: {sorted(set(m2) ^ set(meta))}"
    for key in meta:
        if key in ("format", "format_version", "digest"):
            if key != "digest" and meta[key] != m2[key]:
                return f"loaded, but {key} saves back as {m2[key]!r}"
            continue
        was, now = json.loads(meta[key]), json.loads(m2[key])
        if not _same(was, now):
            if isinstance(was, dict) and isinstance(now, dict):
                diff = sorted(k for k in set(was) | set(now)
                              if k not in was or k not in now or not _same(was[k], now[k]))
                return (f"loaded, but {key} saves back otherwise: " + ", ".join(
                    f"{k}: {was.get(k, '-')!r} -> {now.get(k, '-')!r}" for k in diff))[:300]
            return f"loaded, but {key} saves back as {m2[key][:200]}"
    if set(t2) != set(tensors):
        return "loaded, but saves back other tensors"
    for name, a in tensors.items():
        if a.dtype != t2[name].dtype or a.shape != t2[name].shape or a.tobytes() != \
                t2[name].tobytes():
            return f"loaded, but {name} saves back different"
    return None


def run(seconds=None, cases=None, seed=0, log=print):
    """Fuzz for ``seconds`` or ``cases``: ``(executions, findings)``."""
    rng = np.random.default_rng(seed)
    findings, n = [], 0
    with tempfile.TemporaryDirectory() as folder:
        goods = [parts(p) for p in good_files(folder)]
        path = os.path.join(folder, "mutant.st")
        end = None if seconds is None else time.perf_counter() + seconds
        while (cases is None or n < cases) and (end is None or time.perf_counter() < end):
            tensors, meta = goods[n % len(goods)]
            t, m = mutate(tensors, meta, rng)
            try:
                save_file(t, path, metadata=m)
            except Exception:                       # not a file safetensors writes
                n += 1
                continue
            wrong = check(path, t, m, folder)
            if wrong:
                findings.append((n, wrong))
                log(f"case {n}: {wrong}")
            n += 1
    return n, findings


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    n, findings = run(seconds=args.seconds, seed=args.seed)
    print(f"{n} executions in {time.perf_counter() - start:.0f} s, seed {args.seed}: "
          f"{len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
