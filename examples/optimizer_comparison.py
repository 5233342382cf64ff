"""Five optimizers on MNIST
========================

SGD, SGD with momentum, AdaGrad, RMSprop and Adam side by side: the same
784-128-64-10 ReLU network, from the same initial weights, trained on
MNIST (the first 20,000 training images, mini-batches of 64) and scored on
the 10,000 test images after each epoch. Prints each optimizer's figures
per epoch and plots one line per optimizer.

.. code-block:: bash

    python examples/optimizer_comparison.py                     # 8 epochs each
    python examples/optimizer_comparison.py --epochs 1 --train-size 2000 --out /tmp
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt

import fastmlp as fm
from fastmlp.datasets import load_mnist

OPTIMIZERS = {
    "SGD (lr 0.05)": lambda: fm.optim.SGD(lr=0.05),
    "SGD + momentum 0.9 (lr 0.01)": lambda: fm.optim.SGD(lr=0.01, momentum=0.9),
    "AdaGrad (lr 0.01)": lambda: fm.optim.AdaGrad(lr=0.01),
    "RMSprop (lr 0.001)": lambda: fm.optim.RMSprop(lr=1e-3),
    "Adam (lr 0.001)": lambda: fm.optim.Adam(lr=1e-3),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-size", type=int, default=20_000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="folder for the PNG (default: this script's)")
    args = p.parse_args(argv)

    (x, y), (x_test, y_test) = load_mnist()
    x, y = x[:args.train_size], y[:args.train_size]
    runs = {}
    for name, make in OPTIMIZERS.items():
        model = fm.MLP([784, 128, 64, 10], activation="relu", device=args.device, seed=0)
        opt = make()
        train, test = model.prepare(x, y), model.prepare(x_test, y_test)
        hist = None
        for _ in range(args.epochs):
            hist = model.fit(train, epochs=1, batch_size=64, optimizer=opt,
                             validation_data=test, history=hist)
            print(f"{name:30s} epoch {hist.epoch[-1]:2d}: "
                  f"train loss {hist.history['train_loss'][-1]:.4f}, "
                  f"test accuracy {hist.history['val_accuracy'][-1]:.2%}, "
                  f"{hist.history['seconds'][-1]:.2f} s", flush=True)
        runs[name] = hist

    marker = "o" if args.epochs <= 30 else None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for name, hist in runs.items():
        left.plot(hist.epoch, hist.history["train_loss"], marker=marker, markersize=4, label=name)
        right.plot(hist.epoch, hist.history["val_accuracy"], marker=marker, markersize=4,
                   label=name)
    left.set(title="training loss", xlabel="epoch", ylabel="cross-entropy", yscale="log")
    right.set(title="test accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    right.legend(fontsize=8)
    fig.suptitle(f"MNIST ({len(x):,} training images), 784-128-64-10 ReLU, batch 64")
    path = Path(args.out or Path(__file__).parent) / "optimizer_comparison.png"
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
