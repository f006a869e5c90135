"""What every built-in dataset shares: images kept as one uint8 tensor (N, C, H, W).

uint8 is 4x smaller than float32, so whole datasets fit in memory (CelebA at 64x64 is
2.5 GB), and the engine converts to float [-1, 1] per batch on the training device.
A subclass only says how to produce that tensor (``_load``); indexing, the float
conversion and the ``hflip``/``limit`` parameters live here. A labelled subclass
also calls ``_set_classes`` in ``__init__`` and implements ``_load_labels``.
"""

from __future__ import annotations

import os
from typing import Annotated

import torch
from torchvision.transforms.v2 import functional as TF

import gantool
from gantool import GantoolError, ParamError
from gantool.params import HeightWidth


class InMemoryImages(gantool.Dataset):
    """Base for datasets whose whole content is produced once by ``_load()``.

    Subclasses set ``image_shape`` and implement ``_load() -> uint8 (N, C, H, W)``;
    the result is computed on first use and kept. Labels work the same way:
    ``_load_labels() -> int64 (N,)``, called once by ``labels()`` when ``num_classes > 0``.
    """

    def __init__(self, *, image_shape: tuple[int, int, int], hflip: bool, limit: int):
        if limit < 0:
            raise ParamError("limit", f"must be >= 0 (0 means all images), got {limit}")
        self.image_shape = tuple(image_shape)
        self.hflip = hflip  # applied by the engine to random halves of each batch
        self.limit = limit
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def _load(self) -> torch.Tensor:
        raise NotImplementedError

    def _set_classes(self, names) -> None:
        """Make the set labelled; at construction, since the engine reads ``num_classes`` when planning."""
        self.class_names = [str(name) for name in names]
        self.num_classes = len(self.class_names)

    def _load_labels(self) -> torch.Tensor:
        raise NotImplementedError

    def labels(self) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if self._labels is None:
            labels = self._load_labels()  # first: it may decode, which fixes len() (skipped files)
            n = len(self)
            assert labels.dtype == torch.int64 and tuple(labels.shape) == (n,), (
                f"{type(self).__name__}._load_labels returned {labels.dtype} {tuple(labels.shape)}, "
                f"expected int64 ({n},)"
            )
            if n and not (0 <= int(labels.min()) and int(labels.max()) < self.num_classes):
                raise GantoolError(
                    f"{type(self).__name__}: labels range over [{int(labels.min())}, {int(labels.max())}], "
                    f"expected 0 ... {self.num_classes - 1} ({self.num_classes} classes); are the label files intact?"
                )
            self._labels = labels
        return self._labels

    def as_tensor(self) -> torch.Tensor | None:
        if self._images is None:
            images = self._load()
            assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == self.image_shape, (
                f"{type(self).__name__}._load returned {images.dtype} {tuple(images.shape)}, "
                f"expected uint8 (N, *{self.image_shape})"
            )
            self._images = images
        return self._images

    def __len__(self) -> int:
        return len(self.as_tensor())

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_float(self.as_tensor()[index])


MAX_IMAGE_SIZE = 4096  # the largest side a dataset accepts (a 4096 px GAN is far beyond these models)

#: ``image_size`` of every built-in dataset: 64 (a square) or [48, 64] (height, width).
ImageSize = Annotated[int | tuple[int, int], HeightWidth(ge=1, le=MAX_IMAGE_SIZE)]


def height_width(image_size) -> tuple[int, int]:
    """(height, width) of an ``image_size``: an int means a square."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def memory_budget() -> int:
    """Bytes a dataset may take in memory: 1/4 of physical RAM (also ``in_memory = "auto"``'s limit)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return 4 << 30


def check_fits(n: int, image_shape, param: str = "image_size"):
    """Refuse, before allocating, a uint8 tensor of ``n`` images that would not fit in the memory budget."""
    nbytes = n * int(torch.tensor(image_shape).prod())
    if nbytes > memory_budget():
        raise ParamError(param, f"{n:,} images of shape {tuple(image_shape)} take {nbytes / 2**30:.1f} GiB, over "
                                f"the {memory_budget() / 2**30:.1f} GiB a dataset may hold here (a quarter of the "
                                "RAM); use a smaller image_size or limit (folders: in_memory = false)")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the generator's tanh range)."""
    return images.float().div_(127.5).sub_(1.0)


def apply_limit(n: int, limit: int) -> int:
    """How many of ``n`` images a dataset with ``limit`` (0 = all) uses."""
    return n if limit == 0 else min(n, limit)


def resize_batch(images: torch.Tensor, size, *, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 batch (N, C, h, w) to ``size`` (an int side, or (H, W)), antialiased.

    When the aspect ratio changes, the images are scaled to cover (H, W) and centre-cropped
    (torchvision's Resize + CenterCrop), so nothing is squashed. Antialiasing matters when
    shrinking (e.g. 28 -> 16): plain bilinear would alias. Chunked so a big set never
    needs a second full-size float copy.
    """
    height, width = height_width(size)
    if images.shape[-2:] == (height, width):
        return images
    check_fits(len(images), (images.shape[1], height, width))
    cover = cover_size(tuple(images.shape[-2:]), (height, width))
    out = torch.empty((*images.shape[:2], height, width), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = TF.resize(images[start : start + chunk], list(cover), antialias=True)
        out[start : start + chunk] = part if cover == (height, width) else TF.center_crop(part, [height, width])
    return out


def cover_size(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The smallest resize of ``source`` (h, w) that keeps its aspect and covers ``target`` (H, W)."""
    (h, w), (height, width) = source, target
    scale = max(height / h, width / w)
    return max(height, round(h * scale)), max(width, round(w * scale))


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray <-> RGB for a uint8 batch (N, C, H, W): repeat gray, or ITU-R 601 luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        return TF.rgb_to_grayscale(images, num_output_channels=1)
    raise ValueError(f"cannot convert {have} channels to {channels}")
