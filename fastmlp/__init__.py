"""fastmlp: multi-layer perceptrons from first principles, fast on CPU and GPU.

    import fastmlp as fm
    model = fm.MLP([784, 128, 64, 10], activation="relu", device="auto", seed=0)
    history = model.fit(x, y, epochs=10, batch_size=128, optimizer="adam", lr=1e-3)
"""

from fastmlp import callbacks, engines, metrics, optim, schedules
from fastmlp.backend import get_backend
from fastmlp.gradcheck import gradcheck
from fastmlp.model import MLP, Prepared, load
from fastmlp.train import DivergedError, History

__version__ = "0.1.0"
__all__ = ["MLP", "Prepared", "History", "DivergedError", "optim", "gradcheck", "load",
           "get_backend", "engines", "callbacks", "schedules", "metrics", "datasets", "export",
           "plot"]

_LAZY = ("datasets", "export", "plot")


def __getattr__(name):
    # datasets pulls in urllib and friends, export and plot their optional packages
    # when used: load them only when asked for.
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"fastmlp.{name}")
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
