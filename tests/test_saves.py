"""Saving as things go wrong: killed writers, concurrent writers, modes, links,
and errors that name the user's path (see fastmlp/atomic.py)."""

import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastmlp
from fastmlp import atomic

posix = pytest.mark.skipif(os.name != "posix", reason="fork, signals and modes are POSIX")


def _model(seed, width=256):
    return fastmlp.MLP([64, width, 10], seed=seed, device="cpu")


def _temps(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(atomic.SUFFIX))


def kill_a_saver(models, path, delay):
    """Fork a child that saves ``models`` to ``path`` in turn, forever, and
    SIGKILL it after ``delay`` seconds (also used by benchmarks/checkpoint_abuse.py)."""
    pid = os.fork()
    if pid == 0:                                 # the child: never returns to its caller
        try:
            for i in range(10**9):
                models[i % 2].save(path)
        finally:
            os._exit(1)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@posix
def test_killed_saves_leave_an_exact_file_and_the_next_save_cleans_up(tmp_path):
    """A child saves two models in turn, forever; it is SIGKILLed 60 times at
    random moments. Each time the file is one of the two models, whole, and
    the next save removes whatever temp file the kill left."""
    models = [_model(1), _model(2)]              # ~300 KB files: kills land mid-write
    path = tmp_path / "m.safetensors"
    models[0].save(path)
    rng, left, kills = random.Random(0), 0, 0
    while kills < 60:
        kill_a_saver(models, path, rng.uniform(0, 0.02))
        kills += 1
        loaded = fastmlp.load(path, device="cpu")
        assert any(np.array_equal(loaded.params, m.params) for m in models)
        left += len(_temps(tmp_path))
        models[kills % 2].save(path)
        assert _temps(tmp_path) == [], "the next save left a stale temp file"
    assert left > 0, "no kill landed mid-save: the test did not exercise the cleanup"


_HOLD_TEMP = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"half a checkpoint")
    print("locked", flush=True)
    time.sleep(60)
""")


@posix
def test_a_live_writers_temp_file_is_kept_and_a_dead_ones_removed(tmp_path):
    path = tmp_path / "m.safetensors"
    temp = tmp_path / (atomic.temp_prefix(str(path)) + "0123456789abcdef" + atomic.SUFFIX)
    writer = subprocess.Popen([sys.executable, "-c", _HOLD_TEMP, str(temp)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        _model(0, 8).save(path)                          # a concurrent writer is alive
        assert temp.exists()
    finally:
        writer.kill()
        writer.wait()
    _model(0, 8).save(path)                              # now it is dead
    assert not temp.exists()
    others = [tmp_path / (atomic.temp_prefix(str(tmp_path / name)) + "0123456789abcdef"
                          + atomic.SUFFIX)
              for name in ("other", "m.safetensors.bak", "m.safetensors.x")]
    for other in others:
        other.write_bytes(b"not ours")
    _model(0, 8).save(path)
    short = tmp_path / "m"                      # its temp files' prefix starts theirs
    _model(0, 8).save(short)
    assert all(o.exists() for o in others), "a save removed a temp file of another target"


def test_long_names_that_share_a_start_have_their_own_temp_files(tmp_path):
    a, b = "a" * 240 + "1", "a" * 240 + "2"
    assert atomic.temp_prefix(a) != atomic.temp_prefix(b)
    _model(0, 8).save(tmp_path / a)
    assert os.listdir(tmp_path) == [a]


@posix
@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_open_would_give(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        _model(0, 8).save(tmp_path / "m.st")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.st").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == mode


@posix
def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "m.st"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    _model(0, 8).save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    fastmlp.load(path, device="cpu")


@posix
def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "m.st"
    link = tmp_path / "link.st"
    _model(1, 8).save(target)
    link.symlink_to(target)
    model = _model(2, 8)
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(fastmlp.load(target, device="cpu").params, model.params)
    assert _temps(tmp_path) == [] and _temps(tmp_path / "real") == []


def test_a_missing_directory_fails_before_writing_and_names_the_path(tmp_path):
    path = tmp_path / "no" / "such" / "m.st"
    with pytest.raises(FileNotFoundError) as err:
        _model(0, 8).save(path)
    assert str(path) in str(err.value) and atomic.SUFFIX not in str(err.value)


def test_a_directory_in_the_way_is_named(tmp_path):
    (tmp_path / "m.st").mkdir()
    with pytest.raises(IsADirectoryError, match="m.st"):
        _model(0, 8).save(tmp_path / "m.st")


def _save_as_unprivileged_user(paths):
    """Try to save to each of ``paths`` in a forked child that drops root (root
    may write anything); one line per path, "saved" or the error."""
    model = _model(0, 8)
    model.save(os.path.join(os.path.dirname(paths[0]), "warm.st"))   # imports done as root
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            lines = []
            for path in paths:
                try:
                    model.save(path)
                    lines.append("saved")
                except OSError as e:
                    lines.append(f"{type(e).__name__} {e}")
            os.write(write, "\n".join(lines).encode())
        except BaseException as e:
            os.write(write, f"child failed: {e!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read().splitlines()
    os.waitpid(pid, 0)
    return out


@posix
def test_files_and_folders_the_user_may_not_write_are_refused(tmp_path):
    """As ``open()`` would refuse them, with errors naming the user's path."""
    readonly = tmp_path / "readonly.st"
    readonly.write_bytes(b"keep me")
    os.chmod(readonly, 0o444)
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    os.chmod(tmp_path, 0o777)
    out = _save_as_unprivileged_user([str(readonly), str(locked / "m.st")])
    assert out[0].startswith("PermissionError") and str(readonly) in out[0], out
    assert out[1].startswith("PermissionError") and str(locked / "m.st") in out[1], out
    assert atomic.SUFFIX not in "".join(out)
    assert readonly.read_bytes() == b"keep me"
    assert os.listdir(locked) == []
