"""How many threads a CPU step's products get, on a machine shared with
other processes.

A thread that waits for a core another process holds stalls the whole
product: beside one CPU-bound process on a 2-core machine, the MNIST
recipe's epoch (batch 128) took 3.1x its idle time with OpenBLAS's two
threads and 1.0x with one; idle, the two ran it in the same time. So:

- **Small steps stay on one thread**: below :data:`MIN_PARALLEL_WORK`
  multiply-adds a step (rows x parameters), a second thread does not pay
  even on idle cores (784-128-64-10 at batch 64: 1 thread 334k samples/s,
  2 threads 284k, measured on the 2-core machine; batch 128 and up, two pay).
- **The rest is measured, not assumed**: :class:`ThreadTuner` runs a few
  steps on one thread and a few on all the threads the process may use, keeps
  the faster, and tries the other again every :data:`RETRY` seconds, so that a
  busy neighbour arriving (or leaving) mid-fit moves the step to one thread
  (or back) within a few hundred steps.
- **Never more than the process may use** (:func:`cpu_budget`): its CPU
  affinity, a cgroup CPU quota (containers, CI runners), and the caller's
  own limit, read from OpenBLAS and Numba when the fit starts
  (``threadpoolctl.threadpool_limits``, joblib's workers, ``OPENBLAS_NUM_THREADS``,
  ``NUMBA_NUM_THREADS``).
- ``FASTMLP_THREADS=N`` fixes the count (no measuring): 1 for a fit that
  should never take a second core.
"""

import math
import os
import statistics

#: a step below this many multiply-adds (rows x parameters) runs on one thread
MIN_PARALLEL_WORK = 1 << 23
#: steps timed per trial of a thread count (the first one after a switch not counted)
TRIAL = 8
#: seconds of steps on the chosen count before the other is tried again (see ThreadTuner),
#: up to LONGEST: the steps' own seconds, so that a trial's cost is a bounded share of the
#: fit's time whatever the step's size, and time between steps does not count
RETRY = 0.25
LONGEST = 8.0
#: a trial of more threads ends at its first step this many times slower than one thread's
ABORT = 2.0
#: more threads are kept only when their steps are this many times faster than one thread's:
#: a small gain evaporates as soon as another process wants a core, and its cost does not
MARGIN = 1.1


def _cgroup_quota():
    """CPUs a cgroup CPU quota allows (v2 ``cpu.max``, v1 ``cfs_quota_us``), or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def cpu_budget():
    """CPUs this process may run on: its affinity, bounded by a cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:                      # not on Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(n, quota) if quota else n)


def _own_running():
    """This process's runnable threads (its spinning BLAS and Numba workers too)."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat", "rb") as f:
                # the state follows the command, which is in parentheses
                if f.read().rsplit(b")", 1)[1].split()[0] == b"R":
                    count += 1
        except (OSError, IndexError):
            continue
    return count


def others_running():
    """Runnable threads of other processes right now, system-wide (Linux's
    ``procs_running`` less this process's own), or None where that cannot be
    read. About 50 us; asked only before a trial of more threads."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"procs_running"):
                    return max(0, int(line.split()[1]) - max(1, _own_running()))
    except (OSError, ValueError, IndexError):
        pass
    return None


def crowded(threads, budget=None):
    """Whether ``threads`` threads would have to wait for cores that other
    processes' runnable threads hold now (False where that cannot be told)."""
    others = others_running()
    return others is not None and others + threads > (budget or cpu_budget())


def fixed():
    """The count ``FASTMLP_THREADS`` fixes (None when unset); ValueError if it is not
    a positive integer."""
    raw = os.environ.get("FASTMLP_THREADS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"FASTMLP_THREADS must be a positive integer, got {raw!r}")
    return n


def most_threads(caller_limit, work):
    """The most threads a step of ``work`` multiply-adds may take: 1 for small
    steps, else ``FASTMLP_THREADS`` or the CPU budget, never above
    ``caller_limit`` (the pool's own setting when the fit starts)."""
    n = fixed()
    if n is None:
        if work < MIN_PARALLEL_WORK:
            return 1
        n = cpu_budget()
    return max(1, min(n, caller_limit))


class ThreadTuner:
    """The thread count for the next step of one engine, from the step
    times it is told (:meth:`record`): the faster of 1 and ``most``.

    - One thread is timed first (:data:`TRIAL` steps, after one to warm
      up), then ``most``; ``most`` is kept where it is :data:`MARGIN` times
      faster, else one thread.
    - After :data:`RETRY` seconds of steps on the kept count (the steps' own
      time: what runs between them does not count) the other is tried
      again, against the kept count's latest :data:`TRIAL` steps. From the
      second retry in a row that the kept count wins, each doubles the wait
      (up to :data:`LONGEST`): one lost trial may have met a passing
      neighbour, several have not.
    - A trial of ``most`` ends at its first counted step :data:`ABORT` times
      slower than one thread's (a thread waiting for a busy core can make a
      step 30x slower: no need to see eight), and is not even started while
      ``crowded(most)`` says other processes' runnable threads hold the
      cores (:func:`crowded`).
    - On ``most``, two steps in a row :data:`ABORT` times slower than its
      latest median (the cores got busy) start a trial of one thread at once.

    With ``measure`` False (``FASTMLP_THREADS`` set), always ``most``."""

    def __init__(self, most, measure=True, crowded=None):
        self.most = most
        self._crowded = crowded or (lambda threads: False)
        self.measure = measure and most > 1
        self.threads = 1 if self.measure else most
        self.chosen = None                   # None until both counts have had a trial
        self._times = {most: [], 1: []}      # seconds a row, the latest TRIAL steps of each
        self._left, self._warm = TRIAL + 1, True
        self._wait = RETRY
        self._streak = 0                     # retries the kept count won in a row
        self._until = None                   # while waiting on the chosen count: seconds left
        self._slow = []                      # slow steps in a row on ``most``

    def next(self):
        """Threads for the next step."""
        return self.threads

    def record(self, seconds, rows):
        """The step just run on :meth:`next`'s count took ``seconds`` for ``rows`` rows."""
        if not self.measure:
            return
        per = seconds / max(rows, 1)
        self._left -= 1
        if self._until is not None:
            self._until -= seconds
            if self._until <= 0:                 # the wait on the chosen count is over
                self._left, self._until = 0, None
        if self.threads == self.most and self.threads != self.chosen and not self._warm:
            single = self._times[1]
            if single and per > ABORT * statistics.median(single):
                self._times[self.most] = [per]
                return self._settle(1)       # a trial of ``most`` lost at once
        if self.chosen == self.most and self.threads == self.most and not self._warm:
            window = self._times[self.most]
            if len(window) == TRIAL and per > ABORT * statistics.median(window):
                self._slow.append(per)       # one slow step may be a pause; two in a row:
                if len(self._slow) == 2:     # the cores got busy, time one thread now
                    self._times[self.most], self._slow = self._slow, []
                    return self._switch(1, TRIAL + 1)
                return
            self._slow = []
        if self._warm:                       # the first step after a switch: not counted
            self._warm = False
        else:
            window = self._times[self.threads]
            window.append(per)
            del window[:-TRIAL]
        if self._left > 0:
            return
        if self.chosen is None and self.threads == 1:
            if self._crowded(self.most):     # no core for them now: not worth a step
                return self._settle(1)
            self._switch(self.most, TRIAL + 1)   # one thread's trial is over: now ``most``
        elif self.chosen is None or self.threads != self.chosen:
            medians = self.recent            # a trial is over: keep the faster
            wins = medians.get(self.most, math.inf) * MARGIN < medians.get(1, math.inf)
            self._settle(self.most if wins else 1)
        elif self.chosen == 1 and self._crowded(self.most):
            self._settle(1)                  # the wait is over, but the cores are taken
        else:                                # the wait is over: try the other count
            self._switch(1 if self.chosen == self.most else self.most, TRIAL + 1)

    def _settle(self, threads):
        # the retried count lost again: wait longer before the next try (a trial on the
        # slower count costs its steps, and the kept count's own slow steps end a wait)
        self._streak = self._streak + 1 if threads == self.chosen else 0
        self._wait = min(RETRY * 2 ** max(0, self._streak - 1), LONGEST)
        self.chosen = threads
        self._switch(threads, 1 << 62)
        self._until = self._wait

    def _switch(self, threads, steps):
        self._until = None
        if threads != self.threads:          # a fresh trial, after a step to warm up
            self._times[threads] = []
            self._warm = True
        self.threads, self._left = threads, steps

    @property
    def recent(self):
        """Median seconds a row of each count's latest steps."""
        return {k: statistics.median(v) for k, v in self._times.items() if v}
