"""Command line: ``fastmlp train`` and ``fastmlp info``."""

import argparse
import logging
import math
import os
import platform
import sys
import time
from importlib import metadata

from fastmlp import __version__, atomic


def _sizes(text):
    """Layer widths from "784,128,10" (or "784-128-10"): two or more positive ints."""
    sep = "," if "," in text else "-"
    sizes = [_width(field, text) for field in text.split(sep)]
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(
            f"sizes needs at least an input and an output width, got {text!r}")
    return sizes


def _width(field, text):
    # int() takes "-128" and "0" as readily as "128": a width must also be >= 1.
    try:
        width = int(field)
    except ValueError:
        width = 0
    if width < 1:
        raise argparse.ArgumentTypeError(
            f"layer widths must be positive integers, got {field.strip()!r} in {text!r} "
            "(write e.g. 784,128,64,10)")
    return width


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _fraction(text):
    """A validation fraction in [0, 1), checked here so that a bad one fails before loading."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:            # also false for nan
        raise argparse.ArgumentTypeError(
            f"expected a fraction in [0, 1) (0: no validation set), got {text!r}")
    return value


def _parser():
    p = argparse.ArgumentParser(prog="fastmlp", description="Train multi-layer perceptrons.")
    p.add_argument("--version", action="version", version=f"fastmlp {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an MLP on MNIST and report test accuracy",
                       description="Train an MLP on MNIST and report its test accuracy.")
    # Defaults are spelled out in each help: argparse's automatic "(default: ...)"
    # printed None for --momentum and 0.08333333333333333 for --validation-split.
    t.add_argument("--sizes", type=_sizes, default="784,128,64,10", metavar="WIDTHS",
                   help="layer widths from input to output (default: %(default)s)")
    t.add_argument("--activation", default="relu", metavar="NAME",
                   help="sigmoid, relu, tanh or identity (default: %(default)s)")
    t.add_argument("--optimizer", default="adam", metavar="NAME",
                   help="sgd, adagrad, rmsprop, adam or adamw (default: %(default)s)")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)g)")
    t.add_argument("--momentum", type=float, default=None,
                   help="momentum of --optimizer sgd (default: 0, plain SGD)")
    t.add_argument("--epochs", type=_positive_int, default=10, metavar="N",
                   help="passes over the training set (default: %(default)s)")
    t.add_argument("--batch-size", type=_positive_int, default=128, metavar="N",
                   help="samples per step (default: %(default)s)")
    t.add_argument("--validation-split", type=_fraction, default=1 / 12, metavar="FRACTION",
                   help="fraction of the training set held out to report val_accuracy each "
                        "epoch, 0 for none (default: 1/12, i.e. 5000 images)")
    t.add_argument("--device", default="auto",
                   help='"cpu", "cuda", "cuda:N" or "auto", the GPU when usable '
                        "(default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    t.add_argument("--data", default=None, metavar="DIR",
                   help="an existing directory holding the four MNIST .gz files (default: "
                        "$FASTMLP_DATA/mnist, else $XDG_CACHE_HOME/fastmlp/mnist or "
                        "~/.cache/fastmlp/mnist; downloaded when missing)")
    t.add_argument("--save", default=None, metavar="PATH",
                   help="write the trained model to this .safetensors file, in an existing, "
                        "writable directory (default: not saved)")
    t.add_argument("--no-progress", action="store_true",
                   help="print one line per epoch instead of a progress bar")
    sub.add_parser("info", help="print versions and which devices are usable")
    return p


def _check_data(data):
    """Refuse a --data that does not exist: it is a typo, not a place to download to."""
    if data is not None and not os.path.isdir(os.path.expanduser(data)):
        raise ValueError(
            f"--data {data}: no such directory. Pass the directory holding the four MNIST "
            ".gz files, or leave out --data to use $FASTMLP_DATA/mnist or the cache "
            "(downloading there when they are missing).")


def _check_save(path):
    """Refuse a --save path that cannot be written before training, not after it."""
    if path is None:
        return
    try:
        atomic.check_target(path)
    except OSError as e:
        raise ValueError(f"--save {path}: {e.strerror}") from None


def train(args):
    """Train on MNIST as ``args`` say; print per-epoch and final figures."""
    import fastmlp as fm
    from fastmlp import distributed
    from fastmlp.datasets import MNISTNotFoundError, load_mnist

    comm = distributed.launched()             # mpiexec -n 4 fastmlp train: data-parallel
    lead = comm is None or comm.Get_rank() == 0
    say = print if lead else (lambda *a, **k: None)

    opt_kwargs = {} if args.momentum is None else {"momentum": args.momentum}
    if opt_kwargs and args.optimizer.lower() != "sgd":
        raise ValueError("--momentum applies to --optimizer sgd only")
    try:
        model = fm.MLP(args.sizes, activation=args.activation, device=args.device,
                       seed=args.seed)
    except RuntimeError as e:                 # the library's hint, in the CLI's words
        raise RuntimeError(str(e).replace('pass device="cpu"', "pass --device cpu")) from None
    optimizer = fm.optim.get(args.optimizer, lr=args.lr, **opt_kwargs)
    if args.sizes[0] != 784 or args.sizes[-1] != 10:       # known before any data is read
        raise ValueError(f"--sizes must start with 784 (MNIST's pixels) and end with 10 (its "
                         f"classes), got {','.join(map(str, args.sizes))}")
    _check_data(args.data)
    _check_save(args.save)
    try:
        (x, y), (x_test, y_test) = load_mnist(args.data)
    except MNISTNotFoundError as e:
        raise e.with_hint("pass --data DIR") from e
    say(f"{model}, {model.n_params:,} parameters, {optimizer!r}"
        + ("" if comm is None else f", {comm.Get_size()} MPI ranks"), flush=True)
    start = time.perf_counter()
    # One line per epoch with every figure, the same with or without the bar
    # (which shows only on a terminal; --no-progress keeps the lines alone).
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer,
              validation_split=args.validation_split,
              progress="lines" if args.no_progress else True, comm=comm)
    train_s = time.perf_counter() - start
    test = model.evaluate(x_test, y_test)
    say(f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}); "
        f"training took {train_s:.1f} s")
    if args.save and lead:                    # the ranks' models are the same: one writes
        model.save(args.save)
        say(f"saved to {args.save}")
    return 0


def info(args=None):
    """Print the versions of fastmlp and its dependencies, and usable devices."""
    from fastmlp import __version__
    from fastmlp.backend import cuda_status

    print(f"fastmlp {__version__}, Python {platform.python_version()} on {platform.platform()}")
    for dist in ("numpy", "numba", "safetensors", "tqdm", "cupy-cuda13x", "cupy-cuda12x",
                 "warp-lang"):
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
        handler = logging.StreamHandler()
        # fit prints its epoch lines itself; its log records would repeat them
        handler.addFilter(lambda record: not record.name.startswith("fastmlp.train"))
        log.addHandler(handler)
    try:
        return {"train": train, "info": info}[args.command](args)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"fastmlp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
