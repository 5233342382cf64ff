"""Fixtures of the tests: MNIST and small data (``device`` and ``mnist_dir``
are in the root conftest)."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """((x_train, y_train), (x_test, y_test)) as float32 / int64, loaded once."""
    from fastmlp.datasets import load_mnist
    return load_mnist(mnist_dir, download=False)


@pytest.fixture
def blobs():
    """A small, easily separable 3-class problem: (x (90, 4), y (90,))."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 4))
    y = np.repeat(np.arange(3), 30)
    x = centers[y] + rng.normal(0, 0.5, (90, 4))
    return x.astype(np.float32), y
