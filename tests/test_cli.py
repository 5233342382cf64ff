"""The fastmlp command: train on MNIST, info."""

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import fastmlp as fm
import fastmlp.datasets
from fastmlp import cli


@pytest.fixture(autouse=True)
def restore_logger():
    """main() gives the "fastmlp" logger a handler on this test's stderr: take it off after."""
    log = logging.getLogger("fastmlp")
    handlers, level = log.handlers[:], log.level
    yield
    log.handlers[:], log.level = handlers, level


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


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if the CLI gets as far as loading MNIST; returns the calls made."""
    calls = []

    def load_mnist(*args, **kwargs):
        calls.append(args)
        raise AssertionError("load_mnist called")

    monkeypatch.setattr(fastmlp.datasets, "load_mnist", load_mnist)
    return calls


def _usage_error(argv, capsys):
    """stderr of an argparse error, which exits with status 2."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code in (0, None)
    assert capsys.readouterr().out == f"fastmlp {fm.__version__}\n"


def test_train_help_shows_readable_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")       # one line per option
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "None" not in out and "0.0833" not in out and "default 0)" not in out
    helps = {}              # flag -> its help, continuation lines joined
    for line in out.split("options:\n")[1].splitlines():
        if line.startswith("  -"):
            flag = line.split()[0]
        helps[flag] = helps.get(flag, "") + " " + line.strip()
    for flag, default in [("--sizes", "784,128,64,10"), ("--epochs", "10"),
                          ("--batch-size", "128"), ("--lr", "0.001"), ("--momentum", "0"),
                          ("--validation-split", "1/12"), ("--device", "auto")]:
        assert f"(default: {default}" in helps[flag], helps[flag]


@pytest.mark.parametrize("text, sizes", [("784,128,10", [784, 128, 10]),
                                         ("784-128-10", [784, 128, 10]),
                                         ("784, 32 ,10", [784, 32, 10])])
def test_sizes_accepted(text, sizes):
    assert cli._parser().parse_args(["train", f"--sizes={text}"]).sizes == sizes


@pytest.mark.parametrize("text, bad", [("784,-128,10", "-128"), ("784,0,10", "0"),
                                       ("-784-128-10", ""), ("784--128-10", ""),
                                       ("784,128,10,", ""), ("784,,10", ""),
                                       ("784,12.5,10", "12.5"), ("784,128-10", "128-10"),
                                       ("abc", "abc")])
def test_sizes_reject_non_positive_and_malformed(text, bad, capsys, no_loading):
    err = _usage_error(["train", f"--sizes={text}"], capsys)
    assert "argument --sizes" in err and f"got {bad!r} in {text!r}" in err
    assert no_loading == []


def test_sizes_need_two_widths(capsys):
    assert "at least an input and an output" in _usage_error(["train", "--sizes", "784"], capsys)


@pytest.mark.parametrize("bad", ["2", "1", "-0.1", "nan", "half"])
def test_validation_split_checked_before_loading(bad, capsys, no_loading):
    err = _usage_error(["train", f"--validation-split={bad}", "--data", "/nonexistent"], capsys)
    assert "argument --validation-split" in err and repr(bad) in err
    assert no_loading == []


def test_validation_split_zero_means_none():
    assert cli._parser().parse_args(["train", "--validation-split", "0"]).validation_split == 0


def _read_only(path, monkeypatch):
    """Make ``path`` read-only; as root, who may write anyway, have os.access say no too."""
    path.chmod(0o555 if path.is_dir() else 0o444)
    if getattr(os, "geteuid", lambda: -1)() != 0:
        return
    access = os.access

    def denied(p, mode, **kwargs):
        if Path(p) == path and mode & os.W_OK:
            return False
        return access(p, mode, **kwargs)

    monkeypatch.setattr(os, "access", denied)


@pytest.mark.parametrize("case", ["no_dir", "is_dir", "dir_read_only", "file_read_only"])
def test_save_path_checked_before_loading(case, tmp_path, capsys, no_loading, monkeypatch):
    path = {"no_dir": tmp_path / "no" / "such" / "m.safetensors", "is_dir": tmp_path,
            "dir_read_only": tmp_path / "ro" / "m.safetensors",
            "file_read_only": tmp_path / "m.safetensors"}[case]
    if case == "dir_read_only":
        path.parent.mkdir()
        _read_only(path.parent, monkeypatch)
    elif case == "file_read_only":
        path.write_bytes(b"")
        _read_only(path, monkeypatch)
    assert cli.main(["train", "--device", "cpu", "--save", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--save {path}: " in err and "Traceback" not in err
    assert no_loading == []
    assert not (tmp_path / "no").exists()


def test_missing_data_dir_is_an_error_not_created(tmp_path, capsys, no_loading):
    typo = tmp_path / "mnsit"
    assert cli.main(["train", "--device", "cpu", "--data", str(typo)]) == 2
    err = capsys.readouterr().err
    assert f"--data {typo}: no such directory" in err
    assert no_loading == [] and not typo.exists()


def test_missing_data_message_names_the_data_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("FASTMLP_DATA", raising=False)
    with socket.socket() as s:        # a port that refuses connections: offline, at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FASTMLP_MNIST_URL", f"http://127.0.0.1:{port}/")
    assert cli.main(["train", "--device", "cpu", "--sizes", "784,10"]) == 2
    err = capsys.readouterr().err
    assert "MNIST files not found" in err and "pass --data DIR" in err
    assert "load_mnist(path=" not in err


@pytest.mark.parametrize("machine", ["without_cupy", "cupy_without_gpu"])
def test_an_unusable_device_hint_names_the_flag(capsys, request, machine):
    request.getfixturevalue(machine)
    assert cli.main(["train", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cpu" in err and 'device="cpu"' not in err


def test_sizes_that_do_not_fit_mnist_fail_before_loading(capsys):
    assert cli.main(["train", "--sizes", "10,10", "--data", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "--sizes must start with 784" in err and "--data" not in err
