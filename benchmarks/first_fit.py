"""What compilation costs a user: the first ``fit()`` of a fresh process,
with a cold and then a warm Numba cache.

Each measurement is a new Python process that imports fastmlp, builds
784-128-64-10 and fits twice on 512 random samples (batch 64, one epoch,
sigmoid and relu, SGD and Adam); the overhead is the first fit's time minus
the second's. The cache lives in a fresh temporary NUMBA_CACHE_DIR, so the
first process compiles everything (cold) and the next ones load it (warm).

    python benchmarks/first_fit.py [--warm-runs 3]
"""

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import time
t0 = time.perf_counter()
import numpy as np
import fastmlp as fm
t_import = time.perf_counter() - t0
rng = np.random.default_rng(0)
x, y = rng.random((512, 784), dtype=np.float32), rng.integers(0, 10, 512)
def fits():
    for act, opt, bs in (("sigmoid", "sgd", 64), ("relu", "adam", 64), ("sigmoid", "sgd", 1)):
        m = fm.MLP([784, 128, 64, 10], activation=act, device="cpu", seed=0)
        m.fit(x[:64 * bs], y[:64 * bs], epochs=1, batch_size=bs, optimizer=opt)
t = time.perf_counter(); fits(); first = time.perf_counter() - t
t = time.perf_counter(); fits(); second = time.perf_counter() - t
print(f"{t_import:.3f} {first:.3f} {second:.3f}")
"""


def run(cache_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return [float(v) for v in out]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warm-runs", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        rows = [("cold", *run(cache))] + [("warm", *run(cache)) for _ in range(args.warm_runs)]
    print("| cache | import fastmlp (s) | first fit (s) | second fit (s) | overhead (s) |\n"
          "|---|---|---|---|---|")
    for kind, imp, first, second in rows:
        print(f"| {kind} | {imp:.2f} | {first:.2f} | {second:.2f} | {first - second:.2f} |")
    return rows


if __name__ == "__main__":
    main()
