"""The NumPy stand-in for CuPy (tests/cupy_standin) refuses what CuPy refuses
and counts host synchronisations: what the cuda tests rely on when they run on it."""

import pickle

import numpy as np
import pytest

cp = pytest.importorskip("cupy")
if not getattr(cp, "__standin__", False):
    pytest.skip("cupy is the real CuPy here", allow_module_level=True)


def test_implicit_conversion_to_numpy_is_refused_as_by_cupy():
    a = cp.arange(3.0)
    assert not isinstance(a, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array([a, a])
    np.testing.assert_array_equal(a.get(), [0, 1, 2])
    np.testing.assert_array_equal(cp.asnumpy(a), [0, 1, 2])


def test_numpy_arrays_are_refused_as_operands():
    a, host = cp.ones(3), np.ones(3)
    for call in (lambda: a + host, lambda: host + a, lambda: cp.maximum(a, host),
                 lambda: np.add(a, host), lambda: cp.concatenate([a, host])):
        with pytest.raises(TypeError, match="Unsupported type"):
            call()
    assert isinstance(a + np.float32(2), cp.ndarray) and isinstance(2.0 * a, cp.ndarray)
    b = a.copy()
    b[:2] = np.array([5.0, 6.0])                 # assignment from the host is a copy in: allowed
    np.testing.assert_array_equal(b.get(), [5, 6, 1])


def test_reductions_and_scalar_indexing_give_0d_device_arrays():
    a = cp.arange(6.0).reshape(2, 3)
    for r in (a.sum(), a.max(), cp.mean(a), np.sum(a), a[1, 2], cp.count_nonzero(a),
              cp.isfinite(a).all(), cp.allclose(a, a), a.argmax()):
        assert isinstance(r, cp.ndarray) and r.shape == (), r.dtype
    view = a[0, 1]
    view[...] = 9                                 # a 0-d view, as CuPy's indexing gives
    assert float(a[0].sum()) == 11


def test_numpy_functions_dispatch_to_the_standin():
    a = cp.arange(4.0)
    for r in (np.exp(a), np.sqrt(a), np.max(a), np.concatenate([a, a]), np.where(a > 1, a, 0)):
        assert isinstance(r, cp.ndarray)
    out = cp.empty(4)
    assert np.multiply(a, 2, out=out) is out and cp.exp(a, out=out) is out


def test_host_data_is_copied_in_and_device_arrays_are_not():
    host = np.zeros(3)
    a = cp.asarray(host)
    host[0] = 1
    assert float(a[0]) == 0                       # a copy, not a view of host memory
    assert cp.asarray(a) is a and cp.ascontiguousarray(a) is a and cp.array(a) is not a
    assert cp.asarray(np.arange(3, dtype=">f8")).dtype.isnative
    with pytest.raises(TypeError):
        cp.ascontiguousarray(host)                # CuPy's takes device arrays only


def test_host_synchronisations_are_counted_and_located():
    a = cp.arange(3.0)
    cp.syncs.reset()
    b = (a * 2).sum()                             # device work: no sync
    assert cp.syncs.count == 0
    float(b), bool(b > 0), b.item(), a.tolist(), a.get(), cp.asnumpy(a), int(b)
    cp.cuda.get_current_stream().synchronize()
    assert cp.syncs.count == 8
    assert all(where.startswith("test_cupy_standin.py:") for _, where in cp.syncs.where)
    pickle.loads(pickle.dumps(a))
    assert cp.syncs.count == 9


def test_only_what_cupy_has_exists():
    with pytest.raises(AttributeError, match="no cupy.errstate"):
        cp.errstate                               # noqa: B018
    gen = cp.random.default_rng(0)
    assert isinstance(gen.random((2, 3), dtype=np.float32), cp.ndarray)
    for name in ("normal", "permutation"):        # CuPy's Generator has neither
        with pytest.raises(AttributeError):
            getattr(gen, name)
    same = cp.random.default_rng(0).random(4).get()
    assert np.array_equal(same, cp.random.default_rng(0).random(4).get())
    assert not np.array_equal(same, np.random.default_rng(0).random(4))    # not NumPy's stream


def test_no_floating_point_warnings(recwarn):
    a = cp.asarray([1e300, -1.0, 0.0])
    (a * a, cp.log(a), a / 0, a.astype(np.float32), cp.asarray(a, dtype=np.float32),
     cp.ascontiguousarray(a[::2], dtype=np.float32), cp.array(a.get(), dtype=np.float32))
    assert not recwarn.list


def test_devices_and_errors_as_cupy_gives_them(monkeypatch):
    monkeypatch.setattr(cp, "devices", 1)
    assert cp.cuda.runtime.getDeviceCount() == 1 and cp.arange(2).device.id == 0
    with cp.cuda.Device(0) as d:
        assert d.id == 0
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        cp.cuda.Device(1).use()
    monkeypatch.setattr(cp, "devices", 0)
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="cudaErrorNoDevice"):
        cp.cuda.runtime.getDeviceCount()
