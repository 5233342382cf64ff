"""Smoke tests of examples/: each script runs in its own process, cut down to
an epoch or a few steps, exits 0, prints its per-epoch figures and writes its
PNG into --out. The MNIST ones skip when the MNIST files are missing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: script -> (its tiny arguments, whether it reads MNIST, text its output must hold)
RUNS = {
    "mnist_sigmoid_per_sample": (["--epochs", "1"], True, "epoch  1: validation accuracy"),
    "mnist_minibatch_gradcheck": (["--epochs", "1"], True, "(ok: tolerance"),
    "xor_truth_table": (["--epochs", "20"], False, "target  output"),
    "sin_cubic_rmsprop": (["--epochs", "20"], False, "result: y ="),
    "regression_x_squared": (["--epochs", "3"], False, "epoch   3: train loss"),
    "optimizer_comparison": (["--epochs", "1", "--train-size", "1000"], True,
                             "Adam (lr 0.001)"),
    "mnist_98_recipe": (["--epochs", "1"], True, "test accuracy"),
}


def test_every_example_has_a_smoke_test():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == set(RUNS)


@pytest.mark.parametrize("name", list(RUNS))
def test_example_runs_and_writes_its_png(name, tmp_path, request):
    pytest.importorskip("matplotlib", reason="the examples draw with matplotlib")
    args, needs_mnist, expect = RUNS[name]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    if needs_mnist:
        env["FASTMLP_DATA"] = str(request.getfixturevalue("mnist_dir").parent)
    done = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args,
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert expect in done.stdout
    png = tmp_path / f"{name}.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"wrote {png}" in done.stdout
