"""Runs tests/cudasim/ (kernels/cuda.py against the reference ops) in a fresh
process under Numba's CUDA simulator, so CI tests the CUDA kernels without a GPU."""

import os
import subprocess
import sys
from pathlib import Path


def test_cuda_kernels_in_the_simulator():
    here = Path(__file__).parent
    path = os.pathsep.join(filter(None, [str(here), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
         "python_files=check_*.py", "-o", "addopts=", str(here / "cudasim")],
        env=env, capture_output=True, text=True, cwd=here.parent)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout
