"""Tests for fastmlp.datasets.load_mnist (real files, lookup order, downloads).

Real MNIST files are found via $FASTMLP_DATA/mnist or ../shared/datasets/mnist
beside the repository. Downloads only ever hit a local HTTP server on 127.0.0.1.
"""

import functools
import gzip
import io
import logging
import os
import shutil
import socket
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fastmlp import datasets
from fastmlp.datasets import MNIST_FILES, MNISTNotFoundError, _parse_idx, load_mnist

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
    """No real ~/.cache or $XDG_CACHE_HOME, no inherited FASTMLP_DATA, no internet mirrors."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
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
    target.mkdir()
    with caplog.at_level(logging.INFO, logger="fastmlp"):
        _check_shapes(load_mnist(target, urls=[url]))
    assert sorted(requests) == sorted(("/" + g, 200) for g in GZ_NAMES)
    for g in GZ_NAMES:
        assert (target / g).read_bytes() == (real_dir / g).read_bytes()
    assert _leftovers(target) == []
    messages = [r.getMessage() for r in caplog.records]
    for g in GZ_NAMES:     # each download is announced before it starts
        started = messages.index(f"Downloading {g} from {url}{g}")
        assert messages[started + 1] == f"Downloaded {g} from {url}{g} to {target / g}"


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
    (tmp_path / "target").mkdir()
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
    target.mkdir()
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
    (tmp_path / "target").mkdir()
    with pytest.raises(MNISTNotFoundError) as exc:
        load_mnist(tmp_path / "target", urls=[url])
    msg = str(exc.value)
    for needle in ("FASTMLP_DATA", "path=", "~/.cache/fastmlp/mnist", str(tmp_path / "target"),
                   str(isolated_env / ".cache" / "fastmlp" / "mnist"), "Download failed", url):
        assert needle in msg
    assert _leftovers(tmp_path / "target") == []


def test_download_false_does_not_fetch(tmp_path, serve, monkeypatch):
    url, requests = serve(tmp_path / "mirror")
    monkeypatch.setenv("FASTMLP_MNIST_URL", url)
    (tmp_path / "target").mkdir()
    with pytest.raises(RuntimeError, match="download=False") as exc:
        load_mnist(tmp_path / "target", download=False)
    assert "FASTMLP_DATA" in str(exc.value)
    assert requests == [] and list((tmp_path / "target").iterdir()) == []


# --- an explicit path must exist ------------------------------------------

def test_missing_explicit_path_is_an_error_not_created(real_dir, tmp_path, isolated_env, serve):
    """A typo is reported, not created and downloaded into, even when the cache has the files."""
    _link(real_dir, isolated_env / ".cache" / "fastmlp" / "mnist")
    url, requests = serve(_link(real_dir, tmp_path / "mirror"))
    typo = tmp_path / "typo" / "mnist"
    with pytest.raises(FileNotFoundError, match="does not exist") as exc:
        load_mnist(typo, urls=[url])
    assert str(typo) in str(exc.value) and "path=None" in str(exc.value)
    assert not (tmp_path / "typo").exists() and requests == []


def test_explicit_path_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        load_mnist(tmp_path / "file")


# --- $XDG_CACHE_HOME --------------------------------------------------------

def test_xdg_cache_home_is_the_cache(real_dir, tmp_path, isolated_env, monkeypatch, caplog):
    _link(real_dir, isolated_env / ".cache" / "fastmlp" / "mnist")     # not used
    xdg_dir = _link(real_dir, tmp_path / "xdg" / "fastmlp" / "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with caplog.at_level(logging.DEBUG, logger="fastmlp"):
        load_mnist(download=False)
    assert _loaded_from(caplog) == [f"Loading MNIST from {xdg_dir}"]


def test_xdg_cache_home_receives_downloads(real_dir, tmp_path, isolated_env, monkeypatch, serve):
    url, _ = serve(_link(real_dir, tmp_path / "mirror"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_mnist(urls=[url])
    target = tmp_path / "xdg" / "fastmlp" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(GZ_NAMES)
    assert not (isolated_env / ".cache").exists()


def test_relative_xdg_cache_home_is_ignored(isolated_env, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "xdg-rel/cache")      # the XDG spec: ignore it
    with pytest.raises(RuntimeError) as exc:
        load_mnist(download=False)
    assert str(isolated_env / ".cache" / "fastmlp" / "mnist") in str(exc.value)
    assert "xdg-rel" not in str(exc.value)


# --- silent mirrors and progress -------------------------------------------

@pytest.fixture
def silent_server():
    """(base_url, connections) of a 127.0.0.1 server that accepts and never answers."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.05)
    connections, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(srv.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/", connections
    stop.set()
    thread.join()
    for c in connections:
        c.close()
    srv.close()


def test_silent_mirror_times_out_and_is_named(tmp_path, silent_server, monkeypatch, caplog):
    url, connections = silent_server
    monkeypatch.setattr(datasets, "_TIMEOUT", 0.5)
    (tmp_path / "target").mkdir()
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="fastmlp"):
        with pytest.raises(MNISTNotFoundError) as exc:
            load_mnist(tmp_path / "target", urls=[url])
    assert time.monotonic() - start < 8      # generous: the old 30 s timeout would not pass
    first = f"{url}{GZ_NAMES[0]}"
    assert f"{first}: no answer within 0.5 s" in str(exc.value)
    # announced before the attempt, so a hang is never silent
    assert f"Downloading {GZ_NAMES[0]} from {first}" in [r.getMessage() for r in caplog.records]
    assert len(connections) == 1 and _leftovers(tmp_path / "target") == []


def test_silent_mirror_is_not_retried_for_each_file(real_dir, tmp_path, silent_server, serve,
                                                    monkeypatch):
    silent_url, connections = silent_server
    good_url, good_requests = serve(_link(real_dir, tmp_path / "mirror"))
    monkeypatch.setattr(datasets, "_TIMEOUT", 0.5)
    (tmp_path / "target").mkdir()
    _check_shapes(load_mnist(tmp_path / "target", urls=[silent_url, good_url]))
    assert len(connections) == 1       # one timeout in all, not one per file
    assert sorted(good_requests) == sorted(("/" + g, 200) for g in GZ_NAMES)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_for_large_files_on_a_terminal(tty, real_dir, tmp_path, serve, monkeypatch):
    url, _ = serve(_link(real_dir, tmp_path / "mirror"))
    stderr = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.setattr(logging.getLogger("fastmlp"), "handlers", [])   # only the bar here
    (tmp_path / "target").mkdir()
    load_mnist(tmp_path / "target", urls=[url])
    shown = stderr.getvalue()
    if tty:     # the image files get a bar; the label files (< 1 MiB) do not
        assert "train-images-idx3-ubyte.gz:" in shown and "t10k-images-idx3-ubyte.gz:" in shown
        assert "labels" not in shown
    else:
        assert shown == ""
