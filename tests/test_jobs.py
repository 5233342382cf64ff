"""The jobs from the source material, each asserting its result."""

import numpy as np
import pytest

import fastmlp as fm


def test_per_sample_sgd_textbook_network_one_epoch(mnist):
    """784-128-64-10 sigmoid, batch size 1: one epoch reaches >= 90% test accuracy."""
    (x, y), (x_test, y_test) = mnist
    model = fm.MLP([784, 128, 64, 10], activation="sigmoid", seed=0, device="cpu")
    hist = model.fit(x, y, epochs=1, batch_size=1, optimizer="sgd", lr=0.1,
                     validation_data=(x_test, y_test))
    assert hist.history["val_accuracy"][0] >= 0.90
    assert model.evaluate(x_test, y_test)["accuracy"] == hist.history["val_accuracy"][0]


def test_random_minibatches_of_100(mnist):
    """784-50-100-10 sigmoid, lr 0.1, batches of 100: the loss falls; train and
    test accuracy are recorded per epoch."""
    (x, y), (x_test, y_test) = mnist
    model = fm.MLP([784, 50, 100, 10], activation="sigmoid", seed=0, device="cpu")
    hist = model.fit(x, y, epochs=3, batch_size=100, optimizer="sgd", lr=0.1,
                     validation_data=(x_test, y_test))
    h = hist.history
    assert len(h["train_accuracy"]) == len(h["val_accuracy"]) == 3
    assert h["train_loss"][0] > h["train_loss"][1] > h["train_loss"][2]
    assert h["val_accuracy"][-1] > 0.8 and h["train_accuracy"][-1] > 0.8


def test_cubic_fit_of_sin_matches_least_squares():
    """One linear layer over (x, x^2, x^3) fits sin on [-pi, pi] within 5% of
    the least-squares optimum."""
    x = np.linspace(-np.pi, np.pi, 2000)
    features = np.stack([x, x**2, x**3], axis=1)
    y = np.sin(x)
    design = np.hstack([features, np.ones((len(x), 1))])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    best = np.mean((design @ coef - y) ** 2)
    model = fm.MLP([3, 1], loss="mse", seed=0, device="cpu")
    model.fit(features, y, epochs=3000, batch_size=None, optimizer="adam", lr=0.01)
    assert model.evaluate(features, y)["loss"] <= 1.05 * best


def test_square_plus_noise_regression():
    """1-10-10-1 ReLU with MSE on y = x^2 + noise ends below 1.5x the noise variance."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (1000, 1))
    sd = 0.3
    y = x[:, 0] ** 2 + rng.normal(0, sd, 1000)
    model = fm.MLP([1, 10, 10, 1], activation="relu", loss="mse", seed=0, device="cpu")
    hist = model.fit(x, y, epochs=200, batch_size=32, optimizer="adam", lr=0.01)
    assert hist.history["train_loss"][-1] < 1.5 * sd**2
    assert model.evaluate(x, y)["loss"] < 1.5 * sd**2
    assert model.predict(x).shape == (1000,)


def test_two_layer_sigmoid_toy_network():
    """The classic toy network: sigmoid hidden layer, sum of squares, no bias,
    1,500 full-batch iterations: the loss falls steadily and XOR is learned."""
    x = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float)
    y = np.array([[0], [1], [1], [0]], dtype=float)
    model = fm.MLP([3, 4, 1], activation="sigmoid", loss="mse", reduction="sum", bias=False,
                   seed=1, device="cpu")
    assert model.biases == [None, None]
    hist = model.fit(x, y, epochs=1500, batch_size=None, optimizer="sgd", lr=0.05)
    loss = np.array(hist.history["train_loss"])
    assert len(loss) == 1500
    assert np.all(np.diff(loss) <= 1e-7)
    assert loss[-1] < 1e-3 * loss[0]
    np.testing.assert_array_equal(np.round(model.predict(x)), y[:, 0])


@pytest.mark.parametrize("nesterov", [False, True])
def test_dropout_with_nesterov_sgd(blobs, nesterov):
    """The source's Keras example: dropout and SGD with (Nesterov) momentum."""
    x, y = blobs
    model = fm.MLP([4, 32, 32, 3], activation="relu", dropout=0.2, seed=0, device="cpu")
    opt = fm.optim.SGD(lr=0.05, momentum=0.9, nesterov=nesterov)
    hist = model.fit(x, y, epochs=30, batch_size=16, optimizer=opt)
    assert hist.history["train_loss"][-1] < 0.5 * hist.history["train_loss"][0]
    assert model.evaluate(x, y)["accuracy"] > 0.95
