"""The GAN update: ``d_steps_per_g`` discriminator steps, then one generator step.

This file is the whole of what happens to the weights in one training step; the loop
around it (``engine.py``) only counts steps and emits events. Nothing here waits for
the device: statistics stay device tensors until the loop reads them at log steps.
On CUDA, ``train_step`` is what a whole-step CUDA graph captures (``graphs.py``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import torch

import gantool
from gantool import graphs
from gantool.data import mix_seed
from gantool.interfaces import split_scores
from gantool.plan import Plan, labelled


@dataclasses.dataclass
class Network:
    """One network, how the update calls it, and what updates its weights."""

    module: torch.nn.Module  # owns the weights: checkpoints, EMA, penalties and sampling use it
    train_call: Callable  # the module as called when its own weights train (DDP and/or compiled)
    frozen_call: Callable  # as called while only the other network trains (no DDP: no gradient to average)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16 loss scaling; disabled (a pass-through) otherwise
    scheduler: object | None  # an LRScheduler stepped once per generator step

    def optimize(self, loss: torch.Tensor):
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


class GANUpdate:
    """Holds the two networks, the loss, the augmentation and the EMA; ``__call__`` trains one step."""

    def __init__(self, plan: Plan, *, rank: int = 0, world_size: int = 1, quiet: bool = False):
        train, device = plan.recipe.train, plan.device
        self.loss, self.augment, self.device = plan.loss, plan.augment, device
        # Optional parts of the Loss and Augmentation contracts, for classes that do not subclass them.
        self.penalty = getattr(plan.loss, "penalty", lambda ctx: None)
        self.needs_real_scores = getattr(plan.loss, "generator_needs_real_scores", False)
        self.observe = getattr(plan.augment, "update", None)
        self.d_steps_per_g, self.channels_last = train.d_steps_per_g, plan.channels_last
        graphed = graphs.enabled(plan, world_size, rank, warn=not quiet)
        self.graph = graphs.StepGraph(self, graphs.backend(device), quiet=quiet) if graphed else None
        # A graph replays the casts it captured: autocast must not cache casts across steps.
        self.autocast = torch.autocast(device.type, dtype=plan.amp_dtype, enabled=plan.amp_dtype is not None,
                                       cache_enabled=not graphed)
        fp16 = plan.amp_dtype == torch.float16
        calls = _wrap(plan, world_size)
        self.G, self.D = (
            Network(module, *calls[name], plan.optimizers[name], torch.amp.GradScaler(device.type, enabled=fp16),
                    plan.schedulers.get(name))
            for name, module in (("generator", plan.generator), ("discriminator", plan.discriminator))
        )
        self.ema = EMA(plan.generator, train.ema_decay) if train.ema_decay > 0 else None
        # Latents come from their own generator (checkpointed), not the global RNG.
        self.noise = torch.Generator(device=device).manual_seed(mix_seed(plan.recipe.run.seed, 3))
        self.global_batch, self.local_batch, self.rank = plan.data.global_batch, plan.data.local_batch, rank
        self.num_classes = plan.num_classes
        # Inductor's CUDA graphs (compile = "reduce-overhead") free a graph's outputs when a
        # new "generation" starts. Left to itself it starts one at any compiled forward after
        # a backward, so D's G-step forward, after D's own backward, would overwrite the fake
        # batch G made for this step. Marking each step's start makes the step one generation.
        self.mark_steps = plan.recipe.train.compile == "reduce-overhead"

    def __call__(self, batches, step: int, batch: int) -> dict[str, torch.Tensor]:
        """One generator step after ``d_steps_per_g`` discriminator steps; returns device statistics.

        ``step`` counts generator steps and ``batch`` real batches done so far. The
        learning-rate schedules and the EMA follow the step, outside a captured graph.
        """
        inputs = self.draw(batches)
        if self.mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        stats = self.graph(inputs, step, batch) if self.graph is not None else self.train_step(inputs, step, batch)
        for net in (self.G, self.D):
            if net.scheduler is not None:
                net.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.G.module, step)
        return stats

    def unwrap(self):
        """Call the plain modules from now on: drops the DDP wrappers, whose reducers hold the
        process group, so that ``distributed.shutdown`` is what destroys it (see there)."""
        for net in (self.G, self.D):
            net.train_call = net.frozen_call = net.module

    def draw(self, batches) -> list[tuple]:
        """(real, real_labels, z, fake_labels) for each discriminator step of the next step.

        Drawn before the step runs, each from its own seeded stream, so a captured graph
        can take them as inputs; labels are None in an unconditional run.
        """
        inputs = []
        for _ in range(self.d_steps_per_g):
            real, real_labels = next(batches)
            if self.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            inputs.append((real, real_labels, *self.latents()))
        return inputs

    def train_step(self, inputs: list[tuple], step: int, batch: int) -> dict[str, torch.Tensor]:
        """The D steps and the G step on ``inputs`` (from ``draw``): all a CUDA graph captures.

        The fake batch is generated once per D step; the last one also trains G, through
        D. In a class-conditional run G and D also get labels: the real batch's, and the
        ones the fake batch was generated with (``labelled`` adds none otherwise).
        """
        G, D, loss = self.G, self.D, self.loss
        augment = self.augment if self.augment is not None else _unchanged
        stats = {}
        for k, (real, real_labels, z, fake_labels) in enumerate(inputs):
            last = k == len(inputs) - 1
            with self.autocast, torch.set_grad_enabled(last):  # G's graph is needed only for its own step
                fake = G.train_call(z, *labelled(fake_labels))
            real_seen = augment(real)  # D sees (and the penalty uses) real images as augmented
            ctx = gantool.StepContext(step, batch + k, G.module, D.module, real_seen, fake.detach(), stats,
                                      real_labels, fake_labels)
            with self.autocast:
                real_scores, ctx.real_extras = split_scores(D.train_call(real_seen, *labelled(real_labels)))
                fake_scores, ctx.fake_extras = split_scores(D.train_call(augment(ctx.fake), *labelled(fake_labels)))
                loss_d = loss.discriminator_loss(real_scores, fake_scores, ctx)
                penalty = self.penalty(ctx)
                if penalty is not None:
                    loss_d = loss_d + penalty
            D.optimize(loss_d)
            if self.observe is not None:
                self.observe(real_scores.detach(), ctx)

        D.module.requires_grad_(False)  # G's step needs gradients through D, not for D's weights
        try:
            ctx = gantool.StepContext(step, batch + k, G.module, D.module, real_seen, fake, stats, real_labels,
                                      fake_labels)
            with self.autocast:
                fake_scores, ctx.fake_extras = split_scores(D.frozen_call(augment(fake), *labelled(fake_labels)))
                real_scores = None
                if self.needs_real_scores:  # relativistic losses: D(x) under the updated D
                    with torch.no_grad():
                        real_scores, ctx.real_extras = split_scores(D.frozen_call(real_seen, *labelled(real_labels)))
                loss_g = loss.generator_loss(real_scores, fake_scores, ctx)
            G.optimize(loss_g)
        finally:  # also when a CUDA graph capture fails in here: the eager step after it trains D
            D.module.requires_grad_(True)
        stats["loss_d"], stats["loss_g"] = loss_d.detach().float(), loss_g.detach().float()
        return stats

    def latents(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's rows of the global batch's latents (and, in a conditional run, of its
        uniformly drawn class labels): every rank draws the same global batch from the shared
        noise generator (so its checkpointed state is every rank's) and keeps its own slice,
        as the data stream does with images."""
        z = self.G.module.sample_latent(self.global_batch, device=self.device, generator=self.noise)
        labels = None
        if self.num_classes:
            labels = torch.randint(self.num_classes, (self.global_batch,), device=self.device, generator=self.noise)
        if self.global_batch == self.local_batch:
            return z, labels
        rows = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
        return z[rows], labels[rows] if labels is not None else None


def _unchanged(images: torch.Tensor) -> torch.Tensor:
    return images


def _wrap(plan: Plan, world_size: int) -> dict[str, tuple[Callable, Callable]]:
    """(train_call, frozen_call) per network: DDP across processes, torch.compile if asked.

    ``train.compile``: true compiles with torch's default mode (no ``mode`` argument),
    a string is passed on as ``torch.compile(..., mode=...)``.
    """
    G, D, compile_ = plan.generator, plan.discriminator, plan.recipe.train.compile
    if compile_ and plan.channels_last:  # before DDP, which checks that every rank's parameters have one layout
        keep_1x1_input_convs_nchw(plan)
    options = {} if compile_ is True else {"mode": compile_}

    def compiled(module):
        return torch.compile(module, **options)

    g_train, d_train = G, D
    if world_size > 1:
        # Gradients are averaged across ranks during backward. Buffers (BatchNorm running
        # statistics, used only for sampling) stay per rank; rank 0's are saved.
        import inspect

        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [plan.device.index] if plan.device.type == "cuda" else None
        new_api = "forward_sync_buffers" in inspect.signature(DDP).parameters  # newer torch renamed the flag
        no_sync = {"forward_sync_buffers": False} if new_api else {"broadcast_buffers": False}
        g_train, d_train = DDP(G, device_ids=ids, **no_sync), DDP(D, device_ids=ids, **no_sync)
    if compile_:  # outside DDP, so compiled graph breaks line up with DDP's gradient buckets
        g_train, d_train = compiled(g_train), compiled(d_train)
    d_frozen = d_train if world_size == 1 else (compiled(D) if compile_ else D)
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick the fastest kernels
    return {"generator": (g_train, g_train), "discriminator": (d_train, d_frozen)}


def keep_1x1_input_convs_nchw(plan: Plan) -> list[str]:
    """Store the weights of convolutions whose input is 1x1 in NCHW again; return their names.

    A workaround for a torch.compile (inductor) bug with ``channels_last``, seen on an
    NVIDIA H200 with torch 2.11 (it does not reproduce on CPU with torch 2.14): the
    backward of DCGAN G's first transposed convolution, which maps the 1x1 latent
    (B, 100, 1, 1) to 4x4, failed with
    ``assert_size_stride(buf45, (100, 512, 4, 4), (8192, 1, 2048, 512),
    'torch.ops.aten.convolution_backward.default')``. The weight is channels_last while
    a 1x1 input's strides fit NCHW and NHWC alike, and eager and inductor's meta function
    then disagree about the layout of the weight gradient. With the weight contiguous,
    input and weight are both plain NCHW there and nothing is ambiguous.

    The layers (nn.Conv2d and nn.ConvTranspose2d, in G and D) are found exactly: by
    forward pre-hooks during one no-grad forward of G on ``sample_latent(1)`` and of D on
    one image of the dataset's shape (with labels in a conditional run), both in eval mode
    (no BatchNorm statistics or spectral-norm iterations move; the modes are restored),
    without moving the global RNG. A generator whose first layer is a Linear has none.
    """
    G, D, device = plan.generator, plan.discriminator, plan.device
    found: dict[str, torch.nn.Module] = {}

    def watch(name, layer):
        def hook(_, args):
            if args and torch.is_tensor(args[0]) and args[0].dim() == 4 and tuple(args[0].shape[-2:]) == (1, 1):
                found[name] = layer
        return layer.register_forward_pre_hook(hook)

    hooks = [watch(f"{net}.{name}" if name else net, layer)
             for net, module in (("generator", G), ("discriminator", D))
             for name, layer in module.named_modules() if isinstance(layer, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    modes = [(m, m.training) for module in (G, D) for m in module.modules()]  # a submodule may differ
    labels = torch.zeros(1, dtype=torch.long, device=device) if plan.num_classes > 0 else None
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            G.eval()
            D.eval()
            G(G.sample_latent(1, device=device), *labelled(labels))
            D(torch.zeros(1, *(int(s) for s in plan.dataset.image_shape), device=device), *labelled(labels))
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes:
            m.training = training
    for layer in found.values():
        for p in layer.parameters():  # with spectral norm, the weight's ``original``
            if p.dim() == 4:
                p.data = p.data.contiguous()
    return list(found)


class EMA:
    """Exponential moving average of generator weights; buffers (BN statistics) are copied.

    With ``step`` the decay warms up as min(decay, (1 + step) / (10 + step)), so a short
    run is not dominated by the random initial weights (0.999 ** 780 = 46% of them).
    """

    def __init__(self, generator: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: torch.nn.Module, step: int | None = None):
        decay = self.decay if step is None else min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in generator.parameters()], 1.0 - decay)
        for b_ema, b in zip(self.model.buffers(), generator.buffers()):
            b_ema.copy_(b)
