"""Data-parallel training over MPI (``fit(comm=...)``, fastmlp.distributed): two
ranks at global batch B give one process's model at batch B, up to the order of
floating-point sums, and part from it when the all-reduce is skipped."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp as fm

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    case, out = json.loads(sys.argv[1]), sys.argv[2]
    if case.get("device") == "cuda":      # the NumPy stand-in for CuPy, as conftest.py puts it
        sys.path.insert(0, os.path.join(os.getcwd(), "tests", "cupy_standin"))
    import numpy as np
    from mpi4py import MPI
    import fastmlp as fm
    from fastmlp import callbacks, distributed
    rank = MPI.COMM_WORLD.rank
    with open(f"{out}/pid{rank}", "w") as f:
        f.write(str(os.getpid()))
    if case.get("skip_allreduce"):
        distributed.AllReduceEngine.reduce = lambda self, a: None
    x, y, w = __import__("tests.test_distributed", fromlist=["data"]).data(case)
    if case.get("memmap"):                # on disk: each rank reads its rows only
        x.tofile(f"{out}/x{rank}.f64")
        x = np.memmap(f"{out}/x{rank}.f64", dtype=np.float64, mode="r", shape=x.shape)
    if case.get("bad_rank") == rank:
        x = x.copy()
        x[5, 1] = np.nan

    class Fail(callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            if rank == case["fail"]["rank"] and epoch == 2:
                if case["fail"]["how"] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("a failure on one rank")

    cbs = [Fail()] if case.get("fail") else []
    if case.get("files"):
        cbs += [callbacks.CSVLogger(f"{out}/log{rank}.csv"),
                callbacks.ModelCheckpoint(out + "/ckpt-{epoch}-" + str(rank) + ".safetensors")]
    if case.get("load"):
        m = fm.load(case["load"])
        opt = None
    else:
        m = fm.MLP(case["sizes"], device=case.get("device", "cpu"), seed=0, dtype="float64",
                   loss=case["loss"])
        opt = case["optimizer"]
    try:
        h = m.fit(x, y, epochs=case.get("epochs", 3), batch_size=case["batch"], optimizer=opt,
                  sample_weight=w, comm=MPI.COMM_WORLD, callbacks=cbs,
                  **__import__("tests.test_distributed", fromlist=["extra"]).extra(case))
    except ValueError as e:
        with open(f"{out}/error{rank}.txt", "w") as f:
            f.write(str(e))
        sys.exit(0)
    np.save(f"{out}/params{rank}.npy", m.backend.to_numpy(m.params))
    with open(f"{out}/history{rank}.json", "w") as f:
        json.dump(h.history, f)
""")


def data(case):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(case["n"], case["sizes"][0]))
    if case["loss"] == "cross_entropy":
        y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 0.8)
    else:
        y = x[:, :case["sizes"][-1]] * 2.0
    w = rng.uniform(0.2, 2.0, case["n"]) if case.get("weighted") else None
    if case.get("sparse"):                   # 3% non-zeros: the sparse first layer
        import scipy.sparse
        x = scipy.sparse.csr_matrix(np.where(rng.random(x.shape) < 0.03, x, 0.0))
    return x, y, w


def _launch(case, tmp_path, n=2, timeout=300):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-c", CHILD, json.dumps(case),
                           str(tmp_path)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=root)


def _ranks(case, tmp_path, n=2):
    done = _launch(case, tmp_path, n)
    assert done.returncode == 0, done.stderr[-3000:]
    params = [np.load(tmp_path / f"params{r}.npy") for r in range(n)]
    hists = [json.loads((tmp_path / f"history{r}.json").read_text()) for r in range(n)]
    return params, hists


def extra(case):
    """fit's validation and metrics arguments for ``case``."""
    if not case.get("validation"):
        return {}
    return {"validation_split": 0.25, "metrics": ["accuracy", "top_k_accuracy",
                                                  lambda t, p: float(np.mean(t == p))]}


def _one(case, epochs=3, load=None, callbacks=()):
    x, y, w = data(case)
    if load is None:
        m, opt = fm.MLP(case["sizes"], device="cpu", seed=0, dtype="float64",
                        loss=case["loss"]), case["optimizer"]
    else:
        m, opt = fm.load(load), None
    h = m.fit(x, y, epochs=epochs, batch_size=case["batch"], optimizer=opt, sample_weight=w,
              callbacks=list(callbacks), **extra(case))
    return m.params, h.history


CASES = {
    "adam": {"n": 203, "sizes": [6, 16, 3], "batch": 32, "optimizer": "adam",
             "loss": "cross_entropy"},
    "sgd-weighted": {"n": 203, "sizes": [6, 16, 3], "batch": 32, "optimizer": "sgd",
                     "loss": "cross_entropy", "weighted": True},
    "validation-metrics": {"n": 203, "sizes": [6, 16, 3], "batch": 32, "optimizer": "adam",
                           "loss": "cross_entropy", "weighted": True, "validation": True},
    "mse-tiny-last-batch": {"n": 129, "sizes": [6, 8, 2], "batch": 32, "optimizer": "adam",
                            "loss": "mse"},                 # the last batch: one row, one rank
    "memmap": {"n": 203, "sizes": [6, 16, 3], "batch": 32, "optimizer": "adam",
               "loss": "cross_entropy", "memmap": True},
    "sparse": {"n": 203, "sizes": [60, 16, 3], "batch": 32, "optimizer": "adam",
               "loss": "cross_entropy", "sparse": True, "validation": True},
}


@pytest.mark.cuda
def test_two_ranks_on_cuda_give_one_process_model(tmp_path):
    """On CUDA the gradient crosses to host memory for the all-reduce (NCCL: not yet)."""
    params, _ = _ranks({**CASES["adam"], "device": "cuda"}, tmp_path)
    ref, _ = _one(CASES["adam"])
    np.testing.assert_allclose(params[0], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_give_one_process_model(name, tmp_path):
    case = CASES[name]
    params, hists = _ranks(case, tmp_path)
    np.testing.assert_array_equal(params[0], params[1])     # the ranks agree bit for bit
    for h in hists:
        h.pop("seconds")
    assert hists[0] == hists[1]
    ref, ref_hist = _one(case)
    np.testing.assert_allclose(params[0], ref, rtol=1e-10, atol=1e-12)
    assert list(hists[0]) == [k for k in ref_hist if k != "seconds"]
    for key in ref_hist:
        if key != "seconds":
            np.testing.assert_allclose(hists[0][key], ref_hist[key], rtol=1e-10, err_msg=key)
    if "train_accuracy" in ref_hist:
        assert hists[0]["train_accuracy"] == pytest.approx(ref_hist["train_accuracy"], rel=1e-12)


def test_without_the_all_reduce_the_ranks_part(tmp_path):
    params, _ = _ranks({**CASES["adam"], "skip_allreduce": True}, tmp_path)
    ref, _ = _one(CASES["adam"])
    assert np.abs(params[0] - params[1]).max() > 1e-3
    assert np.abs(params[0] - ref).max() > 1e-3


def test_comm_must_be_a_communicator():
    m = fm.MLP([3, 2], device="cpu")
    with pytest.raises(TypeError, match="mpi4py communicator"):
        m.fit(np.zeros((4, 3)), np.zeros(4, int), comm=object())


def test_the_cli_trains_over_mpi_ranks(mnist_dir, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OPENBLAS_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "fastmlp.cli", "train",
                           "--epochs", "1", "--sizes", "784,32,10", "--data", str(mnist_dir),
                           "--no-progress", "--save", str(tmp_path / "m.safetensors")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "2 MPI ranks" in out and out.count("test accuracy") == 1   # rank 0 speaks
    assert float(out.split("test accuracy ")[1].split()[0]) > 0.9
    assert fm.load(tmp_path / "m.safetensors").sizes == [784, 32, 10]


def test_a_bad_input_on_one_rank_stops_every_rank_before_the_first_step(tmp_path):
    done = _launch({**CASES["adam"], "bad_rank": 1}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for r in (0, 1):                       # both refused, naming rank 1; no step was taken
        said = (tmp_path / f"error{r}.txt").read_text()
        assert "refused on 1 of 2 ranks: rank 1: ValueError" in said and "NaN" in said
        assert not (tmp_path / f"params{r}.npy").exists()


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_rank_that_fails_stops_the_others_in_bounded_time(how, tmp_path):
    import time
    start = time.perf_counter()
    done = _launch({**CASES["adam"], "epochs": 30, "fail": {"rank": 1, "how": how}}, tmp_path,
                   timeout=120)
    assert done.returncode != 0 and time.perf_counter() - start < 60
    said = done.stdout + done.stderr
    if how == "raise":
        assert "fastmlp: rank 1 of 2 failed" in said and "a failure on one rank" in said
    else:       # the launcher names the dead rank's PID (fastmlp logs each rank's PID)
        assert f"PID {(tmp_path / 'pid1').read_text()} " in said, said[-2000:]
    assert not (tmp_path / "params0.npy").exists()


def test_only_rank_0_writes_files_and_checkpoints_resume_across_rank_counts(tmp_path):
    case = CASES["adam"]
    _ranks({**case, "files": True}, tmp_path)
    assert (tmp_path / "log0.csv").exists() and not (tmp_path / "log1.csv").exists()
    assert len((tmp_path / "log0.csv").read_text().splitlines()) == 4      # header, 3 epochs
    assert not list(tmp_path.glob("ckpt-*-1.safetensors"))
    whole, _ = _one(case, epochs=3)
    # a 2-rank checkpoint (epoch 2) resumed by one process
    one, _ = _one(case, epochs=1, load=tmp_path / "ckpt-2-0.safetensors")
    np.testing.assert_allclose(one, whole, rtol=1e-10, atol=1e-12)
    # a 1-process checkpoint resumed by two ranks
    from fastmlp import callbacks
    _one(case, epochs=2, callbacks=[callbacks.ModelCheckpoint(tmp_path / "solo.safetensors")])
    later = tmp_path / "later"
    later.mkdir()
    params, _ = _ranks({**case, "load": str(tmp_path / "solo.safetensors"), "epochs": 1}, later)
    np.testing.assert_allclose(params[0], whole, rtol=1e-10, atol=1e-12)
