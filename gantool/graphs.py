"""Whole-step CUDA graphs (``[train] cuda_graphs``): capture the GAN update once, replay it.

At batch 64 a DCGAN step on a recent GPU spends its time launching kernels, not in them
(issue 12 measured about 2% of an H200's bf16 peak). A CUDA graph records every kernel
of the D and G updates, backward passes and optimizer steps included, and one
``replay()`` launches them all. A graph has three needs, and the update meets them:

- fixed input addresses: ``GANUpdate.draw`` takes the real batches and the latents
  eagerly (from their own seeded streams, as without graphs), and they are copied into
  the captured step's input buffers before each replay;
- no host work inside the step: optimizers keep their step count on the device
  (``capturable=True``); fp16's GradScaler, learning-rate schedules and several
  processes (DDP) are host work, so those runs stay eager;
- the same kernels every step: Python decisions inside the step are frozen at capture,
  so a component that decides per step (lazy R1 on every k-th batch) declares
  ``capturable = False``.

Everything else (EMA, schedulers, logging, checkpoints) runs eagerly between replays.
The first ``WARMUP_STEPS`` steps run eagerly (cuDNN picks its kernels, optimizers make
their state); a step that cannot be captured falls back to eager with one warning line.
The last warm-up step runs under torch's sync debug mode: a step that makes the host
wait for the GPU (``.item()``, ``nonzero``, a blocking copy) is not even tried, since a
capture that fails can leave CUDA's caching allocator unusable for the whole process.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from gantool.errors import first_line

WARMUP_STEPS = 3  # eager steps before the capture, as in PyTorch's whole-network example
_REPLAYING = contextvars.ContextVar("replaying", default=False)


@contextlib.contextmanager
def replay_on_any_device():
    """Runs built inside capture their step with ``ReplayedClosure``, on any device.

    What a CUDA graph does to Python code, on a CPU: the step's Python runs at the
    capture, and replays reuse its step numbers. Tests use it to check the capture
    plumbing, and ``gantool.testing.check_capturable`` a component, without a GPU.
    """
    token = _REPLAYING.set(True)
    try:
        yield
    finally:
        _REPLAYING.reset(token)


def backend(device: torch.device):
    """What captures a run's step on ``device``: a CUDA graph, or the stand-in inside ``replay_on_any_device``."""
    return ReplayedClosure() if _REPLAYING.get() else CudaGraph(device)


def enabled(plan, world_size: int = 1, rank: int = 0, *, warn: bool = True) -> bool:
    """Whether the run's steps will be captured; says why not in one line when the recipe expected it."""
    warn = warn and rank == 0
    setting, device = plan.recipe.train.cuda_graphs, plan.device
    if setting is False:
        return False
    if device.type != "cuda" and not _REPLAYING.get():
        if setting is True and warn:
            _warn(f"[train] cuda_graphs = true needs a CUDA device, and this run is on {device.type}")
        return False
    reasons = blockers(plan, world_size)
    if reasons and warn:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        _warn(f"{reasons[0]}{more}")
    return not reasons


def blockers(plan, world_size: int = 1) -> list[str]:
    """Why the whole step cannot be captured; empty when it can."""
    train, reasons = plan.recipe.train, []
    if world_size > 1:
        reasons.append(f"{world_size} processes: DDP's gradient all-reduce is not captured")
    if train.compile == "reduce-overhead":
        reasons.append('train.compile = "reduce-overhead" captures its own CUDA graphs')
    if plan.amp_dtype == torch.float16:
        reasons.append("fp16's GradScaler checks the gradients on the host every step (use amp = \"bf16\" or \"off\")")
    for net in plan.schedulers:
        reasons.append(f"[scheduler.{net}] sets the learning rate on the host every step")
    for net, optimizer in plan.optimizers.items():
        if not all("capturable" in group for group in optimizer.param_groups):
            reasons.append(f"[optimizer.{net}] {type(optimizer).__name__} has no capturable mode")
    parts = {"generator": plan.generator, "discriminator": plan.discriminator, "loss": plan.loss,
             "augment": plan.augment}
    for kind, part in parts.items():
        if part is not None and not getattr(part, "capturable", True):
            name = plan.components.get(kind, {}).get("qualified_name", type(part).__name__)
            reasons.append(f"[{kind}] {name} declares capturable = False")
    return reasons


class StepGraph:
    """Eager warm-up steps, then one capture of ``update.train_step``, then replays.

    ``backend`` does the capturing: ``CudaGraph`` on a GPU; ``ReplayedClosure`` runs the
    same input-buffer plumbing on any device, so tests can check it on a CPU.
    """

    def __init__(self, update, backend, *, quiet: bool = False):
        self.update, self.backend, self.quiet = update, backend, quiet  # quiet: autotune's trial steps
        self.warm_steps = 0
        self.inputs: list | None = None  # the captured step's input buffers, once captured

    def __call__(self, inputs: list, step: int, batch: int) -> dict[str, torch.Tensor]:
        if self.inputs is None:
            if self.warm_steps < WARMUP_STEPS:
                self.warm_steps += 1
                return self.backend.warm_up(lambda: self.update.train_step(inputs, step, batch),
                                            last=self.warm_steps == WARMUP_STEPS)
            try:
                self._capture(inputs, step, batch)
            except Exception as e:  # noqa: BLE001 - any failure to capture means: train eagerly
                self.update.graph = None
                if not self.quiet:
                    _warn(f"capturing step {step} failed ({first_line(e)})")
                return self.update.train_step(inputs, step, batch)
        else:
            for buffer, value in zip(_tensors(self.inputs), _tensors(inputs)):
                buffer.copy_(value)
        return _copies(self.backend.replay())

    def _capture(self, inputs: list, step: int, batch: int):
        self.inputs = [tuple(None if t is None else t.clone() for t in one) for one in inputs]
        for net in (self.update.G, self.update.D):  # grads are made in the graph's own memory
            net.optimizer.zero_grad(set_to_none=True)
        try:
            self.backend.capture(lambda: self.update.train_step(self.inputs, step, batch),
                                 [net.optimizer for net in (self.update.G, self.update.D)])
        except BaseException:
            self.inputs = None
            raise


class CudaGraph:
    """Capture with ``torch.cuda.graph``; warm-up steps run on a side stream, as PyTorch requires."""

    def __init__(self, device: torch.device):
        self.graph, self.outputs = torch.cuda.CUDAGraph(), None
        self.stream = torch.cuda.Stream(device)
        self.host_syncs: list[str] = []  # where the last warm-up step waited for the GPU

    def warm_up(self, step: Callable[[], dict], last: bool = False) -> dict:
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        with torch.cuda.stream(self.stream), host_syncs_recorded(last) as self.host_syncs:
            outputs = step()
        torch.cuda.current_stream(self.stream.device).wait_stream(self.stream)
        return outputs

    def capture(self, step: Callable[[], dict], optimizers: list):
        if self.host_syncs:
            raise RuntimeError(f"the step makes the host wait for the GPU, at {', '.join(self.host_syncs[:3])}")
        for optimizer in optimizers:
            make_capturable(optimizer)
        # The outer context puts the current stream back even when a failed capture does not.
        # thread_local: a DataLoader's pin-memory thread may keep allocating while we capture.
        with torch.cuda.stream(self.stream), \
                torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
            self.outputs = step()

    def replay(self) -> dict:
        self.graph.replay()
        return self.outputs


class ReplayedClosure:
    """Stands in for a CUDA graph where there is none: "replaying" calls the captured step
    again on the same input buffers, with the step and batch numbers of the capture."""

    def warm_up(self, step: Callable[[], dict], last: bool = False) -> dict:
        return step()

    def capture(self, step: Callable[[], dict], optimizers: list):
        self.step = step

    def replay(self) -> dict:
        return self.step()


def make_capturable(optimizer: torch.optim.Optimizer):
    """Keep the optimizer's step counts on the device so a graph can advance them."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if torch.is_tensor(state.get("step")) and state["step"].device != p.device:
                state["step"] = state["step"].to(p.device, torch.float32)


@contextlib.contextmanager
def host_syncs_recorded(enabled: bool = True):
    """Yields a list that gets, on exit, where the code inside made the host wait for the GPU.

    torch's sync debug mode warns at every such call; those warnings are collected here
    (as "file:line" of the Python caller), and any other warning is passed on.
    """
    found: list[str] = []
    if not enabled:
        yield found
        return
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():  # torch says once that the mode is a "prototype feature"
        warnings.simplefilter("ignore")
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for w in caught:
        if "synchronizing CUDA operation" in str(w.message):
            found.append(f"{Path(w.filename).name}:{w.lineno}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _tensors(inputs: list) -> list[torch.Tensor]:
    return [t for one in inputs for t in one if t is not None]


def _copies(stats: dict) -> dict[str, torch.Tensor]:
    """The step's statistics, copied: the next replay overwrites the graph's own."""
    values = list(stats.values())
    if values and all(v.dim() == 0 and v.device == values[0].device and v.dtype == values[0].dtype for v in values):
        return dict(zip(stats, torch.stack(values).unbind()))  # one copy kernel for all of them
    return {key: value.clone() for key, value in stats.items()}


def _warn(reason: str):
    print(f"warning: [train] cuda_graphs: training eagerly: {reason}", file=sys.stderr, flush=True)
