"""A truth table learned by a 3-4-1 network
========================================

The classic toy network: 3 inputs, 4 sigmoid hidden units, 1 sigmoid
output, no biases, learning a truth table (the XOR of the first two inputs;
the third is always 1) by full-batch gradient descent over 1,500 steps.
Prints the loss as it falls and the learned outputs against the targets,
and plots the loss curve.

.. code-block:: bash

    python examples/xor_truth_table.py                          # 1,500 steps
    python examples/xor_truth_table.py --epochs 10 --out /tmp
"""

import argparse
from pathlib import Path

import numpy as np

import fastmlp as fm
from fastmlp import plot

X = np.array([[0, 0, 1],
              [0, 1, 1],
              [1, 0, 1],
              [1, 1, 1]], dtype=np.float64)
Y = np.array([0, 1, 1, 0], dtype=np.float64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--epochs", type=int, default=1500, help="full-batch steps")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--out", default=None, help="folder for the PNG (default: this script's)")
    args = p.parse_args(argv)

    model = fm.MLP([3, 4, 1], activation="sigmoid", loss="binary_cross_entropy", bias=False,
                   dtype="float64", device="cpu", seed=0)
    # batch_size=None: each epoch is one step on all four rows
    hist = model.fit(X, Y, epochs=args.epochs, batch_size=None, optimizer="sgd", lr=args.lr)
    losses = hist.history["train_loss"]
    every = max(1, len(losses) // 15)
    for epoch in range(1, len(losses) + 1):
        if epoch == 1 or epoch % every == 0:
            print(f"step {epoch:4d}: loss {losses[epoch - 1]:.4f}")

    print("\n inputs   target  output")
    for row, target, out in zip(X, Y, model.predict_proba(X)[:, 0]):
        print(f" {row.astype(int)}  {target:.0f}       {out:.3f}")

    path = Path(args.out or Path(__file__).parent) / "xor_truth_table.png"
    plot.history(hist, path, title="3-4-1 sigmoid network on a truth table, "
                                   f"full-batch SGD (lr {args.lr:g})")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
