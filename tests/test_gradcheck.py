"""Backprop equals central finite differences for every activation x loss pair."""

import numpy as np
import pytest

import fastmlp as fm

ACTIVATIONS = ["sigmoid", "relu", "tanh", "identity"]
LOSSES = ["cross_entropy", "binary_cross_entropy", "mse", "l1", "poisson"]


def _targets(loss, rng, n, k):
    if loss == "cross_entropy":
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return (rng.random((n, k)) > 0.5).astype(float)
    if loss == "poisson":
        return rng.poisson(2.0, (n, k)).astype(float)
    return rng.normal(size=(n, k))


@pytest.mark.parametrize("kernels", ["reference", "auto"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_every_activation_and_loss(device, activation, loss, reduction, kernels):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 4))
    y = _targets(loss, rng, 7, 3)
    model = fm.MLP([4, 6, 5, 3], activation=activation, loss=loss, reduction=reduction,
                   init=0.5, seed=1, device=device, kernels=kernels)
    result = fm.gradcheck(model, x, y)
    assert result.n_checked == model.n_params
    assert result.max_rel_error <= 1e-6, result


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    """The check can fail: a derivative off by a factor is caught."""
    import dataclasses

    from fastmlp.kernels.activations import ACTIVATIONS, TANH
    fwd, grad = TANH.reference

    def wrong_grad(xp, da, a):
        grad(xp, da, a)
        da *= 1.01

    monkeypatch.setitem(ACTIVATIONS, "tanh", dataclasses.replace(TANH, reference=(fwd, wrong_grad)))
    rng = np.random.default_rng(0)
    model = fm.MLP([4, 6, 3], activation="tanh", seed=0, device="cpu", kernels="reference")
    result = fm.gradcheck(model, rng.normal(size=(5, 4)), rng.integers(0, 3, 5))
    assert not result.ok and result.max_rel_error > 1e-3


def test_gradcheck_leaves_model_unchanged_and_samples(device):
    rng = np.random.default_rng(0)
    model = fm.MLP([4, 5, 3], activation="sigmoid", dropout=0.5, seed=0, device=device)
    before = model.backend.to_numpy(model.params).copy()
    result = fm.gradcheck(model, rng.normal(size=(5, 4)), rng.integers(0, 3, 5), max_checks=10)
    assert result.n_checked == 10 and result.ok
    np.testing.assert_array_equal(model.backend.to_numpy(model.params), before)
    assert model.dtype == np.float32


def main():
    """Print the max relative error of every activation x loss x reduction x kernels."""
    print("| kernels | activation | loss | reduction | max rel error | entries |\n"
          "|---|---|---|---|---|---|")
    worst = 0.0
    for kernels, activation in [(k, a) for k in ("reference", "auto") for a in ACTIVATIONS]:
        for loss in LOSSES:
            for reduction in ("mean", "sum"):
                rng = np.random.default_rng(0)
                x = rng.normal(size=(7, 4))
                y = _targets(loss, rng, 7, 3)
                model = fm.MLP([4, 6, 5, 3], activation=activation, loss=loss,
                               reduction=reduction, init=0.5, seed=1, device="cpu",
                               kernels=kernels)
                r = fm.gradcheck(model, x, y)
                worst = max(worst, r.max_rel_error)
                print(f"| {kernels} | {activation} | {loss} | {reduction} "
                      f"| {r.max_rel_error:.2e} | "
                      f"{r.n_checked} |")
    print(f"\nworst max relative error: {worst:.2e}")


if __name__ == "__main__":
    main()
