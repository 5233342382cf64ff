"""A training step's forward and backward in one Warp tile kernel, in the
spirit of tiny-cuda-nn's fully fused MLP: each thread block carries
:data:`ROWS` rows of the batch through every layer and back with the layer
outputs kept on chip (tiles), and adds its share of every weight and bias
gradient into the flat gradient buffer (tile atomic adds: the blocks'
shares are summed in whatever order they finish on a GPU; on Warp's CPU
device the blocks run in order).

One launch does, per block of rows:

1. forward: ``Z = A W + b``, ``A = f(Z)`` layer by layer; the first layer
   reads its input in column chunks of :data:`CHUNK` (a 784-wide image
   never sits on chip whole); every later layer's W is one tile;
2. the loss head on the logits (softmax + cross-entropy, or the element-wise
   heads), the (weighted) loss and hits added into the ``(loss, hits)``
   accumulator, ``dLoss/dZ`` scaled by the batch's loss scale (read from
   the device) and each row's weight;
3. backward, the last layer first: ``db += colsum(dZ)``, ``dW += A^T dZ``,
   ``dA = (dZ W^T) * f'(A)``.

Rows past the batch's end (its last block) weigh 0. The gradient buffer must
be zeroed before the launch. Every shape is a compile-time constant, so the
kernel is generated per architecture (widths, activation, loss, dtype,
precision, weighted or not) by :func:`step_kernel`, each in its own Warp
module, built once and then cached on disk by Warp. :func:`declines` says
which networks it does not hold on chip. Kernels are leaves: nothing here
imports fastmlp.
"""

import typing

import warp as wp

from . import warp_ops

Any = typing.Any

#: rows of the batch one thread block carries through the network
ROWS = 16
#: columns of the first layer's input read at a time
CHUNK = 32
#: threads a block
THREADS = 64
#: the most shared memory a block may have on any GPU Warp targets (227 KiB: H100, H200,
#: B200); a network whose tiles surely need more (:func:`tile_bytes`) is not built at all
MAX_TILE_BYTES = 232448


def tile_bytes(sizes, itemsize, rows=ROWS, chunk=CHUNK):
    """A lower bound on the shared memory one block needs, for widths
    ``sizes``: every layer's W and dW (the first layer's as chunks) and the
    layer outputs. Warp's own count, known once the kernel is built
    (:func:`shared_bytes`), is what decides on a GPU."""
    widths = sizes[1:]
    held = chunk * widths[0] * 2 + rows * chunk
    for fan_in, fan_out in zip(sizes[1:-1], sizes[2:]):
        held += fan_in * fan_out * 2                    # W, and dW while it is added
    held += sum(rows * k * 4 for k in widths)           # Z / A, dA, dZ and a spare
    return held * itemsize


def declines(sizes, itemsize):
    """Why the fused kernel does not take a network of widths ``sizes``
    (None when it does)."""
    need = tile_bytes(sizes, itemsize)
    if need > MAX_TILE_BYTES:
        return (f"its tiles would need {need // 1024} KiB a block, over the "
                f"{MAX_TILE_BYTES // 1024} KiB kept on chip")
    return None


# --- element-wise maths the tile maps apply --------------------------------------------

@wp.func
def _row_valid(i: int, left: int):
    if i < left:
        return 1.0
    return 0.0


@wp.func
def _ce_row(ws: Any, ysum: Any, total: Any, dot: Any):
    return ws * (ysum * wp.log(total) - dot)


@wp.func
def _ce_grad(e: Any, inv: Any, t: Any, step: Any):
    return (e * inv - t) * step


@wp.func
def _recip(v: Any):
    return type(v)(1.0) / v


@wp.func
def _first_max(v: Any, top: Any, j: int):
    """j where v is its row's maximum, else a number past every column."""
    if v == top:
        return j
    return 1 << 30


@wp.func
def _same(a: int, b: int, ws: Any):
    if a == b:
        return ws
    return type(ws)(0.0)


@wp.func
def _label_hit(v: Any, t: Any):
    if (v > type(v)(0.0)) == (t > type(v)(0.5)):
        return type(v)(1.0)
    return type(v)(0.0)


def _elementwise(kind, floor):
    """(term, gradient) of element-wise loss ``kind`` (as ``warp_ops``'
    element-wise kernel: 0 sigmoid + BCE, 1 MSE, 2 L1, 3 Poisson) as Warp functions."""

    def term(v: Any, t: Any):
        zero = type(v)(0.0)
        if wp.static(kind == 0):
            return wp.max(v, zero) - v * t + warp_ops.log1p(wp.exp(-wp.abs(v)))
        if wp.static(kind == 3):
            return warp_ops.poisson_term(v, t, wp.exp(v))
        d = v - t
        if wp.static(kind == 1):
            return d * d
        return wp.abs(d)

    def grad(v: Any, t: Any):
        zero, one = type(v)(0.0), type(v)(1.0)
        if wp.static(kind == 0):
            return warp_ops.act(v, 0, type(v)(floor)) - t
        if wp.static(kind == 3):
            return wp.exp(v) - t
        d = v - t
        if wp.static(kind == 1):
            return type(v)(2.0) * d
        if d > zero:
            return one
        if d < zero:
            return -one
        return zero

    return _named(term, f"loss_term_{kind}"), _named(grad, f"loss_grad_{kind}")


def _named(fn, name):
    """``fn`` as a Warp function under a name of its own: Warp keys functions
    by name, and each architecture's generated functions differ."""
    fn.__name__ = fn.__qualname__ = name
    return wp.func(fn)


# --- the generated kernel ---------------------------------------------------------------

def _build(sizes, w_at, b_at, code, loss, head_kind, dtype, floor, weighted, tf32, tag):
    """The step kernel of one architecture (see :func:`step_kernel`)."""
    R, C = ROWS, CHUNK
    L = len(sizes) - 1
    bias = b_at is not None
    d0, h0 = sizes[0], sizes[1]
    chunks = (d0 + C - 1) // C                   # the first layer's input, in column chunks
    K = sizes[-1]
    ce = loss == "cross_entropy"
    size = 4 if dtype is wp.float32 else 8       # bytes an element: W's views start at w_at * size


    def act_f(v: Any):
        return warp_ops.act(v, wp.static(code), type(v)(wp.static(floor)))

    def act_g(g: Any, a: Any):
        return warp_ops.act_grad(g, a, wp.static(code))

    act_f, act_g = (_named(f, f"{f.__name__}_{tag}") for f in (act_f, act_g))
    if not ce:
        term_f, grad_f = _elementwise(loss, floor)

    def head(z: Any, yt: Any, ws: Any, step: Any, acc: wp.array(dtype=dtype)):
        """The loss and hits of the logits ``z`` into ``acc``; dLoss/dZ back."""
        steps = wp.tile_zeros(shape=R, dtype=dtype, storage="shared")   # reshaped: shared
        wp.tile_assign(steps, step, offset=(0,))
        stepb = wp.tile_broadcast(wp.tile_reshape(steps, shape=(R, 1)), shape=(R, K))
        if wp.static(ce or head_kind == 0):
            top = wp.tile_reduce(wp.max, z, axis=1)
            topb = wp.tile_broadcast(wp.tile_reshape(top, shape=(R, 1)), shape=(R, K))
        if wp.static(head_kind == 0):
            cols = wp.tile_broadcast(wp.tile_reshape(wp.tile_arange(K, dtype=int),
                                                     shape=(1, K)), shape=(R, K))
            best = wp.tile_reduce(wp.min, wp.tile_map(_first_max, z, topb, cols), axis=1)
            ytop = wp.tile_broadcast(wp.tile_reshape(wp.tile_reduce(wp.max, yt, axis=1),
                                                     shape=(R, 1)), shape=(R, K))
            want = wp.tile_reduce(wp.min, wp.tile_map(_first_max, yt, ytop, cols), axis=1)
            wp.tile_atomic_add(acc, wp.tile_sum(wp.tile_map(_same, best, want, ws)), offset=1)
        if wp.static(head_kind == 1):
            hits = wp.tile_sum(wp.tile_map(_label_hit, z, yt), axis=1)
            wp.tile_atomic_add(acc, wp.tile_sum(wp.tile_map(wp.mul, hits, ws)), offset=1)
        if wp.static(ce):
            shifted = z - topb
            e = wp.tile_map(wp.exp, shifted)
            total = wp.tile_sum(e, axis=1)
            dot = wp.tile_sum(wp.tile_map(wp.mul, yt, shifted), axis=1)
            rows = wp.tile_map(_ce_row, ws, wp.tile_sum(yt, axis=1), total, dot)
            wp.tile_atomic_add(acc, wp.tile_sum(rows), offset=0)
            inv = wp.tile_broadcast(wp.tile_reshape(wp.tile_map(_recip, total), shape=(R, 1)),
                                    shape=(R, K))
            return wp.tile_map(_ce_grad, e, inv, yt, stepb)
        else:
            terms = wp.tile_sum(wp.tile_map(term_f, z, yt), axis=1)
            wp.tile_atomic_add(acc, wp.tile_sum(wp.tile_map(wp.mul, terms, ws)), offset=0)
            return wp.tile_map(wp.mul, wp.tile_map(grad_f, z, yt), stepb)

    head = _named(head, f"head_{tag}")

    def bias_adder(width):
        def bias_add(z: Any, params: wp.array(dtype=dtype), at: int):
            b = wp.tile_load(params, shape=width, offset=at)
            return z + wp.tile_broadcast(wp.tile_reshape(b, shape=(1, width)), shape=(R, width))
        return _named(bias_add, f"bias_add{width}_{tag}")

    adders = {k: bias_adder(k) for k in set(sizes[1:])}

    def layer_fn(l, after):
        """Layer l >= 1 and everything after it: its input ``a`` in, dLoss/da out."""
        fan_in, fan_out = sizes[l], sizes[l + 1]
        last = l == L - 1
        add, nxt = adders[fan_out], after

        def layer(a_in: Any, yt: Any, ws: Any, step: Any, params: wp.array(dtype=dtype),
                  grads: wp.array(dtype=dtype), pp: wp.uint64, gp: wp.uint64,
                  acc: wp.array(dtype=dtype), lane: int):
            wv = wp.array(ptr=pp + wp.uint64(wp.static(w_at[l] * size)),
                          shape=(wp.static(fan_in), wp.static(fan_out)), dtype=dtype)
            w = wp.tile_load(wv, shape=(wp.static(fan_in), wp.static(fan_out)), offset=(0, 0),
                             storage="shared")
            # the layer's input in shared memory, where the products read it (a tile
            # handed to a function keeps its register storage)
            a = wp.tile_zeros(shape=(R, wp.static(fan_in)), dtype=dtype, storage="shared")
            wp.tile_assign(a, a_in, offset=(0, 0))
            if wp.static(tf32):
                z = wp.tile_matmul(a, w, precision="tf32")
            else:
                z = wp.tile_matmul(a, w)
            if wp.static(bias):
                z = add(z, params, wp.static(b_at[l] if bias else 0))
            if wp.static(last):
                dz = head(z, yt, ws, step, acc)
            else:
                h = wp.tile_map(act_f, z)
                dz = wp.tile_map(act_g, nxt(h, yt, ws, step, params, grads, pp, gp, acc, lane), h)
            if wp.static(bias):
                wp.tile_atomic_add(grads, wp.tile_sum(dz, axis=0),
                                   offset=wp.static(b_at[l] if bias else 0))
            gv = wp.array(ptr=gp + wp.uint64(wp.static(w_at[l] * size)),
                          shape=(wp.static(fan_in), wp.static(fan_out)), dtype=dtype)
            if wp.static(tf32):
                dw = wp.tile_matmul(wp.tile_transpose(a), dz, precision="tf32")
            else:
                dw = wp.tile_matmul(wp.tile_transpose(a), dz)
            for e in range(lane, wp.static(fan_in * fan_out), wp.block_dim()):
                i, j = e // wp.static(fan_out), e % wp.static(fan_out)
                wp.atomic_add(gv, i, j, wp.tile_extract(dw, i, j))
            if wp.static(tf32):
                return wp.tile_matmul(dz, wp.tile_transpose(w), precision="tf32")
            return wp.tile_matmul(dz, wp.tile_transpose(w))

        return _named(layer, f"layer{l}_{tag}")

    after = None
    for l in range(L - 1, 0, -1):
        after = layer_fn(l, after)

    add0, nxt = adders[h0], after

    # the first layer's bias, rest of the network and bias gradient below repeat what
    # layer() does: a function shared by both costs ~13 KB more shared memory a block
    # (784-128-64-10 float32: 187,312 bytes instead of 174,384), as Warp gives each
    # function's tiles their own space
    def step_kernel(x: wp.array2d(dtype=dtype), y: wp.array2d(dtype=dtype),
                    w: wp.array(dtype=dtype), params: wp.array(dtype=dtype),
                    grads: wp.array(dtype=dtype), pp: wp.uint64, gp: wp.uint64,
                    scales: wp.array(dtype=dtype), acc: wp.array(dtype=dtype)):
        blk, lane = wp.tid()
        r0 = blk * R
        if wp.static(weighted):
            ws = wp.tile_load(w, shape=R, offset=r0)
        else:
            ws = wp.tile_astype(wp.tile_map(_row_valid, wp.tile_arange(R, dtype=int),
                                            wp.tile_full(R, x.shape[0] - r0, dtype=int)),
                                dtype)
        step = ws * scales[0]
        yt = wp.tile_load(y, shape=(R, K), offset=(r0, 0))
        # the first layer, its input in column chunks (the last one zero-padded)
        wv = wp.array(ptr=pp + wp.uint64(wp.static(w_at[0] * size)), shape=(d0, h0), dtype=dtype)
        gv = wp.array(ptr=gp + wp.uint64(wp.static(w_at[0] * size)), shape=(d0, h0), dtype=dtype)
        z = wp.tile_zeros(shape=(R, h0), dtype=dtype, storage="shared")
        for c in range(chunks):
            xc = wp.tile_load(x, shape=(R, C), offset=(r0, c * C), storage="shared")
            wc = wp.tile_load(wv, shape=(C, h0), offset=(c * C, 0), storage="shared")
            if wp.static(tf32):
                wp.tile_matmul(xc, wc, z, precision="tf32")
            else:
                wp.tile_matmul(xc, wc, z)
        if wp.static(bias):
            z = add0(z, params, wp.static(b_at[0] if bias else 0))
        if wp.static(L == 1):
            dz = head(z, yt, ws, step, acc)
        else:
            h = wp.tile_map(act_f, z)
            dz = wp.tile_map(act_g, nxt(h, yt, ws, step, params, grads, pp, gp, acc, lane), h)
        if wp.static(bias):
            wp.tile_atomic_add(grads, wp.tile_sum(dz, axis=0),
                               offset=wp.static(b_at[0] if bias else 0))
        for c in range(chunks):
            xc = wp.tile_load(x, shape=(R, C), offset=(r0, c * C), storage="shared")
            if wp.static(tf32):
                dw = wp.tile_matmul(wp.tile_transpose(xc), dz, precision="tf32")
            else:
                dw = wp.tile_matmul(wp.tile_transpose(xc), dz)
            for e in range(lane, wp.static(C * h0), wp.block_dim()):
                i, j = e // h0, e % h0
                if c * C + i < d0:
                    wp.atomic_add(gv, c * C + i, j, wp.tile_extract(dw, i, j))

    step_kernel.__name__ = step_kernel.__qualname__ = f"fused_step_{tag}"
    return wp.kernel(step_kernel, module="unique",
                     module_options={"block_dim": THREADS, "enable_backward": False})


_KERNELS = {}


def step_kernel(sizes, w_at, b_at, *, code, loss, head_kind, dtype, floor, weighted,
                tf32=False):
    """The fused step kernel for widths ``sizes`` with W's (and b's, or
    None without biases) at offsets ``w_at`` (``b_at``) of the flat buffers;
    ``code``: the hidden layers' activation; ``loss``: ``"cross_entropy"``
    or an element-wise kind of ``warp_ops``; ``head_kind``: the hits (None,
    0 argmax, 1 per label); ``dtype``: ``wp.float32`` or ``wp.float64``;
    ``weighted``: reads per-row weights; ``tf32``: TF32 tensor-core
    products. Launch it with :func:`launch`. Made once per process and
    architecture."""
    key = (tuple(sizes), tuple(w_at), None if b_at is None else tuple(b_at), code, loss,
           head_kind, dtype, float(floor), bool(weighted), bool(tf32))
    kernel = _KERNELS.get(key)
    if kernel is None:
        tag = f"{abs(hash(key)):x}"[:12]
        kernel = _KERNELS[key] = _build(*key[:8], key[8], key[9], tag)
    return kernel


def launch_args(kernel, x, y, w, params, grads, scales, acc):
    """The (kernel, dim, inputs, block_dim) of one fused step over the rows of
    ``x`` (``wp.launch_tiled``: ``dim`` counts blocks). ``params`` and
    ``grads`` are Warp arrays that stay put: the kernel views their layers
    through their addresses."""
    blocks = (x.shape[0] + ROWS - 1) // ROWS
    return (kernel, (blocks,), [x, y, w, params, grads, wp.uint64(params.ptr),
                                wp.uint64(grads.ptr), scales, acc], THREADS)


def block_limit(device):
    """The most shared memory a block may have on ``device`` (bytes), or None
    where there is no such limit (Warp's CPU device reports 0)."""
    wp.init()
    return wp.get_device(device).max_shared_memory_per_block or None


def shared_bytes(kernel, device):
    """The shared memory one block of ``kernel`` needs (bytes, as Warp counts it
    when it builds the module for ``device``, which it does here)."""
    wp.init()
    kernel.module.load(device)
    return kernel.adj.get_total_required_shared()
