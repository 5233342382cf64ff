"""Shared by tests/ and benchmarks/: the ``device``, ``mnist_dir`` and ``site`` fixtures,
the ``cuda`` and ``gpu`` markers, and the NumPy stand-in for CuPy.

Without a usable CuPy (not installed, or no driver or GPU), the cuda tests run
against a NumPy-backed stand-in for CuPy (``tests/cupy_standin``), put first
on ``sys.path`` here, before fastmlp is imported; a real, usable CuPy is always
preferred. ``FASTMLP_CUPY_STANDIN`` says how it is used:

- unset or "cuda": only the cuda tests see its GPU; every other test sees CuPy
  with no usable GPU, so ``device="auto"`` stays on the CPU, as CI ran it before;
- "all": every test sees the GPU, so "auto" picks it, as on a GPU machine;
- "0": no stand-in: the cuda tests skip.

Tests marked ``gpu`` as well as ``cuda`` launch real CUDA kernels; they skip on
the stand-in.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# scikit-learn's estimator checks include one that needs SciPy's array API mode, which
# must be switched on before SciPy is first imported (tests/test_sklearn.py).
os.environ.setdefault("SCIPY_ARRAY_API", "1")

STANDIN = os.environ.get("FASTMLP_CUPY_STANDIN", "cuda").lower()
if STANDIN not in ("0", "cuda", "all"):
    raise ValueError(f'FASTMLP_CUPY_STANDIN must be "0", "cuda" or "all", got {STANDIN!r}')


def _real_cupy_usable():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:           # not installed, no driver, no device, a broken toolkit
        return False


if STANDIN != "0" and not _real_cupy_usable():
    for _name in [m for m in sys.modules if m == "cupy" or m.startswith("cupy.")]:
        del sys.modules[_name]              # a real CuPy that cannot run: set aside
    sys.path.insert(0, str(Path(__file__).parent / "tests" / "cupy_standin"))

from fastmlp import backend  # noqa: E402
from fastmlp.backend import cuda_status  # noqa: E402


def cupy_is_standin():
    """Whether ``import cupy`` gives the NumPy stand-in (tests/cupy_standin)."""
    try:
        import cupy
    except ImportError:
        return False
    return getattr(cupy, "__standin__", False)


def pytest_report_header(config):
    usable, reason = cuda_status()
    if cupy_is_standin():
        return (f"cupy: the NumPy stand-in (tests/cupy_standin), its GPU shown to "
                f"{'every test' if STANDIN == 'all' else 'cuda tests only'}")
    return f"cupy: {'real, ' if usable else ''}{reason}"


def pytest_collection_modifyitems(config, items):
    usable, reason = cuda_status()
    if usable and not cupy_is_standin():
        return
    if usable:
        skip = pytest.mark.skip(reason="launches real CUDA kernels: cupy is the NumPy stand-in")
        marks = ("cuda", "gpu")
    else:
        skip = pytest.mark.skip(reason=f"no usable CUDA device: {reason}")
        marks = ("cuda",)
    for item in items:
        if all(item.get_closest_marker(m) for m in marks):
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """With the stand-in, before the test's fixtures are made: its GPU is shown
    to cuda tests only (unless FASTMLP_CUPY_STANDIN=all), and elsewhere no CUDA
    backend made by an earlier test is reused. Processes the test spawns
    (multiprocessing, dask) inherit ``sys.path`` and so the stand-in: they are
    shown the same."""
    if STANDIN != "cuda" or not cupy_is_standin():
        return
    import cupy
    cupy.devices = 1 if item.get_closest_marker("cuda") else 0
    os.environ["FASTMLP_CUPY_STANDIN_DEVICES"] = str(cupy.devices)     # for spawned processes
    if not cupy.devices:
        for name in [n for n, be in backend._backends.items() if be.is_cuda]:
            del backend._backends[name]


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


@pytest.fixture(scope="session")
def site(tmp_path_factory, mnist_dir):
    """The documentation site, built once per session with warnings as errors; its
    gallery runs the examples (MNIST from ../shared). Skips without the docs tools."""
    for tool in ("sphinx", "pydata_sphinx_theme", "sphinx_gallery"):
        pytest.importorskip(tool)
    out = tmp_path_factory.mktemp("site")
    docs = Path(__file__).resolve().parent / "docs"
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                           "html", "-d", str(out / ".doctrees"), str(docs), str(out / "html")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "html"
