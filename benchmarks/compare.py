"""Training throughput of fastmlp side by side with the tools users would pick.

The same work on every system that is installed, in one process: one SGD
training step (forward, backward, update) of 784-128-64-10, sigmoid, softmax
cross-entropy, float32, on a fixed random batch, per batch size (for
fastmlp, the step as ``fit`` runs it: the step engine's ``train_step``). Systems are
interleaved within each repeat (their order rotating), each timed over a block
of steps calibrated to ~0.1 s, and the median of the repeats is reported. A
large float32 GEMM is timed in the same run to give the machine's peak, and
the fraction of it each system reaches.

    python benchmarks/compare.py                     # CPU, every installed peer
    python benchmarks/compare.py --device cuda --batch-sizes 64,1024,65536 \
        --systems fastmlp,fastmlp-fused,fastmlp-reference,pytorch,jax

The table names the step engine fastmlp ran at each batch size
(``fastmlp.engines``). Peers: PyTorch eager (default threads, and one
thread), JAX (``jax.jit`` on the whole update step), scikit-learn's
``MLPClassifier`` (``partial_fit``, logistic, sgd); missing ones are skipped
with a message. Writes JSON, and a PNG when matplotlib is
installed, to ``--out``.
"""

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import fastmlp as fm
from fastmlp import plot as fmplot

SIZES = (784, 128, 64, 10)
LR = 0.01


def flops_per_sample(sizes=SIZES):
    """FLOPs of one training step per sample, counting the GEMMs only.

    For each layer of fan_in x fan_out: the forward product X @ W costs
    2 * fan_in * fan_out, the weight gradient A^T @ dZ the same, and the input
    gradient dZ @ W^T the same again for every layer but the first (nothing
    needs the gradient of the data). Bias, activation, softmax and the update
    are O(sum of widths) per sample and left out. For 784-128-64-10:
    4 * 109,184 + 2 * 8,832 = 454,400.
    """
    w = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 4 * sum(w) + 2 * sum(w[1:])


# --- systems: each make(batch_size, x, y, device) returns run(steps) -----------

def _fastmlp(kernels, precision="fp32", fuse=True):
    def make(bs, x, y, device):
        from fastmlp.engines.warp import WarpEngine
        model = fm.MLP(list(SIZES), activation="sigmoid", device=device, kernels=kernels, seed=0,
                       precision=precision)
        data = model.prepare(x, y)
        opt = fm.optim.SGD(lr=LR)
        opt.init([model.params], model.ops)
        # a step as fit() runs it: the engine the factory picks, called directly
        fused, WarpEngine.fuse = WarpEngine.fuse, fuse
        try:
            engine = model.engine_for(bs, sample=data.x)
        finally:
            WarpEngine.fuse = fused

        def run(steps):
            with engine.running():                    # as fit() holds it
                for _ in range(steps):
                    engine.train_step(data.x, data.y, None, opt)
            model.backend.synchronize()
        run.engine = model.step_path.engine           # which step engine ran: for the table
        return run
    return make


def _torch(bs, x, y, device, threads=None):
    import torch
    dev = "cuda" if device.startswith("cuda") else "cpu"
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.Sigmoid())
    net = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)

    def run(steps):
        default = torch.get_num_threads()
        torch.set_num_threads(threads or default)
        try:
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss_fn(net(xt), yt).backward()
                opt.step()
            if dev == "cuda":
                torch.cuda.synchronize()
        finally:
            torch.set_num_threads(default)
    return run


def _torch_graph(bs, x, y, device):
    """PyTorch with the whole step (forward, backward, SGD) captured in one
    CUDA graph and replayed: the fastest a PyTorch user gets on a GPU
    (``torch.cuda.graphs``, the "whole network capture" recipe). CUDA only."""
    import torch
    if not device.startswith("cuda"):
        raise RuntimeError("CUDA graphs need a GPU")
    torch.backends.cuda.matmul.allow_tf32 = False       # fp32, as the other rows
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.Sigmoid())
    net = torch.nn.Sequential(*layers).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                       # warm up on a side stream
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xt), yt).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss_fn(net(xt), yt).backward()
        opt.step()

    def run(steps):
        for _ in range(steps):
            graph.replay()
        torch.cuda.synchronize()
    return run


def _jax_at(precision):
    """JAX jit at ``precision``: "highest" (fp32 products, as the fp32 rows)
    or "default" (TF32 on Ampere and later, JAX's default)."""
    def make(bs, x, y, device):
        import jax
        run = _jax(bs, x, y, device)

        def at_precision(steps):                 # jit traces at the first call: inside
            with jax.default_matmul_precision(precision):
                run(steps)
        return at_precision
    return make


def _jax(bs, x, y, device):
    import jax
    import jax.numpy as jnp
    dev = jax.devices("gpu" if device.startswith("cuda") else "cpu")[0]
    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.normal(0, 0.05, (a, b)), jnp.float32), jnp.zeros(b, jnp.float32))
              for a, b in zip(SIZES[:-1], SIZES[1:])]

    def loss(params, x, y):
        a = x
        for w, b in params[:-1]:
            a = jax.nn.sigmoid(a @ w + b)
        z = a @ params[-1][0] + params[-1][1]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))

    @jax.jit
    def update(params, x, y):
        grads = jax.grad(loss)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)

    state = {"params": jax.device_put(params, dev)}
    xj, yj = jax.device_put(jnp.asarray(x), dev), jax.device_put(jnp.asarray(y), dev)

    def run(steps):
        p = state["params"]
        for _ in range(steps):
            p = update(p, xj, yj)
        jax.block_until_ready(p)
        state["params"] = p
    return run


def _sklearn(bs, x, y, device):
    if device != "cpu":
        raise RuntimeError("scikit-learn runs on the CPU only")
    import warnings

    from sklearn.neural_network import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=SIZES[1:-1], activation="logistic", solver="sgd",
                        learning_rate_init=LR, momentum=0.0, nesterovs_momentum=False,
                        alpha=0.0, batch_size=bs, shuffle=False, random_state=0)
    classes = np.arange(SIZES[-1])
    pool = {}

    def run(steps):
        # partial_fit walks the data it is given in batches of bs: one call of
        # steps * bs rows is `steps` SGD steps, its per-call overhead amortised.
        if steps not in pool:
            pool[steps] = (np.tile(x, (steps, 1)), np.tile(y, steps))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(*pool[steps], classes=classes)
    return run


SYSTEMS = {
    "fastmlp": _fastmlp("auto"),
    "fastmlp-reference": _fastmlp("reference"),
    # the same as "fastmlp" (Numba on the CPU, Warp on CUDA where Warp sees the GPU)
    "fastmlp-fused": _fastmlp("fused"),
    # every op in NVIDIA Warp (kernels/warp_ops.py), the products in xp.matmul
    "fastmlp-warp": _fastmlp("warp"),
    # the warp engine's float32 products on TF32 tensor cores (CUDA)
    "fastmlp-tf32": _fastmlp("auto", "tf32"),
    # the warp engine without its fused step kernel: layer by layer, ~25 launches a step
    "fastmlp-layered": _fastmlp("auto", fuse=False),
    "pytorch": _torch,
    "pytorch-graph": _torch_graph,
    # PyTorch's intra-op threads cost more than they give on small batches
    # here: one thread is its best setting there, and the bar to beat.
    "pytorch-1thread": lambda bs, x, y, device: _torch(bs, x, y, device, threads=1),
    "jax": _jax_at("highest"),
    # JAX's own default: TF32 products on Ampere and later (compare with fastmlp-tf32)
    "jax-tf32": _jax_at("default"),
    "sklearn": _sklearn,
}
OURS = ("fastmlp", "fastmlp-reference", "fastmlp-fused", "fastmlp-warp", "fastmlp-tf32",
        "fastmlp-layered")
#: what a plain run compares: the CUDA-only and TF32 rows are asked for by name
DEFAULT = [name for name in SYSTEMS if name not in ("fastmlp-fused", "fastmlp-warp",
                                                    "fastmlp-tf32", "fastmlp-layered",
                                                    "pytorch-graph", "jax-tf32")]


# --- measurement ----------------------------------------------------------------

def gemm_gflops(device, n=2048, repeats=5):
    """Median float32 GEMM rate (n x n times n x n) on ``device``, in GFLOP/s."""
    be = fm.get_backend(device)
    rng = np.random.default_rng(0)
    a = be.asarray(rng.random((n, n), dtype=np.float32))
    b = be.asarray(rng.random((n, n), dtype=np.float32))
    be.xp.matmul(a, b)
    be.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        be.xp.matmul(a, b)
        be.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def _calibrate(run, target_s):
    run(1)                                   # warm-up: JIT compilation, allocations
    steps = 1
    while True:
        start = time.perf_counter()
        run(steps)
        elapsed = time.perf_counter() - start
        if elapsed >= target_s / 4 or steps >= 100_000:
            return max(1, math.ceil(steps * target_s / max(elapsed, 1e-9)))
        steps *= 4


def measure(systems, batch_sizes, device, repeats, target_s, settle_s=0.05, log=print):
    """``({system: {batch_size: [samples/s per repeat]}}, {system: {batch_size:
    step engine}})``, the engines for fastmlp's systems only."""
    rng = np.random.default_rng(0)
    results = {name: {} for name in systems}
    engines = {}
    for bs in batch_sizes:
        x = rng.random((bs, SIZES[0]), dtype=np.float32)
        y = rng.integers(0, SIZES[-1], bs)
        runs = {}
        for name in systems:
            try:
                run = SYSTEMS[name](bs, x, y, device)
                runs[name] = (run, _calibrate(run, target_s))
                if getattr(run, "engine", None):
                    engines.setdefault(name, {})[bs] = run.engine
            except Exception as e:       # a peer that cannot run this size is reported, not fatal
                log(f"  {name} at batch {bs}: skipped ({type(e).__name__}: {e})")
        for r in range(repeats):
            order = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)] if runs else []
            for name in order:
                run, steps = runs[name]
                time.sleep(settle_s)         # let the last system's spinning worker threads idle
                start = time.perf_counter()
                run(steps)
                elapsed = time.perf_counter() - start
                results[name].setdefault(bs, []).append(steps * bs / elapsed)
        log(f"  batch {bs}: " + ", ".join(
            f"{n} {statistics.median(results[n][bs]):,.0f}/s" for n in runs))
    return results, engines


def available(names, device):
    """The systems among ``names`` whose packages import; prints why others are skipped."""
    needs = {"pytorch": "torch", "pytorch-1thread": "torch", "pytorch-graph": "torch",
             "jax": "jax", "jax-tf32": "jax", "sklearn": "sklearn"}
    keep = []
    for name in names:
        if name not in SYSTEMS:
            raise SystemExit(f"unknown system {name!r}: choose from {sorted(SYSTEMS)}")
        module = needs.get(name)
        if module is not None:
            try:
                __import__(module)
            except ImportError as e:
                print(f"skipping {name}: {e}")
                continue
        if name == "sklearn" and device != "cpu":
            print("skipping sklearn: CPU only")
            continue
        if name in ("pytorch-graph", "fastmlp-tf32", "jax-tf32") and device == "cpu":
            print(f"skipping {name}: CUDA only")
            continue
        keep.append(name)
    return keep


# --- reporting --------------------------------------------------------------------

def machine_info(device):
    """A description of this machine and the versions in play."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor(), "device": fm.get_backend(device).name}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"], info["cpus"] = names[0], len(names)
    except (OSError, IndexError):
        pass
    for module in ("numpy", "numba", "torch", "jax", "sklearn", "cupy"):
        mod = sys.modules.get(module)
        if mod is not None:
            info[module] = getattr(mod, "__version__", "?")
    if fm.get_backend(device).is_cuda:
        import cupy
        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return info


def table(medians, batch_sizes, gemm, fps, engines=None):
    """The comparison as a Markdown table, with the step engine each fastmlp
    system ran at each batch size (``engines``: {system: {batch_size: name}})."""
    names = list(medians)
    engines = engines or {}
    # fp32 against fp32: the TF32 peer is compared with fastmlp-tf32 only (its own column)
    peers = [n for n in names if n not in OURS and n != "jax-tf32"]
    ours = "fastmlp" if "fastmlp" in names else next((n for n in names if n in OURS), None)
    head = ["batch"] + [f"{n} (samples/s)" for n in names] + [f"{n} engine" for n in engines]
    if ours and peers:
        head += [f"{ours} / best peer", "best peer"]
    if ours:
        head += [f"{ours} % of GEMM peak"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for bs in batch_sizes:
        row = [str(bs)] + [f"{medians[n][bs]:,.0f}" if bs in medians[n] else "-" for n in names]
        row += [engines[n].get(bs, "-") for n in engines]
        have = [n for n in peers if bs in medians[n]]
        if ours and peers:
            best = max(have, key=lambda n: medians[n][bs]) if have else None
            row += [f"{medians[ours][bs] / medians[best][bs]:.2f}x" if best and bs in medians[ours]
                    else "-", best or "-"]
        if ours:
            row += [f"{100 * medians[ours][bs] * fps / (gemm * 1e9):.1f}%" if bs in medians[ours]
                    else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(medians, path, title, peak=None):
    """Throughput against batch size, log-log, one line per system, and the
    GEMM-bound ceiling ``peak`` in samples/s: :func:`fastmlp.plot.throughput`
    (needs matplotlib). Returns ``path``, or None without matplotlib."""
    try:
        fmplot.throughput(medians, path, title=title, peak=peak,
                          peak_label="GEMM peak / FLOP per sample", highlight=OURS, dpi=120)
    except ImportError as e:
        print(f"no PNG: {e}")
        return None
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,16,64,256,1024,4096")
    p.add_argument("--device", default="cpu")
    p.add_argument("--systems", default=",".join(DEFAULT),
                   help=f"comma-separated, from {', '.join(SYSTEMS)}")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--target-seconds", type=float, default=0.1,
                   help="length of one timed block of steps")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tag", default=None, help="file-name tag naming the machine")
    args = p.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    systems = available(args.systems.split(","), args.device)
    print(f"systems: {', '.join(systems)}; device {args.device}; batch sizes {batch_sizes}")
    fps = flops_per_sample()
    gemm_before = gemm_gflops(args.device)
    raw, engines = measure(systems, batch_sizes, args.device, args.repeats, args.target_seconds)
    gemm = max(gemm_before, gemm_gflops(args.device))
    medians = {n: {bs: statistics.median(v) for bs, v in raw[n].items()} for n in systems}
    info = machine_info(args.device)
    print(f"\nfloat32 GEMM (2048^3, median of 5, before/after): {gemm_before:,.1f} / "
          f"{gemm:,.1f} GFLOP/s; training step = {fps:,} FLOP/sample (GEMMs only)\n")
    print(table(medians, batch_sizes, gemm, fps, engines))
    date = datetime.date.today().isoformat()
    tag = args.tag or f"{info['device'].replace(':', '')}-{info.get('cpus', '?')}cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"compare-{tag}-{date}"
    record = {"date": date, "machine": info, "workload": {
                  "sizes": SIZES, "activation": "sigmoid", "loss": "cross_entropy",
                  "optimizer": f"SGD lr={LR}", "dtype": "float32"},
              "gemm_gflops": gemm, "flops_per_sample": fps, "repeats": args.repeats,
              "samples_per_s": {n: {str(b): v for b, v in raw[n].items()} for n in systems},
              "median_samples_per_s": {n: {str(b): v for b, v in medians[n].items()}
                                       for n in systems},
              "engines": {n: {str(b): e for b, e in by_bs.items()} for n, by_bs in engines.items()}}
    Path(f"{stem}.json").write_text(json.dumps(record, indent=1))
    png = plot(medians, f"{stem}.png", f"784-128-64-10 sigmoid SGD float32 training, "
                                       f"{info.get('gpu', info.get('cpu', ''))}, {date}",
               peak=gemm * 1e9 / fps)
    print(f"\nwrote {stem}.json" + (f" and {png}" if png else ""))
    return record


if __name__ == "__main__":
    main()
