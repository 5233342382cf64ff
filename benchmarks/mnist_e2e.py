"""MNIST end to end: one recipe in fastmlp, PyTorch and scikit-learn.

784-128-64-10, ReLU, softmax cross-entropy, Adam lr 1e-3, batch 128, 10
epochs, reshuffled every epoch, float32 where the system allows, trained on
all 60,000 training images and scored on the 10,000 test images. The wall
time covers training only (the data is already in memory in each system's
format); the systems take turns, and the median of ``--repeats`` runs is
reported. Missing peers are skipped with a message.

Each run is a fresh Python process: in one shared process, the worker
threads a peer leaves spinning after its run slowed the next system here
(fastmlp took 3.3 s first in the process, 6.0-6.4 s right after
scikit-learn or PyTorch).

    python benchmarks/mnist_e2e.py [--systems fastmlp,pytorch,sklearn] [--repeats 3]
"""

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import fastmlp as fm
from fastmlp.datasets import load_mnist

HIDDEN = (128, 64)
EPOCHS, BATCH, LR = 10, 128, 1e-3


def run_fastmlp(x, y, xt, yt, device, seed):
    # warm-up: loads (or compiles) the kernels, as a first fit() would; that
    # cost is benchmarks/first_fit.py's subject, not this one's
    fm.MLP([784, *HIDDEN, 10], activation="relu", device=device, seed=seed).fit(
        x[:2 * BATCH], y[:2 * BATCH], batch_size=BATCH, optimizer=fm.optim.Adam(lr=LR))
    model = fm.MLP([784, *HIDDEN, 10], activation="relu", device=device, seed=seed)
    start = time.perf_counter()
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, optimizer=fm.optim.Adam(lr=LR))
    seconds = time.perf_counter() - start
    return seconds, model.evaluate(xt, yt)["accuracy"]


def run_pytorch(x, y, xt, yt, device, seed):
    import torch
    torch.manual_seed(seed)
    dev = "cuda" if device.startswith("cuda") else "cpu"
    net = torch.nn.Sequential(torch.nn.Linear(784, HIDDEN[0]), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN[0], HIDDEN[1]), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN[1], 10)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    X, Y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    scratch = torch.nn.Sequential(*[torch.nn.Linear(m.in_features, m.out_features)
                                    if isinstance(m, torch.nn.Linear) else m
                                    for m in net]).to(dev)
    warm = torch.optim.Adam(scratch.parameters(), lr=LR)
    for _ in range(2):                           # warm-up, as for fastmlp, on a scratch copy
        warm.zero_grad(set_to_none=True)
        loss_fn(scratch(X[:BATCH]), Y[:BATCH]).backward()
        warm.step()
    start = time.perf_counter()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(X), device=dev)
        for i in range(0, len(X), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(X[idx]), Y[idx]).backward()
            opt.step()
    if dev == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        pred = net(torch.from_numpy(xt).to(dev)).argmax(1).cpu().numpy()
    return seconds, float((pred == yt).mean())


def run_sklearn(x, y, xt, yt, device, seed):
    if device != "cpu":
        raise RuntimeError("scikit-learn runs on the CPU only")
    from sklearn.neural_network import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu", solver="adam",
                        learning_rate_init=LR, batch_size=BATCH, max_iter=EPOCHS, shuffle=True,
                        alpha=0.0, tol=0.0, n_iter_no_change=EPOCHS + 1, random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ConvergenceWarning: max_iter is the recipe
        clf.fit(x, y)
    seconds = time.perf_counter() - start
    return seconds, float(clf.score(xt, yt))


SYSTEMS = {"fastmlp": run_fastmlp, "pytorch": run_pytorch, "sklearn": run_sklearn}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default=None, help="MNIST directory (default: load_mnist's lookup)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tag", default=None, help="file-name tag naming the machine")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="the recipe's is 10")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:                               # one run, in this fresh process
        globals()["EPOCHS"] = args.epochs
        (x, y), (xt, yt) = load_mnist(args.data)
        try:
            seconds, accuracy = SYSTEMS[args.child](x, y, xt, yt, args.device, args.seed)
            print(json.dumps({"seconds": seconds, "accuracy": accuracy}))
        except ImportError as e:
            print(json.dumps({"skip": str(e)}))
        return None
    names, runs = args.systems.split(","), {}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if name in runs and runs[name] is None:
                continue
            cmd = [sys.executable, __file__, "--child", name, "--device", args.device,
                   "--seed", str(args.seed), "--epochs", str(args.epochs)]
            cmd += ["--data", args.data] if args.data else []
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{out.stderr}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if "skip" in res:
                print(f"skipping {name}: {res['skip']}")
                runs[name] = None
                continue
            seconds, accuracy = res["seconds"], res["accuracy"]
            runs.setdefault(name, []).append((seconds, accuracy))
            print(f"{name}: {seconds:.1f} s, test accuracy {accuracy:.4f}", flush=True)
    rows = {name: {"seconds": statistics.median(s for s, _ in v), "runs_seconds": [s for s, _ in v],
                   "test_accuracy": v[0][1], "runs_test_accuracy": [a for _, a in v]}
            for name, v in runs.items() if v}
    fastest = min(r["seconds"] for r in rows.values())
    print(f"\nmedian of {args.repeats} runs each\n"
          "| system | wall time (s) | s / epoch | vs fastest | test accuracy |\n"
          "|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.1f} | {r['seconds'] / args.epochs:.2f} | "
              f"{r['seconds'] / fastest:.2f}x | {r['test_accuracy']:.4f} |")
    date = datetime.date.today().isoformat()
    tag = args.tag or fm.get_backend(args.device).name.replace(":", "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"mnist-{tag}-{date}.json"
    path.write_text(json.dumps({"date": date, "device": fm.get_backend(args.device).name,
                                "recipe": {"sizes": [784, *HIDDEN, 10], "activation": "relu",
                                           "optimizer": f"Adam lr={LR}", "batch_size": BATCH,
                                           "epochs": args.epochs, "seed": args.seed},
                                "repeats": args.repeats,
                                "results": rows}, indent=1))
    print(f"\nwrote {path}")
    return rows


if __name__ == "__main__":
    main()
