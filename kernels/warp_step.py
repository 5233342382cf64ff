"""A whole training step as NVIDIA Warp launches on buffers that stay put:
recorded once into a graph (``wp.ScopedCapture``) and replayed for every
batch of the same size, on CUDA (a CUDA graph) or on Warp's CPU device.

The launches of one step, for a batch of ``n`` rows already copied into the
step's own input buffers:

1. the loss scale from the batch's weights (``scale_kernel``), on the device;
2. forward, layer by layer: ``Z = A W`` (the tile product, ``GEMMS``), then bias +
   activation (``warp_ops.bias_act_kernel``); the logits stay in the last
   layer's buffer;
3. hits (``hits_kernel``) and the loss head (``warp_ops``' cross-entropy or
   element-wise kernel), which overwrites the logits with ``dLoss/dZ``; the
   loss and hits are added into a 2-element accumulator;
4. backward, the last layer first: the bias gradient (column sums), the
   weight gradient ``A^T dZ`` and the input gradient ``dZ W^T`` times
   ``f'(A)``, into the model's gradient buffer;
5. the optimizer's update over the flat parameters (``warp_ops``' update
   kernels), reading its rate (and Adam's bias corrections) from a device
   array that the host rewrites between replays: schedules need no new
   capture.

The products are Warp tile kernels (``wp.tile_load`` / ``tile_matmul`` /
``tile_store``, 16 x 16 tiles), one output tile a thread block, summed over
K in a fixed order: the same results run to run. Where the network fits
a block's shared memory and no dropout applies, steps 2 to 4 are one
launch instead: the fused kernel of ``kernels/warp_fused.py``, which
carries a block of rows' whole forward and backward with the activations
kept on chip (tiny-cuda-nn's fully fused MLP). Kernels are leaves: nothing
here imports fastmlp.
"""

import typing

import warp as wp

from . import warp_fused, warp_ops
from .warp_ops import instantiate

Any = typing.Any


#: the tile edge of the products, and the threads of each tile's block
TILE, TILE_THREADS = 16, 64
# every kernel of this module launches with TILE_THREADS a block: one build per device
# (Warp builds a module once per block size), and the one that AOT compiles
wp.set_module_options({"block_dim": TILE_THREADS})


#: the module of the TF32 products: built only when a model asks for them (on the CPU
#: Warp computes them in float32 and warns when it builds them)
TF32_MODULE = __name__ + "_tf32"


def _gemm(dtype, ta, tb, tf32=False):
    """The tile kernel of c = op(a) op(b) in ``dtype``, op transposing where
    ``ta`` / ``tb``: one (TILE, TILE) block of ``c`` per thread block, summed
    over K in tiles; Warp's tile loads and stores are bounds-checked (padded
    with zeros), so no size needs to be a multiple of the tile. With
    ``tf32`` (float32 only) the tile products take TF32 inputs on tensor
    cores (cuBLASDx, sm_80 and later), accumulating in float32."""
    t = TILE

    def gemm(a: wp.array2d(dtype=dtype), b: wp.array2d(dtype=dtype),
             c: wp.array2d(dtype=dtype)):
        i, j = wp.tid()
        acc = wp.tile_zeros(shape=(t, t), dtype=dtype)
        k_len = a.shape[1]
        if wp.static(ta):
            k_len = a.shape[0]
        for k in range((k_len + t - 1) // t):
            if wp.static(ta):
                ta_ = wp.tile_transpose(wp.tile_load(a, shape=(t, t), offset=(k * t, i * t)))
            else:
                ta_ = wp.tile_load(a, shape=(t, t), offset=(i * t, k * t))
            if wp.static(tb):
                tb_ = wp.tile_transpose(wp.tile_load(b, shape=(t, t), offset=(j * t, k * t)))
            else:
                tb_ = wp.tile_load(b, shape=(t, t), offset=(k * t, j * t))
            if wp.static(tf32):
                wp.tile_matmul(ta_, tb_, acc, precision="tf32")
            else:
                wp.tile_matmul(ta_, tb_, acc)
        wp.tile_store(c, acc, offset=(i * t, j * t))

    gemm.__name__ = gemm.__qualname__ = (f"gemm_{'tn'[not ta]}{'tn'[not tb]}_"
                                         f"{dtype.__name__}{'_tf32' if tf32 else ''}")
    if tf32:
        return wp.kernel(gemm, module=TF32_MODULE)
    return wp.kernel(gemm)


_PRODUCTS = ((0, 0), (0, 1), (1, 0))
#: (dtype, transpose a, transpose b, tf32) -> its product kernel: A W, dZ W^T and A^T dZ
GEMMS = {(f, ta, tb, False): _gemm(f, ta, tb) for f in (wp.float32, wp.float64)
         for ta, tb in _PRODUCTS}
GEMMS.update({(wp.float32, ta, tb, True): _gemm(wp.float32, ta, tb, True)
              for ta, tb in _PRODUCTS})
wp.get_module(TF32_MODULE).options["block_dim"] = TILE_THREADS


#: kernels launched by thread block (``wp.launch_tiled``: ``dim`` counts blocks)
TILED = set(GEMMS.values())


def gemm_launch(a, b, c, ta, tb, tf32=False):
    """The (kernel, dim, inputs, block_dim) launch of c = op(a) op(b), one
    block per output tile."""
    grid = ((c.shape[0] + TILE - 1) // TILE, (c.shape[1] + TILE - 1) // TILE)
    return GEMMS[(c.dtype, ta, tb, tf32)], grid, [a, b, c], TILE_THREADS


@wp.kernel
def scale_kernel(w: wp.array(dtype=Any), has_w: int, n: int, per_row: int, mean: int,
                 scales: wp.array(dtype=Any)):
    """The loss scale of the batch into ``scales[0]``: 1 for a sum; for a
    mean 1 / (count * per_row), the count being ``n`` or the weights' sum
    (0 where that is 0, as ``Loss.scale``)."""
    one = scales.dtype(1.0)
    if mean == 0:
        scales[0] = one
        return
    count = scales.dtype(float(n))
    if has_w != 0:
        count = scales.dtype(0.0)
        for s in range(n):
            count += w[s]
    count = count * scales.dtype(float(per_row))
    if count > scales.dtype(0.0):
        scales[0] = one / count
    else:
        scales[0] = scales.dtype(0.0)


@wp.kernel
def hits_kernel(z: wp.array2d(dtype=Any), y: wp.array2d(dtype=Any), w: wp.array(dtype=Any),
                has_w: int, kind: int, acc: wp.array(dtype=Any)):
    """Row s's (weighted) hits into ``acc[1]``: ``kind`` 0, its argmax is
    the target's; 1, each label where (z > 0) == (y > 0.5)."""
    s = wp.tid()
    zero = z.dtype(0.0)
    ws = z.dtype(1.0)
    if has_w != 0:
        ws = w[s]
    k = z.shape[1]
    count = zero
    if kind == 0:
        best, want = int(0), int(0)
        for j in range(1, k):
            if z[s, j] > z[s, best]:
                best = j
            if y[s, j] > y[s, want]:
                want = j
        if best == want:
            count = z.dtype(1.0)
    else:
        for j in range(k):
            if (z[s, j] > zero) == (y[s, j] > z.dtype(0.5)):
                count += z.dtype(1.0)
    wp.atomic_add(acc, 1, ws * count)


@wp.kernel
def add_rows_kernel(rows: wp.array(dtype=Any), acc: wp.array(dtype=Any)):
    """acc[0] += rows[s]."""
    s = wp.tid()
    wp.atomic_add(acc, 0, rows[s])


@wp.kernel
def add_terms_kernel(terms: wp.array2d(dtype=Any), acc: wp.array(dtype=Any)):
    """acc[0] += the sum of row s of ``terms``."""
    s = wp.tid()
    total = terms.dtype(0.0)
    for j in range(terms.shape[1]):
        total += terms[s, j]
    wp.atomic_add(acc, 0, total)


@wp.kernel
def adam_hyper_kernel(t: wp.array(dtype=wp.int64), beta1: wp.float64, beta2: wp.float64,
                      hyper: wp.array(dtype=Any)):
    """The next Adam step on the device: ``t`` + 1 and its bias corrections
    1 - beta ** t into ``hyper[1:3]``, computed in float64 (as the host
    computes them for a single step) and then rounded."""
    step = t[0] + wp.int64(1)
    t[0] = step
    hyper[1] = hyper.dtype(wp.float64(1.0) - wp.pow(beta1, wp.float64(step)))
    hyper[2] = hyper.dtype(wp.float64(1.0) - wp.pow(beta2, wp.float64(step)))


@wp.kernel
def advance_kernel(seeds: wp.array(dtype=wp.int32)):
    """The next step's dropout draw: ``seeds[1]`` + 1 (``seeds[0]`` is the base)."""
    seeds[1] = seeds[1] + 1


@wp.kernel
def dropout_kernel(a: wp.array2d(dtype=Any), keep: wp.array2d(dtype=Any),
                   out: wp.array2d(dtype=Any), seeds: wp.array(dtype=wp.int32), layer: int,
                   rate: float, scale: Any):
    """Inverted dropout of a hidden layer's output: ``keep`` = ``scale`` (1 /
    (1 - rate)) where a uniform draw is >= ``rate``, else 0, and ``out`` =
    ``a * keep``. The draw is Warp's counter-based RNG at (the step's seed,
    the element), so a replay draws new masks without the host."""
    i, j = wp.tid()
    m = a.shape[1]
    # the base leaves 2**24 steps of headroom below int32's limit (fastmlp/engines/warp.py)
    state = wp.rand_init(seeds[0] + seeds[1], (layer * a.shape[0] + i) * m + j)
    k = a.dtype(0.0)
    if wp.randf(state) >= rate:
        k = scale
    keep[i, j] = k
    out[i, j] = a[i, j] * k


@wp.kernel
def zero_kernel(a: wp.array(dtype=Any)):
    """a[i] = 0."""
    a[wp.tid()] = a.dtype(0.0)


@wp.kernel
def mask_kernel(d: wp.array2d(dtype=Any), keep: wp.array2d(dtype=Any)):
    """d *= keep: the gradient through a dropout mask."""
    i, j = wp.tid()
    d[i, j] = d[i, j] * keep[i, j]


KERNELS = (dropout_kernel, mask_kernel, zero_kernel, scale_kernel, hits_kernel, add_rows_kernel,
           add_terms_kernel, adam_hyper_kernel)
instantiate(KERNELS)


def _block_dim(kernel):
    """Threads a block for ``kernel``: its module's, so that no module is built twice."""
    return TILE_THREADS if kernel.module.name in (__name__, TF32_MODULE) else 256


class Recorded:
    """A list of launches (``launches``: (kernel, dim, inputs)) on ``device``,
    run eagerly or recorded once into a graph and replayed."""

    device = None
    launches = ()
    graph = None

    def run(self, stream=None):
        """The launches, eagerly."""
        for kernel, dim, inputs, block_dim in self.launches:
            # a tile kernel's block is one program: wp.launch with the threads as a grid
            # dimension would run it once per thread where blocks are off (Warp's CPU default)
            go = wp.launch_tiled if kernel in TILED else wp.launch
            go(kernel, dim=dim, inputs=inputs, device=self.device, stream=stream,
               block_dim=block_dim or _block_dim(kernel))

    def capture(self, stream=None):
        """Record the launches into a graph (without running them)."""
        with wp.ScopedCapture(device=self.device, stream=stream) as cap:
            self.run(stream)
        self.graph = cap.graph

    def replay(self, stream=None):
        """One step: the recorded graph."""
        wp.capture_launch(self.graph, stream=stream)


class StepGraph(Recorded):
    """The launches of one training step for batches of ``n`` rows, on
    buffers that stay put, recorded once and replayed.

    ``layers``: per layer, Warp arrays ``(W, b, dW, db)`` (views of the
    model's flat buffers; ``b`` and ``db`` None without biases). ``inputs``:
    the step's own ``(x, y, w)`` buffers, ``n`` rows each (``w`` unused
    without weights). ``acts``: each layer's (n, fan_out) output buffer, and
    ``deltas`` the input gradient of each layer but the first. ``update``: a
    callable launching the optimizer's update (or None: gradients only).
    ``acc``: the 2-element (loss, hits) accumulator, zeroed by the caller.
    ``scales``: the 1-element loss-scale buffer. ``dropout``: None, or
    ``(rates, keeps, dropped, seeds)``: per hidden layer its rate, its mask
    and its output after the mask (None where the rate is 0), and the
    2-element int32 ``(base, step)`` seed. ``tf32``: the float32 products
    on TF32 tensor cores. ``fused``: the step's fused kernel
    (``kernels/warp_fused.py``, made for this network, loss and weighting),
    which then runs the forward, loss and backward in one launch over the
    flat ``(params, grads)`` buffers of ``flat``; None, the launches above.
    """

    def __init__(self, device, layers, inputs, acts, deltas, scratch, acc, scales, *, code,
                 loss, head_kind, per_row, mean, has_w, floor, update, dropout=None,
                 tf32=False, fused=None, flat=None):
        self.device = device
        launch = self._launch
        x, y, w = inputs
        n = x.shape[0]
        last = len(layers) - 1
        self.launches = []
        if fused is not None:
            TILED.add(fused)
            params, grads = flat
            launch(scale_kernel, 1, [w, has_w, n, per_row, mean, scales])
            launch(zero_kernel, grads.shape[0], [grads])
            launch(*warp_fused.launch_args(fused, x, y, w, params, grads, scales, acc))
            if update is not None:
                update(launch)
            return
        rates, keeps, dropped, seeds = dropout or ((0.0,) * last, None, None, None)
        if seeds is not None:
            launch(advance_kernel, 1, [seeds])
        launch(scale_kernel, 1, [w, has_w, n, per_row, mean, scales])
        a, ins = x, [x]                                  # each layer's input, after dropout
        for l, (wt, b, _, _) in enumerate(layers):
            z = acts[l]
            launch(*gemm_launch(a, wt, z, 0, 0, tf32))
            code_l = code if l < last else 3             # identity on the logits
            launch(warp_ops.bias_act_kernel, z.shape,
                   [z, b if b is not None else z[0], int(b is not None), code_l, floor])
            a = z
            if l < last and rates[l] > 0:
                launch(dropout_kernel, z.shape, [z, keeps[l], dropped[l], seeds, l,
                                                 float(rates[l]), z.dtype(1 / (1 - rates[l]))])
                a = dropped[l]
            ins.append(a)
        z = acts[last]
        if head_kind is not None:
            launch(hits_kernel, n, [z, y, w, has_w, head_kind, acc])
        kernel = warp_ops.DEVICE[loss.device]
        if kernel is warp_ops.cross_entropy_kernel:
            rows = scratch
            launch(kernel, n, [z, y, w, has_w, scales, 1, rows])
            launch(add_rows_kernel, n, [rows, acc])
        else:
            terms = scratch
            launch(kernel, z.shape, [z, y, w, has_w, scales, 1, warp_ops._ELEMENTWISE[loss.name],
                                     floor, terms])
            launch(add_terms_kernel, n, [terms, acc])
        dz = z
        for l in range(last, -1, -1):
            wt, b, dw, db = layers[l]
            if db is not None:
                launch(warp_ops.colsum_kernel, dz.shape[1], [dz, db])
            launch(*gemm_launch(ins[l], dz, dw, 1, 0, tf32))
            if l > 0:
                da = deltas[l - 1]
                launch(*gemm_launch(dz, wt, da, 0, 1, tf32))
                if rates[l - 1] > 0:
                    launch(mask_kernel, da.shape, [da, keeps[l - 1]])
                launch(warp_ops.act_grad_kernel, da.shape, [da, acts[l - 1], code])
                dz = da
        if update is not None:
            update(launch)
        self.graph = None

    def _launch(self, kernel, dim, inputs, block_dim=None):
        self.launches.append((kernel, dim, inputs, block_dim))


class EpochGraph(Recorded):
    """Every step of an epoch in one graph. ``steps``: per step, the
    launches that gather its batch (through the device-side order, so that a
    new permutation needs no new capture) and that advance the update's
    hyperparameters, followed by that step's :class:`StepGraph`."""

    def __init__(self, device, steps):
        self.device = device
        self.launches = [launch for before, step in steps
                         for launch in [*before, *step.launches]]
