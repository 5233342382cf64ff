"""Shared by tests/ and benchmarks/: the ``device`` and ``mnist_dir`` fixtures,
and the ``cuda`` marker, which skips without a usable GPU."""

import os
from pathlib import Path

import pytest

# scikit-learn's estimator checks include one that needs SciPy's array API mode, which
# must be switched on before SciPy is first imported (tests/test_sklearn.py).
os.environ.setdefault("SCIPY_ARRAY_API", "1")

from fastmlp.backend import cuda_status


def pytest_collection_modifyitems(config, items):
    usable, reason = cuda_status()
    if usable:
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA device: {reason}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Each device in turn: cpu always, cuda when usable."""
    return request.param


@pytest.fixture(scope="session")
def mnist_dir():
    """The directory holding the MNIST .gz files: $FASTMLP_DATA/mnist, else
    ../shared/datasets/mnist beside the checkout; skips when neither has them."""
    candidates = [Path(__file__).resolve().parent.parent / "shared" / "datasets" / "mnist"]
    if os.environ.get("FASTMLP_DATA"):
        candidates.insert(0, Path(os.environ["FASTMLP_DATA"]) / "mnist")
    for where in candidates:
        if (where / "train-images-idx3-ubyte.gz").is_file():
            return where
    pytest.skip("MNIST files not found: set FASTMLP_DATA to a directory holding mnist/")
