"""The fused step kernel (``kernels/warp_fused.py``): one Warp tile kernel
for a block of rows' forward, loss and backward, run on Warp's CPU device.
Checked against NumPy directly, and inside the ``warp`` engine against the
layer-by-layer launches it replaces. ``test_warp_engine.py`` holds the
fused engine (its default) equal to the reference layer engine for every
optimizer, loss and activation. Skipped without warp-lang."""

import numpy as np
import pytest

wp = pytest.importorskip("warp")

import fastmlp as fm  # noqa: E402
from fastmlp.engines.warp import WarpEngine  # noqa: E402
from fastmlp.kernels import warp_fused, warp_ops, warp_step  # noqa: E402
from fastmlp.layout import Layout  # noqa: E402
from warp_cases import OPTIMIZERS, assert_same, samples  # noqa: E402

_SIGMOID = warp_ops.activations.get("sigmoid").code


def _numpy_grads(sizes, params, x, y, w, scale, bias):
    """Loss, hits and the flat gradient of a sigmoid MLP with softmax +
    cross-entropy, in NumPy (float64)."""
    lay = Layout(sizes, bias)
    ws, bs = lay.views(params)
    acts = [x]
    for i, W in enumerate(ws):
        z = acts[-1] @ W + (bs[i] if bias else 0)
        acts.append(z if i == len(ws) - 1 else 1 / (1 + np.exp(-z)))
    z = acts[-1]
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    loss = (w * -(y * np.log(p)).sum(1)).sum()
    hits = (w * (z.argmax(1) == y.argmax(1))).sum()
    grads = np.zeros_like(params)
    gw, gb = lay.views(grads)
    dz = (p - y) * (w * scale)[:, None]
    for i in range(len(ws) - 1, -1, -1):
        gw[i][...] = acts[i].T @ dz
        if bias:
            gb[i][...] = dz.sum(0)
        if i:
            dz = (dz @ ws[i].T) * acts[i] * (1 - acts[i])
    return loss, hits, grads


@pytest.mark.parametrize("sizes, n, bias, weighted", [
    ((70, 20, 12, 5), 37, True, False),     # 70 inputs: two full chunks and a ragged one
    ((70, 20, 12, 5), 37, True, True),
    ((70, 20, 12, 5), 16, False, False),    # one block exactly, no biases
    ((40, 9), 33, True, False),              # no hidden layer
    ((8, 33, 17, 6, 4), 5, True, True),     # three hidden layers, fewer rows than a block
])
def test_one_launch_equals_numpy(sizes, n, bias, weighted):
    rng = np.random.default_rng(1)
    lay = Layout(sizes, bias)
    params = rng.normal(scale=0.3, size=lay.size)
    x = rng.normal(size=(n, sizes[0]))
    y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    w = rng.random(n) if weighted else np.ones(n)
    kernel = warp_fused.step_kernel(sizes, lay.w_at, lay.b_at if bias else None, code=_SIGMOID,
                                    loss="cross_entropy", head_kind=0, dtype=wp.float64,
                                    floor=-708.0, weighted=weighted)
    arrays = [wp.array(a, dtype=wp.float64, device="cpu") for a in (x, y, w, params)]
    grads = wp.full(lay.size, 7.0, dtype=wp.float64, device="cpu")   # zeroed by the step
    acc = wp.zeros(2, dtype=wp.float64, device="cpu")
    scales = wp.array([1 / n], dtype=wp.float64, device="cpu")
    step = warp_step.Recorded()
    step.device = "cpu"
    step.launches = [(warp_step.zero_kernel, lay.size, [grads], None)]
    step.launches.append(warp_fused.launch_args(kernel, *arrays, grads, scales, acc))
    warp_step.TILED.add(kernel)
    step.run()
    loss, hits, want = _numpy_grads(sizes, params, x, y, w, 1 / n, bias)
    np.testing.assert_allclose(grads.numpy(), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(acc.numpy(), [loss, hits], rtol=1e-12)


def _fit(fuse, monkeypatch, model=None, optimizer="adam", **fit):
    monkeypatch.setattr(WarpEngine, "fuse", fuse)
    loss = (model or {}).get("loss", "cross_entropy")
    x, y = samples(loss)
    m = fm.MLP([12, 16, 8, 3], **{"activation": "tanh", "dtype": "float64", "seed": 0,
                                  "device": "cpu", "engine": "warp", **(model or {})})
    hist = m.fit(x, y, epochs=2, batch_size=20, optimizer=OPTIMIZERS[optimizer](), **fit)
    return m, hist


@pytest.mark.parametrize("model, fit", [
    ({}, {}),
    ({"loss": "binary_cross_entropy", "activation": "sigmoid"}, {}),
    ({"loss": "mse", "activation": "relu", "bias": False}, {}),
    ({"loss": "l1", "reduction": "sum"}, {}),
    ({"loss": "poisson"}, {"sample_weight": np.linspace(0.1, 2, 200)}),
    ({"dtype": "float32"}, {"sample_weight": np.linspace(0.1, 2, 200)}),
], ids=["cross-entropy", "bce", "mse-no-bias", "l1-sum", "poisson-weights", "float32-weights"])
def test_the_fused_step_equals_the_layer_by_layer_launches(model, fit, monkeypatch):
    layered, h_layered = _fit(False, monkeypatch, model, **fit)
    fused, h_fused = _fit(True, monkeypatch, model, **fit)
    assert "fusion off" in layered.step_path.reason
    assert "fused Warp tile kernel" in fused.step_path.reason
    assert_same(fused, layered, model.get("dtype", "float64"))
    np.testing.assert_allclose(h_fused.history["train_loss"], h_layered.history["train_loss"],
                               rtol=1e-5 if model.get("dtype") == "float32" else 1e-10)


@pytest.mark.parametrize("fuse", [True, False])
def test_a_fused_gradient_is_three_launches(fuse, monkeypatch):
    """The loss scale, zeroed gradients and the fused kernel (the update
    makes four); layer by layer the same gradient is about twenty."""
    monkeypatch.setattr(WarpEngine, "fuse", fuse)
    x, y = samples("cross_entropy", n=20)
    m = fm.MLP([12, 16, 8, 3], dtype="float64", seed=0, device="cpu", engine="warp")
    engine = m.engine_for(20)
    count = len(engine._graph(20, False, None)["graph"].launches)
    assert count == 3 if fuse else count >= 15


def test_dropout_runs_layer_by_layer_and_says_so():
    x, y = samples("cross_entropy", n=40)
    m = fm.MLP([12, 8, 3], device="cpu", engine="warp", dropout=0.5)
    m.fit(x, y, epochs=1, batch_size=20)
    assert "layer by layer: dropout" in m.step_path.reason


def test_the_benchmark_network_fits_in_a_hopper_block():
    """784-128-64-10 in float32: the shared memory Warp counts for one block
    (the same count on every device) within the 227 KiB an H100, H200 or
    B200 block may have; the engine falls back to the layer-by-layer
    launches on a GPU that allows less (an A100: 163 KiB)."""
    lay = Layout((784, 128, 64, 10))
    kernel = warp_fused.step_kernel(lay.sizes, lay.w_at, lay.b_at, code=_SIGMOID,
                                    loss="cross_entropy", head_kind=0, dtype=wp.float32,
                                    floor=-88.0, weighted=False)
    need = warp_fused.shared_bytes(kernel, "cpu")
    assert warp_fused.block_limit("cpu") is None
    assert warp_fused.tile_bytes(lay.sizes, 4) <= need <= warp_fused.MAX_TILE_BYTES


def test_the_fused_kernel_compiles_ahead_of_time_for_the_gpu(tmp_path):
    """CUDA cubins of the benchmark network's fused step, float32 for sm_80,
    sm_90 and sm_100 and TF32 for sm_90, with no GPU or driver: a kernel
    NVRTC refuses fails here. About a minute of NVRTC each, side by side;
    each cubin's metadata holds the block's shared memory."""
    import json
    import subprocess
    import sys
    code = ("import sys, warp as wp; from fastmlp.kernels import warp_fused\n"
            "from fastmlp.layout import Layout\n"
            "lay = Layout((784, 128, 64, 10))\n"
            "k = warp_fused.step_kernel(lay.sizes, lay.w_at, lay.b_at, code=1, "
            "loss='cross_entropy', head_kind=0, dtype=wp.float32, floor=-88.0, weighted=False, "
            "tf32=sys.argv[3] == '1')\n"
            "wp.compile_aot_module(k.module, arch=int(sys.argv[1]), module_dir=sys.argv[2])")
    jobs = {(arch, tf32): subprocess.Popen(
        [sys.executable, "-c", code, str(arch), str(tmp_path / f"{arch}-{tf32}"), str(tf32)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for arch, tf32 in ((80, 0), (90, 0), (100, 0), (90, 1))}
    for (arch, tf32), job in jobs.items():
        out, _ = job.communicate(timeout=900)
        assert job.returncode == 0, out[-3000:]
        folder = tmp_path / f"{arch}-{tf32}"
        assert len(list(folder.glob(f"*.sm{arch}.cubin"))) == 1, out[-3000:]
        (meta,) = folder.glob("*.meta")
        assert max(json.loads(meta.read_text()).values()) <= warp_fused.MAX_TILE_BYTES
