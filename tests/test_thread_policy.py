"""The CPU steps' thread policy (``kernels/cpu_threads.py``): small steps on
one thread, the rest measured on the fit's own steps, never more threads than
the process may use or its caller allows, and one thread as soon as other
processes take the cores. Step times are simulated where the policy's logic
is tested; the fits at the end run for real."""

import itertools

import numpy as np
import pytest

import fastmlp as fm
from fastmlp.kernels import blas, cpu_threads
from fastmlp.kernels.cpu_threads import ThreadTuner

needs_blas = pytest.mark.skipif(blas.THREADS is None, reason="NumPy bundles no OpenBLAS here")


def _drive(tuner, cost, steps):
    """Run ``steps`` simulated steps, ``cost(threads, i)`` ms each: the counts used."""
    used = []
    for i in range(steps):
        threads = tuner.next()
        used.append(threads)
        tuner.record(cost(threads, i) * 1e-3, 1)
    return used


def _runs(used):
    return [(k, len(list(g))) for k, g in itertools.groupby(used)]


def test_idle_cores_keep_the_threads_that_pay():
    used = _drive(ThreadTuner(4), lambda t, i: 0.5 if t == 4 else 1.0, 3000)
    assert used[:9] == [1] * 9                   # one thread is timed first
    assert used.count(4) > 0.95 * len(used)


def test_a_small_gain_is_not_worth_a_second_thread():
    used = _drive(ThreadTuner(2), lambda t, i: 0.95 if t == 2 else 1.0, 3000)
    assert used.count(1) > 0.95 * len(used)


def test_busy_cores_cost_one_slow_step_per_retry_and_the_retries_back_off():
    """A step on a core another process holds: 30x slower."""
    used = _drive(ThreadTuner(2), lambda t, i: 30.0 if t == 2 else 1.0, 6000)
    runs = _runs(used)
    assert all(n <= 2 for t, n in runs if t == 2)       # each trial ends at its first slow step
    waits = [n for t, n in runs if t == 1][1:-1]
    assert waits == sorted(waits) and waits[-1] >= 4 * waits[0]    # doubling
    assert used.count(2) <= 12


def test_cores_that_get_busy_mid_fit_bring_the_step_down_at_once():
    cost = lambda t, i: (0.5 if t == 2 else 1.0) if i < 1000 else (30.0 if t == 2 else 1.0)  # noqa: E731
    used = _drive(ThreadTuner(2), cost, 3000)
    assert used[1000:1002] == [2, 2] and used[1002:1011] == [1] * 9
    assert used[1011:].count(2) <= 12


def test_one_slow_step_is_a_pause_not_a_busy_core():
    cost = lambda t, i: 5.0 if i == 700 else (0.5 if t == 2 else 1.0)  # noqa: E731
    used = _drive(ThreadTuner(2), cost, 2000)
    assert used[690:720] == [2] * 30


def test_a_crowded_machine_gets_no_trial_at_all():
    tuner = ThreadTuner(2, crowded=lambda n: True)
    used = _drive(tuner, lambda t, i: 30.0 if t == 2 else 1.0, 3000)
    assert used == [1] * 3000


def test_fixed_threads_are_not_measured():
    used = _drive(ThreadTuner(3, measure=False), lambda t, i: 1.0, 100)
    assert used == [3] * 100


def test_the_budget_is_the_affinity_bounded_by_a_cgroup_quota(monkeypatch):
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3},
                        raising=False)
    monkeypatch.setattr(cpu_threads, "_cgroup_quota", lambda: None)
    assert cpu_threads.cpu_budget() == 4
    monkeypatch.setattr(cpu_threads, "_cgroup_quota", lambda: 2)
    assert cpu_threads.cpu_budget() == 2


def test_a_cgroup_v2_quota_is_read(monkeypatch, tmp_path):
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path == "/sys/fs/cgroup/cpu.max":
            (tmp_path / "cpu.max").write_text("150000 100000\n")
            return real_open(tmp_path / "cpu.max", *args, **kwargs)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", fake_open)
    assert cpu_threads._cgroup_quota() == 2               # 1.5 CPUs: two threads at most


@pytest.mark.parametrize("raw, want", [("", None), ("3", 3), (" 1 ", 1)])
def test_fastmlp_threads(raw, want, monkeypatch):
    monkeypatch.setenv("FASTMLP_THREADS", raw)
    assert cpu_threads.fixed() == want


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_fastmlp_threads_refuses_nonsense(raw, monkeypatch):
    monkeypatch.setenv("FASTMLP_THREADS", raw)
    with pytest.raises(ValueError, match="FASTMLP_THREADS must be a positive integer"):
        cpu_threads.fixed()


def test_small_steps_and_the_callers_limit_bound_the_threads(monkeypatch):
    monkeypatch.delenv("FASTMLP_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "cpu_budget", lambda: 8)
    assert cpu_threads.most_threads(8, cpu_threads.MIN_PARALLEL_WORK - 1) == 1
    assert cpu_threads.most_threads(8, cpu_threads.MIN_PARALLEL_WORK) == 8
    assert cpu_threads.most_threads(3, 1 << 30) == 3       # the caller's own limit
    monkeypatch.setenv("FASTMLP_THREADS", "2")
    assert cpu_threads.most_threads(8, 1) == 2             # asked for: even a small step


def test_others_running_excludes_this_process():
    others = cpu_threads.others_running()
    assert others is None or others >= 0


def _fit(batch_size=256):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((1024, 300)).astype(np.float32), rng.integers(0, 5, 1024)
    m = fm.MLP([300, 128, 5], device="cpu", seed=0)
    m.fit(x, y, epochs=2, batch_size=batch_size, optimizer="adam")
    (engine, _), = m._engines.values()
    return m, engine


@needs_blas
def test_a_fit_under_threadpool_limits_takes_one_thread_and_gives_blas_back(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.delenv("FASTMLP_THREADS", raising=False)
    before = blas.THREADS[0]()
    with threadpoolctl.threadpool_limits(limits=1):
        m, engine = _fit()
        assert blas.THREADS[0]() == 1
    assert m.step_path.engine == "cpu-gemm"
    assert engine._kept.most == 1 and not engine._kept.measure
    assert blas.THREADS[0]() == before


@needs_blas
def test_fastmlp_threads_fixes_a_fits_threads(monkeypatch):
    monkeypatch.setenv("FASTMLP_THREADS", "1")
    _, engine = _fit()
    assert engine._kept.most == 1 and not engine._kept.measure
