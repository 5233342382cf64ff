"""Plots of training runs and benchmark results, drawn with matplotlib.

    from fastmlp import plot
    hist = model.fit(x, y, epochs=10, validation_split=0.1)
    plot.history(hist, "history.png")       # loss and accuracy per epoch, train vs validation

matplotlib is imported inside the functions, so this module imports without
it; calling a function without it raises ImportError saying what to
install (``pip install "fastmlp[plot]"``). Each function returns the
matplotlib ``Figure``; given a ``path`` it also writes a PNG there (with
the Agg backend when no display is available) and closes the figure it
made, so a loop of saves does not keep figures open.
"""

import math
import os
import sys
from collections.abc import Mapping

__all__ = ["history", "throughput"]

_MISSING = ('fastmlp.plot needs matplotlib, which is not installed: '
            'pip install "fastmlp[plot]" (or pip install matplotlib)')
#: History keys that are not train/validation quantities
_NOT_PLOTTED = ("seconds", "lr", "epoch")
_PREFIXES = {"train": "train", "val": "validation", "test": "test"}
_FIRST = ("loss", "accuracy")
_MARKERS_UP_TO = 30             # epochs; more than that, plain lines


def _pyplot(saving):
    """matplotlib.pyplot, or ImportError naming the extra to install. When a
    figure is to be saved and no display is available, the Agg backend is
    selected first (before pyplot is imported; an explicit MPLBACKEND wins)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(_MISSING) from None
    if saving and "matplotlib.pyplot" not in sys.modules and not _has_display():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _has_display():
    if os.environ.get("MPLBACKEND"):
        return True                 # the user's choice: leave it to matplotlib
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _records(hist):
    """``{name: list}`` of a History (its ``history``) or of a plain dict."""
    data = getattr(hist, "history", hist)
    if not isinstance(data, Mapping):
        raise TypeError(f"history() takes a fastmlp History or a dict of per-epoch lists, "
                        f"got {type(hist).__name__}")
    return {k: list(v) for k, v in data.items()}


def _quantities(data):
    """``{quantity: [(key, line label), ...]}``: ``train_X``, ``val_X`` and
    ``test_X`` become the train, validation and test lines of quantity X, any
    other key a line of its own; loss first, accuracy second, the rest in the
    order met."""
    found = {}
    for key in data:
        prefix, _, rest = key.partition("_")
        if prefix in _PREFIXES and rest:
            quantity, label = rest, _PREFIXES[prefix]
        else:
            quantity, label = key, key
        if quantity in _NOT_PLOTTED or not data[key]:
            continue
        found.setdefault(quantity, []).append((key, label))
    order = [q for q in _FIRST if q in found] + [q for q in found if q not in _FIRST]
    rank = {label: i for i, label in enumerate(_PREFIXES.values())}
    return {q: sorted(found[q], key=lambda kl: rank.get(kl[1], len(rank))) for q in order}


def _epochs(hist, data):
    """The x values: ``hist.epoch`` when it has them, else 1, 2, ... up to the
    number of epochs recorded."""
    given = getattr(hist, "epoch", None) or data.get("epoch")
    if given:
        return list(given)
    n = getattr(hist, "epochs", None)
    if not isinstance(n, int) or not n:
        n = max((len(v) for v in data.values()), default=0)
    return list(range(1, n + 1))


def history(hist, path=None, *, metrics=None, ax=None, title=None, dpi=100):
    """Per-epoch curves of a training run: one subplot per quantity, with the
    training and validation lines side by side.

    Args:
        hist: a :class:`fastmlp.History` (what ``fit`` returns) or a dict of
            per-epoch lists such as ``{"train_loss": [...], "val_loss": [...]}``.
            ``train_X`` and ``val_X`` (and ``test_X``) are drawn together in
            the subplot of X (loss first, then accuracy, then any other
            quantity); ``seconds``, ``lr`` and ``epoch`` are not drawn.
        path: where to write a PNG; None writes nothing.
        metrics: the quantities to draw, e.g. ``["loss"]``; default all.
        ax: a matplotlib Axes, or a sequence of them (one per quantity), to
            draw into instead of a new figure.
        title: the figure's title; default "training history" (no title
            when drawing into ``ax`` unless one is given).
        dpi: resolution of the PNG.

    The x axis is ``hist.epoch`` when the History has one, else 1, 2, ...
    Returns the matplotlib Figure.
    """
    data = _records(hist)
    found = _quantities(data)
    if metrics is not None:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [m for m in metrics if m not in found]
        if unknown:
            raise ValueError(f"no per-epoch values for {unknown}: this history has "
                             f"{sorted(found) or 'none'}")
        found = {m: found[m] for m in metrics}
    if not found:
        raise ValueError(f"nothing to plot: the history holds no per-epoch values "
                         f"(keys: {sorted(data)})")
    epochs = _epochs(hist, data)
    plt = _pyplot(saving=path is not None)
    from matplotlib.ticker import MaxNLocator

    own = ax is None
    if own:
        ncols = min(len(found), 3)
        nrows = math.ceil(len(found) / ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.4),
                                 squeeze=False, layout="constrained")
        axes = list(grid.flat)
        for extra in axes[len(found):]:
            extra.remove()
    else:
        axes = [ax] if hasattr(ax, "plot") else list(ax)
        if len(axes) < len(found):
            raise ValueError(f"ax gives {len(axes)} axes for {len(found)} quantities "
                             f"({', '.join(found)}): pass one Axes per quantity, or metrics=[...]")
        fig = axes[0].figure
    for a, (quantity, lines) in zip(axes, found.items()):
        for key, label in lines:
            values = data[key]
            marker = "o" if len(values) <= _MARKERS_UP_TO else None
            a.plot(epochs[:len(values)], values, marker=marker, markersize=4, label=label)
        name = quantity.replace("_", " ")
        a.set_title(name)
        a.set_xlabel("epoch")
        a.set_ylabel(name)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(True, alpha=0.3)
        a.legend()
    if own or title is not None:
        fig.suptitle("training history" if title is None else title)
    return _finish(plt, fig, path, dpi, close=own)


def throughput(results, path=None, *, title=None, peak=None, peak_label="peak",
               highlight=(), ax=None, dpi=120):
    """Training throughput against batch size, log-log, one line per system.

    Args:
        results: ``{system: {batch_size: samples per second}}`` (batch sizes
            may be strings, as in the JSON that ``benchmarks/compare.py``
            writes).
        path: where to write a PNG; None writes nothing.
        title: the axes' title.
        peak: a ceiling in samples/s drawn as a dashed line (compare.py draws
            the GEMM peak divided by the FLOPs per sample), labelled
            ``peak_label``.
        highlight: systems drawn with thicker lines (fastmlp's own).
        ax: a matplotlib Axes to draw into instead of a new figure.
        dpi: resolution of the PNG.

    Returns the matplotlib Figure.
    """
    plt = _pyplot(saving=path is not None)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    else:
        fig = ax.figure
    for name, by_bs in results.items():
        points = sorted((int(b), v) for b, v in by_bs.items())
        ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=name,
                linewidth=2.5 if name in highlight else 1.5)
    if peak:
        ax.axhline(peak, color="gray", linestyle="--", linewidth=1, label=peak_label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training samples / s")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if own:
        fig.tight_layout()
    return _finish(plt, fig, path, dpi, close=own)


def _finish(plt, fig, path, dpi, close):
    """Write ``fig`` to ``path`` (when given) and close it if it is ours."""
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi)
        if close:
            plt.close(fig)
    return fig
