"""MNIST loading for fastmlp.

:func:`load_mnist` reads the four original IDX ``.gz`` files, verifies the
SHA-256 of their decompressed contents and returns NumPy arrays.  The files are
looked up in an explicit directory (which must exist), then
``$FASTMLP_DATA/mnist``, then the cache, ``$XDG_CACHE_HOME/fastmlp/mnist``
(``~/.cache/fastmlp/mnist`` when ``XDG_CACHE_HOME`` is unset); when none of these
holds them they are downloaded from a list of mirrors and verified before being
moved into place.  Each download is logged (logger ``"fastmlp"``, INFO) before it
starts, shows a progress bar on a terminal, and gives up on a mirror that stays
silent for :data:`_TIMEOUT` seconds.  Only the standard library, NumPy and tqdm
are used, and nothing is unpickled.
"""

import gzip
import hashlib
import http.client
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request

import numpy as np
from tqdm import tqdm

__all__ = ["load_mnist", "MNISTNotFoundError", "MNIST_FILES", "DEFAULT_URLS"]

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
#: Seconds a mirror may stay silent (connecting, or between two reads) before it is
#: given up; a module constant so that tests can shorten it.
_TIMEOUT = 10.0
_CHUNK = 1 << 20
_BAR_MIN = 1 << 20     # the label files take a blink: a bar would only flash
_DOWNLOAD_ERRORS = (OSError, EOFError, ValueError, http.client.HTTPException)


def _cache_dir():
    """``$XDG_CACHE_HOME/fastmlp/mnist``, else ``~/.cache/fastmlp/mnist``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says to ignore a relative path there, as if unset.
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join("~", ".cache")
    return os.path.expanduser(os.path.join(base, "fastmlp", "mnist"))


def _explicit_dir(path):
    """``path`` expanded; an error unless it is an existing directory.

    Downloads go into this directory, and creating it would turn a typo into a
    fresh, empty tree far from where the user meant.
    """
    directory = os.path.expanduser(os.fspath(path))
    if os.path.isdir(directory):
        return directory
    exists = os.path.exists(directory)
    error = NotADirectoryError if exists else FileNotFoundError
    raise error(
        f"{directory} {'is not a directory' if exists else 'does not exist'}: "
        "load_mnist(path=...) must name an existing directory (the four MNIST .gz files "
        "are downloaded into it when it lacks them); path=None uses $FASTMLP_DATA/mnist "
        "or the cache."
    )


def _candidate_dirs(path):
    """Directories to search, in priority order; the first is the download target."""
    dirs = []
    if path is not None:
        dirs.append(_explicit_dir(path))
    env = os.environ.get("FASTMLP_DATA")
    if env:
        dirs.append(os.path.join(os.path.expanduser(env), "mnist"))
    dirs.append(_cache_dir())
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


def _why(err):
    """``err`` in words; a timeout says how long the mirror stayed silent."""
    reason = getattr(err, "reason", err)      # urlopen wraps socket errors in URLError
    if isinstance(reason, TimeoutError):
        return f"no answer within {_TIMEOUT:g} s (timed out)"
    return str(err)


def _unreachable(err):
    """True when the mirror itself failed (no connection, silence), not one file on it."""
    return isinstance(err, TimeoutError) or (
        isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError))


def _fetch(url, out, desc):
    """Copy ``url`` into the open file ``out``, with a bar for large files on a TTY."""
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as r:
        size = r.headers.get("Content-Length")
        total = int(size) if size and size.isdigit() else None
        # disable=None: tqdm draws only when stderr is a terminal.
        disable = None if total is None or total >= _BAR_MIN else True
        with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                  leave=False, disable=disable) as bar:
            for chunk in iter(lambda: r.read(_CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))


def _check_gz(tmp, name):
    """Raise ValueError unless ``tmp`` decompresses to the original ``name``."""
    digest = hashlib.sha256()
    with gzip.open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    if digest.hexdigest() != MNIST_FILES[name]:
        raise ValueError(
            f"SHA-256 mismatch (expected {MNIST_FILES[name]}, got {digest.hexdigest()}); "
            "bad copy discarded"
        )


def _download(name, target, bases, dead):
    """Fetch ``NAME.gz`` into ``target`` from the first mirror serving a verified copy.

    ``dead`` maps each mirror that could not be reached to why; it is skipped
    here and filled in, so that a silent mirror costs one timeout, not one per file.
    """
    final = os.path.join(target, name + ".gz")
    errors = []
    for base in bases:
        url = base.rstrip("/") + "/" + name + ".gz"
        if base in dead:
            errors.append(f"{url}: skipped, the mirror failed before: {dead[base]}")
            continue
        logger.info("Downloading %s.gz from %s", name, url)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target)
        try:
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, name + ".gz")
            _check_gz(tmp, name)
            os.replace(tmp, final)
            logger.info("Downloaded %s.gz from %s to %s", name, url, final)
            return
        except _DOWNLOAD_ERRORS as err:
            errors.append(f"{url}: {_why(err)}")
            if _unreachable(err):
                dead[base] = _why(err)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise OSError(f"could not download {name}.gz from any mirror: " + "; ".join(errors))


class MNISTNotFoundError(RuntimeError):
    """The MNIST files are in none of the searched directories and were not downloaded.

    ``dirs`` lists the directories searched, in order, and ``reason`` says why
    nothing was downloaded. :meth:`with_hint` rewords the advice for another
    front end (the command line names its ``--data`` flag).
    """

    def __init__(self, dirs, reason, use_dir="pass load_mnist(path='/that/directory')"):
        self.dirs, self.reason, self.use_dir = list(dirs), reason, use_dir
        super().__init__(_not_found_message(self.dirs, reason, use_dir))

    def with_hint(self, use_dir):
        """The same error, advising ``use_dir`` (e.g. "pass --data DIR") to name a directory."""
        return type(self)(self.dirs, self.reason, use_dir)


def _not_found_message(dirs, reason, use_dir):
    looked = "\n".join(f"  - {d}" for d in dirs)
    files = ", ".join(n + ".gz" for n in MNIST_FILES)
    return (
        f"MNIST files not found. Looked for {files} in:\n{looked}\n{reason}\n"
        "To supply the files, put the four .gz files in a directory and either:\n"
        f"  - {use_dir}, or\n"
        "  - set FASTMLP_DATA to a directory containing mnist/ (i.e. $FASTMLP_DATA/mnist/), or\n"
        f"  - place them in the cache, {_cache_dir()} ($XDG_CACHE_HOME/fastmlp/mnist, "
        "or ~/.cache/fastmlp/mnist when XDG_CACHE_HOME is unset)"
    )


def _mirrors(urls):
    """Mirror base URLs: ``urls``, else ``$FASTMLP_MNIST_URL``, else the defaults."""
    if urls is None:
        env_url = os.environ.get("FASTMLP_MNIST_URL")
        return [env_url] if env_url else list(DEFAULT_URLS)
    return [urls] if isinstance(urls, str) else list(urls)


def _download_missing(dirs, urls):
    """Download the files missing from ``dirs[0]`` into it; return that directory."""
    target, dead = dirs[0], {}
    try:
        os.makedirs(target, exist_ok=True)     # only ever a default dir: path must exist
        for name in MNIST_FILES:
            if not os.path.isfile(os.path.join(target, name + ".gz")):
                _download(name, target, urls, dead)
    except OSError as err:
        raise MNISTNotFoundError(dirs, f"Download failed: {err}") from err
    return target


def load_mnist(path=None, *, dtype="float32", flatten=True, download=True, urls=None):
    """Load MNIST as ``((x_train, y_train), (x_test, y_test))`` NumPy arrays.

    Args:
        path: an existing directory holding (or to receive) the four IDX ``.gz``
            files. Searched first, then ``$FASTMLP_DATA/mnist``, then the cache,
            ``$XDG_CACHE_HOME/fastmlp/mnist`` (``~/.cache/fastmlp/mnist`` when
            ``XDG_CACHE_HOME`` is unset); the first directory holding all four
            files is used.
        dtype: ``"float32"`` (default) or ``"float64"`` for pixels scaled to
            [0, 1], or ``"uint8"`` for raw pixels.
        flatten: images of shape (N, 784) if True, else (N, 28, 28).
        download: if no directory holds the files, download the missing ones into
            ``path`` (or ``$FASTMLP_DATA/mnist``, or the cache, created if need be).
        urls: mirror base URLs tried in turn; defaults to ``$FASTMLP_MNIST_URL``
            if set, else :data:`DEFAULT_URLS`.

    Labels are int64 class ids of shape (N,).

    Raises:
        ValueError: bad ``dtype``, checksum mismatch or malformed IDX file.
        FileNotFoundError: ``path`` does not exist (NotADirectoryError: it is a file).
        MNISTNotFoundError: (a RuntimeError) files not found and not downloadable.
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
            raise MNISTNotFoundError(dirs, "Not downloaded: download=False.")
        found = _download_missing(dirs, _mirrors(urls))

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
