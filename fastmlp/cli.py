"""Command line: ``fastmlp train`` and ``fastmlp info``."""

import argparse
import logging
import platform
import sys
import time
from importlib import metadata


def _sizes(text):
    try:
        sizes = [int(s) for s in text.replace("-", ",").split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"sizes must look like 784,128,64,10, got {text!r}") from None
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError("sizes needs at least an input and an output width")
    return sizes


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parser():
    p = argparse.ArgumentParser(prog="fastmlp", description="Train multi-layer perceptrons.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an MLP on MNIST and report test accuracy",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--sizes", type=_sizes, default=[784, 128, 64, 10],
                   help="layer widths, e.g. 784,128,64,10")
    t.add_argument("--activation", default="relu", help="sigmoid, relu, tanh or identity")
    t.add_argument("--optimizer", default="adam", help="sgd, adagrad, rmsprop, adam or adamw")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    t.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0)")
    t.add_argument("--epochs", type=_positive_int, default=10)
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--validation-split", type=float, default=1 / 12,
                   help="fraction of the training set held out for validation")
    t.add_argument("--device", default="auto", help='"cpu", "cuda", "cuda:N" or "auto"')
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data", default=None,
                   help="directory holding the MNIST .gz files (default: $FASTMLP_DATA/mnist, "
                        "then ~/.cache/fastmlp/mnist, else download)")
    t.add_argument("--save", default=None, help="write the trained model to this .safetensors")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("info", help="print versions and which devices are usable")
    return p


def train(args):
    """Train on MNIST as ``args`` say; print per-epoch and final figures."""
    import fastmlp as fm
    from fastmlp.datasets import load_mnist

    opt_kwargs = {} if args.momentum is None else {"momentum": args.momentum}
    if opt_kwargs and args.optimizer.lower() != "sgd":
        raise ValueError("--momentum applies to --optimizer sgd only")
    model = fm.MLP(args.sizes, activation=args.activation, device=args.device, seed=args.seed)
    optimizer = fm.optim.get(args.optimizer, lr=args.lr, **opt_kwargs)
    (x, y), (x_test, y_test) = load_mnist(args.data)
    print(f"{model}, {model.n_params:,} parameters, {optimizer!r}", flush=True)
    start = time.perf_counter()
    hist = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer,
                     validation_split=args.validation_split, progress=not args.no_progress)
    train_s = time.perf_counter() - start
    if args.no_progress:      # with the bar, fit printed these lines as it went
        h = hist.history
        for i in range(hist.epochs):
            shown = [k for k in ("train_loss", "val_accuracy") if k in h]
            print(f"epoch {i + 1}/{args.epochs}: " +
                  ", ".join(f"{k} {h[k][i]:.4f}" for k in shown) + f", {h['seconds'][i]:.2f} s")
    test = model.evaluate(x_test, y_test)
    print(f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}); "
          f"training took {train_s:.1f} s")
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0


def info(args=None):
    """Print the versions of fastmlp and its dependencies, and usable devices."""
    from fastmlp import __version__
    from fastmlp.backend import cuda_status

    print(f"fastmlp {__version__}, Python {platform.python_version()} on {platform.platform()}")
    for dist in ("numpy", "numba", "safetensors", "tqdm", "cupy-cuda13x", "cupy-cuda12x",
                 "numba-cuda"):
        try:
            print(f"  {dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            print(f"  {dist} not installed")
    usable, reason = cuda_status()
    print("devices: cpu" + (f", cuda ({reason})" if usable else f"; cuda unusable: {reason}"))
    return 0


def main(argv=None):
    """Entry point of the ``fastmlp`` command."""
    args = _parser().parse_args(argv)
    log = logging.getLogger("fastmlp")
    log.setLevel(logging.INFO)
    if not log.handlers:
        log.addHandler(logging.StreamHandler())
    try:
        return {"train": train, "info": info}[args.command](args)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"fastmlp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
