"""Smoke tests of the comparison commands: they run, and write what they say.
No timing is checked here."""

import json

import pytest

import compare
import fastmlp as fm
import mnist_e2e


def test_flops_per_sample_counts_the_three_gemms_per_layer():
    # forward + weight gradient for every layer, input gradient for all but the first
    assert compare.flops_per_sample((784, 128, 64, 10)) == (
        2 * 2 * (784 * 128 + 128 * 64 + 64 * 10) + 2 * (128 * 64 + 64 * 10))
    assert compare.flops_per_sample((3, 1)) == 2 * 2 * 3


def test_compare_writes_table_json_and_ratios(tmp_path, capsys):
    record = compare.main(["--systems", "fastmlp,fastmlp-reference,fastmlp-fused",
                           "--batch-sizes", "2,8",
                           "--repeats", "2", "--target-seconds", "0.001", "--out",
                           str(tmp_path), "--tag", "smoke"])
    out = capsys.readouterr().out
    assert "| 2 |" in out and "| 8 |" in out and "% of GEMM peak" in out
    assert "fastmlp engine" in out and "fastmlp-reference engine" in out
    written = json.loads(next(tmp_path.glob("compare-smoke-*.json")).read_text())
    assert written["flops_per_sample"] == compare.flops_per_sample()
    assert set(written["median_samples_per_s"]) == {"fastmlp", "fastmlp-reference",
                                                    "fastmlp-fused"}
    assert all(len(v) == 2 for v in written["samples_per_s"]["fastmlp"].values())
    assert written["gemm_gflops"] > 0 and record["machine"]["device"] == "cpu"
    assert written["engines"]["fastmlp-reference"] == {"2": "layer", "8": "layer"}
    blas = bool(fm.engines.cpu_step.blas_gemm().size)       # dense random batches of 2 and 8
    assert written["engines"]["fastmlp"] == {"2": "cpu-gemm" if blas else "layer",
                                             "8": "cpu-gemm" if blas else "layer"}


def test_missing_peers_are_skipped_with_a_message(monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    assert compare.available(["pytorch", "fastmlp"], "cpu") == ["fastmlp"]
    assert "skipping pytorch" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown system"):
        compare.available(["keras"], "cpu")


def test_each_installed_peer_trains_one_step():
    for name in compare.available(list(compare.SYSTEMS), "cpu"):
        import numpy as np
        x = np.random.default_rng(0).random((4, 784), dtype=np.float32)
        y = np.arange(4)
        compare.SYSTEMS[name](4, x, y, "cpu")(2)


def test_mnist_e2e_runs_the_recipe(mnist_dir, tmp_path, capsys):
    rows = mnist_e2e.main(["--systems", "fastmlp", "--repeats", "1", "--data", str(mnist_dir),
                           "--out", str(tmp_path), "--tag", "smoke", "--epochs", "1"])
    assert rows["fastmlp"]["test_accuracy"] > 0.9
    assert "| fastmlp |" in capsys.readouterr().out
    assert next(tmp_path.glob("mnist-smoke-*.json"))
