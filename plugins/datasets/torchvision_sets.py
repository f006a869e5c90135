"""``mnist``, ``fashion_mnist`` and ``cifar10``, read (and downloaded) by torchvision.

torchvision already holds these sets as one uint8 array, so the fast path is a single
batched resize; no disk cache is needed. When the files are missing and cannot be
downloaded, the user gets one line saying what was tried and which files to put where
(torchvision's layout under ``root``), instead of torchvision's traceback.

CIFAR-10's batches are Python pickles. torchvision unpickles them only after their
MD5 sums match the official release, so a tampered file is refused, not executed.

All three are labelled: ``labels()`` is torchvision's ``targets`` (cut by ``limit``).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch

from gantool import GantoolError, Range
from gantool_plugins.datasets.base import (ImageSize, InMemoryImages, apply_limit, check_fits, convert_channels,
                                           height_width, resize_batch)

DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a download attempt gives up


class _TorchvisionImages(InMemoryImages):
    """Shared loading: torchvision class -> uint8 (N, C, H, W) -> limit, resize, channels."""

    name: str  # gantool's name for it
    tv_class: str  # torchvision.datasets attribute

    def __init__(self, *, root, download, image_size, channels, split, hflip, limit):
        super().__init__(image_shape=(channels, *height_width(image_size)), hflip=hflip, limit=limit)
        self.root, self.download, self.train = Path(root).expanduser(), download, split == "train"
        self._tv = self._open()  # now, so a missing dataset fails `gantool check`, not the first batch
        check_fits(len(self), self.image_shape)
        self._set_classes(self._class_names())

    def _load(self) -> torch.Tensor:
        images = self._native()[: apply_limit(len(self._tv), self.limit)]
        images = resize_batch(images, self.image_shape[1:])
        return convert_channels(images, self.image_shape[0])

    def _load_labels(self) -> torch.Tensor:
        targets = self._tv.targets  # a tensor (MNIST family) or a list of ints (CIFAR-10)
        return torch.as_tensor(targets, dtype=torch.int64)[: len(self)].clone()

    def _class_names(self) -> list[str]:
        return list(self._tv.classes)

    def __len__(self) -> int:
        return apply_limit(len(self._tv), self.limit)

    def _open(self):
        import torchvision

        cls = getattr(torchvision.datasets, self.tv_class)
        if not self._present():
            if not self.download:
                raise GantoolError(self._missing("the files are missing and download = false"))
            print(f"{self.name}: downloading {self.tv_class} into {self.root} ...", file=sys.stderr, flush=True)
            new = next((p for p in (self.root, self.folder) if not p.exists()), None)
            try:
                with _quiet_download() as printed:
                    cls(str(self.root), train=self.train, download=True)
            except Exception as exc:  # noqa: BLE001 -- URLError, RuntimeError, OSError, timeouts
                if new is not None:
                    _remove_empty_folders(new)  # leave no empty data/MNIST/raw behind
                reason = _last_line(exc)
                if str(exc).startswith("Error downloading") and "\n" not in str(exc).strip():
                    # older torchvision (0.19 here) printed each mirror's error and raised without it
                    reason = f"{reason}: {_last_line(printed.getvalue())}"
                raise GantoolError(self._missing(f"downloading them failed ({reason})")) from None
        try:
            return cls(str(self.root), train=self.train, download=False)
        except Exception as exc:  # noqa: BLE001 -- truncated files, checksum mismatch
            raise GantoolError(self._missing(f"the files are incomplete or corrupted ({_last_line(exc)})")) from None

    def _missing(self, what: str) -> str:
        return f"no usable {self.tv_class} data under {str(self.root)!r}: {what}. {self.layout()}"

    @property
    def folder(self) -> Path:
        """The dataset's own folder under root, in torchvision's layout."""
        raise NotImplementedError

    def _present(self) -> bool:
        raise NotImplementedError

    def _native(self) -> torch.Tensor:
        raise NotImplementedError

    def layout(self) -> str:
        raise NotImplementedError


class _MNISTFamily(_TorchvisionImages):
    FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    @property
    def folder(self) -> Path:
        return self.root / self.tv_class

    @property
    def raw(self) -> Path:
        return self.folder / "raw"

    def _present(self) -> bool:
        return all((self.raw / f).is_file() for f in self.FILES)

    def _native(self) -> torch.Tensor:
        return self._tv.data.unsqueeze(1)  # (N, 28, 28) uint8 -> (N, 1, 28, 28)

    def _class_names(self) -> list[str]:
        return [str(digit) for digit in range(10)]  # torchvision's are "0 - zero", ...

    def layout(self) -> str:
        return (
            f"Put {', '.join(self.FILES)} in {self.raw}/ (the .gz archives are extracted there when "
            f"download = true), "
            f"or set root = the folder that contains {self.tv_class}/"
        )


class MNIST(_MNISTFamily):
    """MNIST handwritten digits (60,000 train / 10,000 test, 28x28 gray), via torchvision.

    Labelled: 10 classes named "0" ... "9".

    Args:
        root: Data folder; the files live in ROOT/MNIST/raw/ (torchvision's layout).
        download: Download the files into root when they are missing.
        image_size: Side of the square images, or [height, width]; resized with antialiasing
            (and centre-cropped to a non-square aspect).
        channels: 1 for grayscale, 3 to repeat the gray channel as RGB.
        split: "train" (60,000 images) or "test" (10,000).
        hflip: Flip random halves of each batch horizontally (off: digits are not symmetric).
        limit: Use only the first N images of the split; 0 means all.
    """

    name, tv_class = "mnist", "MNIST"

    def __init__(
        self,
        *,
        root: str = "data",
        download: bool = True,
        image_size: ImageSize = 28,
        channels: Literal[1, 3] = 1,
        split: Literal["train", "test"] = "train",
        hflip: bool = False,
        limit: Annotated[int, Range(ge=0)] = 0,
    ):
        super().__init__(root=root, download=download, image_size=image_size, channels=channels, split=split,
                         hflip=hflip, limit=limit)


class FashionMNIST(MNIST):
    """Fashion-MNIST clothing images (60,000 train / 10,000 test, 28x28 gray), via torchvision.

    Labelled: 10 classes named as in torchvision ("T-shirt/top", "Trouser", ...).

    Args:
        root: Data folder; the files live in ROOT/FashionMNIST/raw/ (torchvision's layout).
        download: Download the files into root when they are missing.
        image_size: Side of the square images, or [height, width]; resized with antialiasing
            (and centre-cropped to a non-square aspect).
        channels: 1 for grayscale, 3 to repeat the gray channel as RGB.
        split: "train" (60,000 images) or "test" (10,000).
        hflip: Flip random halves of each batch horizontally (clothes are nearly symmetric).
        limit: Use only the first N images of the split; 0 means all.
    """

    name, tv_class = "fashion_mnist", "FashionMNIST"
    # Same parameters as MNIST; only the files, the class names and the docstring differ.

    def _class_names(self) -> list[str]:
        return list(self._tv.classes)  # "T-shirt/top", "Trouser", ...


class CIFAR10(_TorchvisionImages):
    """CIFAR-10 small photos (50,000 train / 10,000 test, 32x32 RGB), via torchvision.

    Labelled: 10 classes named as in batches.meta ("airplane", "automobile", ...).

    Args:
        root: Data folder; the batches live in ROOT/cifar-10-batches-py/ (torchvision's layout).
        download: Download and extract cifar-10-python.tar.gz into root when missing.
        image_size: Side of the square images, or [height, width]; resized with antialiasing
            (and centre-cropped to a non-square aspect).
        channels: 3 for RGB, 1 for grayscale (luma).
        split: "train" (50,000 images) or "test" (10,000).
        hflip: Flip random halves of each batch horizontally (the usual CIFAR augmentation).
        limit: Use only the first N images of the split; 0 means all.
    """

    name, tv_class = "cifar10", "CIFAR10"
    FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta")

    def __init__(
        self,
        *,
        root: str = "data",
        download: bool = True,
        image_size: ImageSize = 32,
        channels: Literal[1, 3] = 3,
        split: Literal["train", "test"] = "train",
        hflip: bool = False,
        limit: Annotated[int, Range(ge=0)] = 0,
    ):
        super().__init__(root=root, download=download, image_size=image_size, channels=channels, split=split,
                         hflip=hflip, limit=limit)

    @property
    def folder(self) -> Path:
        return self.root / "cifar-10-batches-py"

    def _present(self) -> bool:
        return all((self.folder / f).is_file() for f in self.FILES)

    def _native(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._tv.data)).permute(0, 3, 1, 2)  # NHWC -> NCHW

    def layout(self) -> str:
        return (
            f"Extract cifar-10-python.tar.gz so that {self.folder}/ holds data_batch_1 ... data_batch_5, "
            f"test_batch and batches.meta (or leave the .tar.gz in {self.root}/ with download = true), or set root = ..."
        )


@contextlib.contextmanager
def _quiet_download():
    """Keep torchvision's prints off stdout (yielded; its progress bar stays on stderr); never hang forever."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            yield printed
    finally:
        socket.setdefaulttimeout(previous)


def _remove_empty_folders(root: Path):
    for folder, _dirs, _files in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # fails (and is skipped) unless the folder is empty


def _last_line(error: BaseException | str) -> str:
    """The last line of an error's message (or of printed text); the error's type when it has none."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
