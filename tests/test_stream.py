"""Inputs larger than memory: memmaps are streamed chunk by chunk."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import stream


@pytest.fixture
def on_disk(uint8_on_disk):
    return uint8_on_disk(3000)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_BYTES", 20 * 300)       # 300 rows: 10 chunks


def test_a_memmap_is_streamed_not_loaded(on_disk, small_chunks):
    mm, x, y = on_disk
    model = fm.MLP([20, 16, 2], seed=0, device="cpu", input_scale=1 / 255)
    assert isinstance(model.prepare(mm, y, stream=True).x, stream.Stream)
    hist = model.fit(mm, y, epochs=6, batch_size=32, validation_split=0.2, lr=0.01)
    assert hist.history["val_accuracy"][-1] > 0.8
    assert model.evaluate(mm, y) == model.evaluate(x, y)
    np.testing.assert_array_equal(model.predict_proba(mm), model.predict_proba(x))


def test_every_row_is_seen_once_per_epoch(on_disk, small_chunks):
    """Plain SGD at batch size 1 with a zero learning rate...: count instead the
    samples through the summed loss of an untrained model: the streamed epoch's
    loss equals the in-memory one, whatever the order."""
    mm, x, y = on_disk
    a = fm.MLP([20, 2], seed=0, device="cpu", input_scale=1 / 255)
    b = fm.MLP([20, 2], seed=0, device="cpu", input_scale=1 / 255)
    ha = a.fit(mm, y, epochs=1, batch_size=50, optimizer="sgd", lr=1e-12)
    hb = b.fit(x, y, epochs=1, batch_size=50, optimizer="sgd", lr=1e-12)
    assert ha.history["train_loss"] == pytest.approx(hb.history["train_loss"], rel=1e-6)
    assert ha.history["train_accuracy"] == hb.history["train_accuracy"]


def test_float_memmaps_are_checked_per_chunk(tmp_path, small_chunks):
    x = np.random.default_rng(0).normal(size=(1000, 20)).astype(np.float32)
    x[777, 3] = np.nan
    x.tofile(tmp_path / "x.f32")
    mm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="r", shape=x.shape)
    with pytest.raises(ValueError, match=r"rows 768:832 of x: x contains NaN"):
        fm.MLP([20, 2], seed=0, device="cpu").fit(mm, np.zeros(1000, int), shuffle=False)


def test_a_view_of_a_memmap_reads_its_own_rows(on_disk):
    mm, x, _ = on_disk
    s = stream.Stream(mm[1000:2000])
    np.testing.assert_array_equal(s.read(10, 20), x[1010:1020])
    np.testing.assert_array_equal(s[100:200].read(0, 5), x[1100:1105])


_LIMITED = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import fastmlp as fm
    path, n, limit_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    y = np.zeros(n, np.int64); y[::2] = 1
    warm = fm.MLP([784, 32, 2], seed=0, device="cpu", input_scale=1 / 255)
    warm.fit(np.zeros((256, 784), np.uint8), y[:256], epochs=1, batch_size=128)  # compile first
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 784))
    # the heap (private writable memory) may grow by limit_mib from here; the file
    # mapping is shared and read-only, so it does not count
    with open("/proc/self/status") as f:
        data_kib = next(int(l.split()[1]) for l in f if l.startswith("VmData:"))
    cap = (data_kib << 10) + (limit_mib << 20)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    model = fm.MLP([784, 32, 2], seed=0, device="cpu", input_scale=1 / 255)
    model.fit(mm, y, epochs=1, batch_size=128)
    print("trained", n)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc: Linux")
def test_training_on_a_memmap_larger_than_the_memory_limit_finishes(tmp_path):
    """300 MB of uint8 data under a 160 MiB heap limit: loading it whole (or
    as float32, 1.2 GB) would fail with MemoryError."""
    n = 400_000
    path = tmp_path / "x.u8"
    with open(path, "wb") as f:
        block = np.random.default_rng(0).integers(0, 256, (50_000, 784), dtype=np.uint8)
        for _ in range(n // 50_000):
            f.write(block.tobytes())
    done = subprocess.run([sys.executable, "-c", _LIMITED, str(path), str(n), "160"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"trained {n}" in done.stdout
    loaded = subprocess.run([sys.executable, "-c", _LIMITED.replace(
        "model.fit(mm, y", "model.fit(np.array(mm), y"), str(path), str(n), "160"],
        capture_output=True, text=True, timeout=600)
    assert loaded.returncode != 0 and "MemoryError" in loaded.stderr   # the limit does bite


def test_a_bad_chunk_found_mid_fit_leaves_the_model_as_it_was(tmp_path, small_chunks):
    x = np.random.default_rng(0).normal(size=(1000, 20)).astype(np.float32)
    x[-1, 0] = np.inf
    x.tofile(tmp_path / "x.f32")
    mm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="r", shape=x.shape)
    model = fm.MLP([20, 2], seed=0, device="cpu")
    model.fit(x[:100], np.zeros(100, int), optimizer="adam", lr=0.01)
    before, opt, t = model.params.copy(), model.optimizer, model.optimizer.t
    with pytest.raises(ValueError, match="rows 960:1000 of x"):
        model.fit(mm, np.zeros(1000, int), optimizer="sgd", shuffle=False)
    np.testing.assert_array_equal(model.params, before)
    assert model.optimizer is opt and opt.t == t
    with pytest.raises(ValueError, match="rows 960:1000 of x"):
        model.fit(mm, np.zeros(1000, int), lr=0.5, shuffle=False)       # resumed: state restored
    np.testing.assert_array_equal(model.params, before)
    assert model.optimizer is opt and opt.t == t and opt.lr == 0.01


def test_only_two_dimensional_shared_memmaps_stream(tmp_path):
    flat = np.arange(2000, dtype=np.float32)
    flat.tofile(tmp_path / "f")
    one = np.memmap(tmp_path / "f", dtype=np.float32, mode="r", shape=(2000,))
    three = np.memmap(tmp_path / "f", dtype=np.float32, mode="r", shape=(500, 2, 2))
    assert not stream.wants(one) and not stream.wants(three)
    model = fm.MLP([1, 2], seed=0, device="cpu")
    assert model.predict_proba(one).shape == (2000, 2)          # reshaped to (N, 1)
    with pytest.raises(ValueError, match="x must be 2-D"):
        fm.MLP([2, 2], device="cpu").predict(three)
    cow = np.memmap(tmp_path / "f", dtype=np.float32, mode="c", shape=(1000, 2))
    cow[:] = 0                                                  # private edits, not in the file
    np.testing.assert_array_equal(stream.Stream(cow).read(0, 5), np.zeros((5, 2)))


def test_prepare_reads_a_memmap_whole_unless_asked_to_stream(on_disk):
    mm, x, y = on_disk
    model = fm.MLP([20, 2], seed=0, device="cpu", input_scale=1 / 255)
    data = model.prepare(mm[:20], y[:20])
    assert isinstance(data.x, np.ndarray)
    model.train_step(data.x, data.y, fm.optim.SGD(lr=0.1), data.targets)
    assert isinstance(model.prepare(mm, stream=True).x, stream.Stream)
