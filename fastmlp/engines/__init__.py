"""Step engines: the ways a training step can run, and the one factory that
picks among them (tiny-cuda-nn's ``create_network`` is the model).

=============  ==========================  =====================================
engine         file                        runs
=============  ==========================  =====================================
``cpu-rows``   ``engines/cpu_rows.py``     one sample per compiled call, loops
                                           over the non-zero inputs
                                           (``kernels/cpu_row_step.py``)
``cpu-gemm``   ``engines/cpu_gemm.py``     one compiled call per step, BLAS
                                           GEMMs (``kernels/cpu_gemm_step.py``)
``warp``       ``engines/warp.py``         the whole step as NVIDIA Warp launches
                                           replayed from one graph
                                           (``kernels/warp_step.py``): on CUDA;
                                           on the CPU when named
``layer``      ``engines/layer.py``        layer by layer on any device, any
                                           loss, dropout and optimizer
=============  ==========================  =====================================

:func:`create` walks :data:`ENGINES` in order and takes the first engine
that does not decline the case; the choice, its reason and every refusal
before it come back as a :class:`StepPath` (the model keeps the last one as
``model.step_path``) and go to the ``fastmlp`` logger at DEBUG level. A new
way to run a step is one module with an :class:`Engine` subclass and one
line in :data:`ENGINES`.
"""

import logging

from fastmlp import sparse
from fastmlp.engines.base import Case, Engine, StepPath
from fastmlp.engines.cpu_gemm import GemmStepEngine
from fastmlp.engines.cpu_rows import RowLoopEngine
from fastmlp.engines.layer import LayerEngine
from fastmlp.engines.warp import WarpEngine

log = logging.getLogger("fastmlp")

#: every engine, most specialised first; the first that covers a case runs it
ENGINES = (
    RowLoopEngine,
    GemmStepEngine,
    WarpEngine,
    LayerEngine,
)
#: what ``MLP(engine=...)`` accepts: "auto" (the factory's choice) or an engine name
NAMES = ("auto",) + tuple(e.name for e in ENGINES)
_SAMPLE_ROWS = 256

__all__ = ["Case", "Engine", "StepPath", "ENGINES", "NAMES", "check_name", "create"]


def check_name(name):
    """``name`` if it names an engine or is "auto", else ValueError listing them."""
    if name not in NAMES:
        raise ValueError(f"unknown engine {name!r}: choose one of {list(NAMES)}")
    return name


def create(net, bufs, batch_size, train=True, sample=None, name="auto"):
    """The engine for the network ``net`` (a :class:`fastmlp.net.Net`) on the
    buffers ``bufs`` (a :class:`fastmlp.net.Buffers`) at ``batch_size``, and
    the :class:`StepPath` saying why: ``(engine, path)``.

    ``train`` says whether dropout applies, and ``sample`` holds the
    prepared inputs the steps will see (or some of them), from which the
    share of non-zero inputs is measured for a batch of one. ``name`` asks
    for one engine; ValueError says why when it cannot run this case.
    """
    check_name(name)
    rows_sparse = sparse.is_sparse(sample)
    # the share of non-zero inputs only says which engine is faster: a named one runs anyway
    choosing = name == "auto" and batch_size == 1 and sample is not None
    density = (sparse.density(sample) if rows_sparse else _density(bufs.backend.xp, sample)) \
        if choosing else None
    case = Case(batch_size, train, density, named=name != "auto", sparse=rows_sparse)
    declined = {}
    for cls in ENGINES:
        if name != "auto" and cls.name != name:
            continue
        why = cls.declines(net, bufs, case)
        if why is None and case.sparse and not cls.sparse_inputs:
            why = "takes dense input rows; sparse ones go to the layer engine"
        if why is None:
            engine = cls(net, bufs, case)
            path = StepPath(cls.name, engine.summary, declined)
            log.debug("fastmlp step engine for %s at batch size %d%s: %s", list(net.sizes),
                      batch_size, "" if train else " (no dropout)", path)
            return engine, path
        declined[cls.name] = why
    raise ValueError(f"engine {name!r} cannot run this model at batch size {batch_size}: "
                     f"{declined[name]}; pass engine='auto' to let fastmlp choose")


def _density(xp, x):
    """The share of non-zero entries in up to 256 rows spread over ``x``."""
    rows = x[::max(1, x.shape[0] // _SAMPLE_ROWS)][:_SAMPLE_ROWS]
    return float(xp.count_nonzero(rows)) / max(1, rows.size)
