"""How ``fit`` shows its progress: a bar on a terminal, plain lines elsewhere.

Every epoch ends with one line of its figures (``epoch 3/10: train_loss
0.1234, ..., 1.52 s``), the same line whichever way progress is shown, and
the same text as an INFO record on the ``fastmlp.train`` logger (whether or
not anything is shown). ``progress`` is:

- False: show nothing (the log records still go out);
- True: a tqdm bar when stderr is a terminal, else plain lines: a log file,
  CI or ``nohup`` gets one line per epoch and no carriage returns;
- "bar": the bar wherever it goes; "lines": plain lines even on a terminal.
"""

import logging
import sys

from fastmlp import constraints

logger = logging.getLogger("fastmlp.train")
MODES = (False, True, "bar", "lines")


def check(progress):
    """``progress`` if it is one of :data:`MODES` (a NumPy bool as a bool),
    else TypeError / ValueError (see :mod:`fastmlp.constraints`)."""
    return constraints.check("progress", progress, constraints.Boolean(),
                             constraints.Options("bar", "lines"))


def line(epoch, last, logs):
    """The one-line summary of an epoch."""
    parts = []
    for k, v in logs.items():
        if k == "seconds":
            continue
        parts.append(f"{k} {v:.3g}" if k == "lr" else f"{k} {v:.4f}")
    return f"epoch {epoch}/{last}: " + ", ".join(parts) + f", {logs['seconds']:.2f} s"


class Report:
    """Progress of one ``fit``: ``begin(epoch)``, ``advance(batches)``,
    ``end(epoch, logs)`` and ``close()``."""

    def __init__(self, progress, batches, last_epoch):
        self.last, self.batches = last_epoch, batches
        bar = progress == "bar" or (progress is True and _is_terminal(sys.stderr))
        self.lines = progress == "lines" or (progress is True and not bar)
        self.bar = _bar(batches) if bar else None

    def begin(self, epoch):
        if self.bar is not None:
            self.bar.reset()
            self.bar.set_description(f"epoch {epoch}/{self.last}")

    def advance(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def end(self, epoch, logs):
        text = line(epoch, self.last, logs)
        if self.bar is not None:
            self.bar.write(text)
        elif self.lines:
            print(text, flush=True)
        logger.info(text)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _bar(total):
    from tqdm import tqdm  # imported here so `import fastmlp` stays light
    return tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True)
