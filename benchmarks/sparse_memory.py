"""Peak memory of a fit on a large sparse input: 1,000,000 x 100,000 CSR with
0.1% non-zeros (100 per row), float32 values, int32 indices (808 MB in all).

A child process builds the CSR's arrays and saves them (so that their
temporaries do not count); a second child loads them, fits 100000-64-2 on it
for ``--epochs`` (``--optimizer``, ``--batch`` rows a batch) and reports its peak RSS
(``ru_maxrss``, everything the process ever held: Python, NumPy, the CSR,
the model). The goal (issue 24): below the CSR's own size + 300 MB.

    python benchmarks/sparse_memory.py [--rows 1000000] [--cols 100000] [--batch 1024]
        [--optimizer adam|sgd] [--on-nonfinite raise|ignore]

What the model itself holds counts too: 100000-64-2 has 6.4M parameters (25.6 MB
each copy): parameters and gradients, Adam's two moments, and fit's copy of
the last finite parameters and optimizer state (``on_nonfinite="raise"``).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

BUILD = textwrap.dedent("""
    import sys, numpy as np
    rows, cols, per_row, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(0)
    step = cols // per_row                  # one non-zero in each of per_row column bands:
    indices = np.tile(np.arange(per_row, dtype=np.int32) * step, rows)   # sorted, unique
    indices += rng.integers(0, step, indices.size, dtype=np.int32)
    np.save(out + "/indices.npy", indices)
    del indices
    np.save(out + "/data.npy", rng.random(rows * per_row, dtype=np.float32))
    np.save(out + "/indptr.npy", np.arange(0, rows * per_row + 1, per_row, dtype=np.int32))
    label = (np.arange(rows) * 2654435761 % 1000 < 500).astype(np.int64)
    np.save(out + "/y.npy", label)
""")

FIT = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, scipy.sparse as sp
    import fastmlp as fm
    rows, cols, out, batch, epochs = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                      int(sys.argv[4]), int(sys.argv[5]))
    optimizer, on_nonfinite = sys.argv[6], sys.argv[7]
    x = sp.csr_matrix((np.load(out + "/data.npy"), np.load(out + "/indices.npy"),
                       np.load(out + "/indptr.npy")), shape=(rows, cols))
    y = np.load(out + "/y.npy")
    csr = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    model = fm.MLP([cols, 64, 2], seed=0, device="cpu")
    t = time.perf_counter()
    hist = model.fit(x, y, epochs=epochs, batch_size=batch, optimizer=optimizer,
                     lr=1e-3 if optimizer == "adam" else 0.1, on_nonfinite=on_nonfinite)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    print(json.dumps({"csr_bytes": csr, "rss_after_load": loaded, "peak_rss": peak,
                      "fit_seconds": seconds, "train_loss": hist.history["train_loss"],
                      "engine": str(model.step_path).split(":")[0]}))
""")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=100_000)
    ap.add_argument("--per-row", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    ap.add_argument("--on-nonfinite", default="raise", choices=["raise", "ignore"],
                    help="'ignore' drops fit's copy of the last finite parameters and "
                         "optimizer state (the divergence guard)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-c", BUILD, str(args.rows), str(args.cols),
                        str(args.per_row), out], check=True)
        done = subprocess.run([sys.executable, "-c", FIT, str(args.rows), str(args.cols), out,
                               str(args.batch), str(args.epochs), args.optimizer,
                               args.on_nonfinite], check=True,
                              capture_output=True, text=True, env=os.environ)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    mb = 1 << 20
    goal = r["csr_bytes"] + 300 * mb
    print(f"CSR {args.rows} x {args.cols}, {args.per_row} non-zeros a row: "
          f"{r['csr_bytes'] / mb:.0f} MiB")
    print(f"peak RSS of the fitting process: {r['peak_rss'] / mb:.0f} MiB "
          f"(after loading the CSR: {r['rss_after_load'] / mb:.0f} MiB)")
    print(f"goal: below CSR + 300 MiB = {goal / mb:.0f} MiB: "
          f"{'met' if r['peak_rss'] < goal else 'NOT met'} "
          f"(margin {(goal - r['peak_rss']) / mb:.0f} MiB)")
    print(f"fit: {args.optimizer}, on_nonfinite={args.on_nonfinite!r}, {args.epochs} epoch(s) "
          f"at batch {args.batch} on {r['engine']}, "
          f"{r['fit_seconds']:.1f} s, train_loss {r['train_loss']}")


if __name__ == "__main__":
    main()
