"""What Numba's threads buy a large-batch fit: MNIST epochs with the
threaded step and gather against the serial step, in one run.

Each measurement is a fresh process that fits 784-128-64-10 on MNIST for
``--epochs`` epochs (SGD on sigmoid, and Adam on relu) and reports the
median epoch time after the first; "serial" runs the same with
``NUMBA_NUM_THREADS=1`` (one Numba thread: the serial step, NumPy's OpenBLAS
with its own threads, as before the threaded step existed). The two
alternate, ``--pairs`` times, and the table gives the medians and their
ratio.

    python benchmarks/threads.py [--batch-sizes 512,1024,4096] [--pairs 3]
"""

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, numpy as np, fastmlp as fm
from fastmlp.datasets import load_mnist
(x, y), _ = load_mnist(sys.argv[1] or None)
for bs in map(int, sys.argv[2].split(",")):
    for act, opt, lr in (("sigmoid", "sgd", 0.05), ("relu", "adam", 1e-3)):
        m = fm.MLP([784, 128, 64, 10], activation=act, device="cpu", seed=0)
        h = m.fit(x, y, epochs=int(sys.argv[3]), batch_size=bs, optimizer=opt, lr=lr)
        print(bs, f"{act}/{opt}", np.median(h.history["seconds"][1:]), flush=True)
"""


def run(data, batch_sizes, epochs, serial):
    env = dict(os.environ)
    if serial:
        env["NUMBA_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, data, batch_sizes, str(epochs)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return {(int(bs), case): float(s) for bs, case, s in (line.split() for line in
                                                          out.splitlines())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="512,1024,4096")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--data", default=None, help="MNIST directory (default: fastmlp's search)")
    args = p.parse_args(argv)
    import numba
    print(f"{os.cpu_count()} CPUs, Numba threading layer default, "
          f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}")
    found = {"threaded": [], "serial": []}
    for _ in range(args.pairs):
        for name in found:
            found[name].append(run(args.data or "", args.batch_sizes, args.epochs,
                                   name == "serial"))
    print("\n| batch | model | threaded s/epoch | serial s/epoch | serial / threaded |")
    print("|---|---|---|---|---|")
    for key in found["threaded"][0]:
        t = statistics.median(r[key] for r in found["threaded"])
        s = statistics.median(r[key] for r in found["serial"])
        print(f"| {key[0]} | {key[1]} | {t:.3f} | {s:.3f} | {s / t:.2f}x |")


if __name__ == "__main__":
    main()
