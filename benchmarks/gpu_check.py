"""The GPU check: what a lent device runs, in one call of a few minutes.

    python benchmarks/gpu_check.py [--out DIR] [--quick]

Each part runs in its own process with its own time limit, so one that
fails or hangs does not hide the others; ``summary.json`` under ``--out``
(default ``$OUT``) gives each part's exit status, seconds and last lines,
and the parts write their own JSON and PNG files beside it:

1. ``env``: the GPU (``nvidia-smi``) and the versions of CuPy, Warp, NumPy,
   PyTorch and JAX;
2. ``tests``: the cuda-marked tests, then the Warp tests (the engine's
   graph replay against its eager launches and the layer engine, on the GPU
   too) and the op twins;
3. ``warp-twins``: every Warp op on CuPy arrays against the reference table
   on the same arrays (``kernels="warp"`` on CUDA);
4. ``compare``: ``benchmarks/compare.py --device cuda``: fastmlp (the warp
   engine, its step fused into one tile kernel), the same engine layer by
   layer (``fastmlp-layered``), its reference path and its TF32 products, against PyTorch eager,
   PyTorch with the step in a CUDA graph and JAX jit, fp32 rows against fp32
   ones (JAX at "highest") and TF32 against TF32 (``jax-tf32``);
5. ``mnist``: the MNIST recipe (``benchmarks/mnist_e2e.py --device cuda``),
   with the data from ``FASTMLP_DATA``, else ``.device/datasets`` (carry a
   copy of ``../shared/datasets`` there: ``.device/`` is ignored).

Nothing is fetched: fastmlp is imported from this checkout through a
throw-away package tree (the ``kernels/`` folder mapped to
``fastmlp.kernels`` as the installed package does), and warp-lang, which
the device image lacks, is installed from the wheel's parts (``split -b
45M``) carried in ``.device/warp-*/`` folders, if ``import warp`` fails.
"""

import argparse
import glob
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

ENV = r"""
import importlib, subprocess
try:
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv"], capture_output=True, text=True).stdout)
except OSError as e:
    print("nvidia-smi:", e)
for name in ("numpy", "cupy", "warp", "torch", "jax", "numba"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:
        print(name, "missing:", e)
"""

WARP_TWINS = r"""
import numpy as np, cupy as cp
from fastmlp.kernels import activations, losses
from fastmlp.kernels.reference import ReferenceOps
from fastmlp.kernels.warp_ops import WarpOps
ref, ops, worst = ReferenceOps(cp), WarpOps(cp), {}
rng = np.random.default_rng(0)
for dt in ("float32", "float64"):
    tol = 1e-5 if dt == "float32" else 1e-12
    for a in activations.ACTIVATIONS.values():
        z = cp.asarray(rng.normal(size=(64, 33)) * 30, dt)
        b = cp.asarray(rng.normal(size=33), dt)
        got, want = ops.bias_act(a, z.copy(), b), ref.bias_act(a, z.copy(), b)
        worst[f"{a.name}-{dt}"] = float(cp.abs(got - want).max())
    for spec in losses.LOSSES.values():
        z = cp.asarray(rng.normal(size=(64, 10)) * 5, dt)
        y = cp.asarray(np.eye(10)[rng.integers(0, 10, 64)], dt)
        zg, zr = z.copy(), z.copy()
        lg, lr = ops.loss(spec, zg, y, 1 / 64), ref.loss(spec, zr, y, 1 / 64)
        worst[f"{spec.name}-{dt}"] = max(abs(float(lg) - float(lr)) / abs(float(lr)),
                                         float(cp.abs(zg - zr).max()))
    bad = {k: v for k, v in worst.items() if k.endswith(dt) and not v <= tol}
    print(dt, "worst", max(v for k, v in worst.items() if k.endswith(dt)), "over", tol, bad)
print(worst)
assert all(v <= (1e-5 if k.endswith("32") else 1e-12) for k, v in worst.items()), "twins differ"
"""


def package_tree():
    """A folder holding ``fastmlp`` as the installed package lays it out, by
    links into this checkout (no install, no network)."""
    tree = pathlib.Path(tempfile.mkdtemp(prefix="fastmlp-tree-"))
    pkg = tree / "fastmlp"
    pkg.mkdir()
    for item in (ROOT / "fastmlp").iterdir():
        (pkg / item.name).symlink_to(item)
    (pkg / "kernels").symlink_to(ROOT / "kernels")
    return tree


def warp_path(out):
    """A folder to add to the path for ``import warp``: None where it imports
    already or no carried parts are found."""
    if subprocess.run([sys.executable, "-c", "import warp"], capture_output=True).returncode == 0:
        return None
    parts = sorted(glob.glob(str(ROOT / ".device" / "warp-*" / "*.whl.part*")))
    if not parts:
        return None
    wheel = out / pathlib.Path(parts[0]).name.split(".part")[0]
    with open(wheel, "wb") as f:
        for p in parts:
            f.write(pathlib.Path(p).read_bytes())
    target = pathlib.Path(tempfile.mkdtemp(prefix="warp-site-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(target), str(wheel)], check=True)
    wheel.unlink()
    return target


def run_part(name, cmd, env, limit, out, cwd):
    """Run one part; its record for the summary."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=limit)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = "timeout", f"{e.stdout or ''}{e.stderr or ''}"
        text = text.decode() if isinstance(text, bytes) else text
    (out / f"{name}.log").write_text(text)
    record = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1),
              "tail": text.strip().splitlines()[-12:]}
    print(f"{name}: rc={rc} in {record['seconds']} s", flush=True)
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"))
    p.add_argument("--quick", action="store_true", help="fewer batch sizes and repeats")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the GPU's CuPy or nothing: a CuPy that fails here must not pass as the NumPy stand-in
    env = dict(os.environ, FASTMLP_CUPY_STANDIN="0")
    # run from the tree: from the checkout, its fastmlp/ (without kernels/) would come first
    tree = package_tree()
    paths = [str(tree)]
    try:
        site = warp_path(out)
    except (OSError, subprocess.CalledProcessError) as e:
        site = None
        print("warp-lang from the carried parts failed:", e)
    if site is not None:
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    carried = ROOT / ".device" / "datasets"
    if "FASTMLP_DATA" not in env and (carried / "mnist").is_dir():
        env["FASTMLP_DATA"] = str(carried)          # a copy of ../shared/datasets, carried
    py, tests, bench = sys.executable, ROOT / "tests", ROOT / "benchmarks"
    sizes = "1,64,1024,16384" if args.quick else "1,16,64,256,1024,4096,16384,65536"
    # caps, not estimates: the whole check has to fit one device call (10 minutes) with
    # Warp's first builds on a fresh machine (~1 minute of NVRTC for the tile module)
    parts = [
        ("env", [py, "-c", ENV], 30),
        ("warp-twins", [py, "-c", WARP_TWINS], 120),
        ("tests", [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "cuda",
                   str(tests)], 150),
        # the AOT compiles are CI's: here the same kernels build for the GPU in front of us
        ("warp-tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                        "not ahead_of_time", str(tests / "test_warp.py"),
                        str(tests / "test_warp_engine.py"), str(tests / "test_warp_fused.py"),
                        str(tests / "test_op_twins.py")],
         120),
        ("compare", [py, str(bench / "compare.py"), "--device", "cuda", "--systems",
                     "fastmlp,fastmlp-layered,fastmlp-reference,fastmlp-tf32,pytorch,pytorch-graph,"
                     "jax,jax-tf32",
                     "--batch-sizes", sizes, "--repeats", "3" if args.quick else "5",
                     "--target-seconds", "0.1" if args.quick else "0.2", "--out", str(out)], 180),
        ("mnist", [py, str(bench / "mnist_e2e.py"), "--device", "cuda", "--systems",
                   "fastmlp,pytorch", "--repeats", "1", "--out", str(out)], 120),
    ]
    summary = {name: run_part(name, cmd, env, limit, out, tree) for name, cmd, limit in parts}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    failed = [name for name, r in summary.items() if r["rc"] != 0]
    print("failed parts:", ", ".join(failed) or "none")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
