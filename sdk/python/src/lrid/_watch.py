"""`watch`: records a PyTorch model's layers while it trains, without changing its training.

In: a `torch.nn.Module`, a fixed probe batch, the planned number of optimizer steps. Out: a run
in `lrid serve` with, at `points` evenly spaced steps (initialisation included), for every
Conv/Linear layer (or the modules named by ``layers=``): the forward kernel, the layer's outputs
on the probe and the layer-wise activity change of spec §1.4 — in the statistics' layouts
(conv kernels OIHW → HWIO, dense `[out, in]` → `[in, out]`, conv outputs channels last), as
`lrid train` records its own networks.

At a point the probe goes through the model once in eval mode under `no_grad` (forward hooks
take each layer's input and output), then one autograd pass gives every layer's activity change
(each layer re-run on a detached leaf copy of its input; only those leaves are differentiated,
so no parameter's `.grad` is touched). The RNG state (CPU and the probe's CUDA device), every
module's train/eval mode and the hooks are restored even when the forward raises; BatchNorm
statistics do not move in eval mode. Parameters are only read. Steps are counted by an optimizer
step hook (any optimizer that updates the model's parameters, or the one given) — or by
`Watch.step()` for loops without a `torch.optim` optimizer.

Device tensors are copied to pinned host buffers on a side CUDA stream; the sender thread waits
for the copy, so the training stream only waits for the probe's forward and the copy's launch.
Under DistributedDataParallel only rank 0 records (the unwrapped module); the other ranks get an
inert handle.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Iterable, Sequence

import numpy as np

from . import _protocol as P
from .recorder import LayerInfo, LridError, Recorder, _Deferred

log = logging.getLogger("lrid")

__all__ = ["watch", "Watch"]


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a peer dependency
        raise ImportError("lrid.watch needs PyTorch (pip install torch)") from e
    return torch


def default_run_id() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())[:40]
    return f"py/{host or 'host'}/{os.getpid()}-{time.strftime('%Y%m%dT%H%M%S')}"


def _default_layers(torch, module) -> list[tuple[str, object]]:
    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
    return [(name, m) for name, m in module.named_modules() if isinstance(m, kinds)]


def _is_conv(torch, m) -> bool:
    """A convolution whose kernel is `[out, in, k…]` (transposed ones store `[in, out, k…]`)."""
    return isinstance(m, torch.nn.modules.conv._ConvNd) and not m.transposed


def _weight_layout(torch, m, w):
    """The kernel in the statistics' layout: conv `[O, I, k…]` → `[k…, I, O]`, `nn.Linear`
    `[out, in]` → `[in, out]`; any other module's weight as it is stored."""
    if _is_conv(torch, m) and w.dim() >= 3:
        return w.permute(*range(2, w.dim()), 1, 0)
    if isinstance(m, torch.nn.Linear):
        return w.t()
    return w


def _output_layout(torch, m, y):
    """Outputs channels last for convolutions (`[N, C, …]` → `[N, …, C]`); others as they are."""
    if _is_conv(torch, m) and y.dim() >= 3:
        return y.permute(0, *range(2, y.dim()), 1)
    return y


class _HostCopier:
    """Device → host copies that do not stall training: pinned buffers filled on a side stream,
    awaited by the sender thread. CPU tensors are copied at once."""

    def __init__(self, torch):
        self.torch = torch
        self.streams = {}

    def __call__(self, t, nobody_else_writes: bool = False):
        torch = self.torch
        t = t.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        if not t.is_cuda:
            host = t.contiguous()
            if not nobody_else_writes and host.data_ptr() == t.data_ptr():
                host = host.clone()
            return host.numpy().reshape(-1)
        device = t.device
        stream = self.streams.get(device)
        if stream is None:
            stream = self.streams[device] = torch.cuda.Stream(device)
        # A private device copy, made on the training's stream (so the next optimizer step
        # cannot change it under the side stream), then copied to the host on the side stream.
        src = t.contiguous()
        if not nobody_else_writes and src.data_ptr() == t.data_ptr():
            src = src.clone()
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            host = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
            host.copy_(src, non_blocking=True)
            done = torch.cuda.Event()
            done.record(stream)
        # The device copy belongs to the training's stream's allocator: keep it until the copy ran.
        src.record_stream(stream)

        def resolve():
            done.synchronize()
            return host.numpy().reshape(-1)

        return _Deferred(host.numel() * host.element_size(), resolve)


class Watch:
    """The handle `watch` returns: counts steps, records points, closes the run."""

    def __init__(self, model, probe, total_steps, points, recorder, layers, optimizer, on_error):
        torch = _torch()
        self._torch = torch
        self.total_steps = int(total_steps)
        self.points = int(points)
        self.point_steps = P.point_steps(self.total_steps, self.points)
        self.recorder = recorder
        self.run_id = recorder.run_id if recorder is not None else None
        self.steps = 0
        self.points_recorded = 0
        self.errors: list[BaseException] = []
        self._on_error = on_error
        self._closed = False
        self._manual = None  # True: steps counted by step(); False: by the optimizer hook
        self._copy = _HostCopier(torch)
        self._probe = probe
        self._hook = None
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        self.model = model
        self._layers = []  # (name, module)
        self._infos: list[LayerInfo] | None = None
        if recorder is None:
            # An inert handle (a DDP rank other than 0): counts steps, records nothing.
            return
        self._layers = self._select(layers)
        params = {id(p) for p in model.parameters()}
        if optimizer is not None:
            self._hook = optimizer.register_step_post_hook(lambda opt, a, k: self._hooked_step())
        else:
            def hook(opt, args, kwargs):
                if any(id(p) in params for g in opt.param_groups for p in g["params"]):
                    self._hooked_step()

            from torch.optim.optimizer import register_optimizer_step_post_hook

            self._hook = register_optimizer_step_post_hook(hook)
        try:
            self._record_points_due()
        except BaseException:
            self._hook.remove()
            raise

    # -- public ----------------------------------------------------------------------------

    def step(self, n: int = 1) -> None:
        """Counts `n` training steps (for loops that do not step a `torch.optim` optimizer)."""
        if self._manual is False:
            raise RuntimeError(
                "lrid.watch: steps are already counted by the optimizer's step hook; do not also call step()"
            )
        self._manual = True
        for _ in range(n):
            self._advance()

    def identify(self, identifier: str | None = None):
        """The daemon's live identification of this run (see `Client.identify`)."""
        from .client import connect

        self._flush_quietly()
        with connect(self.recorder.server, token=self.recorder._token,
                     ca_file=self.recorder._ca_file) as c:
            return c.identify(self.run_id, identifier=identifier)

    def close(self) -> None:
        """Stops counting, closes the run and sends what is queued; raises the first error met
        while recording, if any (training was never interrupted by it)."""
        if self._closed:
            return
        self._closed = True
        if self._hook is not None:
            self._hook.remove()
        if self.recorder is None:
            return
        if self.points_recorded < self.points:
            log.warning(
                "lrid: run '%s' closed after %d of %d points (%d of %d steps counted)",
                self.run_id, self.points_recorded, self.points, self.steps, self.total_steps,
            )
        try:
            self.recorder.close()
        except LridError as e:
            self.errors.append(e)
        if self.errors:
            first = self.errors[0]
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise LridError(f"recording run '{self.run_id}' met errors{more}: {first}") from first

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except LridError as e:
                log.error("lrid: %s", e)
        return False

    # -- counting and recording --------------------------------------------------------------

    def _hooked_step(self):
        if self._manual:
            return
        self._manual = False
        self._advance()

    def _advance(self):
        if self._closed:
            return
        self.steps += 1
        if self.recorder is not None:
            self._record_points_due()

    def _record_points_due(self):
        while self.points_recorded < self.points and self.point_steps[self.points_recorded] <= self.steps:
            k = self.points_recorded
            self.points_recorded += 1
            try:
                self._record_point(k)
            except Exception as e:  # noqa: BLE001 - never crash the training job
                self.errors.append(e)
                log.error("lrid: point %d of run '%s' was not recorded: %s", k, self.run_id, e)
                if self._on_error == "raise":
                    raise

    def _flush_quietly(self):
        try:
            self.recorder.flush()
        except LridError as e:
            self.errors.append(e)

    def _select(self, names):
        torch = self._torch
        if names is None:
            chosen = _default_layers(torch, self.model)
            if not chosen:
                raise ValueError(
                    "lrid.watch: the model has no Conv1d/2d/3d or Linear layer; name the modules to record with layers="
                )
            return chosen
        modules = dict(self.model.named_modules())
        chosen = []
        for name in names:
            if name not in modules:
                raise ValueError(
                    f"lrid.watch: the model has no module named {name!r} (it has: {', '.join(n for n in modules if n)})"
                )
            m = modules[name]
            w = getattr(m, "weight", None)
            if not isinstance(w, torch.Tensor):
                log.warning("lrid.watch: module %r (%s) has no weight tensor; it is skipped",
                            name, type(m).__name__)
                continue
            chosen.append((name, m))
        if not chosen:
            raise ValueError(f"lrid.watch: none of the modules {list(names)} has a weight tensor")
        return chosen

    def _forward_probe(self):
        probe = self._probe
        if isinstance(probe, dict):
            return self.model(**probe)
        if isinstance(probe, (tuple, list)):
            return self.model(*probe)
        return self.model(probe)

    def _probe_devices(self):
        probe = self._probe
        items = probe.values() if isinstance(probe, dict) else probe if isinstance(probe, (tuple, list)) else [probe]
        return sorted({t.device.index or 0 for t in items if isinstance(t, self._torch.Tensor) and t.is_cuda})

    def _record_point(self, k: int):
        torch = self._torch
        captured: dict[int, tuple] = {}

        def capture(i):
            def hook(module, args, output):
                x = args[0] if args else None
                if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
                    raise TypeError(
                        f"lrid.watch: layer {self._layers[i][0]!r} must take a tensor and return one"
                    )
                # Copies: a later in-place op (ReLU(inplace=True)) would overwrite them.
                captured[i] = (x.detach().clone(), output.detach().clone())

            return hook

        modes = [(m, m.training) for m in self.model.modules()]
        handles = []
        try:
            with torch.random.fork_rng(devices=self._probe_devices()):
                self.model.eval()
                handles = [m.register_forward_hook(capture(i)) for i, (_, m) in enumerate(self._layers)]
                with torch.no_grad():
                    self._forward_probe()
                for h in handles:
                    h.remove()
                handles = []
                missing = [self._layers[i][0] for i in range(len(self._layers)) if i not in captured]
                if missing:
                    raise RuntimeError(f"lrid.watch: the probe's forward pass did not reach {missing}")
                changes = self._activity_changes(captured)
        finally:
            for h in handles:
                h.remove()
            for m, training in modes:
                m.training = training
        if self._infos is None:
            self._infos = self._layer_infos(captured)
        rec = self.recorder
        for i, (name, m) in enumerate(self._layers):
            info = self._infos[i]
            x, y = captured[i]
            rec._snapshot(k, info, "weight", 0, 0, self._copy(_weight_layout(torch, m, m.weight)), copy=False)
            rec._snapshot(k, info, "act", y.shape[0], 0,
                          self._copy(_output_layout(torch, m, y), nobody_else_writes=True), copy=False)
            rec._snapshot(k, info, "gradavg", y.shape[0], 0,
                          self._copy(changes[i], nobody_else_writes=True), copy=False)
        rec.complete_point(k, step=self.point_steps[k] if k else 0)

    def _activity_changes(self, captured):
        """Spec §1.4 for every layer in one autograd pass: gₙ = (1/|O|) Σᵢ ∂(Σₒ yₙₒ)/∂xₙᵢ."""
        torch = self._torch
        with torch.enable_grad():
            leaves, totals, outputs = [], [], []
            for i, (name, m) in enumerate(self._layers):
                x, _ = captured[i]
                leaf = x.detach().requires_grad_(True)
                y = m.forward(leaf)
                if not y.requires_grad:
                    raise RuntimeError(f"lrid.watch: the output of {name!r} does not depend on its input")
                outputs.append(y.numel() // max(y.shape[0], 1))
                totals.append(y.sum(dtype=torch.float32))
                leaves.append(leaf)
            grads = torch.autograd.grad(torch.stack(totals).sum(), leaves)
        return [
            (g.reshape(g.shape[0], -1).sum(1, dtype=torch.float64) / n).to(torch.float32)
            for g, n in zip(grads, outputs)
        ]

    def _layer_infos(self, captured) -> list[LayerInfo]:
        torch = self._torch
        count = len(self._layers)
        infos = []
        for i, (name, m) in enumerate(self._layers):
            _, y = captured[i]
            infos.append(LayerInfo(
                index=i,
                name=name,
                position=P.position_of(i, count),
                weight_shape=tuple(_weight_layout(torch, m, m.weight).shape),
                activation_shape=tuple(_output_layout(torch, m, y).shape[1:]),
            ))
        return infos


def watch(
    model,
    probe,
    total_steps: int,
    points: int = 21,
    server: str | None = None,
    run_id: str | None = None,
    labels: dict | None = None,
    *,
    layers: Sequence[str] | None = None,
    optimizer=None,
    token: str | None = None,
    on_error: str = "log",
    **recorder_options,
) -> Watch:
    """Records `model` while it trains; use as a context manager or call `.close()` at the end.

    `probe`: the fixed evaluation batch (a tensor, a tuple of positional inputs or a dict of
    keyword inputs) on the model's device. `total_steps`: the optimizer steps the training will
    take; the `points` trajectory points (initialisation included) are spread evenly over them.
    `server`: ``http://host:port``, or ``https://host:port`` for TLS (default ``$LRID_SERVER`` or
    ``http://127.0.0.1:50051``; the CA file of an https daemon: `ca_file=`, default
    ``$LRID_CA_FILE``).
    `token`: the daemon's bearer token (default ``$LRID_TOKEN``). `layers`: the modules to
    record, by qualified name (default: every Conv1d/2d/3d and Linear). `optimizer`: count only
    its steps (default: any optimizer that updates the model's parameters). `on_error`:
    ``"log"`` (default: a point that cannot be recorded is logged and kept for `close()`, which
    raises it; training goes on) or ``"raise"``. Other keywords go to `Recorder`.
    """
    torch = _torch()
    if on_error not in ("log", "raise"):
        raise ValueError(f"on_error must be 'log' or 'raise'; got {on_error!r}")
    server = server or os.environ.get("LRID_SERVER", "http://127.0.0.1:50051")
    token = token if token is not None else os.environ.get("LRID_TOKEN") or None
    run_id = run_id or default_run_id()
    P.point_steps(int(total_steps), int(points))  # checks them before anything starts
    rank0 = not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )
    recorder = None
    if rank0:
        recorder = Recorder(server, run_id, labels=labels, token=token, **recorder_options)
    try:
        return Watch(model, probe, total_steps, points, recorder, layers, optimizer, on_error)
    except BaseException:
        if recorder is not None:
            try:
                recorder.close()
            except LridError:
                pass
        raise
