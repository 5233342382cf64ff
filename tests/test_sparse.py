"""Sparse inputs (issue 24, item 2): SciPy CSR, CSC and COO, matrices and arrays,
in ``MLP.fit/predict/evaluate`` and the scikit-learn estimators; rows taken per
batch, never the whole matrix densified; the same model as dense inputs."""

import numpy as np
import pytest
import scipy.sparse as sp

import fastmlp as fm
from fastmlp import sparse

FORMATS = [(kind, fmt) for kind in ("matrix", "array") for fmt in ("csr", "csc", "coo")]


def _data(n=300, width=200, density=0.02, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, width, density=density, format="csr", dtype=dtype, random_state=seed)
    s = np.asarray(X[:, :20].sum(axis=1)).ravel()
    return X, (s > np.median(s)).astype(int) + rng.integers(0, 2, n)       # 3 classes


def _as(X, kind, fmt):
    X = X.asformat(fmt)
    return sp.csr_array(X).asformat(fmt) if kind == "array" else X


@pytest.fixture
def densified(monkeypatch):
    """The row counts of every densification of a sparse batch or chunk."""
    seen = []
    for cls in (sp.csr_matrix, sp.csr_array):
        real = cls.toarray

        def counted(self, *a, _real=real, **k):
            seen.append(self.shape[0])
            return _real(self, *a, **k)
        monkeypatch.setattr(cls, "toarray", counted)
    return seen


@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.parametrize("kind, fmt", FORMATS)
def test_a_sparse_fit_gives_the_dense_fits_model(kind, fmt, path, densified, monkeypatch):
    if path == "dense":                           # every batch densified, any engine
        monkeypatch.setattr(sparse, "SPARSE_BELOW", 0.0)
    X, y = _data()
    w = np.random.default_rng(3).uniform(0.5, 1.5, len(y))
    dense = X.toarray()
    densified.clear()
    fits = []
    for x in (_as(X, kind, fmt), dense):
        m = fm.MLP([200, 16, 3], device="cpu", seed=0, dtype="float64")
        h = m.fit(x, y, epochs=3, batch_size=32, sample_weight=w, validation_split=0.2,
                  metrics=["accuracy"])
        fits.append((m, h, x, list(densified)))
    (ms, hs, xs, seen), (md, hd, xd, _) = fits
    np.testing.assert_allclose(ms.params, md.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hs.history["val_loss"], hd.history["val_loss"], rtol=1e-10)
    np.testing.assert_allclose(ms.predict_proba(xs), md.predict_proba(xd), rtol=1e-10)
    assert ms.evaluate(xs, y) == pytest.approx(md.evaluate(xd, y), rel=1e-10)
    assert ("layer" in str(ms.step_path)) == (path == "sparse")
    if path == "sparse":
        assert seen == []                         # X W and X^T dZ on the sparse rows
    else:
        assert seen and max(seen) <= 240          # a batch, or an evaluation chunk


def test_the_callers_matrix_is_left_as_it_was():
    X, y = _data()
    coo = X.tocoo()
    dup = sp.coo_matrix((np.r_[coo.data, coo.data[:5]], (np.r_[coo.row, coo.row[:5]],
                                                         np.r_[coo.col, coo.col[:5]])),
                        shape=X.shape).tocsr()    # duplicate entries: not canonical
    dup.has_canonical_format = False
    before = (dup.data.copy(), dup.indices.copy(), dup.indptr.copy())
    m = fm.MLP([200, 8, 3], device="cpu", seed=0, input_scale=0.5)
    m.fit(dup, y, epochs=1)
    for a, b in zip(before, (dup.data, dup.indices, dup.indptr)):
        np.testing.assert_array_equal(a, b)
    x = m.prepare(X).x                            # a float32 CSR is kept, not copied
    assert sparse.is_sparse(x)
    assert fm.MLP([200, 8, 3], device="cpu").prepare(X).x is X


def test_bad_sparse_inputs_are_refused():
    X, y = _data()
    m = fm.MLP([200, 8, 3], device="cpu", seed=0)
    bad = X.copy()
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.fit(bad, y)
    with pytest.raises(ValueError, match="input layer takes"):
        m.fit(X[:, :100], y)
    with pytest.raises(ValueError, match="empty"):
        m.fit(X[:0], y[:0])


@pytest.mark.cuda
def test_sparse_rows_on_cuda_are_densified_per_batch(densified):
    X, y = _data()
    dense = X.toarray()
    cpu = fm.MLP([200, 16, 3], device="cpu", seed=0, dtype="float64", engine="layer")
    cpu.fit(dense, y, epochs=2, batch_size=32)
    densified.clear()
    gpu = fm.MLP([200, 16, 3], device="cuda", seed=0, dtype="float64")
    gpu.fit(X, y, epochs=2, batch_size=32)
    np.testing.assert_allclose(gpu.backend.to_numpy(gpu.params), cpu.params, rtol=1e-9)
    assert max(densified) <= 256
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(dense), rtol=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_the_estimators_take_sparse_x(solver):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier as Theirs

    from fastmlp.sklearn import MLPClassifier, MLPRegressor
    X, y = _data(density=0.05)
    params = dict(hidden_layer_sizes=(16,), solver=solver, max_iter=30, random_state=0)
    sparse_fit = MLPClassifier(device="cpu", **params).fit(X, y)
    dense_fit = MLPClassifier(device="cpu", **params).fit(X.toarray(), y)
    for a, b in zip(sparse_fit.coefs_, dense_fit.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert sparse_fit.score(X.tocsc(), y) == dense_fit.score(X.toarray(), y)
    theirs = Theirs(**params).fit(X, y)
    assert abs(sparse_fit.score(X, y) - theirs.score(X, y)) < 0.1
    reg = MLPRegressor(device="cpu", **params).fit(X.tocoo(), y.astype(float))
    assert reg.predict(X).shape == (len(y),)
    if solver == "adam":
        part = MLPClassifier(device="cpu", **params).partial_fit(X, y, classes=[0, 1, 2])
        assert part.predict(X).shape == (len(y),)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_the_compiled_sparse_products_are_scipys(dtype, index):
    X, _ = _data(n=50, width=120, density=0.1, dtype=dtype)
    X.indices, X.indptr = X.indices.astype(index), X.indptr.astype(index)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((120, 7)).astype(dtype)
    dz = rng.standard_normal((50, 7)).astype(dtype)
    np.testing.assert_array_equal(sparse.times(X, w), X @ w)
    out = np.full((120, 7), np.nan, dtype)
    sparse.t_times_into(X, dz, out)
    np.testing.assert_allclose(out, X.T @ dz, rtol=1e-6 if dtype == np.float32 else 1e-13)
