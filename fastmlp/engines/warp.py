"""The ``warp`` engine: the whole training step (loss scale, forward, loss
and hits, backward, and the optimizer's update) as NVIDIA Warp launches
recorded once into a graph and replayed (``kernels/warp_step.py``).

On CUDA a replay is one CUDA graph launch where the layer path makes dozens
of launches: small networks on a GPU are launch-bound. On the CPU it runs on
Warp's CPU device from the same kernel source, which is how CI tests it; the
factory takes it there only when asked for by name (``engine="warp"``).

The engine keeps one graph per (rows, weighted or not, optimizer form
without its rate): a fit makes one, or two with a smaller last batch. The
batch is copied into the graph's own buffers before each replay, and the
learning rate (and Adam's bias corrections) written to a device array, so
that schedules need no new capture. Loss and hits come back as device
scalars: no host synchronisation per step.
"""

import importlib.util

from fastmlp.engines.base import Engine

#: the optimizer kinds whose update the graph runs (``kernels/warp_ops.py``)
UPDATES = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
#: the largest batch the factory gives this engine on its own (see ``declines``)
MAX_ROWS = 4096
#: the loss heads' hit counts the graph takes: argmax (0) or per label (1)
_HEAD_KINDS = {"softmax": 0, "sigmoid": 1}


class WarpEngine(Engine):
    """The whole step in Warp, one graph replay per step."""

    name = "warp"
    summary = "the whole step as NVIDIA Warp launches, replayed from one recorded graph"
    #: record each step into a graph and replay it (False: launch eagerly; the
    #: tests compare the two)
    capture = True
    #: run forward, loss and backward as one fused tile kernel where it covers the
    #: case (False: layer by layer; the tests compare the two)
    fuse = True

    @classmethod
    def declines(cls, net, bufs, case):
        if importlib.util.find_spec("warp") is None:
            return 'needs NVIDIA Warp: pip install "fastmlp[warp]"'
        if not case.named:
            if bufs.backend.kind != "cuda":
                return "the GPU's engine: on the CPU only when asked for by name (engine='warp')"
            if bufs.ops.name != "warp":
                return (f"goes with the Warp op table (kernels='auto' where Warp sees the GPU, "
                        f"or 'warp'); the model uses the {bufs.ops.name!r} table")
            if case.batch_size > MAX_ROWS:
                return (f"its products are plain Warp loops: from {MAX_ROWS} rows cuBLAS "
                        "(the layer engine) until tile kernels are measured on a GPU")
        if net.dtype.name not in ("float32", "float64"):
            return f"float32 and float64 kernels; the model is {net.dtype.name}"
        if net.loss.device is None:
            return f"no Warp kernel for the loss {net.loss.name!r}"
        return None

    def __init__(self, net, bufs, case):
        super().__init__(net, bufs, case)
        from fastmlp.kernels import warp_fused, warp_ops, warp_step
        self._ops, self._step, self._fusedk = warp_ops, warp_step, warp_fused
        self._graphs = {}
        self._kernels = {}
        self.unfused = self._unfused()
        if self.unfused is None:
            self.summary = ("the whole step replayed from one recorded graph: forward, loss and "
                            "backward in one fused Warp tile kernel "
                            f"({warp_fused.ROWS} rows a block, layer outputs on chip), then "
                            "the update")
        else:
            self.summary = f"{self.summary} (layer by layer: {self.unfused})"

    def _unfused(self):
        """Why the steps do not run the fused kernel (None when they do)."""
        net = self.net
        if not self.fuse:
            return "fusion off"
        if self.case.train and any(net.dropout):
            return "dropout masks are drawn layer by layer"
        why = self._fusedk.declines(net.sizes, net.dtype.itemsize)
        device = self._ops._Launch(self.bufs.params).device
        most = self._fusedk.block_limit(device)
        if why is None and most is not None:     # a GPU: build it now, to read what it needs
            need = self._fusedk.shared_bytes(self._fused(False), device)
            if need > most:
                why = (f"its tiles need {need} bytes of shared memory a block, the GPU "
                       f"allows {most}")
        return why

    def _fused(self, weighted):
        """The fused step kernel of this network for (un)weighted batches."""
        kernel = self._kernels.get(weighted)
        if kernel is None:
            net, ops = self.net, self._ops
            layout, dt = net.layout, net.dtype
            loss = net.loss
            kernel = self._kernels[weighted] = self._fusedk.step_kernel(
                net.sizes, layout.w_at, layout.b_at if net.bias else None,
                code=net.activation.code,
                loss="cross_entropy" if loss.device == "cross_entropy"
                else ops._ELEMENTWISE[loss.name],
                head_kind=_HEAD_KINDS.get(loss.head.name), dtype=ops._FLOATS[dt],
                floor=ops.activations.FLOOR[dt.name], weighted=weighted,
                tf32=net.precision == "tf32" and dt.name == "float32")
        return kernel

    @property
    def scratch_nbytes(self):
        return sum(g["nbytes"] for g in self._graphs.values())

    # --- graphs ------------------------------------------------------------------------

    def _key(self, optimizer):
        if optimizer is None:
            return None, ()
        form, state = optimizer.form, optimizer.state[0]
        return (form.kind, form.hyper), tuple(id(a) for a in state.values())

    def _cached(self, key, build):
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) > 8:            # a run of odd batch sizes: keep it bounded
                self._graphs.clear()
            entry = self._graphs[key] = build()
        return entry

    def _graph(self, n, weighted, optimizer):
        """One step's graph, for batches of ``n`` rows."""
        return self._cached(("step", n, weighted, *self._key(optimizer)),
                            lambda: self._build(n, weighted, optimizer))

    def _shared(self):
        """Buffers every step of a graph shares: the (loss, hits) accumulator,
        the update's rate and bias corrections, Adam's step count, and the
        dropout seed: a base drawn from the model's dropout generator when the
        graph is made, and a step count the graph advances."""
        xp, dt = self.bufs.backend.xp, self.net.dtype
        seeds = xp.zeros(2, xp.int32)
        if self.case.train and any(self.net.dropout):
            seeds[0] = self.bufs.dropout_rng.integers(0, 2 ** 31 - 1 - 2 ** 24)
        return {"acc": xp.zeros(2, dt), "hyper": xp.zeros(3, dt), "t": xp.zeros(1, xp.int64),
                "seeds": seeds}

    def _plan(self, n, weighted, form, state, shared):
        """A :class:`StepGraph` for ``n`` rows (its own input buffers, the
        ``shared`` ones), and its buffers."""
        net, bufs, ops = self.net, self.bufs, self._ops
        xp, dt, sizes = bufs.backend.xp, net.dtype, net.sizes
        go = ops._Launch(bufs.params)
        mine = {"x": xp.zeros((n, sizes[0]), dt), "y": xp.zeros((n, sizes[-1]), dt),
                "w": xp.ones(n, dt), "scales": xp.zeros(1, dt)}
        fused = None if self.unfused else self._fused(bool(weighted))
        # the fused kernel keeps the layer outputs on chip: no buffers for them
        rows = 0 if fused is not None else n
        acts = [xp.zeros((rows, k), dt) for k in sizes[1:]]
        deltas = [xp.zeros((rows, k), dt) for k in sizes[1:-1]]
        loss = net.loss
        per_row = 1 if loss.per_sample else sizes[-1]
        scratch = xp.zeros(rows if loss.device == "cross_entropy" else (rows, sizes[-1]), dt)
        wrap = go.array
        layers = [(wrap(w), wrap(b) if net.bias else None, wrap(gw), wrap(gb) if net.bias else None)
                  for w, b, gw, gb in zip(bufs.weights, bufs.biases, bufs.grad_weights,
                                          bufs.grad_biases)]
        f = ops._FLOATS[dt]
        update = None if form is None else self._update(form, state, wrap, shared["hyper"], f)
        dropout = None
        if self.case.train and any(net.dropout):
            keeps = [xp.zeros((n, k), dt) if r > 0 else None
                     for k, r in zip(sizes[1:-1], net.dropout)]
            dropped = [xp.zeros((n, k), dt) if r > 0 else None
                       for k, r in zip(sizes[1:-1], net.dropout)]
            mine["keeps"], mine["dropped"] = keeps, dropped
            dropout = (net.dropout, [None if k is None else wrap(k) for k in keeps],
                       [None if d is None else wrap(d) for d in dropped], wrap(shared["seeds"]))
        step = self._step.StepGraph(
            go.device, layers, (wrap(mine["x"]), wrap(mine["y"]), wrap(mine["w"])),
            [wrap(a) for a in acts], [wrap(d) for d in deltas], wrap(scratch),
            wrap(shared["acc"]), wrap(mine["scales"]), code=net.activation.code, loss=loss,
            head_kind=_HEAD_KINDS.get(loss.head.name), per_row=per_row,
            mean=int(net.reduction == "mean"), has_w=int(weighted),
            floor=f(ops.activations.FLOOR[dt.name]), update=update, dropout=dropout,
            tf32=net.precision == "tf32" and dt.name == "float32",
            fused=fused,
            flat=(wrap(bufs.params), wrap(bufs.grads)))
        masks = [a for a in [*mine.get("keeps", ()), *mine.get("dropped", ())] if a is not None]
        mine["nbytes"] = sum(a.nbytes for a in [*mine.values(), *acts, *deltas, scratch, *masks]
                             if hasattr(a, "nbytes"))
        return step, mine

    def _build(self, n, weighted, optimizer):
        form = None if optimizer is None else optimizer.form
        state = {} if optimizer is None else optimizer.state[0]
        shared = self._shared()
        graph, mine = self._plan(n, weighted, form, state, shared)
        go = self._ops._Launch(self.bufs.params)
        if self.capture:
            graph.capture(go.own_stream())
        return {"graph": graph, "launch": go, **shared, **mine}

    def _build_epoch(self, x, y, weights, optimizer):
        """One graph for a whole epoch over ``x``, ``y`` (and ``weights``):
        per step, the batch gathered through the device-side order, Adam's
        step advanced on the device, then the step."""
        ops, xp = self._ops, self.bufs.backend.xp
        form, state = optimizer.form, optimizer.state[0]
        n_rows, bs = x.shape[0], self.case.batch_size
        go = ops._Launch(self.bufs.params)
        shared = {**self._shared(), "order": xp.zeros(n_rows, xp.int64)}
        wrap = go.array
        order = wrap(shared["order"])
        sources = [wrap(x), wrap(y)] + ([wrap(weights.reshape(-1, 1))] if weights is not None
                                        else [])
        f, wp64 = ops._FLOATS[self.net.dtype], ops.wp.float64
        plans, steps, nbytes = {}, [], 0
        for lo in range(0, n_rows, bs):
            rows = min(bs, n_rows - lo)
            if rows not in plans:
                plans[rows] = self._plan(rows, weights is not None, form, state, shared)
                nbytes += plans[rows][1]["nbytes"]
            step, mine = plans[rows]
            idx = order[lo:lo + rows]
            targets = [wrap(mine["x"]), wrap(mine["y"])] + (
                [wrap(mine["w"].reshape(-1, 1))] if weights is not None else [])
            before = [(ops.gather_kernel, (rows, src.shape[1]), [src, idx, f(1.0), dst], None)
                      for src, dst in zip(sources, targets)]
            if form.kind in ("adam", "adamw"):
                b1, b2 = form.get("betas")
                before.append((self._step.adam_hyper_kernel, 1,
                               [wrap(shared["t"]), wp64(b1), wp64(b2), wrap(shared["hyper"])],
                               None))
            steps.append((before, step))
        graph = self._step.EpochGraph(go.device, steps)
        if self.capture:
            graph.capture(go.own_stream())
        return {"graph": graph, "launch": go, "steps": len(steps), "nbytes": nbytes,
                "sources": (x, y, weights), **shared}

    def _update(self, form, state, wrap, hyper, f):
        """A function launching ``form``'s update over the flat buffers."""
        bufs = self.bufs
        kernel, inputs = self._ops.update_launch(
            form.kind, wrap(bufs.params), wrap(bufs.grads),
            {slot: wrap(a) for slot, a in state.items()}, wrap(hyper), f, **dict(form.hyper))
        return lambda launch: launch(kernel, bufs.params.size, inputs)

    # --- steps --------------------------------------------------------------------------

    def _replay(self, entry):
        graph, go = entry["graph"], entry["launch"]
        with go.ordered() as stream:
            if graph.graph is not None:
                graph.replay(stream)
            else:
                graph.run(stream)
        out = entry["acc"].copy()               # the next replay reuses the accumulator
        return out[0], out[1]

    def _run(self, entry, x, y, weights, hyper=None):
        entry["x"][...] = x
        entry["y"][...] = y
        if weights is not None:
            entry["w"][...] = weights
        entry["acc"][...] = 0
        if hyper is not None:
            entry["hyper"][...] = self.bufs.backend.xp.asarray(hyper, entry["hyper"].dtype)
        return self._replay(entry)

    def _run_epoch(self, entry, order, lr, t):
        xp = self.bufs.backend.xp
        if order is None:
            entry["order"][...] = xp.arange(entry["order"].size)
        else:
            entry["order"][...] = order
        entry["acc"][...] = 0
        entry["hyper"][...] = xp.asarray([lr, 1.0, 1.0], entry["hyper"].dtype)
        entry["t"][...] = t
        return self._replay(entry)

    def _updates_here(self, optimizer):
        return (optimizer.form.kind in UPDATES and optimizer.state is not None
                and optimizer.is_for([self.bufs.params]))

    def grad(self, x, y, targets=None, weights=None):
        entry = self._graph(x.shape[0], weights is not None, None)
        loss, hits = self._run(entry, x, y, weights)
        return loss, (hits if targets is not None else None)

    def train_step(self, x, y, targets, optimizer, weights=None):
        if not self._updates_here(optimizer):
            return super().train_step(x, y, targets, optimizer, weights)
        form = optimizer.form
        entry = self._graph(x.shape[0], weights is not None, optimizer)
        t = optimizer.t + 1                      # the step this update is
        hyper = [form.lr, 1.0, 1.0]
        if form.kind in ("adam", "adamw"):
            b1, b2 = form.get("betas")
            hyper = [form.lr, 1 - b1 ** t, 1 - b2 ** t]
        loss, hits = optimizer.step([self.bufs.params], None, run=self._run,
                                    args=(entry, x, y, weights, hyper))
        return loss, (hits if targets is not None else None)

    def train_epoch(self, x, y, targets, order, optimizer, weights=None, x_scale=1.0):
        """The whole epoch as one graph replay; None for compact inputs (the
        batches cast them) and updates the graph does not run."""
        if not self._updates_here(optimizer) or x.dtype != self.net.dtype:
            return None
        key = ("epoch", id(x), id(y), id(weights), *self._key(optimizer))
        if key not in self._graphs:              # one epoch graph: it holds the data alive
            for old in [k for k in self._graphs if k[0] == "epoch"]:
                del self._graphs[old]
        entry = self._cached(key, lambda: self._build_epoch(x, y, weights, optimizer))
        loss, hits = optimizer.step([self.bufs.params], None, run=self._run_epoch,
                                    args=(entry, order, optimizer.form.lr, optimizer.t),
                                    steps=entry["steps"])
        return loss, (hits if targets is not None else None)
