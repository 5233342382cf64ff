"""Fixtures of the tests: MNIST and small data, and machines without a usable
CuPy (``device`` and ``mnist_dir`` are in the root conftest)."""

import sys

import numpy as np
import pytest

from fastmlp import backend


def _forget_cuda_backends(monkeypatch):
    monkeypatch.setattr(backend, "_backends",
                        {k: v for k, v in backend._backends.items() if not v.is_cuda})
    monkeypatch.setattr(backend, "_auto_logged", False)


@pytest.fixture
def without_cupy(monkeypatch):
    """As on a machine where CuPy is not installed, whatever this one has (real
    CuPy, the stand-in or nothing): ``import cupy`` fails."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    _forget_cuda_backends(monkeypatch)


@pytest.fixture
def cupy_without_gpu(monkeypatch):
    """As on a machine where CuPy is installed but finds no driver or GPU
    (CuPy's own error, code 100: cudaErrorNoDevice)."""
    cupy = pytest.importorskip("cupy")

    def no_device():
        raise cupy.cuda.runtime.CUDARuntimeError(100)

    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", no_device)
    _forget_cuda_backends(monkeypatch)


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



@pytest.fixture
def uint8_on_disk(tmp_path):
    """A function of ``rows``: ``(memmap, array, labels)``, that many random uint8
    rows of 20 columns written to a file and mapped back read-only, and 0/1
    labels from them."""
    def make(rows):
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (rows, 20), dtype=np.uint8)
        y = (x[:, :3].astype(int).sum(axis=1) > 380).astype(int)
        path = tmp_path / "x.u8"
        x.tofile(path)
        return np.memmap(path, dtype=np.uint8, mode="r", shape=x.shape), x, y
    return make
