"""Training data larger than memory: rows read from disk chunk by chunk.

``fit`` streams its inputs when ``x`` is a NumPy memmap, or any array-like
that is not in memory (it has ``shape``, ``dtype`` and ``__getitem__`` with
slices, like an h5py or zarr dataset). Targets and sample weights are small
and are prepared whole.

How an epoch samples: the rows are cut into chunks of consecutive rows
(``chunk_rows``, a multiple of the batch size, about 64 MiB of input per
chunk by default); the chunks are visited in a random order and each
chunk's rows are shuffled within it, so every row is seen once per epoch,
but a batch only mixes rows of one chunk. While a chunk trains, the next one
is read, checked and converted on a background thread. A memmap is read
with ``pread`` from its file (not through the mapping), so the process's
resident memory holds a chunk or two, never the file. The NaN/inf check
runs per chunk, as the chunk is read.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fastmlp.sparse import is_sparse

CHUNK_BYTES = 64 << 20


def wants(x):
    """Whether ``fit`` should stream ``x`` rather than load it whole."""
    if isinstance(x, Stream):
        return True
    if is_sparse(x):                        # sparse rows: fastmlp.sparse
        return False
    if getattr(x, "ndim", len(getattr(x, "shape", ()))) != 2:
        return False                    # the in-memory checks reshape 1-D and refuse the rest
    if isinstance(x, np.memmap):
        return True
    if isinstance(x, np.ndarray) or hasattr(x, "__cuda_array_interface__") \
            or hasattr(x, "__array_interface__") or hasattr(x, "__dlpack__"):
        return False
    return all(hasattr(x, a) for a in ("shape", "dtype", "__getitem__"))


class Stream:
    """Rows ``[lo, hi)`` of a host array-like ``source`` (N, n_in), read on demand."""

    def __init__(self, source, lo=0, hi=None):
        self.source = source
        self.lo = lo
        self.hi = source.shape[0] if hi is None else hi
        self.dtype = np.dtype(source.dtype)
        self.n_in = int(source.shape[1])
        self._file = _file_of(source)

    @property
    def shape(self):
        return (self.hi - self.lo, self.n_in)

    def __len__(self):
        return self.hi - self.lo

    def __getitem__(self, rows):
        """A sub-stream of a slice of rows (what validation_split takes)."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("a Stream is sliced by contiguous rows only")
        lo, hi, _ = rows.indices(len(self))
        return Stream(self.source, self.lo + lo, self.lo + max(hi, lo))

    def rows(self, idx):
        """The rows ``idx`` (relative to this stream, any order) as a host NumPy
        array: read in increasing order (as h5py requires), then put in order."""
        idx = np.asarray(idx)
        ascending = np.argsort(idx, kind="stable")
        out = np.empty((idx.size, self.n_in), self.dtype)
        out[ascending] = self.source[(idx[ascending] + self.lo).tolist()] if idx.size else 0
        return out

    def read(self, lo, hi):
        """Rows lo:hi (relative to this stream) as a host NumPy array."""
        lo, hi = self.lo + lo, self.lo + hi
        if self._file is not None:
            path, offset = self._file
            row = self.n_in * self.dtype.itemsize
            out = np.empty((hi - lo, self.n_in), self.dtype)
            with open(path, "rb", buffering=0) as f:
                f.seek(offset + lo * row)
                view, done = memoryview(out).cast("B"), 0
                while done < len(view):
                    got = f.readinto(view[done:])
                    if not got:
                        raise OSError(f"{path} ended early: the memmap's file is truncated")
                    done += got
            return out
        return np.ascontiguousarray(np.asarray(self.source[lo:hi]))


def _file_of(source):
    """(path, byte offset of row 0) when ``source`` is a C-ordered memmap of a file."""
    # a copy-on-write mapping ("c") may differ from its file: read it through the mapping
    if not isinstance(source, np.memmap) or not source.flags.c_contiguous \
            or getattr(source, "mode", "c") not in ("r", "r+", "w+"):
        return None
    path = getattr(source, "filename", None)
    if path is None or not os.path.isfile(path):
        return None
    base = source
    while isinstance(base.base, np.memmap):      # a view: find how far into the file it starts
        base = base.base
    start = source.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return path, int(base.offset) + int(start)


def chunk_rows(stream, batch_size, chunk_bytes=None):
    """Rows per chunk: about ``chunk_bytes`` (default :data:`CHUNK_BYTES`) of
    input, a multiple of the batch size."""
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    rows = max(1, chunk_bytes // (stream.n_in * stream.dtype.itemsize))
    return max(batch_size, rows // batch_size * batch_size)


class Prefetch:
    """Loads chunks on one background thread, one ahead of the one training."""

    def __init__(self, load):
        self.load = load
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastmlp-prefetch")

    def run(self, spans):
        """Yield ``(span, load(span))`` for each span, loading the next one meanwhile."""
        spans = list(spans)
        ahead = self.pool.submit(self.load, spans[0]) if spans else None
        for i, span in enumerate(spans):
            chunk = ahead.result()
            ahead = self.pool.submit(self.load, spans[i + 1]) if i + 1 < len(spans) else None
            yield span, chunk

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
