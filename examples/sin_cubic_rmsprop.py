"""sin(x) fitted by a cubic with RMSprop
=====================================

sin(x) on [-pi, pi] fitted by a cubic a + b x + c x^2 + d x^3: a linear
model (one layer, no hidden units, identity output) over the features x,
x^2, x^3, trained with RMSprop on the summed squared error. Prints the loss
and the coefficients, and plots the fit against sin(x).

.. code-block:: bash

    python examples/sin_cubic_rmsprop.py                        # 2,000 steps
    python examples/sin_cubic_rmsprop.py --epochs 10 --out /tmp
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import fastmlp as fm
from fastmlp import plot


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--epochs", type=int, default=2000, help="full-batch steps")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default=None, help="folder for the PNG (default: this script's)")
    args = p.parse_args(argv)

    x = np.linspace(-np.pi, np.pi, 2000)
    features = np.stack([x, x**2, x**3], axis=1)          # (2000, 3)
    model = fm.MLP([3, 1], activation="identity", loss="mse", reduction="sum",
                   dtype="float64", device="cpu", seed=0)
    hist = model.fit(features, np.sin(x), epochs=args.epochs, batch_size=None,
                     optimizer=fm.optim.RMSprop(lr=args.lr))
    losses = hist.history["train_loss"]
    every = max(1, len(losses) // 10)
    for epoch in range(every, len(losses) + 1, every):
        print(f"step {epoch:4d}: loss {losses[epoch - 1]:.2f}")

    a = float(model.biases[0][0])
    b, c, d = (float(w) for w in model.weights[0][:, 0])
    print(f"result: y = {a:.4f} {b:+.4f} x {c:+.4f} x^2 {d:+.4f} x^3")

    # the fit on the left, the loss curve beside it (fastmlp.plot draws into an Axes)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.2, 3.8), layout="constrained")
    left.plot(x, np.sin(x), label="sin(x)", linewidth=3, alpha=0.5)
    left.plot(x, model.predict(features), "--", label="a + bx + cx² + dx³")
    left.set(title="the cubic against sin(x)", xlabel="x", ylabel="y")
    left.grid(True, alpha=0.3)
    left.legend()
    plot.history(hist, ax=right)
    right.set(yscale="log", ylabel="loss (sum of squared errors)")
    fig.suptitle(f"sin(x) by a cubic, RMSprop lr {args.lr:g}, {len(losses)} steps")
    path = Path(args.out or Path(__file__).parent) / "sin_cubic_rmsprop.png"
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
