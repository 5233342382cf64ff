"""How the warp engine launches tile kernels (``kernels/warp_step.py``):
one program per thread block, on Warp's CPU device as on CUDA. Skipped
without warp-lang."""

import numpy as np
import pytest

wp = pytest.importorskip("warp")

from fastmlp.kernels import warp_step  # noqa: E402


@wp.kernel(module="unique")
def _count_blocks(counter: wp.array(dtype=wp.float32)):
    wp.tile_atomic_add(counter, wp.tile_ones(shape=1, dtype=wp.float32), offset=0)


def test_a_tile_kernel_runs_once_per_block():
    """Warp's CPU device runs blocks of one thread unless told otherwise: a
    tile kernel launched with its threads as a grid dimension ran its whole
    block program once per thread there (64 times the work of every product;
    a tile atomic add counted 64 times)."""
    counter = wp.zeros(1, dtype=wp.float32, device="cpu")
    step = warp_step.Recorded()
    step.device = "cpu"
    step.launches = [(_count_blocks, (5, 3), [counter], warp_step.TILE_THREADS)]
    warp_step.TILED.add(_count_blocks)
    try:
        step.run()
    finally:
        warp_step.TILED.discard(_count_blocks)
    assert counter.numpy()[0] == 15


def test_the_products_cover_ragged_shapes():
    """Each output tile once, tails included (tile loads and stores are bounds-checked)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(37, 21)), rng.normal(size=(21, 19))
    out = wp.zeros((37, 19), dtype=wp.float64, device="cpu")
    step = warp_step.Recorded()
    step.device = "cpu"
    step.launches = [warp_step.gemm_launch(wp.array(a, device="cpu"), wp.array(b, device="cpu"),
                                           out, 0, 0)]
    step.run()
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-13)
