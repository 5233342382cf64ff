"""Checkpoints under abuse, in figures: how fast and how lean each hostile file
of tests/test_hostile_checkpoints.py is refused (each in a fresh process, so
the growth of peak RSS over the imports is that load's alone), and what
SIGKILLs during saves leave behind.

    .venv/bin/python benchmarks/checkpoint_abuse.py [--kills 200]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import fastmlp
from fastmlp import atomic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_hostile_checkpoints import _craft, _good_model  # noqa: E402
from test_saves import kill_a_saver  # noqa: E402

_ONE = """
import json, resource, sys, time
import fastmlp, fastmlp.io, safetensors.numpy   # imports only: no load before the hostile one
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    fastmlp.load(sys.argv[1], device="cpu")
    outcome = "LOADED"
except ValueError as e:
    outcome = "ValueError"
print(json.dumps([time.perf_counter() - start,
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, outcome]))
"""


def hostile(folder):
    good = folder / "good.safetensors"
    _good_model().save(good)
    rows = []

    def measure(name, path):
        out = subprocess.run([sys.executable, "-c", _ONE, str(path)],
                             capture_output=True, text=True, check=True).stdout
        return (name, *json.loads(out))

    good_row = measure("good", good)
    for name, (content, _) in _craft(good, folder).items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(content)
        rows.append(measure(name, path))
    print(f"{'file':30s} {'ms':>8s} {'peak RSS +MiB':>14s}  outcome   (the good file: "
          f"{good_row[1] * 1e3:.2f} ms, +{good_row[2] / 1024:.2f} MiB)")
    for name, seconds, grew, outcome in rows:
        print(f"{name:30s} {seconds * 1e3:8.2f} {grew / 1024:14.2f}  {outcome}")
    print(f"{len(rows)} files: refused {sum(r[3] == 'ValueError' for r in rows)}, "
          f"slowest {max(r[1] for r in rows) * 1e3:.2f} ms, "
          f"largest peak RSS growth {max(r[2] for r in rows) / 1024:.2f} MiB")


def kills(folder, n):
    models = [fastmlp.MLP([784, 512, 10], seed=s, device="cpu") for s in (1, 2)]
    path = folder / "m.safetensors"
    models[0].save(path)
    rng, stale, exact = random.Random(0), 0, 0
    for k in range(n):
        kill_a_saver(models, path, rng.uniform(0, 0.05))
        loaded = fastmlp.load(path, device="cpu")
        exact += any(np.array_equal(loaded.params, m.params) for m in models)
        stale += sum(n.endswith(atomic.SUFFIX) for n in os.listdir(folder))
        models[k % 2].save(path)
        assert not any(n.endswith(atomic.SUFFIX) for n in os.listdir(folder))
    size = path.stat().st_size / 2**20
    print(f"{n} SIGKILLs during saves of a {size:.1f} MiB checkpoint: {exact}/{n} left an "
          f"exact, loadable file; {stale} stale temp files found after kills, all removed "
          f"by the next save (0 left)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=200)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        hostile(Path(d))
    with tempfile.TemporaryDirectory() as d:
        kills(Path(d), args.kills)


if __name__ == "__main__":
    main()
