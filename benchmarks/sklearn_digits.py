"""fastmlp.sklearn.MLPClassifier side by side with scikit-learn's own, on digits.

The same estimator call for both (hidden sizes, adam, learning rate, batch
size, seed), the same number of epochs for both (``tol=0`` and a patience
longer than the run, so neither stops early), on the 8x8 digits scaled to
[0, 1], with a stratified 75/25 split. Each seed fits both, alternating which
goes first; the fit wall time and the test accuracy of each run are
recorded, and the medians, their ratio and the accuracy difference printed.
fastmlp's kernels are compiled before the timed runs (that cost is
``first_fit.py``'s subject).

    python benchmarks/sklearn_digits.py [--seeds 5] [--epochs 200] [--hidden 64]
"""

import argparse
import datetime
import json
import statistics
import time
import warnings
from pathlib import Path


def run(estimator, X, y, Xt, yt):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X, y)
    seconds = time.perf_counter() - start
    return seconds, float(estimator.score(Xt, yt)), int(estimator.n_iter_)


def main(argv=None):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLP

    import fastmlp as fm
    from fastmlp.sklearn import MLPClassifier

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--hidden", default="64", help="hidden layer sizes, e.g. 128,64")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="fastmlp's dtype (default: as the data)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tag", default=None)
    args = p.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    X, y = load_digits(return_X_y=True)
    X, Xt, y, yt = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    common = dict(hidden_layer_sizes=hidden, solver="adam", max_iter=args.epochs, tol=0.0,
                  n_iter_no_change=args.epochs + 1)
    systems = {
        "fastmlp": lambda seed: MLPClassifier(**common, random_state=seed, device=args.device,
                                              dtype=args.dtype),
        "sklearn": lambda seed: SkMLP(**common, random_state=seed),
    }
    run(MLPClassifier(**{**common, "max_iter": 2}, device=args.device, dtype=args.dtype),
        X, y, Xt, yt)                                         # compile the kernels first
    runs = {name: [] for name in systems}
    for seed in range(args.seeds):
        for name in (list(systems) if seed % 2 == 0 else list(systems)[::-1]):
            runs[name].append(run(systems[name](seed), X, y, Xt, yt))
            s, acc, n = runs[name][-1]
            print(f"seed {seed} {name}: {s:.3f} s, test accuracy {acc:.4f}, {n} epochs",
                  flush=True)
    rows = {name: {"seconds": statistics.median(r[0] for r in v),
                   "accuracy": statistics.median(r[1] for r in v),
                   "runs_seconds": [r[0] for r in v], "runs_accuracy": [r[1] for r in v],
                   "epochs": v[0][2]} for name, v in runs.items()}
    ours, theirs = rows["fastmlp"], rows["sklearn"]
    print(f"\ndigits, {len(X)} train / {len(Xt)} test, hidden {hidden}, adam, {args.epochs} "
          f"epochs, median of {args.seeds} seeds\n"
          "| system | fit wall time (s) | test accuracy |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']:.3f} | {r['accuracy']:.4f} |")
    print(f"\nscikit-learn / fastmlp fit time: {theirs['seconds'] / ours['seconds']:.2f}x; "
          f"accuracy difference (fastmlp - scikit-learn): "
          f"{100 * (ours['accuracy'] - theirs['accuracy']):+.2f} points")
    date = datetime.date.today().isoformat()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or fm.get_backend(args.device).name.replace(":", "")
    path = out / f"sklearn-digits-{tag}-{date}.json"
    path.write_text(json.dumps({"date": date, "device": fm.get_backend(args.device).name,
                                "setup": {**common, "hidden_layer_sizes": list(hidden),
                                          "seeds": args.seeds, "dtype": args.dtype},
                                "results": rows,
                                "time_ratio_sklearn_over_fastmlp":
                                    theirs["seconds"] / ours["seconds"]}, indent=1))
    print(f"\nwrote {path}")
    return rows


if __name__ == "__main__":
    main()
