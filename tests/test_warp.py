"""The Warp op table (``kernels/warp_ops.py``, ``MLP(kernels="warp")``) on
Warp's CPU device: the same kernel source that runs on CUDA. Its op-by-op
twins are in ``test_op_twins.py``; here, whole fits against the reference
table, and the module compiled ahead of time for the GPU targets.

Skipped when warp-lang (an optional extra, in ``[dev]``) is not installed.
"""

import subprocess
import sys

import numpy as np
import pytest

import fastmlp as fm
from warp_cases import OPTIMIZERS, assert_same, samples

warp = pytest.importorskip("warp")

LOSSES = ["cross_entropy", "binary_cross_entropy", "mse", "l1"]




def _fit(kernels, dtype, optimizer, loss="cross_entropy", activation="tanh", **fit):
    x, y = samples(loss)
    model = fm.MLP([12, 16, 8, 3], activation=activation, loss=loss, dtype=dtype, seed=0,
                   device="cpu", kernels=kernels)
    model.fit(x, y, epochs=2, batch_size=20, optimizer=OPTIMIZERS[optimizer](), **fit)
    return model




@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_twenty_steps_of_each_optimizer_equal_the_reference(optimizer, dtype):
    ref, got = (_fit(k, dtype, optimizer) for k in ("reference", "warp"))
    assert got.ops.name == "warp" and got.step_path.engine == "layer"
    assert_same(got, ref, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "identity"])
def test_every_loss_and_activation_equal_the_reference(loss, activation, dtype):
    ref, got = (_fit(k, dtype, "adam", loss=loss, activation=activation)
                for k in ("reference", "warp"))
    assert_same(got, ref, dtype)


def test_sample_weights_equal_the_reference():
    w = np.random.default_rng(1).random(200)
    w[::7] = 0
    ref, got = (_fit(k, "float64", "sgd", sample_weight=w) for k in ("reference", "warp"))
    assert_same(got, ref, "float64")


def test_uint8_inputs_equal_the_reference():
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (120, 12), dtype=np.uint8), rng.integers(0, 3, 120)
    models = []
    for kernels in ("reference", "warp"):
        m = fm.MLP([12, 8, 3], seed=0, device="cpu", input_scale=1 / 255, kernels=kernels)
        m.fit(x, y, epochs=2, batch_size=16, optimizer="adam")
        models.append(m)
    assert_same(models[1], models[0], "float32")


def test_the_warp_table_fails_a_gradcheck_only_if_backprop_is_wrong():
    x, y = samples("cross_entropy", n=6)
    model = fm.MLP([12, 5, 3], activation="sigmoid", dtype="float64", seed=0, device="cpu",
                   kernels="warp")
    assert fm.gradcheck(model, x, y).ok


def test_a_saved_warp_model_loads_and_predicts_the_same(tmp_path):
    model = _fit("warp", "float32", "adam")
    model.save(tmp_path / "m.safetensors")
    back = fm.load(tmp_path / "m.safetensors", device="cpu")
    x, _ = samples("cross_entropy", n=20, seed=3)
    assert back.ops.name == "warp"
    np.testing.assert_array_equal(back.predict_proba(x), model.predict_proba(x))


def test_without_warp_asking_for_it_says_how_to_install_it():
    code = ("import sys; sys.modules['warp'] = None\n"
            "import fastmlp as fm\n"
            "try:\n    fm.MLP([3, 2], device='cpu', kernels='warp')\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert 'kernels="warp" needs NVIDIA Warp' in out and "fastmlp[warp]" in out


@pytest.mark.parametrize("arch", [80, 90, 100])
def test_the_module_compiles_ahead_of_time_for_the_gpu(arch, tmp_path):
    """CUDA cubins for sm_80 (A100), sm_90 (H100/H200) and sm_100 (B200),
    with no GPU or driver: a kernel that NVRTC refuses fails here."""
    from fastmlp.kernels import warp_ops
    warp_ops.compile_for(arch, tmp_path)
    cubins = list(tmp_path.glob(f"*.sm{arch}.cubin"))
    assert len(cubins) == 1 and cubins[0].stat().st_size > 10_000


def test_every_spec_names_a_warp_kernel_that_the_table_launches():
    from fastmlp.kernels import activations, losses, updates, warp_ops
    for spec in [*losses.LOSSES.values(), *updates.UPDATES.values()]:
        assert spec.device in warp_ops.DEVICE, spec
    for spec in activations.ACTIVATIONS.values():      # one scalar source for Numba and Warp
        assert spec.device == spec.cpu


@pytest.mark.parametrize("source", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_batch_gather_equals_numpy(source, dtype):
    from fastmlp.kernels.warp_ops import WarpOps
    rng = np.random.default_rng(4)
    a = (rng.random((50, 9)) * 255).astype(source)
    idx = rng.permutation(50)[:17]
    ops, out = WarpOps(np), np.full((17, 9), np.nan, dtype)
    ops.gather_scaled(a, idx, out, 1 / 255)
    np.testing.assert_allclose(out, a[idx].astype(dtype) * np.asarray(1 / 255, dtype),
                               rtol=1e-6 if dtype == "float32" else 1e-15)
    if source == dtype:
        out[...] = np.nan
        np.testing.assert_array_equal(ops.take_rows(a, idx, out), a[idx])


def test_auto_on_cuda_takes_the_warp_table_only_where_warp_sees_the_gpu(monkeypatch):
    from fastmlp import backend
    from fastmlp.kernels import warp_ops
    assert warp_ops.sees_gpu(0) is (warp.get_cuda_device_count() > 0)
    monkeypatch.setattr(warp_ops, "sees_gpu", lambda device_id: False)
    assert backend._warp_on_gpu(np, 0) is None           # then the reference table
    monkeypatch.setattr(warp_ops, "sees_gpu", lambda device_id: device_id == 0)
    assert backend._warp_on_gpu(np, 0).name == "warp" and backend._warp_on_gpu(np, 1) is None
