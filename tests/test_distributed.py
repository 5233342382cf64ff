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
    import json, sys
    import numpy as np
    from mpi4py import MPI
    import fastmlp as fm
    from fastmlp import distributed
    case, out = json.loads(sys.argv[1]), sys.argv[2]
    if case.get("skip_allreduce"):
        distributed.AllReduceEngine.reduce = lambda self, a: None
    x, y, w = __import__("tests.test_distributed", fromlist=["data"]).data(case)
    m = fm.MLP(case["sizes"], device="cpu", seed=0, dtype="float64", loss=case["loss"])
    h = m.fit(x, y, epochs=3, batch_size=case["batch"], optimizer=case["optimizer"],
              sample_weight=w, comm=MPI.COMM_WORLD)
    np.save(f"{out}/params{MPI.COMM_WORLD.rank}.npy", m.params)
    with open(f"{out}/history{MPI.COMM_WORLD.rank}.json", "w") as f:
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
    return x, y, w


def _ranks(case, tmp_path, n=2):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-c", CHILD, json.dumps(case),
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    params = [np.load(tmp_path / f"params{r}.npy") for r in range(n)]
    hists = [json.loads((tmp_path / f"history{r}.json").read_text()) for r in range(n)]
    return params, hists


def _one(case):
    x, y, w = data(case)
    m = fm.MLP(case["sizes"], device="cpu", seed=0, dtype="float64", loss=case["loss"])
    h = m.fit(x, y, epochs=3, batch_size=case["batch"], optimizer=case["optimizer"],
              sample_weight=w)
    return m.params, h.history


CASES = {
    "adam": {"n": 203, "sizes": [6, 16, 3], "batch": 32, "optimizer": "adam",
             "loss": "cross_entropy"},
    "sgd-weighted": {"n": 203, "sizes": [6, 16, 3], "batch": 32, "optimizer": "sgd",
                     "loss": "cross_entropy", "weighted": True},
    "mse-tiny-last-batch": {"n": 129, "sizes": [6, 8, 2], "batch": 32, "optimizer": "adam",
                            "loss": "mse"},                 # the last batch: one row, one rank
}


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
    np.testing.assert_allclose(hists[0]["train_loss"], ref_hist["train_loss"], rtol=1e-10)
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
