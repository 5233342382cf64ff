"""The textbook MNIST network, one sample per step
===============================================

The textbook MNIST network: 784-128-64-10, sigmoid hidden layers, softmax
output, trained one sample at a time (batch size 1) with plain SGD. Prints
the validation accuracy and the time of each epoch, and plots the curves.

.. code-block:: bash

    python examples/mnist_sigmoid_per_sample.py                 # 10 epochs
    python examples/mnist_sigmoid_per_sample.py --epochs 1 --out /tmp
"""

import argparse
from pathlib import Path

import fastmlp as fm
from fastmlp import plot
from fastmlp.datasets import load_mnist


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="folder for the PNG (default: this script's)")
    args = p.parse_args(argv)

    (x, y), (x_test, y_test) = load_mnist()
    model = fm.MLP([784, 128, 64, 10], activation="sigmoid", loss="cross_entropy",
                   device=args.device, seed=0)
    print(model.summary())
    sgd = fm.optim.SGD(lr=args.lr)
    # checked and moved to the device once, not at every fit() below
    train, test = model.prepare(x, y), model.prepare(x_test, y_test)
    hist = None                               # one History across the fits, extended by each
    for _ in range(args.epochs):
        hist = model.fit(train, epochs=1, batch_size=1, optimizer=sgd, validation_data=test,
                         history=hist)
        print(f"epoch {hist.epoch[-1]:2d}: validation accuracy "
              f"{hist.history['val_accuracy'][-1]:.2%}, {hist.history['seconds'][-1]:.2f} s",
              flush=True)

    path = Path(args.out or Path(__file__).parent) / "mnist_sigmoid_per_sample.png"
    plot.history(hist, path, title="MNIST 784-128-64-10, sigmoid, per-sample SGD "
                                  f"(lr {args.lr:g})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
