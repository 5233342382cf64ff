"""fastmlp.plot (history and throughput figures) and fastmlp.summary (the
layer table): what the figures hold, that PNGs are written, that the module
imports without matplotlib, and what the table says."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import plot
from fastmlp.summary import summary

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def plt():
    pytest.importorskip("matplotlib", reason="fastmlp.plot needs matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _x(ax):
    return [list(line.get_xdata()) for line in ax.get_lines()]


def test_history_of_a_real_fit(plt, blobs, tmp_path):
    x, y = blobs
    model = fm.MLP([4, 8, 3], device="cpu", seed=0)
    hist = model.fit(x, y, epochs=4, batch_size=16, validation_split=0.2)
    path = tmp_path / "history.png"
    fig = plot.history(hist, path)
    assert path.read_bytes().startswith(PNG)
    loss, acc = fig.axes
    assert [loss.get_title(), acc.get_title()] == ["loss", "accuracy"]
    assert [loss.get_ylabel(), acc.get_ylabel()] == ["loss", "accuracy"]
    assert loss.get_xlabel() == acc.get_xlabel() == "epoch"
    assert _legend(loss) == _legend(acc) == ["train", "validation"]
    assert fig.get_suptitle() == "training history"
    assert _x(loss) == [[1, 2, 3, 4]] * 2
    np.testing.assert_allclose(loss.get_lines()[0].get_ydata(), hist.history["train_loss"])
    np.testing.assert_allclose(acc.get_lines()[1].get_ydata(), hist.history["val_accuracy"])
    assert fig.number not in plt.get_fignums()       # saved figures are closed


def test_history_of_a_dict_draws_every_pair_but_seconds_and_lr(plt, tmp_path):
    record = {"train_loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.6, 0.5],
              "train_mae": [0.4, 0.3, 0.2], "val_mae": [0.5, 0.4, 0.4],
              "test_accuracy": [0.7, 0.8, 0.9], "train_accuracy": [0.6, 0.8, 0.95],
              "lr": [0.1, 0.1, 0.01], "seconds": [1.0, 1.1, 0.9]}
    path = tmp_path / "dict.png"
    fig = plot.history(record, path, title="a run")
    assert path.is_file() and fig.get_suptitle() == "a run"
    assert [a.get_title() for a in fig.axes] == ["loss", "accuracy", "mae"]
    assert [_legend(a) for a in fig.axes] == [["train", "validation"], ["train", "test"],
                                              ["train", "validation"]]
    assert [a.get_ylabel() for a in fig.axes] == ["loss", "accuracy", "mae"]


def test_history_uses_the_global_epoch_numbers(plt):
    # fit(history=h) numbers epochs on from where h ended: the x axis follows them
    hist = SimpleNamespace(history={"train_loss": [0.5, 0.4], "val_loss": [0.6, 0.5]},
                           epoch=[3, 4], epochs=2)
    fig = plot.history(hist)
    assert _x(fig.axes[0]) == [[3, 4], [3, 4]]
    fig = plot.history({"epoch": [7, 8, 9], "train_loss": [3, 2, 1]})
    assert _x(fig.axes[0]) == [[7, 8, 9]] and len(fig.axes) == 1


def test_history_metrics_and_ax(plt):
    record = {"train_loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
              "train_accuracy": [0.5, 0.7], "val_accuracy": [0.4, 0.6]}
    fig = plot.history(record, metrics=["accuracy"])
    assert [a.get_title() for a in fig.axes] == ["accuracy"]
    fig, (left, right) = plt.subplots(1, 2)
    assert plot.history(record, ax=right, metrics="loss") is fig
    assert right.get_title() == "loss" and not left.get_lines()
    assert fig.get_suptitle() == ""                  # the caller's figure: no title unless given
    with pytest.raises(ValueError, match="1 axes for 2 quantities"):
        plot.history(record, ax=left)
    with pytest.raises(ValueError, match=r"no per-epoch values for \['mae'\]"):
        plot.history(record, metrics=["mae"])
    with pytest.raises(ValueError, match="nothing to plot"):
        plot.history({"seconds": [1.0], "train_loss": []})
    with pytest.raises(TypeError, match="History or a dict"):
        plot.history([0.5, 0.4])


def test_throughput_writes_a_png_with_one_line_per_system(plt, tmp_path):
    results = {"fastmlp": {1: 5e4, 64: 3e5, 1024: 4e5},
               "pytorch": {"1": 3e3, "64": 5e4, "1024": 1.7e5}}      # JSON keys are strings
    path = tmp_path / "throughput.png"
    fig = plot.throughput(results, path, title="a machine", peak=5e5,
                          peak_label="GEMM peak / FLOP per sample", highlight=("fastmlp",))
    assert path.read_bytes().startswith(PNG)
    (ax,) = fig.axes
    assert _legend(ax) == ["fastmlp", "pytorch", "GEMM peak / FLOP per sample"]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("batch size", "training samples / s")
    assert ax.get_title() == "a machine"
    ours, theirs = ax.get_lines()[:2]
    assert list(theirs.get_xdata()) == [1, 64, 1024]
    assert ours.get_linewidth() > theirs.get_linewidth()


def test_the_module_imports_without_matplotlib():
    # a None entry in sys.modules makes `import matplotlib` raise ImportError
    code = """if True:
        import sys
        sys.modules["matplotlib"] = None
        from fastmlp import plot, summary
        import fastmlp as fm
        print(summary.summary(fm.MLP([4, 3], device="cpu")).splitlines()[0])
        try:
            plot.history({"train_loss": [1.0, 0.5]})
        except ImportError as e:
            print("ImportError:", e)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "MLP 4-3" in done.stdout
    assert 'ImportError: fastmlp.plot needs matplotlib' in done.stdout
    assert 'pip install "fastmlp[plot]"' in done.stdout


# --- fastmlp.summary ---------------------------------------------------------------


def _table(text):
    """The rows between the header's rule and the closing rule, split on spaces."""
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if set(line) == {"-"})
    bottom = next(i for i in range(top + 1, len(lines)) if set(lines[i]) == {"="})
    return lines[top - 1].split(), [line.split() for line in lines[top + 1:bottom]]


@pytest.mark.parametrize("sizes, kwargs, output", [
    ([784, 128, 64, 10], {"activation": "relu"}, "softmax"),
    ([3, 4, 1], {"activation": "sigmoid", "loss": "binary_cross_entropy", "bias": False},
     "sigmoid"),
    ([1, 10, 10, 1], {"activation": "tanh", "loss": "mse", "dropout": [0.5, 0.25]}, "identity"),
    ([3, 1], {"loss": "l1", "dtype": "float64"}, "identity"),
])
def test_summary_lists_each_layer(sizes, kwargs, output):
    model = fm.MLP(sizes, device="cpu", seed=0, **kwargs)
    text = summary(model)
    head, rows = _table(text)
    assert head == ["layer", "shape", "activation", "dropout", "params"]
    assert len(rows) == len(sizes) - 1
    counts = [int(r[-1].replace(",", "")) for r in rows]
    assert sum(counts) == model.n_params
    for i, (row, fan_in, fan_out) in enumerate(zip(rows, sizes[:-1], sizes[1:])):
        assert row[:4] == [str(i), str(fan_in), "->", str(fan_out)]
        assert counts[i] == fan_in * fan_out + (fan_out if model.bias else 0)
        hidden = i < len(sizes) - 2
        assert row[4] == (model.activation if hidden else output)
        rate = model.dropout[i] if hidden else 0
        assert row[5] == (f"{rate:g}" if rate else "-")
    assert f"total params: {model.n_params:,} ({model.dtype.name}," in text
    assert text.splitlines()[0].startswith("MLP " + "-".join(map(str, sizes)))
    assert ("no biases" in text.splitlines()[0]) == (not model.bias)
    assert "device: cpu" in text
    assert "engine: auto (chosen at the first training step)" in text


def test_summary_columns_are_aligned_and_name_the_engine_that_ran(blobs):
    x, y = blobs
    model = fm.MLP([4, 1000, 3], device="cpu", seed=0)
    model.fit(x, y, epochs=1, batch_size=1)
    text = summary(model)
    assert f"engine: {model.step_path.engine} ({model.step_path.reason})" in text
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if set(line) == {"-"})
    head, rows = lines[top - 1], lines[top + 1:top + 3]
    ends = {len(line) for line in [head] + rows}    # params are right-aligned: one width
    assert ends == {len(lines[top])}
    for word in ("activation", "dropout"):          # these start where their head does
        at = head.index(word)
        assert all(line[at - 1] == " " and line[at] != " " for line in rows)
    assert rows[0].index("->") == rows[1].index("->")    # "   4 -> 1000", "1000 -> 3"
