"""A plain-text table of a model's layers, in the manner of Keras' ``summary()``.

    >>> print(summary(fm.MLP([784, 128, 64, 10], activation="relu", device="cpu")))
    MLP 784-128-64-10, loss cross_entropy (mean)
    ===============================================
    layer  shape       activation  dropout   params
    -----------------------------------------------
    0      784 -> 128  relu        -        100,480
    1      128 -> 64   relu        -          8,256
    2       64 -> 10   softmax     -            650
    ===============================================
    total params: 109,386 (float32, 427.3 KiB)
    device: cpu
    engine: auto (chosen at the first training step)

Only the model's public attributes are read.
"""


__all__ = ["summary"]

_HEAD = ("layer", "shape", "activation", "dropout", "params")
_RIGHT = {"params"}              # right-aligned columns


def _size(n_bytes):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024


def _rows(model):
    """One row per weight layer, and each layer's parameter count."""
    sizes = model.sizes
    n_layers = len(sizes) - 1
    wide = len(str(max(sizes[:-1])))
    output = model.loss_fn.head.name
    rows, counts = [], []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < n_layers - 1
        count = fan_in * fan_out + (fan_out if model.bias else 0)
        rate = model.dropout[i] if hidden else 0.0
        rows.append((str(i), f"{fan_in:>{wide}} -> {fan_out}",
                     model.activation if hidden else output,
                     f"{rate:g}" if rate else "-", f"{count:,}"))
        counts.append(count)
    return rows, counts


def _engine(model):
    path = getattr(model, "step_path", None)
    if path is None:
        asked = getattr(model, "engine", "auto")
        return f"{asked} (chosen at the first training step)"
    return f"{path.engine} ({path.reason})"


def summary(model):
    """The layers of ``model`` as a plain-text table: index, shape
    (fan_in -> fan_out), activation (the hidden layers', then the output's
    that the loss implies: softmax, sigmoid or identity), dropout rate after
    the layer, parameter count; then the total, dtype and size, device, and
    the step engine (the last one chosen, or "auto" before any step).
    """
    rows, counts = _rows(model)
    widths = [max(len(r[c]) for r in [_HEAD] + rows) for c in range(len(_HEAD))]

    def line(cells):
        return "  ".join(cell.rjust(w) if name in _RIGHT else cell.ljust(w)
                         for name, cell, w in zip(_HEAD, cells, widths)).rstrip()

    width = sum(widths) + 2 * (len(widths) - 1)
    total = model.n_params
    title = "-".join(str(s) for s in model.sizes)
    notes = [f"loss {model.loss} ({model.reduction})"]
    if not model.bias:
        notes.append("no biases")
    out = [f"MLP {title}, " + ", ".join(notes), "=" * width, line(_HEAD), "-" * width]
    out += [line(r) for r in rows]
    out += ["=" * width,
            f"total params: {total:,} ({model.dtype.name}, "
            f"{_size(total * model.dtype.itemsize)})"]
    if sum(counts) != total:         # a layout this table does not know: say so
        out.append(f"(the layers above count {sum(counts):,})")
    out += [f"device: {model.backend.name}", f"engine: {_engine(model)}"]
    return "\n".join(out)
