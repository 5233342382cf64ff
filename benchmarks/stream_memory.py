"""Peak memory of one epoch on a memmap much larger than a chunk: uint8 and
float32 rows of MNIST's shape, against the issue's bounds (0.25x and 0.1x
the data + 200 MB). Each run is a fresh process; the figures are its peak
RSS (VmHWM) and its RSS before fit.

    .venv/bin/python benchmarks/stream_memory.py [--rows 2000000] [--dir /tmp]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

_RUN = textwrap.dedent("""
    import sys, time
    import numpy as np
    import fastmlp as fm
    path, dtype, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024
    y = np.arange(n) % 10
    scale = 1 / 255 if dtype == "uint8" else 1.0
    fm.MLP([784, 128, 10], seed=0, device="cpu", input_scale=scale).fit(
        np.zeros((512, 784), dtype), y[:512], epochs=1, batch_size=128)    # compile first
    x = np.memmap(path, dtype=dtype, mode="r", shape=(n, 784))
    before = status("VmRSS:")
    model = fm.MLP([784, 128, 10], seed=0, device="cpu", input_scale=scale)
    start = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=128)
    seconds = time.perf_counter() - start
    print(before, status("VmHWM:"), seconds)
""")


def write(path, dtype, rows):
    block = np.random.default_rng(0).integers(0, 256, (100_000, 784), dtype=np.uint8)
    block = block.astype(dtype) / (255 if dtype == "float32" else 1)
    block = block.astype(dtype)
    with open(path, "wb") as f:
        for lo in range(0, rows, len(block)):
            f.write(block[:min(len(block), rows - lo)].tobytes())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--dir", default=None, help="where to write the data (default: a temp dir)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for dtype, factor in (("uint8", 0.25), ("float32", 0.1)):
            path = os.path.join(d, f"x.{dtype}")
            write(path, dtype, args.rows)
            data_mib = os.path.getsize(path) / 2**20
            out = subprocess.run([sys.executable, "-c", _RUN, path, dtype, str(args.rows)],
                                 capture_output=True, text=True, check=True).stdout.split()
            before, peak, seconds = (float(v) for v in out)
            bound = factor * data_mib + 200
            print(f"{dtype:8s} {args.rows:,} x 784 memmap, {data_mib:,.0f} MiB: peak RSS "
                  f"{peak:,.0f} MiB (before fit {before:,.0f} MiB), bound {factor}x + 200 = "
                  f"{bound:,.0f} MiB: {'within' if peak <= bound else 'OVER'}; one epoch "
                  f"{seconds:.1f} s ({args.rows / seconds:,.0f} samples/s)")
            os.remove(path)


if __name__ == "__main__":
    main()
