"""Regression: y = x² + noise
==========================

Regression: y = x^2 + noise fitted by a small ReLU network, 1-10-10-1,
with the mean squared error and Adam. Prints the train and validation loss
per epoch, and plots the loss curves and the fitted curve.

.. code-block:: bash

    python examples/regression_x_squared.py                     # 150 epochs
    python examples/regression_x_squared.py --epochs 5 --out /tmp
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import fastmlp as fm
from fastmlp import plot


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--out", default=None, help="folder for the PNG (default: this script's)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, 500)
    y = x**2 + rng.normal(0, 0.2, x.shape)
    model = fm.MLP([1, 10, 10, 1], activation="relu", loss="mse", device="cpu", seed=0)
    hist = model.fit(x, y, epochs=args.epochs, batch_size=32, optimizer="adam", lr=args.lr,
                     validation_split=0.2)
    every = max(1, args.epochs // 15)
    for i, (train, val) in enumerate(zip(hist.history["train_loss"], hist.history["val_loss"])):
        if i == 0 or (i + 1) % every == 0:
            print(f"epoch {i + 1:3d}: train loss {train:.4f}, validation loss {val:.4f}")

    grid = np.linspace(-2, 2, 200)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.2, 3.8), layout="constrained")
    plot.history(hist, ax=left)
    left.set_yscale("log")
    right.scatter(x, y, s=6, alpha=0.4, label="data: x² + noise")
    right.plot(grid, grid**2, color="gray", linestyle="--", label="x²")
    right.plot(grid, model.predict(grid), color="C3", linewidth=2, label="network")
    right.set(title="fitted curve", xlabel="x", ylabel="y")
    right.grid(True, alpha=0.3)
    right.legend()
    fig.suptitle(f"y = x² + noise, 1-10-10-1 ReLU network, Adam lr {args.lr:g}")
    path = Path(args.out or Path(__file__).parent) / "regression_x_squared.png"
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
