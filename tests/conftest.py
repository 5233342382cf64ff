"""Shared fixtures: the devices to run on, MNIST's location, small data."""

import os
from pathlib import Path

import numpy as np
import pytest

from fastmlp.backend import cuda_status

CUDA_USABLE, CUDA_REASON = cuda_status()

#: parametrize a test over every device: cpu always, cuda when usable.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config, items):
    if CUDA_USABLE:
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA device: {CUDA_REASON}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request):
    """Each usable device in turn."""
    return request.param


def mnist_dir():
    """Directory holding the MNIST .gz files, or None."""
    candidates = []
    if os.environ.get("FASTMLP_DATA"):
        candidates.append(Path(os.environ["FASTMLP_DATA"]) / "mnist")
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist")
    for c in candidates:
        if (c / "train-images-idx3-ubyte.gz").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def mnist():
    """((x_train, y_train), (x_test, y_test)) as float32 / int64, loaded once."""
    where = mnist_dir()
    if where is None:
        pytest.skip("MNIST files not found: set FASTMLP_DATA to a directory holding mnist/")
    from fastmlp.datasets import load_mnist
    return load_mnist(where, download=False)


@pytest.fixture
def blobs():
    """A small, easily separable 3-class problem: (x (90, 4), y (90,))."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 4))
    y = np.repeat(np.arange(3), 30)
    x = centers[y] + rng.normal(0, 0.5, (90, 4))
    return x.astype(np.float32), y
