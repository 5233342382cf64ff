"""Device resolution, transfers, and a light, CuPy-free import."""

import logging
import subprocess
import sys

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.backend import cuda_status, get_backend


def test_cpu_backend_is_numpy_and_cached():
    be = get_backend("cpu")
    assert be.xp is np and be.name == "cpu" and not be.is_cuda
    assert get_backend("CPU") is be
    assert be.ops.xp is np


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:", ""])
def test_unknown_device_names_fail_with_choices(bad):
    with pytest.raises(ValueError, match='"cpu", "cuda", "cuda:N" or "auto"'):
        get_backend(bad)


def test_device_must_be_a_string():
    with pytest.raises(TypeError, match="device must be a string"):
        get_backend(0)


def test_cuda_without_cupy_says_what_to_do(without_cupy):
    usable, reason = cuda_status()
    assert not usable and reason.startswith("CuPy is not installed")
    with pytest.raises(RuntimeError) as info:
        get_backend("cuda")
    message = str(info.value)
    assert 'pip install "fastmlp[cuda13]"' in message and 'device="cpu"' in message


def test_cuda_with_cupy_but_no_gpu_says_that_not_to_install_it(cupy_without_gpu):
    usable, reason = cuda_status()
    assert not usable and reason.startswith("CuPy is installed but found no usable GPU")
    with pytest.raises(RuntimeError) as info:
        get_backend("cuda")
    message = str(info.value)
    assert "nvidia-smi" in message and 'device="cpu"' in message
    assert "pip install" not in message


@pytest.mark.cuda
def test_a_gpu_index_beyond_the_count_names_the_ones_there():
    import cupy
    count = cupy.cuda.runtime.getDeviceCount()
    with pytest.raises(RuntimeError) as info:
        get_backend(f"cuda:{count}")
    message = str(info.value)
    assert 'To fix: use "cuda:0"' in message or 'To fix: use one of "cuda:0" to' in message
    assert 'device="cpu"' in message
    assert "pip install" not in message


def test_auto_falls_back_to_cpu_and_logs_once(without_cupy, caplog):
    with caplog.at_level(logging.INFO, logger="fastmlp"):
        assert get_backend("auto").name == "cpu"
        assert get_backend("auto").name == "cpu"
    fallbacks = [r for r in caplog.records if "using the CPU" in r.getMessage()]
    assert len(fallbacks) == 1


@pytest.mark.cuda
def test_auto_prefers_the_gpu():
    assert get_backend("auto").name == "cuda:0"


def test_transfers_round_trip(device):
    be = get_backend(device)
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = be.asarray(host)
    back = be.to_numpy(dev)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)
    be.synchronize()


def test_an_array_already_on_the_device_is_not_copied(device):
    be = get_backend(device)
    with be.scope():
        dev = be.xp.zeros((2, 3), dtype=np.float32)
        again = be.asarray(dev)
        again[0, 0] = 7                       # a write through the result reaches the original
    assert be.to_numpy(dev)[0, 0] == 7
    copied = be.asarray(dev, dtype=np.float64)    # a cast must copy
    copied[0, 1] = 5
    assert be.to_numpy(dev)[0, 1] == 0


def test_rng_is_seeded(device):
    be = get_backend(device)
    a = be.to_numpy(be.rng(3).random(5))
    b = be.to_numpy(be.rng(3).random(5))
    np.testing.assert_array_equal(a, b)


def test_import_loads_no_cupy_numba_tqdm_or_kernels():
    """``import fastmlp`` (and building a CPU model) must not pull in CuPy, Numba,
    tqdm, safetensors or a compiled kernel module: they load when first used."""
    heavy = ["cupy", "numba", "tqdm", "safetensors", "fastmlp.kernels.cpu_ops",
             "fastmlp.kernels.cpu_gemm_step", "fastmlp.kernels.cpu_row_step", "fastmlp.datasets",
             "sklearn", "fastmlp.sklearn", "warp", "fastmlp.kernels.warp_ops"]
    code = ("import sys, fastmlp; fastmlp.MLP([3, 2], device='cpu', kernels='reference'); "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def test_model_code_has_no_device_branches():
    """Only backend.py (and the device kernels, warp_ops.py) may know about CuPy."""
    import pathlib
    import re
    device_code = re.compile(r"^\s*(import cupy|from cupy|import numba\.cuda"
                             r"|from numba import cuda)"
                             r"|\bxp\.cuda\b|\bis_cuda\b", re.M)
    package = pathlib.Path(fm.__file__).parent
    kernels = pathlib.Path(fm.kernels.__file__).parent
    for path in [*package.glob("*.py"), *kernels.glob("*.py")]:
        if path.name not in ("backend.py", "warp_ops.py"):
            assert not device_code.search(path.read_text()), path.name


def test_every_op_spec_names_itself_and_its_code():
    from fastmlp.kernels import activations, cpu_math, losses, updates
    for table in (activations.ACTIVATIONS, losses.LOSSES, updates.UPDATES):
        assert all(name == spec.name for name, spec in table.items())
    assert cpu_math.CODES == {a.name: a.code for a in activations.ACTIVATIONS.values()}


def test_kernel_paths_on_the_cpu():
    from fastmlp.kernels.cpu_ops import CpuOps
    from fastmlp.kernels.reference import ReferenceOps
    be = get_backend("cpu")
    assert isinstance(be.ops_for("auto"), CpuOps) and be.ops_for("fused") is be.ops_for("auto")
    assert type(be.ops_for("reference")) is ReferenceOps
    assert fm.MLP([4, 3], device="cpu", kernels="reference").ops is be.ops_for("reference")
