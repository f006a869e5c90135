"""The GAN update: ``d_steps_per_g`` discriminator steps, then one generator step.

This file is the whole of what happens to the weights in one training step; the loop
around it (``engine.py``) only counts steps and emits events. Nothing here waits for
the device: statistics stay device tensors until the loop reads them at log steps.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import torch

import gantool
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

    def __init__(self, plan: Plan, *, rank: int = 0, world_size: int = 1):
        train, device = plan.recipe.train, plan.device
        self.loss, self.augment, self.device = plan.loss, plan.augment, device
        # Optional parts of the Loss and Augmentation contracts, for classes that do not subclass them.
        self.penalty = getattr(plan.loss, "penalty", lambda ctx: None)
        self.needs_real_scores = getattr(plan.loss, "generator_needs_real_scores", False)
        self.observe = getattr(plan.augment, "update", None)
        self.d_steps_per_g, self.channels_last = train.d_steps_per_g, plan.channels_last
        self.autocast = torch.autocast(device.type, dtype=plan.amp_dtype, enabled=plan.amp_dtype is not None)
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

    def __call__(self, batches, step: int, batch: int) -> dict[str, torch.Tensor]:
        """One generator step after ``d_steps_per_g`` discriminator steps; returns device statistics.

        ``step`` counts generator steps and ``batch`` real batches done so far. The fake
        batch is generated once per D step; the last one also trains G, through D. In a
        class-conditional run G and D also get labels: the real batch's, and the ones
        the fake batch was generated with (``labelled`` adds none otherwise).
        """
        G, D, loss = self.G, self.D, self.loss
        augment = self.augment if self.augment is not None else _unchanged
        stats = {}
        for k in range(self.d_steps_per_g):
            real, real_labels = next(batches)
            if self.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            last = k == self.d_steps_per_g - 1
            z, fake_labels = self.latents()
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
        ctx = gantool.StepContext(step, batch + k, G.module, D.module, real_seen, fake, stats, real_labels, fake_labels)
        with self.autocast:
            fake_scores, ctx.fake_extras = split_scores(D.frozen_call(augment(fake), *labelled(fake_labels)))
            real_scores = None
            if self.needs_real_scores:  # relativistic losses: D(x) under the updated D
                with torch.no_grad():
                    real_scores, ctx.real_extras = split_scores(D.frozen_call(real_seen, *labelled(real_labels)))
            loss_g = loss.generator_loss(real_scores, fake_scores, ctx)
        G.optimize(loss_g)
        D.module.requires_grad_(True)
        for net in (G, D):
            if net.scheduler is not None:
                net.scheduler.step()
        if self.ema is not None:
            self.ema.update(G.module, step)
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
    """(train_call, frozen_call) per network: DDP across processes, torch.compile if asked."""
    G, D, compile_ = plan.generator, plan.discriminator, plan.recipe.train.compile
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
        g_train, d_train = torch.compile(g_train), torch.compile(d_train)
    d_frozen = d_train if world_size == 1 else (torch.compile(D) if compile_ else D)
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick the fastest kernels
    return {"generator": (g_train, g_train), "discriminator": (d_train, d_frozen)}


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
