"""``fake``: random images of any shape, for benchmarks and tests (like torchvision's FakeData).

Image ``i`` depends only on ``seed`` and ``i`` (its own seeded generator), so the set
is identical on every machine and ``limit`` keeps a prefix of the same images. With
``num_classes = K`` image ``i`` has label ``i % K``: enough to exercise the plumbing of a
conditional run (the pixels do not depend on the label, so there is nothing to learn).
"""

from __future__ import annotations

from typing import Annotated

import torch

from gantool import ParamError, Range
from gantool_plugins.datasets.base import ImageSize, InMemoryImages, apply_limit, check_fits, height_width


class FakeImages(InMemoryImages):
    """Deterministic random uint8 images (uniform noise); no files needed.

    Args:
        size: Number of images.
        image_size: Side of the square images, or [height, width].
        channels: Number of channels (any count, e.g. 1, 3 or 4).
        seed: Seed of the pixel values; the same seed gives the same images everywhere.
        hflip: Flip random halves of each batch horizontally.
        limit: Use only the first N images; 0 means all.
        num_classes: Labelled with this many classes (image i has label i % num_classes,
            class names "0", "1", ...); 0 means unlabelled.
    """

    def __init__(
        self,
        *,
        size: Annotated[int, Range(ge=1)] = 1000,
        image_size: ImageSize = 64,
        channels: Annotated[int, Range(ge=1, le=64)] = 3,
        seed: int = 0,
        hflip: bool = False,
        limit: Annotated[int, Range(ge=0)] = 0,
        num_classes: Annotated[int, Range(ge=0, le=100_000)] = 0,
    ):
        super().__init__(image_shape=(channels, *height_width(image_size)), hflip=hflip, limit=limit)
        if num_classes < 0:
            raise ParamError("num_classes", f"must be >= 0 (0 means unlabelled), got {num_classes}")
        self.size, self.seed = size, seed
        check_fits(len(self), self.image_shape, "size")
        if num_classes:
            self._set_classes(str(k) for k in range(num_classes))

    def __len__(self) -> int:
        return apply_limit(self.size, self.limit)

    def image(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return torch.randint(0, 256, self.image_shape, generator=g, dtype=torch.uint8)

    def _load(self) -> torch.Tensor:
        out = torch.empty((len(self), *self.image_shape), dtype=torch.uint8)
        for i in range(len(self)):
            out[i] = self.image(i)
        return out

    def _load_labels(self) -> torch.Tensor:
        return torch.arange(len(self), dtype=torch.int64) % self.num_classes
