"""Training-time components: a loss, an augmentation, an optimizer, a schedule and a callback."""

import json
from typing import Annotated

import torch
import torch.nn.functional as F

import gantool


class RpGAN(gantool.Loss):
    """Relativistic pairing GAN (Jolicoeur-Martineau 2018; the loss of R3GAN, Huang et al. 2024).

    D: softplus(D(fake) - D(real)); G: softplus(D(real) - D(fake)), paired sample by sample.
    The generator loss needs D's real scores, hence ``generator_needs_real_scores``.
    """

    generator_needs_real_scores = True

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        ctx.log("margin", (real_scores - fake_scores).mean())
        return F.softplus(fake_scores - real_scores).mean()

    def generator_loss(self, real_scores, fake_scores, ctx):
        return F.softplus(real_scores - fake_scores).mean()


class InstanceNoise(gantool.Augmentation):
    """Gaussian noise added to D's inputs, annealed linearly to zero (Sønderby et al. 2016).

    Args:
        sigma: noise standard deviation at step 0 (images are in [-1, 1])
        anneal_steps: steps until the noise is gone
    """

    capturable = False  # update() computes sigma from ctx.step on the host: a CUDA graph would freeze it

    def __init__(self, *, sigma: Annotated[float, gantool.Range(ge=0)] = 0.1,
                 anneal_steps: Annotated[int, gantool.Range(ge=1)] = 1000):
        super().__init__()
        self.anneal_steps = anneal_steps
        self.register_buffer("initial", torch.tensor(sigma))
        self.register_buffer("sigma", torch.tensor(sigma))  # a buffer: checkpointed, so resume is exact

    def forward(self, images):
        return images + self.sigma.to(images.dtype) * torch.randn_like(images)  # the global RNG

    def update(self, real_scores, ctx):
        self.sigma.copy_(self.initial * max(0.0, 1 - (ctx.step + 1) / self.anneal_steps))
        ctx.log("noise_sigma", self.sigma)


class Lion(torch.optim.Optimizer):
    """EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms")."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                update = state["exp_avg"].lerp(p.grad, 1 - beta1).sign_()
                p.add_(update, alpha=-group["lr"])
                state["exp_avg"].lerp_(p.grad, 1 - beta2)


def lion(params, *, lr: Annotated[float, gantool.Range(gt=0)] = 2e-5,
         betas: tuple[Annotated[float, gantool.Range(ge=0, lt=1)], Annotated[float, gantool.Range(ge=0, lt=1)]] = (0.5, 0.99),
         weight_decay: Annotated[float, gantool.Range(ge=0)] = 0.0):
    """Lion. Its updates are signs, so use a learning rate 3-10x smaller than Adam's.

    Args:
        lr: learning rate
        betas: (interpolation for the update, momentum decay)
        weight_decay: decoupled weight decay
    """
    return Lion(params, lr=lr, betas=betas, weight_decay=weight_decay)


def step_decay(optimizer, total_steps: int, *, every: Annotated[int, gantool.Range(ge=1)] = 1000,
               gamma: Annotated[float, gantool.Range(gt=0, le=1)] = 0.5):
    """Multiply the learning rate by ``gamma`` every ``every`` generator steps (torch's StepLR).

    Args:
        every: generator steps between decays
        gamma: factor applied at each decay
    """
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=gamma)


class Plateau(gantool.Callback):
    """Early stopping: stop when a logged value has not improved for ``patience`` log steps.

    Writes one JSON line per log step to ``plateau.log`` in the run directory.

    Args:
        key: the logged or evaluated value to watch (e.g. "loss_g", "fid")
        mode: "min" if lower is better, "max" otherwise
        patience: log steps without improvement before stopping
    """

    def __init__(self, *, key: str = "loss_g", mode: str = "min", patience: Annotated[int, gantool.Range(ge=1)] = 10):
        if mode not in ("min", "max"):
            raise gantool.ParamError("mode", f"{mode!r} is not 'min' or 'max'")
        self.key, self.mode, self.patience = key, mode, patience
        self.best, self.waited = None, 0

    def on_run_start(self, run):
        self.path = run.out_dir / "plateau.log"

    def on_log(self, run, record):
        self._watch(run, record)

    def on_eval(self, run, results):
        self._watch(run, results)

    def _watch(self, run, values):
        if self.key not in values:
            return
        value = values[self.key]
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        self.best, self.waited = (value, 0) if better else (self.best, self.waited + 1)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": run.step, self.key: value, "best": self.best, "waited": self.waited}) + "\n")
        if self.waited >= self.patience:
            run.request_stop(f"{self.key} did not improve for {self.patience} log steps")
