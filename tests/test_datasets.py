"""Tests for fastmlp.datasets.load_mnist (real files, lookup order, downloads).

Real MNIST files are found via $FASTMLP_DATA/mnist or ../shared/datasets/mnist
beside the repository. Downloads only ever hit a local HTTP server on 127.0.0.1.
"""

import functools
import gzip
import logging
import os
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fastmlp.datasets import MNIST_FILES, _parse_idx, load_mnist

GZ_NAMES = [n + ".gz" for n in MNIST_FILES]


def _find_real_dir():
    roots = []
    if os.environ.get("FASTMLP_DATA"):
        roots.append(Path(os.environ["FASTMLP_DATA"]))
    roots.append(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    for root in roots:
        if all((root / "mnist" / g).is_file() for g in GZ_NAMES):
            return root / "mnist"
    return None


REAL_DIR = _find_real_dir()  # read before any test monkeypatches the environment


@pytest.fixture(scope="session")
def real_dir():
    if REAL_DIR is None:
        pytest.skip("MNIST .gz files not found: set FASTMLP_DATA to a directory containing "
                    "mnist/ (or put them in ../shared/datasets/mnist beside the repo)")
    return REAL_DIR


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No real ~/.cache, no inherited FASTMLP_DATA, and no internet mirrors."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    monkeypatch.setenv("FASTMLP_MNIST_URL", _closed_port_url())
    assert os.path.expanduser("~") == str(home)
    return home


def _link(src_dir, dst_dir, names=GZ_NAMES):
    dst_dir.mkdir(parents=True, exist_ok=True)
    for g in names:
        try:
            (dst_dir / g).symlink_to(src_dir / g)
        except OSError:
            shutil.copy(src_dir / g, dst_dir / g)
    return dst_dir


def _write_corrupt(src_dir, dst_dir, name="t10k-labels-idx1-ubyte.gz"):
    """Copy of a real file with one decompressed byte changed, re-gzipped."""
    data = bytearray(gzip.decompress((src_dir / name).read_bytes()))
    data[-1] ^= 1
    dst_dir.mkdir(parents=True, exist_ok=True)
    (dst_dir / name).write_bytes(gzip.compress(bytes(data)))


def _check_shapes(result, dtype=np.float32):
    (xtr, ytr), (xte, yte) = result
    assert xtr.shape == (60000, 784) and xte.shape == (10000, 784)
    assert xtr.dtype == dtype and xte.dtype == dtype
    assert ytr.shape == (60000,) and yte.shape == (10000,)


def _loaded_from(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Loading MNIST")]


# --- real data -------------------------------------------------------------

@pytest.fixture(scope="module")
def real_float(real_dir):
    return load_mnist(real_dir)


def test_real_data_default(real_float):
    _check_shapes(real_float)
    (xtr, ytr), (xte, yte) = real_float
    for x in (xtr, xte):
        assert x.min() == 0.0 and x.max() == 1.0
    for y in (ytr, yte):
        assert y.dtype == np.int64 and y.min() == 0 and y.max() == 9
    assert set(np.unique(ytr)) == set(range(10))


def test_real_data_uint8_unflattened(real_dir, real_float):
    (xtr, ytr), (xte, yte) = load_mnist(real_dir, dtype="uint8", flatten=False)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert xtr.dtype == np.uint8 and xtr.max() == 255
    xtr[0, 0, 0] = 1  # returned arrays are writable
    (ftr, fytr), (fte, fyte) = real_float
    np.testing.assert_array_equal(xte.reshape(10000, 784).astype(np.float32) / 255, fte)
    np.testing.assert_array_equal(ytr, fytr)
    np.testing.assert_array_equal(yte, fyte)


@pytest.mark.parametrize("bad", ["int32", "float16", "bogus", None])
def test_invalid_dtype(bad, tmp_path):
    with pytest.raises(ValueError, match="float32, float64, uint8"):
        load_mnist(tmp_path / "nowhere", dtype=bad)
    assert not (tmp_path / "nowhere").exists()


def test_parse_idx_validates_header():
    labels = (0x801).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    np.testing.assert_array_equal(_parse_idx(labels, "l.gz", images=False), [1, 2, 3])
    with pytest.raises(ValueError, match="l.gz.*magic"):
        _parse_idx(labels + bytes(8), "l.gz", images=True)
    with pytest.raises(ValueError, match="l.gz.*bytes"):
        _parse_idx(labels + b"\x00", "l.gz", images=False)
    imgs = b"".join(v.to_bytes(4, "big") for v in (0x803, 2, 2, 3)) + bytes(12)
    assert _parse_idx(imgs, "i.gz", images=True).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="i.gz"):
        _parse_idx(imgs[:-1], "i.gz", images=True)


def test_corrupted_local_file(real_dir, tmp_path):
    d = _link(real_dir, tmp_path / "bad", [g for g in GZ_NAMES if not g.startswith("t10k-labels")])
    _write_corrupt(real_dir, d)
    with pytest.raises(ValueError, match="SHA-256") as exc:
        load_mnist(d, download=False)
    msg = str(exc.value)
    assert "t10k-labels-idx1-ubyte" in msg and MNIST_FILES["t10k-labels-idx1-ubyte"] in msg
    assert "delete" in msg


# --- lookup order ----------------------------------------------------------

def test_lookup_explicit_path_wins(real_dir, tmp_path, isolated_env, monkeypatch, caplog):
    explicit = _link(real_dir, tmp_path / "explicit")
    _link(real_dir, tmp_path / "env" / "mnist")
    _link(real_dir, isolated_env / ".cache" / "fastmlp" / "mnist")
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    with caplog.at_level(logging.DEBUG, logger="fastmlp"):
        load_mnist(explicit, download=False)
    assert _loaded_from(caplog) == [f"Loading MNIST from {explicit}"]


def test_lookup_env_before_home(real_dir, tmp_path, isolated_env, monkeypatch, caplog):
    incomplete = _link(real_dir, tmp_path / "incomplete", GZ_NAMES[:3])  # skipped
    env_dir = _link(real_dir, tmp_path / "env" / "mnist")
    _link(real_dir, isolated_env / ".cache" / "fastmlp" / "mnist")
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "env"))
    with caplog.at_level(logging.DEBUG, logger="fastmlp"):
        load_mnist(incomplete, download=False)
    assert _loaded_from(caplog) == [f"Loading MNIST from {env_dir}"]


def test_lookup_home_cache_last(real_dir, tmp_path, isolated_env, monkeypatch, caplog):
    home_dir = _link(real_dir, isolated_env / ".cache" / "fastmlp" / "mnist")
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "empty_env"))  # has no mnist/
    with caplog.at_level(logging.DEBUG, logger="fastmlp"):
        _check_shapes(load_mnist(download=False))
    assert _loaded_from(caplog) == [f"Loading MNIST from {home_dir}"]


# --- downloads from a local HTTP server ------------------------------------

class _Handler(SimpleHTTPRequestHandler):
    requests = None  # per-server list of (path, status), set by the fixture

    def log_request(self, code="-", size="-"):
        self.requests.append((self.path, int(code)))

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(directory) -> (base_url, requests) for a 127.0.0.1 HTTP server."""
    servers = []

    def start(directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"requests": []})
        srv = ThreadingHTTPServer(("127.0.0.1", 0),
                                  functools.partial(handler, directory=str(directory)))
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/", handler.requests

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _leftovers(d):
    return [p.name for p in Path(d).iterdir() if p.name not in GZ_NAMES]


def test_download_into_explicit_path(real_dir, tmp_path, serve, caplog):
    url, requests = serve(_link(real_dir, tmp_path / "mirror"))
    target = tmp_path / "target"
    with caplog.at_level(logging.INFO, logger="fastmlp"):
        _check_shapes(load_mnist(target, urls=[url]))
    assert sorted(requests) == sorted(("/" + g, 200) for g in GZ_NAMES)
    for g in GZ_NAMES:
        assert (target / g).read_bytes() == (real_dir / g).read_bytes()
    assert _leftovers(target) == []
    assert len([r for r in caplog.records if r.getMessage().startswith("Downloaded")]) == 4


@pytest.mark.parametrize("where", ["env", "home"])
def test_download_default_target(where, real_dir, tmp_path, isolated_env, monkeypatch, serve):
    url, _ = serve(_link(real_dir, tmp_path / "mirror"))
    monkeypatch.setenv("FASTMLP_MNIST_URL", url)
    if where == "env":
        monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "data"))
        target = tmp_path / "data" / "mnist"
    else:
        target = isolated_env / ".cache" / "fastmlp" / "mnist"
    load_mnist()
    assert sorted(p.name for p in target.iterdir()) == sorted(GZ_NAMES)


def test_download_404_then_second_mirror(real_dir, tmp_path, serve):
    bad_url, bad_requests = serve(tmp_path / "empty_mirror")
    good_url, _ = serve(_link(real_dir, tmp_path / "mirror"))
    (xtr, _), (xte, _) = load_mnist(tmp_path / "target", dtype="float64", urls=[bad_url, good_url])
    assert xtr.dtype == np.float64 and xtr.shape == (60000, 784)
    assert sorted(bad_requests) == sorted(("/" + g, 404) for g in GZ_NAMES)
    assert _leftovers(tmp_path / "target") == []


def test_corrupted_download_rejected_then_recovered(real_dir, tmp_path, serve):
    mirror = _link(real_dir, tmp_path / "bad_mirror",
                   [g for g in GZ_NAMES if not g.startswith("t10k-labels")])
    _write_corrupt(real_dir, mirror)
    bad_url, _ = serve(mirror)
    target = tmp_path / "target"
    with pytest.raises(RuntimeError, match="SHA-256") as exc:
        load_mnist(target, urls=[bad_url])
    assert "t10k-labels-idx1-ubyte" in str(exc.value)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert _leftovers(target) == []
    # A good mirror after the bad one: only the missing file is fetched.
    good_url, good_requests = serve(_link(real_dir, tmp_path / "mirror"))
    _check_shapes(load_mnist(target, urls=[bad_url, good_url]))
    assert good_requests == [("/t10k-labels-idx1-ubyte.gz", 200)]
    assert _leftovers(target) == []


def test_offline_error_message(tmp_path, isolated_env):
    url = _closed_port_url()
    with pytest.raises(RuntimeError) as exc:
        load_mnist(tmp_path / "target", urls=[url])
    msg = str(exc.value)
    for needle in ("FASTMLP_DATA", "path=", "~/.cache/fastmlp/mnist", str(tmp_path / "target"),
                   str(isolated_env / ".cache" / "fastmlp" / "mnist"), "Download failed", url):
        assert needle in msg
    assert _leftovers(tmp_path / "target") == []


def test_download_false_does_not_fetch(tmp_path, serve, monkeypatch):
    url, requests = serve(tmp_path / "mirror")
    monkeypatch.setenv("FASTMLP_MNIST_URL", url)
    with pytest.raises(RuntimeError, match="download=False") as exc:
        load_mnist(tmp_path / "target", download=False)
    assert "FASTMLP_DATA" in str(exc.value)
    assert requests == [] and not (tmp_path / "target").exists()
