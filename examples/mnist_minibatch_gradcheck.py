"""MNIST on mini-batches, with a gradient check
============================================

A three-layer MNIST classifier, 784-50-100-10, trained on random
mini-batches of 100. Checks backprop against numerical gradients first,
prints the train and test accuracy of each epoch, saves the model and loads
it back for inference, and plots the curves.

.. code-block:: bash

    python examples/mnist_minibatch_gradcheck.py                # 15 epochs
    python examples/mnist_minibatch_gradcheck.py --epochs 1 --out /tmp
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import fastmlp as fm
from fastmlp import plot
from fastmlp.datasets import load_mnist


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="folder for the PNG (default: this script's)")
    args = p.parse_args(argv)

    (x, y), (x_test, y_test) = load_mnist()
    model = fm.MLP([784, 50, 100, 10], activation="relu", device=args.device, seed=0)
    print(model.summary())

    # backprop against central differences, on 300 of the 44,860 parameters: relative
    # errors under 1e-5 are finite-difference noise on tiny gradients (ReLU's kinks too)
    check = fm.gradcheck(model, x[:10], y[:10], max_checks=300, tol=1e-5)
    print(f"gradient check on {check.n_checked} parameters: max relative error "
          f"{check.max_rel_error:.1e}, max absolute error {check.max_abs_error:.1e} "
          f"({'ok' if check.ok else 'FAILED'}: tolerance {check.tol:g})")

    sgd = fm.optim.SGD(lr=args.lr)
    train, test = model.prepare(x, y), model.prepare(x_test, y_test)
    hist = None                               # one History across the fits, extended by each
    for _ in range(args.epochs):
        hist = model.fit(train, epochs=1, batch_size=100, optimizer=sgd, validation_data=test,
                         history=hist)
        log = {name: values[-1] for name, values in hist.history.items()}
        print(f"epoch {hist.epoch[-1]:2d}: train accuracy {log['train_accuracy']:.2%}, "
              f"test accuracy {log['val_accuracy']:.2%}, loss {log['train_loss']:.4f}, "
              f"{log['seconds']:.2f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "mnist.safetensors")
        loaded = fm.load(Path(tmp) / "mnist.safetensors", device=args.device)
    same = np.array_equal(loaded.predict(x_test), model.predict(x_test))
    print(f"saved and loaded back: test accuracy {loaded.evaluate(x_test, y_test)['accuracy']:.2%}"
          f", predictions {'identical' if same else 'DIFFERENT'}")

    path = Path(args.out or Path(__file__).parent) / "mnist_minibatch_gradcheck.png"
    record = hist.history               # the validation data is the test set: say so
    plot.history({"epoch": hist.epoch, "train_loss": record["train_loss"],
                  "test_loss": record["val_loss"], "train_accuracy": record["train_accuracy"],
                  "test_accuracy": record["val_accuracy"]}, path,
                 title="MNIST 784-50-100-10, ReLU, SGD on mini-batches of 100")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
