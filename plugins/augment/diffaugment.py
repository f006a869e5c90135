"""Differentiable augmentation for data-efficient GAN training.

DiffAugment (Zhao, Liu, Lin, Zhu & Han 2020, "Differentiable Augmentation for
Data-Efficient GAN Training") applies the same kind of random, differentiable transforms
to real and fake images before D: D cannot memorise a small training set, and G still
gets gradients through the transforms. ``ada`` drives the probability of each transform
with the overfitting heuristic of ADA (Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data").

The ops follow the reference implementation (mit-han-lab/data-efficient-gans,
DiffAugment_pytorch.py), vectorised over the batch: a sample that skips an op is picked
back with ``torch.where``, so nothing loops over samples or waits for the device, and all
randomness comes from the global torch RNG, which the engine seeds and checkpoints.
"""

from __future__ import annotations

from typing import Annotated

import torch

from gantool import Augmentation, ParamError, Range
from gantool.params import suggest

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color, cutout' -> ('color', 'cutout'); names may repeat, as in the reference."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    if not names:
        raise ParamError("policy", f"names no augmentation; use some of {', '.join(POLICIES)}")
    for name in names:
        if name not in POLICIES:
            raise ParamError("policy", f"unknown augmentation {name!r}{suggest(name, POLICIES)}")
    return names


def _factor(x: torch.Tensor) -> torch.Tensor:
    """One uniform [0, 1) number per sample, shaped to broadcast over (C, H, W)."""
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def _brightness(x, apply):
    """Add U(-0.5, 0.5) to every pixel (images in [-1, 1])."""
    return x + torch.where(apply, _factor(x) - 0.5, 0)


def _saturation(x, apply):
    """Scale the distance from the per-pixel channel mean by U(0, 2); a grey image has no saturation."""
    if x.shape[1] == 1:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return torch.where(apply, (x - mean) * (_factor(x) * 2) + mean, x)


def _contrast(x, apply):
    """Scale the distance from the image mean by U(0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(apply, (x - mean) * (_factor(x) + 0.5) + mean, x)


def _translation(x, apply, ratio):
    """Shift by whole pixels, up to ``ratio`` of the size each way, filling with zeros."""
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1, 1), device=x.device) * apply
    dx = torch.randint(-sw, sw + 1, (n, 1, 1, 1), device=x.device) * apply
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1) + dy  # source row of each output row
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w) + dx
    out = x.gather(2, rows.clamp(0, h - 1).expand(n, c, h, w)).gather(3, cols.clamp(0, w - 1).expand(n, c, h, w))
    return torch.where((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w), out, 0)


def _cutout(x, apply, ratio):
    """Zero one square of ``ratio`` of the size, centred anywhere in the image (may be clipped)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    hole = apply & (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return torch.where(hole, 0, x)


def diff_augment(x, policy, p, translation_ratio=0.125, cutout_ratio=0.5):
    """Apply each op of ``policy`` to each sample with probability ``p`` (a float or a 0-d device tensor)."""
    ops = {
        "color": (_brightness, _saturation, _contrast),
        "translation": (lambda y, apply: _translation(y, apply, translation_ratio),),
        "cutout": (lambda y, apply: _cutout(y, apply, cutout_ratio),),
    }
    out = x
    for name in policy:
        for op in ops[name]:
            out = op(out, torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)  # gather returns NCHW; D expects the input's layout
    return out


class NoAugment(Augmentation):
    """Images unchanged: turns off the ``[augment]`` of a recipe this one extends.

    TOML cannot delete a table, so ``--set augment.type=none`` (or ``type = "none"`` in a
    recipe that extends one with ADA, such as recipes/dcgan_pokemon.toml) is the way out.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images


class DiffAugment(Augmentation):
    """DiffAugment (Zhao et al. 2020): random color, translation and cutout on every image D sees.

    The paper's recipe for small datasets (e.g. 10% of CIFAR-10, 100-shot): all three
    policies, applied to every sample. Values are not clamped, as in the paper.

    Args:
        policy: Comma-separated ops: color (brightness, saturation, contrast), translation, cutout.
        translation_ratio: Largest shift as a fraction of the image size (1/8 in the paper).
        cutout_ratio: Side of the cut-out square as a fraction of the image size (1/2 in the paper).
        probability: Chance that each op is applied to each sample (1 = always, as in the paper).
    """

    def __init__(
        self,
        *,
        policy: str = "color,translation,cutout",
        translation_ratio: Annotated[float, Range(ge=0, le=1)] = 0.125,
        cutout_ratio: Annotated[float, Range(ge=0, le=1)] = 0.5,
        probability: Annotated[float, Range(ge=0, le=1)] = 1.0,
    ):
        super().__init__()
        self.policy = parse_policy(policy)
        self.translation_ratio, self.cutout_ratio, self.probability = translation_ratio, cutout_ratio, probability

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return diff_augment(images, self.policy, self.probability, self.translation_ratio, self.cutout_ratio)

    def extra_repr(self) -> str:
        return (f"policy={','.join(self.policy)!r}, translation_ratio={self.translation_ratio}, "
                f"cutout_ratio={self.cutout_ratio}, probability={self.probability}")


class AdaptiveAugment(Augmentation):
    """DiffAugment ops with the adaptive probability of ADA (Karras et al. 2020).

    ``p`` starts at ``initial_p``; every ``interval`` discriminator updates it moves by
    ``sign(r_t - target) * images / (speed_kimg * 1000)``, where ``r_t`` is the mean sign
    of D's real scores since the last adjustment (how confidently D calls the training
    images real: the overfitting signal) and ``images`` = batch size * interval. So p can
    go from 0 to 1 in ``speed_kimg`` thousand images. ``p`` and the running sums are
    buffers: they are checkpointed and a resume continues exactly. Under several
    processes each adjusts its own p from its own scores.

    Args:
        policy: Comma-separated ops: color (brightness, saturation, contrast), translation, cutout.
        translation_ratio: Largest shift as a fraction of the image size.
        cutout_ratio: Side of the cut-out square as a fraction of the image size.
        initial_p: Probability at the start of training.
        target: The r_t that p is steered towards (0.6 in ADA); lower means more augmentation.
        interval: Discriminator updates between adjustments of p (4 in ADA).
        speed_kimg: Thousands of real images for p to go from 0 to 1 at full speed (500 in ADA).
    """

    def __init__(
        self,
        *,
        policy: str = "color,translation,cutout",
        translation_ratio: Annotated[float, Range(ge=0, le=1)] = 0.125,
        cutout_ratio: Annotated[float, Range(ge=0, le=1)] = 0.5,
        initial_p: Annotated[float, Range(ge=0, le=1)] = 0.0,
        target: Annotated[float, Range(ge=0, lt=1)] = 0.6,
        interval: Annotated[int, Range(ge=1)] = 4,
        speed_kimg: Annotated[float, Range(gt=0)] = 500.0,
    ):
        super().__init__()
        self.policy = parse_policy(policy)
        self.translation_ratio, self.cutout_ratio = translation_ratio, cutout_ratio
        self.target, self.interval, self.speed_kimg = target, interval, speed_kimg
        self.register_buffer("probability", torch.tensor(float(initial_p)))
        self.register_buffer("sign_sum", torch.zeros(()))  # sum of sign(real score) since the last adjustment
        self.register_buffer("score_count", torch.zeros(()))  # real scores seen since the last adjustment
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # update() calls since the last adjustment

    @property
    def p(self) -> torch.Tensor:
        """The current probability as a 0-d device tensor (log it without syncing)."""
        return self.probability

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return diff_augment(images, self.policy, self.probability, self.translation_ratio, self.cutout_ratio)

    @torch.no_grad()
    def update(self, real_scores: torch.Tensor, ctx):
        """Accumulate sign(real_scores); every ``interval`` calls adjust p. All on the device; p is logged."""
        scores = real_scores.detach().float()
        self.sign_sum += scores.sign().sum()
        self.score_count += scores.numel()
        self.calls += 1
        due = self.calls >= self.interval
        r_t = self.sign_sum / self.score_count.clamp(min=1)
        adjusted = self.probability + torch.sign(r_t - self.target) * self.score_count / (self.speed_kimg * 1000)
        self.probability.copy_(torch.where(due, adjusted.clamp(0, 1), self.probability))
        for buffer in (self.sign_sum, self.score_count, self.calls):
            buffer.masked_fill_(due, 0)
        ctx.log("augment_p", self.probability)

    def extra_repr(self) -> str:
        return (f"policy={','.join(self.policy)!r}, target={self.target}, interval={self.interval}, "
                f"speed_kimg={self.speed_kimg}")
