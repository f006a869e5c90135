"""The five component interfaces every plugin implements (see docs/plugins.md).

Components are built with keyword arguments taken from a recipe table; the engine also
injects ``image_shape=(C, H, W)`` into generators and discriminators.
"""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """Maps latent vectors to images in [-1, 1] of shape (N, C, H, W).

    Subclasses set ``self.latent_dim`` and ``self.image_shape``.
    """

    latent_dim: int
    image_shape: tuple[int, int, int]

    def sample_latent(self, n: int, *, device=None, generator: torch.Generator | None = None):
        """Draw ``n`` latents; a generator wanting (N, Z, 1, 1) reshapes in ``forward``."""
        return torch.randn(n, self.latent_dim, device=device, generator=generator)


class Discriminator(nn.Module):
    """Maps images (N, C, H, W) to raw scores (logits) of shape (N,); no sigmoid."""

    image_shape: tuple[int, int, int]


class Loss:
    """The adversarial objective. Scores are the discriminator's raw outputs."""

    def discriminator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, discriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        """Extra discriminator term (gradient penalty, R1); ``None`` means none."""
        return None


class Dataset(torch.utils.data.Dataset):
    """Image tensors in [-1, 1] of shape ``image_shape``.

    Datasets that fit in memory also implement ``as_tensor()``: the whole set as one
    uint8 tensor (N, C, H, W), so the engine can skip per-sample work entirely.
    ``hflip = True`` asks the engine to flip random halves of each batch.
    """

    image_shape: tuple[int, int, int]
    hflip: bool = False

    def as_tensor(self) -> torch.Tensor | None:
        return None

    def __getitem__(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class Metric:
    """A quality number computed from a generator and the real dataset.

    ``goals`` maps each result key to ``"min"`` or ``"max"`` (default ``"min"``), so
    ``train.keep_best`` knows which checkpoint is best.
    """

    goals: dict[str, str] = {}

    def compute(self, generator: Generator, dataset: Dataset, *, n: int, device) -> dict[str, float]:
        raise NotImplementedError
