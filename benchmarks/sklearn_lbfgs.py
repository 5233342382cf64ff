"""L-BFGS and the Poisson loss beside scikit-learn's own estimators.

Three data sets, each fitted by ``sklearn.neural_network`` and by
``fastmlp.sklearn`` with the same call: ``load_digits`` (MLPClassifier,
lbfgs), ``load_diabetes`` (MLPRegressor, lbfgs, standardised inputs and
target, 16 units, alpha 10) and a synthetic Poisson regression (MLPRegressor, ``loss="poisson"``,
lbfgs and adam). Prints, per fit, the test score (accuracy or R^2), ``n_iter_``
and the wall time (best of ``--repeats``), and fastmlp's time ratio.

    python benchmarks/sklearn_lbfgs.py [--repeats 3] [--device cpu]
"""

import argparse
import time
import warnings

import numpy as np


def _datasets():
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    X, y = load_digits(return_X_y=True)
    yield "digits", "classifier", train_test_split(X / 16, y, random_state=0), {}, False
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    # 442 rows: a small, strongly regularised network (64 units and alpha 1e-4 overfit to a
    # negative test R^2 in both libraries)
    yield "diabetes", "regressor", train_test_split(X, y, random_state=0), \
        {"hidden_layer_sizes": (16,), "alpha": 10.0}, False
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 10))
    rate = np.exp(0.3 * X[:, 0] - 0.4 * X[:, 1] + 0.5 * np.sin(2 * X[:, 2]) + 0.5)
    y = rng.poisson(rate).astype(float)
    yield "poisson (synthetic)", "regressor", train_test_split(X, y, random_state=0), \
        {"loss": "poisson"}, True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from sklearn import neural_network as sk
    from sklearn.exceptions import ConvergenceWarning

    import fastmlp.sklearn as fs
    print("| data | solver | library | score | n_iter_ | seconds | fastmlp / sklearn time |")
    print("|---|---|---|---|---|---|---|")
    for name, kind, (Xa, Xb, ya, yb), extra, adam_too in _datasets():
        cls = {"classifier": (sk.MLPClassifier, fs.MLPClassifier),
               "regressor": (sk.MLPRegressor, fs.MLPRegressor)}[kind]
        for solver in (["lbfgs", "adam"] if adam_too else ["lbfgs"]):
            params = {"hidden_layer_sizes": (64,), "solver": solver, "max_iter": 200,
                      "random_state": 0, **extra}
            times = {}
            for label, est_cls, more in (("scikit-learn", cls[0], {}),
                                         ("fastmlp", cls[1], {"device": args.device})):
                best = np.inf
                for _ in range(args.repeats):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        t = time.perf_counter()
                        est = est_cls(**params, **more).fit(Xa, ya)
                        best = min(best, time.perf_counter() - t)
                times[label] = best
                ratio = f"{times['fastmlp'] / times['scikit-learn']:.2f}" \
                    if label == "fastmlp" else ""
                print(f"| {name} | {solver} | {label} | {est.score(Xb, yb):.4f} | {est.n_iter_} "
                      f"| {best:.3f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
