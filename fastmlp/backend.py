"""The one place that knows which device the arrays live on.

``get_backend(device)`` resolves ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
``"auto"`` once and returns a :class:`Backend`: the array module ``xp``
(NumPy or CuPy), the op table, transfers, synchronize and a seeded RNG. Model,
loss and optimizer code only ever talk to a Backend, so they hold no
NumPy-versus-CuPy branches. CuPy is imported here, lazily, and nowhere else.
"""

import contextlib
import logging
import re

import numpy as np

from fastmlp.kernels.reference import ReferenceOps

log = logging.getLogger("fastmlp")

#: kernel paths a model can ask for: "auto" takes the fastest the device has.
KERNEL_PATHS = ("auto", "fused", "reference", "warp")
# what to do, by what cuda_status found (each says 'pass device="cpu"': the CLI rewrites that)
_INSTALL_HINT = ('install CuPy for your CUDA version with `pip install "fastmlp[cuda13]"` '
                 '(or "fastmlp[cuda12]"), or pass device="cpu"')
_DRIVER_HINT = ("check that this machine has an NVIDIA GPU and driver (`nvidia-smi`) and that "
                "the installed CuPy matches the driver's CUDA version (cupy-cuda13x or "
                'cupy-cuda12x), or pass device="cpu"')
_backends = {}
_auto_logged = False


class Backend:
    """Arrays, ops and transfers for one device.

    Attributes: ``name`` ("cpu" or "cuda:N"), ``kind`` ("cpu" or "cuda": what
    a step engine checks to decline a device it is not built for), ``xp`` (numpy or cupy),
    ``ops`` (the default op table), ``device_id`` (the GPU's index, None on
    the CPU) and ``is_cuda``.
    """

    def __init__(self, name, xp, device_id=None):
        self.name = name
        self.xp = xp
        self.device_id = device_id
        self.is_cuda = device_id is not None
        self.kind = "cuda" if self.is_cuda else "cpu"
        self._tables = {"reference": ReferenceOps(xp)}
        self._fused = None

    def ops_for(self, kernels="auto"):
        """The op table of a kernel path: "reference" (plain xp, the ground
        truth), "fused" (the compiled kernels: Numba's on the CPU,
        ``kernels/cpu_ops.py``, the reference table when Numba is missing; on
        CUDA the Warp table, the reference one where Warp sees no GPU), "warp" (NVIDIA Warp kernels,
        ``kernels/warp_ops.py``, on either device: ImportError without
        warp-lang) or "auto": fused on the CPU; on CUDA the Warp table where
        warp-lang is installed and sees this GPU (the ``warp`` engine goes
        with it), else the reference table."""
        if kernels not in KERNEL_PATHS:
            raise ValueError(f"unknown kernels {kernels!r}: choose one of {list(KERNEL_PATHS)}")
        if kernels == "warp":
            if "warp" not in self._tables:
                self._tables["warp"] = _warp_ops(self.xp)
            return self._tables["warp"]
        if kernels == "auto" and self.is_cuda:
            if "auto" not in self._tables:
                self._tables["auto"] = _warp_on_gpu(self.xp, self.device_id) \
                    or self._tables["reference"]
            return self._tables["auto"]
        if kernels == "reference":
            return self._tables["reference"]
        if self._fused is None:
            self._fused = (_cuda_ops(self.xp, self.device_id) if self.is_cuda else _cpu_ops()) \
                or self._tables["reference"]
        return self._fused

    @property
    def ops(self):
        """The default ("auto") op table."""
        return self.ops_for("auto")

    def __repr__(self):
        return f"Backend({self.name!r}, ops={self.ops.name!r})"

    def scope(self):
        """A context in which new arrays land on this device."""
        if self.is_cuda:
            return self.xp.cuda.Device(self.device_id)
        return contextlib.nullcontext()

    def asarray(self, a, dtype=None):
        """``a`` as an array of numbers on this device, cast to ``dtype`` if given.

        Accepts NumPy and CuPy arrays, nested sequences and anything with
        ``__array__``, ``__cuda_array_interface__`` or ``__dlpack__``. Host data
        is cast before it is copied over, and an array already here is not
        copied; TypeError when ``a`` does not hold numbers.
        """
        xp = self.xp
        on_gpu = hasattr(a, "__cuda_array_interface__")
        if self.is_cuda and on_gpu:
            with self.scope():
                if getattr(getattr(a, "device", None), "id", self.device_id) != self.device_id:
                    a = xp.array(a, copy=True)                  # from another GPU
                return _numeric(xp.asarray(a, dtype=dtype))
        if on_gpu and hasattr(a, "get"):
            host = a.get()                                      # a CuPy array, to the CPU
        elif hasattr(a, "__dlpack__") and not hasattr(a, "__array__"):
            host = np.from_dlpack(a)
        else:
            host = np.asarray(a)
        host = _numeric(host)
        if dtype is not None:
            with np.errstate(over="ignore"):    # an overflow is the caller's to report, as such
                host = host.astype(dtype, copy=False)
        if not self.is_cuda:
            return host
        with self.scope():
            return xp.asarray(host)

    @property
    def sparse_products(self):
        """Whether sparse input rows (SciPy CSR, in host memory) multiply this
        device's arrays as they are: on the CPU. On CUDA they are densified per
        batch (``cupyx.scipy.sparse`` is not used: not yet measured against it)."""
        return not self.is_cuda

    def to_numpy(self, a):
        """A NumPy copy (or view, on the CPU) of a device array."""
        return a.get() if self.is_cuda else np.asarray(a)

    def synchronize(self):
        """Wait until the device has finished all queued work."""
        if self.is_cuda:
            self.xp.cuda.get_current_stream().synchronize()

    def take_rows(self, a, idx, out, scale=1.0):
        """``a[idx]`` written into ``out`` (rows ``idx`` of ``a``), returned;
        rows of another dtype (compact integer data) are cast to ``out``'s
        and multiplied by ``scale`` on the way.

        On the CPU the op table gathers (on threads, for large batches of a
        threaded fit: ``kernels/cpu_parallel.py``).
        """
        if a.dtype != out.dtype:
            return self.ops.gather_scaled(a, idx, out, scale)
        if self.is_cuda:
            return self.xp.take(a, idx, axis=0, out=out)
        return self.ops.take_rows(a, idx, out)

    def rng(self, seed=None):
        """A random Generator on this device, seeded with ``seed``."""
        with self.scope():
            return self.xp.random.default_rng(seed)

    def rng_state(self, gen):
        """The state of ``gen`` (from :meth:`rng`) as JSON-able data, so a
        checkpoint can resume its stream; None where it cannot be read out
        (CuPy's generators keep theirs in device structs with no public
        accessor: on CUDA a resumed stream starts afresh)."""
        return None if self.is_cuda else gen.bit_generator.state

    def set_rng_state(self, gen, state):
        """Give ``gen`` a state from :meth:`rng_state` (ValueError if it does not fit)."""
        if self.is_cuda:
            raise ValueError("CUDA generators cannot be given a stored state")
        set_pcg64_state(gen, state)


def set_pcg64_state(gen, state):
    """Set a NumPy PCG64 Generator's state from ``bit_generator.state`` data;
    ValueError (changing nothing) unless it is a complete PCG64 state."""
    ok = (isinstance(state, dict) and state.get("bit_generator") == "PCG64"
          and set(state) == {"bit_generator", "state", "has_uint32", "uinteger"}
          and isinstance(state["state"], dict) and set(state["state"]) == {"state", "inc"}
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**128
                  for v in (*state["state"].values(), state["has_uint32"], state["uinteger"]))
          and state["has_uint32"] in (0, 1) and state["uinteger"] < 2**32)
    if not ok:
        raise ValueError(f"not a PCG64 generator state: {str(state)[:200]}")
    gen.bit_generator.state = state


def _cpu_ops():
    # Numba costs ~0.3 s to import: only when a model first asks for fused ops.
    try:
        from fastmlp.kernels.cpu_ops import CpuOps
    except ImportError as e:
        log.warning("Numba is unavailable (%s): using the reference kernels", e)
        return None
    return CpuOps()


def _warp_ops(xp):
    # warp costs ~0.3 s to import and builds its module on first use: only when asked for
    try:
        from fastmlp.kernels.warp_ops import WarpOps
    except ImportError as e:
        raise ImportError(f'kernels="warp" needs NVIDIA Warp ({e}): '
                          'pip install "fastmlp[warp]"') from e
    return WarpOps(xp)


def _warp_on_gpu(xp, device_id):
    """The Warp table where warp-lang is installed and sees GPU ``device_id``, else None."""
    try:
        from fastmlp.kernels import warp_ops
    except ImportError:
        return None
    return warp_ops.WarpOps(xp) if warp_ops.sees_gpu(device_id) else None


def _cuda_ops(xp, device_id):
    table = _warp_on_gpu(xp, device_id)
    if table is None:
        log.warning("NVIDIA Warp is not installed or sees no GPU: using the reference kernels")
    return table


def _numeric(a):
    if a.dtype.kind not in "biuf":
        raise TypeError(f"expected an array of numbers, got one of dtype {a.dtype}")
    return a


def cuda_status(device_id=0):
    """``(usable, reason)``: whether CuPy is installed and GPU ``device_id`` usable."""
    return _cuda_check(device_id)[:2]


def _cuda_check(device_id):
    """``(usable, reason, what to do about it)``."""
    try:
        import cupy
    except ImportError as e:
        return False, f"CuPy is not installed ({e})", _INSTALL_HINT
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:   # no driver, no device, broken toolkit
        return (False, f"CuPy is installed but found no usable GPU or CUDA driver "
                       f"({type(e).__name__}: {e})", _DRIVER_HINT)
    if count == 0:
        return False, "CuPy is installed but found no GPU", _DRIVER_HINT
    if device_id >= count:
        there = '"cuda:0"' if count == 1 else f'one of "cuda:0" to "cuda:{count - 1}"'
        return (False, f"cuda:{device_id} asked for, but only {count} CUDA device(s) exist",
                f'use {there}, or pass device="cpu"')
    return True, f"{count} CUDA device(s)", None


def _parse(device):
    if isinstance(device, Backend):
        return device.name
    if not isinstance(device, str):
        raise TypeError(f'device must be a string such as "cpu", "cuda", "cuda:0" or "auto", '
                        f"got {type(device).__name__}")
    name = device.strip().lower()
    if name == "cuda":
        return "cuda:0"
    if name in ("cpu", "auto") or re.fullmatch(r"cuda:\d+", name):
        return name
    raise ValueError(f'unknown device {device!r}: use "cpu", "cuda", "cuda:N" or "auto"')


def get_backend(device="auto"):
    """The Backend for ``device``: "cpu", "cuda", "cuda:N" or "auto".

    "auto" picks cuda:0 when CuPy and a GPU are usable, else the CPU (and logs
    why, once). "cuda" without them raises RuntimeError saying what to do.
    """
    global _auto_logged
    name = _parse(device)
    if name == "auto":
        usable, reason = cuda_status(0)
        if usable:
            name = "cuda:0"
        else:
            if not _auto_logged:
                log.info("device='auto': no GPU (%s); using the CPU", reason)
                _auto_logged = True
            name = "cpu"
    if name not in _backends:
        _backends[name] = _make(name)
    return _backends[name]


def _make(name):
    if name == "cpu":
        return Backend("cpu", np)
    device_id = int(name.split(":")[1])
    usable, reason, hint = _cuda_check(device_id)
    if not usable:
        raise RuntimeError(f"device={name!r} is not usable: {reason}. To fix: {hint}.")
    import cupy
    return Backend(name, cupy, device_id)
