"""The fastmlp command: train on MNIST, info."""

import os
import subprocess
import sys
from pathlib import Path

import fastmlp as fm
from fastmlp import cli


def test_info_lists_versions_and_devices(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"fastmlp {fm.__version__}" in out and "numpy" in out and "devices: cpu" in out


def test_train_prints_epochs_and_test_accuracy_and_saves(mnist_dir, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("FASTMLP_DATA", str(mnist_dir.parent))
    path = tmp_path / "m.safetensors"
    code = cli.main(["train", "--epochs", "1", "--sizes", "784,32,10", "--no-progress",
                     "--device", "cpu", "--save", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "epoch 1/1: train_loss" in out and "val_accuracy" in out and "test accuracy" in out
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.9
    model = fm.load(path, device="cpu")
    assert model.sizes == [784, 32, 10]


def test_bad_options_exit_with_a_message(capsys):
    assert cli.main(["train", "--activation", "swish", "--data", "/nonexistent"]) == 2
    assert "unknown activation 'swish'" in capsys.readouterr().err


def test_option_errors_come_before_loading_data(capsys):
    assert cli.main(["train", "--optimizer", "adam", "--momentum", "0.9",
                     "--data", "/nonexistent"]) == 2
    assert "--momentum applies to --optimizer sgd only" in capsys.readouterr().err


def test_console_script_is_installed():
    """The ``fastmlp`` command that the install put beside this Python runs."""
    script = Path(sys.executable).parent / ("fastmlp.exe" if os.name == "nt" else "fastmlp")
    assert script.is_file(), f"no console script at {script}: is fastmlp installed here?"
    out = subprocess.run([str(script), "info"], capture_output=True, text=True, check=True).stdout
    assert f"fastmlp {fm.__version__}" in out and "devices: cpu" in out
