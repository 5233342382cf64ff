"""Data-parallel training over MPI: ``model.fit(x, y, comm=MPI.COMM_WORLD)``.

Each of the communicator's P ranks runs the same fit. Every rank draws the
same shuffled order (the model's seeded RNG), and each global batch of
``batch_size`` rows is cut into P consecutive parts. Rank r trains on part r.
It computes the gradient of its part (any engine's ``grad``) and weights it
by its share of the batch (rows, or the weights' sum, where the loss is a
mean). The flat gradient buffer is then summed over the ranks by one
``Allreduce``: one call, the whole buffer, in place. Every rank applies the
same update to the same parameters, so the models stay identical.

The epoch's loss and hit count are summed over the ranks, so every rank
logs the same History. Decisions taken on them (divergence, early stopping,
callbacks) are therefore the same everywhere. Only rank 0 shows progress.
P ranks at global batch B give one process's model at batch B, up to the
order of floating-point sums: ``tests/test_distributed.py`` holds them within
1e-10 (float64) and shows that they part when the all-reduce is skipped.

Needs ``mpi4py`` with an MPI library (``pip install "fastmlp[mpi]"``, which
brings the MPICH wheel); ``import fastmlp`` does not import it. Run with
``mpiexec -n 4 python train.py``. Under Slurm, ``srun -n 4 python
train.py`` does the same.

Faults: inputs are checked on every rank before the first step, and a
refusal on any rank is the same ValueError on all (naming the ranks). An
exception on one rank during training is printed with its rank and aborts
the job (``MPI_Abort``); a rank that dies is reported by the launcher, which
stops the others (MPICH's ``mpiexec`` names the rank and its exit code). Only
rank 0 runs callbacks that write files (``Callback.writes_files``).

Inputs on disk (what ``fit`` streams: memmaps, h5py, zarr) are read row by
row: each rank reads only the rows of its parts.

Validation and the training metrics are sharded too (:func:`evaluate`), and
sparse inputs (SciPy CSR, ``fastmlp.sparse``) are taken by rows as in one
process. Not yet here: a CUDA model's gradient goes through host memory (not
NCCL on device buffers).
"""

import time

import numpy as np

#: set by MPI launchers for each rank: MPICH's and Intel MPI's hydra (PMI), Open MPI,
#: MVAPICH, and Slurm's srun for the tasks of a step
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                   "SLURM_STEP_NUM_TASKS")


def launched():
    """``MPI.COMM_WORLD`` when this process is one of several ranks started by
    an MPI launcher (``mpiexec -n 4``, ``srun -n 4``); else None, without
    importing mpi4py. What ``fastmlp train`` trains over."""
    import os
    sizes = [os.environ.get(v) for v in _SIZE_VARIABLES]
    if not any(s and s.isdigit() and int(s) > 1 for s in sizes):
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(f"started as one of several MPI ranks, but mpi4py is missing ({e}): "
                           "pip install 'fastmlp[mpi]'") from None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def check(comm):
    """``comm`` if it is an mpi4py communicator, else TypeError."""
    if not all(hasattr(comm, a) for a in ("Allreduce", "allreduce", "Get_rank", "Get_size")):
        raise TypeError(f"comm must be an mpi4py communicator (MPI.COMM_WORLD), got "
                        f"{type(comm).__name__}")
    return comm


def agree(comm, work):
    """``work()`` on every rank; if it raised on any, the same ValueError on
    every rank, naming the ranks and their errors (so a bad input on one rank
    stops them all before the first step); else ``work()``'s result."""
    try:
        result, error = work(), None
    except (ValueError, TypeError, OSError) as e:
        result, error = None, e
    errors = comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        said = "; ".join(f"rank {r}: {e}" for r, e in failed)
        raise ValueError(f"fit(comm=...) refused on {len(failed)} of {comm.Get_size()} "
                         f"ranks: {said}") from error
    return result


def abort_on_failure(comm, run):
    """``run()``; an exception raised on this rank alone would leave the others
    waiting in their next all-reduce, so it is printed, naming this rank, and
    the whole job is aborted (``MPI_Abort``). Exceptions every rank raises
    alike (a diverged fit: its decision is taken on the summed loss) pass."""
    from fastmlp.train import DivergedError
    try:
        return run()
    except DivergedError:
        raise
    except BaseException as e:
        import sys
        import traceback
        print(f"fastmlp: rank {comm.Get_rank()} of {comm.Get_size()} failed; aborting every "
              f"rank:\n{''.join(traceback.format_exception(e))}", file=sys.stderr, flush=True)
        comm.Abort(1)
        raise


def part(lo, hi, rank, size):
    """Rank ``rank``'s rows of the global batch ``lo:hi``: ``(start, stop)``,
    consecutive parts whose sizes differ by at most one."""
    n = hi - lo
    return lo + rank * n // size, lo + (rank + 1) * n // size


def announce(comm):
    """Log (``fastmlp`` logger, INFO) this rank's PID and host: a launcher that
    reports a dead process by its PID (MPICH's) is then read as a rank."""
    import logging
    import os
    import socket
    logging.getLogger("fastmlp").info("fastmlp: rank %d of %d is PID %d on %s", comm.Get_rank(),
                                      comm.Get_size(), os.getpid(), socket.gethostname())


class AllReduceEngine:
    """An engine's steps as data-parallel steps: the local gradient, weighted
    by this rank's share of the global batch (``source.batch_total``, from a
    :class:`fastmlp.loop.Sharded` source), summed over the ranks, then the
    optimizer's update. Everything else is the wrapped engine's."""

    def __init__(self, inner, comm, source):
        from mpi4py import MPI
        # source.batch_total: the global batch's rows or weights' sum, which every rank
        # derives from the data it holds, so a step needs no second collective
        self.inner, self.comm, self.source, self._sum = inner, comm, source, MPI.SUM
        self._in_place = MPI.IN_PLACE
        #: seconds spent in the gradient's all-reduce (and its host copies) this fit
        self.reduce_seconds = 0.0

    def __getattr__(self, name):                 # name, summary, running, bufs, net, ...
        return getattr(self.inner, name)

    def train_epoch(self, *args, **kwargs):
        return None                              # batch by batch: each step reduces

    def train_step(self, x, y, targets, optimizer, weights=None):
        bufs, net = self.inner.bufs, self.inner.net
        n = x.shape[0]
        share = float(n if weights is None else weights.sum())
        if n:
            loss, hits = self.inner.grad(x, y, targets, weights)
        else:                                    # fewer rows than ranks: no part here
            bufs.grads[...] = 0
            loss, hits = 0.0, (0 if targets is not None else None)
        t = time.perf_counter()
        total = self.source.batch_total
        if net.reduction == "mean" and share != total:   # the local mean, made the global one
            bufs.grads *= bufs.grads.dtype.type(share / total if total else 0.0)
        self.reduce(bufs.grads)
        self.reduce_seconds += time.perf_counter() - t
        optimizer.step([bufs.params], [bufs.grads])
        return loss, hits

    def reduce(self, a):
        """Sum the device array ``a`` over the ranks, in place (through host
        memory where ``a`` is not host memory)."""
        be = self.inner.bufs.backend
        host = be.to_numpy(a)
        self.comm.Allreduce(self._in_place, host, op=self._sum)
        if host is not a:
            a[...] = be.asarray(host)


def evaluate(model, data, metrics, comm, loss=True):
    """Scores of a data-parallel fit: the loss and accuracy (with ``loss``) and
    the per-sample ``metrics`` of each rank's consecutive part of ``data`` (a
    Prepared), combined into the whole set's (means weighted by each part's
    rows or weights' sum; a summed loss summed). A metric that is a plain
    function (it may score the set as a whole) is scored on the whole set by
    every rank."""
    from fastmlp import metrics as metrics_
    from fastmlp.prepared import Prepared
    n = data.x.shape[0]
    a, b = part(0, n, comm.Get_rank(), comm.Get_size())
    mine = Prepared(*(None if v is None else v[a:b] for v in data))
    shared = [m for m in metrics if not isinstance(m, metrics_._Function)]
    whole = [m for m in metrics if isinstance(m, metrics_._Function)]
    logs = {}
    if b > a:
        logs = model.evaluate(mine) if loss else {}
        logs.update(metrics_.scores(model, mine, shared))
    count = float(b - a if mine.weights is None else mine.weights.sum())
    heads = (["loss"] + (["accuracy"] if model.loss_fn.classifier else [])) if loss else []
    names = list(dict.fromkeys(heads + [m.name for m in shared]))
    # means are weighted by each part's count; a summed loss is just summed
    mean = {k: not (k == "loss" and model.reduction == "sum") for k in names}
    total, *sums = sum_over_ranks(comm, count, *[logs.get(k, 0.0) * (count if mean[k] else 1.0)
                                                 for k in names])
    out = {k: v / total if mean[k] else v for k, v in zip(names, sums)}
    out.update(metrics_.scores(model, data, whole))
    return out


def sum_over_ranks(comm, *values):
    """The per-rank numbers (Python or 0-d device scalars, None kept) summed
    over the ranks, as floats."""
    mine = [0.0 if v is None else float(v) for v in values]
    summed = np.array(mine)
    from mpi4py import MPI
    comm.Allreduce(MPI.IN_PLACE, summed, op=MPI.SUM)
    return [None if v is None else float(s) for v, s in zip(values, summed)]
