"""The component interfaces every plugin implements (see docs/plugins.md).

Components are built with keyword arguments taken from a recipe table; the engine also
injects what only it knows: ``image_shape=(C, H, W)`` and ``num_classes`` into
generators and discriminators, ``params`` into optimizers, ``optimizer`` and
``total_steps`` into schedulers.

Class conditioning: a component declares ``conditioning`` = "none" (cannot take
labels), "optional" (conditional when built with ``num_classes > 0``) or "required".
A run is conditional when ``[train] conditional = true`` or a component requires it;
then the engine injects the dataset's ``num_classes`` and calls ``G(z, labels)`` and
``D(x, labels)`` with int64 labels of shape (N,). Otherwise it injects
``num_classes = 0`` and calls ``G(z)`` and ``D(x)``, so unconditional plugins never see labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn


class Generator(nn.Module):
    """Maps latent vectors to images in [-1, 1] of shape (N, C, H, W).

    Subclasses set ``self.latent_dim`` and ``self.image_shape``. A conditional generator
    sets ``self.num_classes`` (> 0) and takes ``forward(z, labels)``.
    """

    latent_dim: int
    image_shape: tuple[int, int, int]
    conditioning: str = "none"  # "none" | "optional" | "required"
    num_classes: int = 0  # > 0 once built conditional
    capturable: bool = True  # False: it decides per step on the host, so no CUDA graph may capture the step

    def sample_latent(self, n: int, *, device=None, generator: torch.Generator | None = None):
        """Draw ``n`` latents; a generator wanting (N, Z, 1, 1) reshapes in ``forward``."""
        return torch.randn(n, self.latent_dim, device=device, generator=generator)


class Discriminator(nn.Module):
    """Maps images (N, C, H, W) to raw scores (logits) of shape (N,); no sigmoid.

    A conditional discriminator sets ``self.num_classes`` and takes ``forward(x, labels)``.
    ``forward`` may also return ``(scores, extras)``, a dict of further per-image
    outputs (an auxiliary classifier's ``"class_logits"``); the loss finds them in
    ``ctx.real_extras`` / ``ctx.fake_extras``.
    """

    image_shape: tuple[int, int, int]
    conditioning: str = "none"  # "none" | "optional" | "required"
    num_classes: int = 0
    capturable: bool = True  # False: it decides per step on the host, so no CUDA graph may capture the step


def split_scores(output) -> tuple[torch.Tensor, dict]:
    """(scores, extras) of a discriminator's output: a tensor, or ``(scores, extras)``."""
    if isinstance(output, tuple | list):
        scores, extras = output
        return scores, dict(extras)
    return output, {}


@dataclasses.dataclass
class StepContext:
    """What a loss (and its penalty) may look at in one discriminator or generator update.

    ``real`` and ``fake`` are the batches exactly as D saw them (augmented when the
    recipe has an ``[augment]`` table); ``fake`` is detached in the discriminator update.
    ``discriminator`` is the bare module (never a DDP or compiled wrapper), so a
    penalty can take input gradients through it: use ``ctx.scores(images, labels)``,
    which passes labels in a conditional run and drops a discriminator's extras.
    ``real_labels`` and ``fake_labels`` are the class labels (int64, (N,)) of a
    conditional run, ``None`` otherwise; ``real_extras`` and ``fake_extras`` hold the
    discriminator's extra outputs (see ``Discriminator``) for this update.
    """

    step: int  # generator steps done before this one (0 for the first update)
    batch: int  # discriminator batches done before this one (counts d_steps_per_g)
    generator: nn.Module
    discriminator: nn.Module
    real: torch.Tensor
    fake: torch.Tensor
    stats: dict = dataclasses.field(default_factory=dict)
    real_labels: torch.Tensor | None = None
    fake_labels: torch.Tensor | None = None
    real_extras: dict = dataclasses.field(default_factory=dict)
    fake_extras: dict = dataclasses.field(default_factory=dict)

    def scores(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's scores (N,) of ``images``, given ``labels`` when the run is conditional."""
        output = self.discriminator(images) if labels is None else self.discriminator(images, labels)
        return split_scores(output)[0]

    def log(self, name: str, value: torch.Tensor | float):
        """Log a scalar under ``name`` in metrics.jsonl, averaged over the logging interval.

        Keep tensors on the device: the engine reads them only every ``log_every`` steps. A
        float is copied to the device, which waits for it, so a step that logs one is not
        captured as a CUDA graph.
        """
        if torch.is_tensor(value):
            self.stats[name] = value.detach().float()
        else:
            self.stats[name] = torch.tensor(float(value), device=self.real.device)


class Loss:
    """The adversarial objective. Scores are the discriminator's raw outputs, shape (N,).

    Both methods return a scalar tensor; log statistics with ``ctx.log(name, value)``.
    A relativistic loss needs D's scores of the real batch in the generator update: set
    ``generator_needs_real_scores = True`` and the engine computes them there with the
    current discriminator (otherwise ``real_scores`` is ``None`` in ``generator_loss``).
    """

    generator_needs_real_scores: bool = False
    conditioning: str = "none"  # "required": needs ctx.real_labels / ctx.fake_labels (e.g. ACGAN)
    capturable: bool = True  # False: it decides per step on the host, so no CUDA graph may capture the step

    def discriminator_loss(self, real_scores: torch.Tensor, fake_scores: torch.Tensor,
                           ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def generator_loss(self, real_scores: torch.Tensor | None, fake_scores: torch.Tensor,
                       ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, ctx: StepContext) -> torch.Tensor | None:
        """Extra discriminator term (gradient penalty, R1); ``None`` means none this step."""
        return None


class Augmentation(nn.Module):
    """Differentiable image augmentation applied to real and fake images before D.

    ``forward(images)`` returns images of the same shape; the engine calls it on the
    real and the fake batch in the discriminator update and on the fake batch in the
    generator update, so gradients reach G through it. Draw randomness from the global
    torch RNG (``torch.rand(..., device=images.device)``): the engine seeds it and
    checkpoints it, so a resumed run stays bit-exact. State that must survive a resume
    (an adaptive probability) belongs in buffers: the module's ``state_dict`` is saved.
    """

    capturable: bool = True  # False: it decides per step on the host, so no CUDA graph may capture the step

    def update(self, real_scores: torch.Tensor, ctx: StepContext):
        """Called after every discriminator update with D's (detached) real scores; log with ``ctx.log``."""


class Callback:
    """Listens to a run's events. Override any of these; all are optional.

    ``run`` is the live training run (see docs/plugins.md, "The run a callback sees"):
    ``run.out_dir``, ``run.step``, ``run.total_steps``, ``run.epoch``, ``run.recipe``,
    ``run.generator``, ``run.sampling_generator``, ``run.request_stop(reason)``.
    Callbacks run on the main process only.
    """

    def on_run_start(self, run) -> None:
        pass

    def on_step_end(self, run) -> None:
        """After every generator step. Called often: keep it cheap, never sync the device."""

    def on_log(self, run, record: dict[str, Any]) -> None:
        """After every ``log_every`` steps with the logged record (floats, step, epoch)."""

    def on_samples(self, run, images: torch.Tensor, path) -> None:
        """After a sample grid was written; ``images`` in [-1, 1] on the CPU."""

    def on_eval(self, run, results: dict[str, float]) -> None:
        """After an evaluation with the metric values."""

    def on_checkpoint(self, run, path, which: str) -> None:
        """After a checkpoint (``which`` = "last" or "best") was written to ``path``."""

    def on_run_end(self, run, summary: dict[str, Any]) -> None:
        """At the end of a run (finished, stopped early or interrupted)."""


class Dataset(torch.utils.data.Dataset):
    """Image tensors in [-1, 1] of shape ``image_shape``.

    Datasets that fit in memory also implement ``as_tensor()``: the whole set as one
    uint8 tensor (N, C, H, W), so the engine can skip per-sample work entirely.
    ``hflip = True`` asks the engine to flip random halves of each batch.

    A labelled dataset sets ``num_classes`` (> 0) and ``class_names`` (one string per
    class) and returns every image's label from ``labels()``, in the order of
    ``as_tensor()`` / ``__getitem__``; ``__getitem__`` still returns the image alone.
    """

    image_shape: tuple[int, int, int]
    hflip: bool = False
    num_classes: int = 0
    class_names: list[str] | None = None

    def as_tensor(self) -> torch.Tensor | None:
        return None

    def labels(self) -> torch.Tensor | None:
        """int64 (len(self),) with values in [0, num_classes); ``None`` when unlabelled."""
        return None

    def __getitem__(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class Metric:
    """A quality number computed from a generator and the real dataset.

    ``goals`` maps each result key to ``"min"`` or ``"max"`` (default ``"min"``), so
    ``train.keep_best`` knows which checkpoint is best. ``protocol`` (optional) says how
    the number was measured: feature extractor, n_real, n_fake.
    """

    goals: dict[str, str] = {}
    protocol: dict[str, Any] | None = None

    def compute(self, generator: Generator, dataset: Dataset, *, n: int, device) -> dict[str, float]:
        raise NotImplementedError
