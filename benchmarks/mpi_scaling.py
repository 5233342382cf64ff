"""Weak scaling of data-parallel training over MPI (``fit(comm=...)``).

784-128-64-10, relu, Adam, MNIST's 60,000 training images (random data of
that shape when MNIST is not found), a fixed batch per rank: each run is
``mpiexec -n P`` with one thread per rank (``NUMBA_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1``), global batch P x the per-rank batch. Prints the
training throughput (samples per second, best epoch of ``--epochs``), its
ratio to one rank, and the share of the step spent in the gradient's
all-reduce.

    python benchmarks/mpi_scaling.py [--ranks 1,2] [--batches 512,64] [--data DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def child(args):
    import numpy as np
    from mpi4py import MPI

    import fastmlp as fm
    from fastmlp import distributed
    engines = []
    init = distributed.AllReduceEngine.__init__

    def kept(self, *a, **k):
        init(self, *a, **k)
        engines.append(self)
    distributed.AllReduceEngine.__init__ = kept
    try:
        from fastmlp.datasets import load_mnist
        (x, y), _ = load_mnist(args.data, download=False)
        source = "MNIST"
    except Exception:                           # no MNIST here: the same shapes
        rng = np.random.default_rng(0)
        x, y, source = rng.random((60000, 784), dtype=np.float32), rng.integers(0, 10, 60000), \
            "random"
    comm = MPI.COMM_WORLD
    model = fm.MLP([784, 128, 64, 10], seed=0, device="cpu")
    batch = args.batch * comm.size
    t = time.perf_counter()
    hist = model.fit(x, y, epochs=args.epochs, batch_size=batch, optimizer="adam", comm=comm)
    total = time.perf_counter() - t
    best = min(hist.history["seconds"][1:] or hist.history["seconds"])
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "batch": args.batch, "source": source,
                          "samples_per_s": len(x) / best, "reduce_share":
                          engines[0].reduce_seconds / total,
                          "loss": hist.history["train_loss"][-1]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--batches", default="512,64", help="per-rank batch sizes")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data", default=os.environ.get("FASTMLP_DATA"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=512, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("no mpiexec: pip install 'fastmlp[mpi]'")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    print(f"{os.cpu_count()} CPUs; one thread per rank")
    print("| per-rank batch | ranks | samples/s | vs 1 rank | all-reduce share of the fit |")
    print("|---|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        base = None
        for ranks in [int(r) for r in args.ranks.split(",")]:
            cmd = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__),
                   "--child", "--batch", str(batch), "--epochs", str(args.epochs)]
            if args.data:
                cmd += ["--data", args.data]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            base = base or r["samples_per_s"]
            print(f"| {batch} | {ranks} | {r['samples_per_s']:,.0f} | "
                  f"{r['samples_per_s'] / base:.2f}x | {r['reduce_share']:.1%} |", flush=True)
    print(f"data: {r['source']}")


if __name__ == "__main__":
    main()
