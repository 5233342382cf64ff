"""The MNIST recipe's epoch on a CPU shared with busy processes.

    python benchmarks/contention.py [--data DIR] [--runs 3] [--systems fastmlp,pytorch]
                                    [--busy spin,mixed] [--others 1]

One epoch of the recipe (784-128-64-10, relu, Adam 1e-3, batch 128, shuffled:
469 steps over MNIST's 60,000 training images) is timed in a fresh process,
once on an idle machine and then beside ``--others`` CPU-bound processes of
each ``--busy`` kind (default 1; on a bigger machine try ``ncpu - 1``):

- ``spin``: ``while True: pass``;
- ``mixed``: a process that mixes NumPy compute with system calls (small
  files written, read and deleted, and a subprocess started now and then),
  like a test suite.

Each system's epoch is timed after a warm-up epoch in the same process
(compiles, first-touch), ``--runs`` times per condition, the conditions
alternating; the table gives each run's seconds and the ratio to the
system's idle median, and the busy ratio of fastmlp over the peers. The
peers are the installed ones among PyTorch (its own thread defaults) and
fastmlp with ``FASTMLP_THREADS`` unset.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

EPOCH = r"""
import sys, time, numpy as np
system, data = sys.argv[1], sys.argv[2] or None
from fastmlp.datasets import load_mnist
(x, y), _ = load_mnist(data)
x = np.ascontiguousarray(x, np.float32)                 # scaled to [0, 1] already
y = np.asarray(y, np.int64)
if system == "fastmlp":
    import fastmlp as fm
    m = fm.MLP([784, 128, 64, 10], activation="relu", device="cpu", seed=0)
    fit = lambda: m.fit(x, y, epochs=1, batch_size=128, optimizer="adam", lr=1e-3)
elif system == "pytorch":
    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    def fit():
        for idx in torch.randperm(len(xt)).split(128):
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
fit()                                      # warm-up: compiles, first touch
t = time.perf_counter()
fit()
print(time.perf_counter() - t)
"""

SPIN = "while True:\n    pass\n"

MIXED = r"""
import os, subprocess, sys, tempfile, numpy as np
rng = np.random.default_rng(0)
a = rng.random((200, 200))
d = tempfile.mkdtemp()
i = 0
while True:
    a = np.tanh(a @ a.T / 200)
    p = os.path.join(d, f"f{i % 50}")
    with open(p, "wb") as f:
        f.write(a.tobytes()[:4096])
    with open(p, "rb") as f:
        f.read()
    os.remove(p)
    i += 1
    if i % 200 == 0:
        subprocess.run([sys.executable, "-c", "pass"])
"""

BUSY = {"spin": SPIN, "mixed": MIXED}


def installed(name):
    """Whether the peer ``name`` can run here."""
    module = {"pytorch": "torch", "fastmlp": "fastmlp"}[name]
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([sys.executable, "-c", code]).returncode == 0


def epoch(system, data):
    """Seconds of one warm epoch of ``system``, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", EPOCH, system, data or ""], capture_output=True,
                         text=True, check=True, timeout=1800).stdout
    return float(out.split()[-1])


def beside(kind, others, system, data):
    """:func:`epoch` with ``others`` busy processes of ``kind`` running."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY[kind]], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(others)]
    try:
        time.sleep(0.5)                    # let them get going
        return epoch(system, data)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("FASTMLP_DATA"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--systems", default="fastmlp,pytorch")
    ap.add_argument("--busy", default="spin,mixed")
    ap.add_argument("--others", type=int, default=1)
    ap.add_argument("--out", help="write the seconds as JSON here")
    args = ap.parse_args(argv)
    systems = [s for s in args.systems.split(",") if installed(s)]
    kinds = args.busy.split(",")
    conditions = ["idle"] + [f"{k} x{args.others}" for k in kinds]
    seconds = {(s, c): [] for s in systems for c in conditions}
    for run in range(args.runs):
        for cond in conditions:
            for s in systems:
                if cond == "idle":
                    t = epoch(s, args.data)
                else:
                    t = beside(cond.split()[0], args.others, s, args.data)
                seconds[(s, cond)].append(t)
                print(f"run {run + 1} {cond:10s} {s:8s} {t:7.2f} s", flush=True)
    print(f"\nMNIST recipe epoch (469 steps of 128, Adam, relu), {os.cpu_count()} CPUs, "
          f"{args.runs} runs\n")
    print("| system | condition | seconds per run | x its idle median |")
    print("|---|---|---|---|")
    for s in systems:
        idle = statistics.median(seconds[(s, "idle")])
        for c in conditions:
            ts = seconds[(s, c)]
            print(f"| {s} | {c} | {', '.join(f'{t:.2f}' for t in ts)} | "
                  f"{', '.join(f'{t / idle:.2f}' for t in ts)} |")
    if "fastmlp" in systems:
        for s in systems:
            if s == "fastmlp":
                continue
            for c in conditions:
                ratios = [p / f for f, p in zip(seconds[("fastmlp", c)], seconds[(s, c)])]
                print(f"{s} / fastmlp, {c}: " + ", ".join(f"{r:.2f}x" for r in ratios))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({f"{s}|{c}": v for (s, c), v in seconds.items()}, f, indent=1)


if __name__ == "__main__":
    main()
