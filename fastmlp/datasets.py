"""MNIST loading for fastmlp.

:func:`load_mnist` reads the four original IDX ``.gz`` files, verifies the
SHA-256 of their decompressed contents and returns NumPy arrays.  The files are
looked up in an explicit directory, then ``$FASTMLP_DATA/mnist``, then
``~/.cache/fastmlp/mnist``; when none of these holds them they are downloaded
from a list of mirrors and verified before being moved into place.  Only the
standard library and NumPy are used, and nothing is unpickled.
"""

import gzip
import hashlib
import http.client
import logging
import math
import os
import shutil
import tempfile
import urllib.request

import numpy as np

__all__ = ["load_mnist", "MNIST_FILES", "DEFAULT_URLS"]

logger = logging.getLogger("fastmlp")

#: SHA-256 of each *decompressed* file, keyed by name (on disk: ``NAME.gz``).
MNIST_FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Mirror base URLs tried in turn (override with ``urls=`` or ``$FASTMLP_MNIST_URL``).
DEFAULT_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_DTYPES = ("float32", "float64", "uint8")
_TIMEOUT = 30.0
_CHUNK = 1 << 20
_DOWNLOAD_ERRORS = (OSError, EOFError, ValueError, http.client.HTTPException)


def _candidate_dirs(path):
    """Directories to search, in priority order; the first is the download target."""
    dirs = []
    if path is not None:
        dirs.append(os.path.expanduser(os.fspath(path)))
    env = os.environ.get("FASTMLP_DATA")
    if env:
        dirs.append(os.path.join(os.path.expanduser(env), "mnist"))
    dirs.append(os.path.expanduser(os.path.join("~", ".cache", "fastmlp", "mnist")))
    return dirs


def _has_all(directory):
    return all(os.path.isfile(os.path.join(directory, n + ".gz")) for n in MNIST_FILES)


def _read_verified(gz_path, name):
    """Decompress ``gz_path`` and check its SHA-256 against ``MNIST_FILES[name]``."""
    with gzip.open(gz_path, "rb") as f:
        data = f.read()
    expected, actual = MNIST_FILES[name], hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(
            f"SHA-256 mismatch for {gz_path} (decompressed {name}): expected {expected}, "
            f"got {actual}. The file is corrupt or not the original MNIST file; delete it "
            "and call load_mnist() again to re-download it (or replace it with a good copy)."
        )
    return data


def _parse_idx(data, filename, images):
    """Parse IDX bytes: images (magic 0x803, dims N, rows, cols) or labels (0x801, N)."""
    magic, ndim = (0x00000803, 3) if images else (0x00000801, 1)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{filename}: too short for an IDX header ({len(data)} bytes)")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise ValueError(f"{filename}: bad IDX magic 0x{got:08x}, expected 0x{magic:08x}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) != header + math.prod(dims):
        raise ValueError(
            f"{filename}: {len(data)} bytes does not match IDX dims {dims} "
            f"(expected {header + math.prod(dims)} bytes)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _download(name, target, bases):
    """Fetch ``NAME.gz`` into ``target`` from the first mirror serving a verified copy."""
    final = os.path.join(target, name + ".gz")
    errors = []
    for base in bases:
        url = base.rstrip("/") + "/" + name + ".gz"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT) as r:
                shutil.copyfileobj(r, out, _CHUNK)
            digest = hashlib.sha256()
            with gzip.open(tmp, "rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    digest.update(chunk)
            if digest.hexdigest() != MNIST_FILES[name]:
                raise ValueError(
                    f"SHA-256 mismatch (expected {MNIST_FILES[name]}, got {digest.hexdigest()}); "
                    "bad copy discarded"
                )
            os.replace(tmp, final)
            logger.info("Downloaded %s.gz from %s to %s", name, url, final)
            return
        except _DOWNLOAD_ERRORS as err:
            errors.append(f"{url}: {err}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise OSError(f"could not download {name}.gz from any mirror: " + "; ".join(errors))


def _not_found_message(dirs, reason):
    looked = "\n".join(f"  - {d}" for d in dirs)
    files = ", ".join(n + ".gz" for n in MNIST_FILES)
    return (
        f"MNIST files not found. Looked for {files} in:\n{looked}\n{reason}\n"
        "To supply the files, put the four .gz files in a directory and either:\n"
        "  - pass load_mnist(path='/that/directory'), or\n"
        "  - set FASTMLP_DATA to a directory containing mnist/ (i.e. $FASTMLP_DATA/mnist/), or\n"
        "  - place them in ~/.cache/fastmlp/mnist"
    )


def load_mnist(path=None, *, dtype="float32", flatten=True, download=True, urls=None):
    """Load MNIST as ``((x_train, y_train), (x_test, y_test))`` NumPy arrays.

    Args:
        path: directory holding the four IDX ``.gz`` files. Searched first, then
            ``$FASTMLP_DATA/mnist``, then ``~/.cache/fastmlp/mnist``; the first
            directory holding all four files is used.
        dtype: ``"float32"`` (default) or ``"float64"`` for pixels scaled to
            [0, 1], or ``"uint8"`` for raw pixels.
        flatten: images of shape (N, 784) if True, else (N, 28, 28).
        download: if no directory holds the files, download the missing ones into
            ``path`` (or ``$FASTMLP_DATA/mnist``, or ``~/.cache/fastmlp/mnist``).
        urls: mirror base URLs tried in turn; defaults to ``$FASTMLP_MNIST_URL``
            if set, else :data:`DEFAULT_URLS`.

    Labels are int64 class ids of shape (N,).

    Raises:
        ValueError: bad ``dtype``, checksum mismatch or malformed IDX file.
        RuntimeError: files not found and not downloadable.
    """
    try:
        dtype_name = np.dtype(dtype).name if dtype is not None else None
    except TypeError:
        dtype_name = None
    if dtype_name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")

    dirs = _candidate_dirs(path)
    found = next((d for d in dirs if _has_all(d)), None)
    if found is None:
        if not download:
            raise RuntimeError(_not_found_message(dirs, "Not downloaded: download=False."))
        if urls is None:
            env_url = os.environ.get("FASTMLP_MNIST_URL")
            urls = [env_url] if env_url else DEFAULT_URLS
        elif isinstance(urls, str):
            urls = [urls]
        target = dirs[0]
        try:
            os.makedirs(target, exist_ok=True)
            for name in MNIST_FILES:
                if not os.path.isfile(os.path.join(target, name + ".gz")):
                    _download(name, target, urls)
        except OSError as err:
            raise RuntimeError(_not_found_message(dirs, f"Download failed: {err}")) from err
        found = target

    logger.debug("Loading MNIST from %s", found)
    arrays = []
    for name in MNIST_FILES:
        data = _read_verified(os.path.join(found, name + ".gz"), name)
        arrays.append(_parse_idx(data, name + ".gz", images="images" in name))

    def images(x):
        if flatten:
            x = x.reshape(len(x), -1)
        return x.copy() if dtype_name == "uint8" else np.divide(x, 255, dtype=dtype_name)

    xtr, ytr, xte, yte = arrays
    return ((images(xtr), ytr.astype(np.int64)), (images(xte), yte.astype(np.int64)))
