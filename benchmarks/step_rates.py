"""Steps per second through the public API, one line of JSON: what a change
to the step path costs, without peers or plots.

784-128-64-10 on MNIST-like inputs (20% non-zero, float32): sigmoid SGD by
``model.train_step`` at batch 1 to 4096 (steps/s, best of three blocks),
relu Adam at batch 128 (the MNIST recipe's step), and ``fit(batch_size=1)``
(samples/s of the per-sample epoch). Alternate two checkouts in one sitting
to compare them, one BLAS thread to keep the numbers steady::

    OPENBLAS_NUM_THREADS=1 python benchmarks/step_rates.py [seconds per block]
"""

import json
import sys
import time

import numpy as np

import fastmlp as fm


def rate(model, data, bs, opt, seconds):
    """Best steps/s of ``model.train_step`` over three blocks of ``seconds``."""
    starts = list(range(0, data.x.shape[0] - bs + 1, bs)) or [0]
    batches = [(data.x[s:s + bs], data.y[s:s + bs], data.targets[s:s + bs]) for s in starts]
    for x, y, t in batches[:3]:
        model.train_step(x, y, opt, targets=t)
    best = 0.0
    for _ in range(3):
        k, t0 = 0, time.perf_counter()
        while k % 16 or time.perf_counter() - t0 < seconds:
            x, y, t = batches[k % len(batches)]
            model.train_step(x, y, opt, targets=t)
            k += 1
        best = max(best, k / (time.perf_counter() - t0))
    return best


def main(seconds=0.3):
    rng = np.random.default_rng(0)
    x = rng.random((8192, 784), dtype=np.float32)
    x[x < 0.8] = 0
    y = rng.integers(0, 10, 8192)
    out = {}
    for bs in (1, 16, 64, 256, 1024, 4096):
        model = fm.MLP([784, 128, 64, 10], activation="sigmoid", device="cpu", seed=0)
        out[f"sgd{bs}"] = rate(model, model.prepare(x, y), bs, fm.optim.SGD(lr=0.01), seconds)
    model = fm.MLP([784, 128, 64, 10], activation="relu", device="cpu", seed=0)
    out["adam128"] = rate(model, model.prepare(x, y), 128, fm.optim.Adam(lr=1e-3), seconds)
    model = fm.MLP([784, 128, 64, 10], activation="sigmoid", device="cpu", seed=0)
    model.fit(x[:256], y[:256], epochs=1, batch_size=1, optimizer="sgd", lr=0.01)
    t0 = time.perf_counter()
    model.fit(x[:4096], y[:4096], epochs=1, batch_size=1, optimizer="sgd", lr=0.01)
    out["fit1"] = 4096 / (time.perf_counter() - t0)
    print(json.dumps({k: round(v, 1) for k, v in out.items()}))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.3)
