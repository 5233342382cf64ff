"""The GPU check's own plumbing, without a GPU."""

import subprocess
import sys

import gpu_check


def test_the_package_tree_imports_fastmlp_and_its_kernels_from_this_checkout():
    tree = gpu_check.package_tree()
    code = ("import fastmlp, fastmlp.kernels.reference as r, fastmlp.engines;"
            "print(fastmlp.__file__); print(r.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env={"PYTHONPATH": str(tree)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(tree)) and out[1].startswith(str(tree / "fastmlp" / "kernels"))
