"""uint8 MNIST as it is (MLP(input_scale=1/255)) against float32 MNIST scaled
once: throughput and test accuracy, measured in one run, alternating.

    .venv/bin/python benchmarks/compact_inputs.py [--batch-size 128] [--epochs 3] [--repeats 3]
"""

import argparse
import time

import numpy as np

import fastmlp as fm
from fastmlp.datasets import load_mnist


def run(x, y, xt, yt, scale, args):
    model = fm.MLP([784, 128, 64, 10], seed=0, device="cpu", input_scale=scale)
    data = model.prepare(x, y)
    model.fit(data, epochs=1, batch_size=args.batch_size)           # compile, warm caches
    model = fm.MLP([784, 128, 64, 10], seed=0, device="cpu", input_scale=scale)
    start = time.perf_counter()
    model.fit(data, epochs=args.epochs, batch_size=args.batch_size, optimizer="adam")
    seconds = time.perf_counter() - start
    return len(x) * args.epochs / seconds, model.evaluate(xt, yt)["accuracy"], data.x.nbytes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    (x8, y), (xt8, yt) = load_mnist(dtype="uint8")
    x32, xt32 = (np.divide(a, 255, dtype=np.float32) for a in (x8, xt8))
    found = {"float32": [], "uint8": []}
    for _ in range(args.repeats):
        found["float32"].append(run(x32, y, xt32, yt, 1.0, args))
        found["uint8"].append(run(x8, y, xt8, yt, 1 / 255, args))
    print(f"MNIST, 784-128-64-10 relu, Adam, batch {args.batch_size}, {args.epochs} epochs, "
          f"{args.repeats} alternating repeats")
    for name, rows in found.items():
        rates = [r[0] for r in rows]
        print(f"{name:8s} median {np.median(rates):10,.0f} samples/s  (runs "
              f"{', '.join(f'{r:,.0f}' for r in rates)}), test accuracy {rows[-1][1]:.4f}, "
              f"prepared x {rows[-1][2] / 2**20:.1f} MiB")
    ratio = np.median([r[0] for r in found["uint8"]]) / np.median([r[0] for r in found["float32"]])
    print(f"uint8 / float32 throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
