"""A NumPy-backed stand-in for CuPy, so the cuda-parametrised tests run on a
machine without a GPU (the root conftest.py installs it when no usable CuPy is
found; ``FASTMLP_CUPY_STANDIN=0`` turns it off).

It behaves like CuPy where fastmlp relies on it, and refuses what CuPy refuses:

- ``ndarray`` wraps a NumPy array and is not one: ``np.asarray(a)`` raises
  CuPy's TypeError; ``.get()`` / ``cupy.asnumpy`` copy to the host; NumPy
  functions and ufuncs applied to it dispatch here (``__array_function__``,
  ``__array_ufunc__``), as CuPy's do; NumPy arrays mixed into arithmetic or
  ufuncs raise CuPy's "Unsupported type"; host data is copied on the way in.
- Reductions and scalar indexing give 0-d arrays, never Python or NumPy scalars.
- Every read of device data by the host (``float``, ``int``, ``bool``,
  ``.item()``, ``.tolist()``, ``.get()``, ``asnumpy``, ``repr``, pickling, a
  stream's ``synchronize()``) is a host synchronisation, counted in ``syncs``.
- Module functions exist only where CuPy has one of that name (``_FUNCS``):
  a missing one raises AttributeError rather than quietly working here.
- No floating-point warnings (CuPy's kernels raise none).

What it cannot catch: anything of real kernels (numba.cuda, Warp, custom
kernels), numerics that differ on a GPU (cuBLAS, TF32, reduction order),
streams and asynchrony, device memory, CUDA graph capture, multiple devices.
"""

import collections
import os
import sys
import types

import numpy as _np

__version__ = "14.0.0+standin"
#: tells the test suite that this is not the real CuPy
__standin__ = True

_HERE = os.path.dirname(os.path.abspath(__file__))


class _Syncs:
    """Host synchronisations counted so far: ``count``, and ``where`` (a
    Counter of (kind, "file:line") of the caller outside the stand-in)."""

    def __init__(self):
        self.count = 0
        self.where = collections.Counter()

    def reset(self):
        self.count = 0
        self.where.clear()

    def __call__(self, kind):
        self.count += 1
        f = sys._getframe(2)
        while f is not None and f.f_code.co_filename.startswith(_HERE):
            f = f.f_back
        place = "?" if f is None else f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"
        self.where[(kind, place)] += 1


syncs = _Syncs()
_SCALARS = (int, float, bool, complex, _np.generic)


def _quiet():
    return _np.errstate(all="ignore")     # CuPy's kernels raise no floating-point warnings


def _unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def _wrap(r):
    """NumPy results as device arrays (scalars as 0-d arrays)."""
    if isinstance(r, _np.ndarray):
        out = object.__new__(ndarray)
        out._a = r
        return out
    if isinstance(r, _SCALARS):
        return _wrap(_np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(x) for x in r)
    return r


def _host_of(x, strict):
    """The NumPy array behind ``x``, recursing into lists and tuples; a NumPy
    array raises CuPy's TypeError where ``strict`` (CuPy refuses host arrays as
    operands: they must be moved with cupy.asarray first)."""
    if isinstance(x, ndarray):
        return x._a
    if strict and isinstance(x, _np.ndarray):
        raise _unsupported(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_host_of(v, strict) for v in x)
    return x


def _call(fn, args, kwargs):
    """``fn`` (a NumPy function) on the arrays behind the arguments (NumPy
    arrays refused); results wrapped, and an ``out=`` array returned as itself."""
    out = kwargs.get("out")
    args = [_host_of(a, strict=True) for a in args]
    kwargs = {k: _host_of(v, strict=True) for k, v in kwargs.items()}
    with _quiet():
        r = fn(*args, **kwargs)
    if isinstance(out, ndarray):
        return out
    return _wrap(r)


def _operand(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _SCALARS):
        return x
    raise _unsupported(x)


def _binary(name):
    def op(self, other):
        if getattr(other, "__array_ufunc__", 0) is None:
            return NotImplemented
        with _quiet():
            return _wrap(getattr(self._a, name)(_operand(other)))
    op.__name__ = name
    return op


def _inplace(name):
    def op(self, other):
        with _quiet():
            getattr(self._a, name)(_operand(other))
        return self
    op.__name__ = name
    return op


def _unary(name):
    def op(self):
        with _quiet():
            return _wrap(getattr(self._a, name)())
    op.__name__ = name
    return op


def _method(name):
    def method(self, *args, **kwargs):
        return _call(getattr(self._a, name), args, kwargs)
    method.__name__ = name
    return method


class _MemoryPointer:
    def __init__(self, a):
        self.ptr = a.ctypes.data
        self.device = cuda.Device(0)


class ndarray:
    """A device array: a NumPy array held where the host cannot read it implicitly."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = _np.empty(shape, dtype, order=order)

    # --- what the host may not do implicitly, and what it may, counted --------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None, blocking=True):
        syncs("get")
        if out is not None:
            out[...] = self._a
            return out
        return _np.array(self._a, order=order)

    def item(self):
        syncs("item")
        if self._a.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self._a.item()

    def tolist(self):
        syncs("tolist")
        return self._a.tolist()

    def __float__(self):
        syncs("float")
        return float(self._a)

    def __int__(self):
        syncs("int")
        return int(self._a)

    def __complex__(self):
        syncs("complex")
        return complex(self._a)

    def __bool__(self):
        if self._a.size == 1:
            syncs("bool")
        return bool(self._a)

    def __repr__(self):
        syncs("repr")
        return repr(self._a)

    def __str__(self):
        syncs("str")
        return str(self._a)

    def __format__(self, spec):
        syncs("format")
        return format(self._a, spec)

    def __reduce__(self):                       # pickling copies to the host, as CuPy's does
        syncs("pickle")
        return array, (self._a.copy(),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # --- attributes ------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    device = property(lambda self: cuda.Device(0))
    data = property(lambda self: _MemoryPointer(self._a))

    @property
    def __cuda_array_interface__(self):
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "descr": [("", a.dtype.str)],
                "strides": None if a.flags.c_contiguous else a.strides,
                "data": (a.ctypes.data, False), "version": 3}

    # --- containers ----------------------------------------------------------------
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key):
        key = _host_of(key, strict=False)
        r = self._a[key]
        if isinstance(r, _np.generic):          # a 0-d view, as CuPy gives
            r = self._a[(key if isinstance(key, tuple) else (key,)) + (Ellipsis,)]
        return _wrap(r)

    def __setitem__(self, key, value):
        with _quiet():
            self._a[_host_of(key, strict=False)] = _host_of(value, strict=False)

    # --- NumPy's protocols: NumPy functions on device arrays run here ------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for x in inputs + tuple(kwargs.get("out", ())):
            if isinstance(x, _np.ndarray):
                raise _unsupported(x)
            if not isinstance(x, (ndarray,) + _SCALARS):
                return NotImplemented
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            kwargs["out"] = out[0]
        fn = ufunc if method == "__call__" else getattr(ufunc, method)
        return _call(fn, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        module = sys.modules[__name__]
        try:
            for part in func.__module__.split(".")[1:]:
                module = getattr(module, part)
            impl = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        if impl is func or not all(issubclass(t, (ndarray, _np.ndarray)) for t in types):
            return NotImplemented
        return impl(*args, **kwargs)


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
              "xor", "lshift", "rshift"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _binary(f"__r{_name}__"))
    setattr(ndarray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", _unary(f"__{_name}__"))
for _name in ("astype", "reshape", "ravel", "flatten", "copy", "view", "transpose", "squeeze",
              "swapaxes", "sum", "prod", "mean", "var", "std", "max", "min", "argmax", "argmin",
              "any", "all", "clip", "round", "cumsum", "take", "repeat", "nonzero", "dot", "conj",
              "diagonal", "argsort", "sort", "fill"):
    setattr(ndarray, _name, _method(_name))
del _name


# --- module functions --------------------------------------------------------------------

def _copy_in(obj, dtype=None, order="K", ndmin=0):
    """Host data (nested sequences of device arrays included) copied to the
    device, in native byte order as CuPy stores it."""
    with _quiet():
        host = _np.array(_host_of(obj, strict=False), dtype=dtype, order=order, ndmin=ndmin)
    if not host.dtype.isnative:
        host = host.astype(host.dtype.newbyteorder("="))
    return _wrap(host)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        a = obj._a
        if copy is False and (dtype is None or _np.dtype(dtype) == a.dtype) and ndmin <= a.ndim:
            return obj
        with _quiet():
            return _wrap(_np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin))
    return _copy_in(obj, dtype, order, ndmin)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    return array(a, dtype, copy=copy if copy is not None else False, order=order or "K")


asanyarray = asarray


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):              # CuPy's takes device arrays only
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got "
                        f"{type(a).__name__})")
    if (dtype is None or _np.dtype(dtype) == a.dtype) and a._a.flags.c_contiguous \
            and a.ndim > 0:
        return a
    with _quiet():
        return _wrap(_np.ascontiguousarray(a._a, dtype=dtype).reshape(a.shape or (1,)))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream, order, out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


def is_available():
    return True


#: NumPy functions delegated as they are, each one CuPy has under the same name
_FUNCS = frozenset("""
empty zeros ones full arange eye identity linspace empty_like zeros_like ones_like full_like
copy matmul dot vdot outer inner tensordot einsum take take_along_axis put where nonzero
exp exp2 expm1 log log2 log10 log1p logaddexp sqrt square cbrt power reciprocal negative
positive sign abs absolute fabs add subtract multiply divide true_divide floor_divide mod
remainder maximum minimum fmax fmin clip around round rint floor ceil trunc
tanh sinh cosh sin cos tan arctan arctanh
isfinite isnan isinf nan_to_num signbit logical_and logical_or logical_not logical_xor
equal not_equal less less_equal greater greater_equal allclose isclose array_equal
sum prod mean var std max amax min amin argmax argmin any all cumsum count_nonzero
bincount unique sort argsort concatenate stack vstack hstack reshape ravel transpose
squeeze expand_dims broadcast_to atleast_1d atleast_2d copyto
""".split())
#: re-exported from NumPy, as CuPy does
_NUMPY = frozenset("""
dtype finfo iinfo result_type can_cast promote_types newaxis nan inf pi e
float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool_ intp
integer floating number generic inexact signedinteger unsignedinteger complexfloating
""".split())


def __getattr__(name):
    if name in _NUMPY:
        return getattr(_np, name)
    if name in _FUNCS:
        fn = getattr(_np, name)

        def delegated(*args, **kwargs):
            return _call(fn, args, kwargs)
        delegated.__name__ = delegated.__qualname__ = name
        globals()[name] = delegated           # made once
        return delegated
    raise AttributeError(f"the CuPy stand-in has no cupy.{name}: add it to _FUNCS in "
                         f"{__file__} if real CuPy has it")


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass


_pool, _pinned_pool = _MemoryPool(), _MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pinned_pool


# --- cupy.cuda and cupy.random ---------------------------------------------------------

def _submodule(name, doc):
    module = types.ModuleType(f"{__name__}.{name}", doc)
    sys.modules[module.__name__] = module
    return module


cuda = _submodule("cuda", "Devices and streams of the stand-in: one device, one stream.")
cuda.runtime = _submodule("cuda.runtime", "The CUDA runtime calls fastmlp makes.")


class CUDARuntimeError(RuntimeError):
    """CuPy's: made from a CUDA status code."""

    _NAMES = {100: "cudaErrorNoDevice: no CUDA-capable device is detected",
              101: "cudaErrorInvalidDevice: invalid device ordinal",
              35: "cudaErrorInsufficientDriver: CUDA driver version is insufficient for "
                  "CUDA runtime version"}

    def __init__(self, status):
        self.status = status
        super().__init__(self._NAMES.get(status, f"cudaError {status}"))


#: GPUs the stand-in shows; 0 plays a machine with CuPy installed and no usable GPU (the
#: test suite sets it per test, and in the environment for the processes a test spawns)
devices = int(os.environ.get("FASTMLP_CUPY_STANDIN_DEVICES", "1"))


def _device_count():
    if devices == 0:
        raise CUDARuntimeError(100)
    return devices


def _device_properties(device_id):
    _check_device(device_id)
    return {"name": b"CuPy stand-in (NumPy)", "totalGlobalMem": 0, "major": 9, "minor": 0}


def _check_device(device_id):
    if not 0 <= device_id < _device_count():
        raise CUDARuntimeError(101)


cuda.runtime.CUDARuntimeError = CUDARuntimeError
cuda.runtime.getDeviceCount = _device_count
cuda.runtime.getDeviceProperties = _device_properties
cuda.runtime.getDevice = lambda: 0


class Device:
    """A CUDA device; a context manager that makes it current."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def __enter__(self):
        _check_device(self.id)
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        _check_device(self.id)

    def synchronize(self):
        syncs("device.synchronize")

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    """A CUDA stream; a context manager that makes it current."""

    _current = []

    def __init__(self, null=False, non_blocking=False, ptr=0):
        self.ptr = 0 if null else id(self)

    def synchronize(self):
        syncs("stream.synchronize")

    def use(self):
        Stream._current[:] = [self]
        return self

    def __enter__(self):
        Stream._current.append(self)
        return self

    def __exit__(self, *exc):
        Stream._current.pop()
        return False


Stream.null = Stream(null=True)
cuda.Device, cuda.Stream = Device, Stream
cuda.get_current_stream = lambda device_id=None: (Stream._current or [Stream.null])[-1]
cuda.is_available = is_available


random = _submodule("random", "Device Generators of the stand-in (NumPy's, wrapped).")


class Generator:
    """``cupy.random.Generator``: only the methods CuPy's has (no ``normal``,
    no ``permutation``); results on the device, ``out=`` device arrays. Its
    stream differs from NumPy's for the same seed, as CuPy's (XORWOW) does."""

    _METHODS = frozenset("""random uniform integers standard_normal standard_exponential
        exponential standard_gamma gamma beta binomial poisson geometric chisquare f power
        dirichlet hypergeometric logseries""".split())

    def __init__(self, seed):
        if isinstance(seed, (int, _np.integer)):
            seed = [int(seed), 0xC0DA]
        self._gen = _np.random.default_rng(seed)

    def __getattr__(self, name):
        if name not in Generator._METHODS:
            raise AttributeError(f"cupy.random.Generator has no attribute {name!r}")
        fn = getattr(self._gen, name)

        def method(*args, **kwargs):
            return _call(fn, args, kwargs)
        return method


random.Generator = Generator
random.default_rng = lambda seed=None: seed if isinstance(seed, Generator) else Generator(seed)
