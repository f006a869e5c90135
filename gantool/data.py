"""The real batches of a run, in an order that depends only on (seed, batch index).

Global batch ``g`` is a fixed slice of epoch ``g // steps_per_epoch``'s permutation, so
a resumed run sees exactly the batches an uninterrupted one would, and every rank of a
data-parallel run takes its own slice of the same global batch.
"""

from __future__ import annotations

import torch

from gantool.errors import GantoolError


def mix_seed(*numbers: int) -> int:
    """A deterministic seed from integers (Python's hash() of strings varies per process)."""
    h = 0x9E3779B97F4A7C15
    for n in numbers:
        h = (h ^ (n + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) % (1 << 63)
    return h


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to ``device`` without waiting for it: a plain copy from pageable host memory to
    a GPU synchronises the stream, so the host could not queue the next step while the
    current one runs. A pinned staging copy makes it asynchronous."""
    if device.type != "cuda" or tensor.is_cuda:
        return tensor.to(device)
    return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)


class BatchStream:
    """Global batch ``g`` = a fixed slice of epoch ``g // steps_per_epoch``'s permutation.

    In-memory datasets are indexed straight from one uint8 tensor (on the training
    device when it fits); others go through a DataLoader with workers and pinned memory.
    Under data parallelism each rank takes its own slice of the same global batch.
    ``labels`` (int64, one per image) makes every batch carry its images' class labels.
    """

    def __init__(self, dataset, batch_size: int, seed: int, device: torch.device, *,
                 num_workers=2, rank=0, world_size=1, labels: torch.Tensor | None = None):
        if batch_size % world_size:
            raise GantoolError(f"{batch_size} does not divide over {world_size} processes")
        self.dataset, self.seed, self.device = dataset, seed, device
        self.global_batch, self.local_batch = batch_size, batch_size // world_size
        self.rank, self.num_workers = rank, num_workers
        self.images = dataset.as_tensor()
        n = len(self.images) if self.images is not None else len(dataset)
        if n < batch_size:
            raise GantoolError(f"{batch_size} is larger than the dataset ({n} images); lower it")
        if labels is not None and tuple(labels.shape) != (n,):
            raise GantoolError(f"the dataset has {n} images but labels() returned shape {tuple(labels.shape)}")
        self.size, self.steps_per_epoch = n, n // batch_size
        self.labels = labels.long() if labels is not None else None
        if self.images is not None and device.type == "cuda":  # on the GPU if it fits, else pinned for fast copies
            fits = self.images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0]
            self.images = self.images.to(device) if fits else self.images.pin_memory()
        if self.labels is not None and self.images is not None:
            self.labels = self.labels.to(self.images.device)
        self._perm_epoch, self._perm = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, 1, epoch))
            order = torch.randperm(self.size, generator=g)  # drawn on the CPU: the same order on every device
            # beside in-memory images, so that a step slices it on their device without a host copy
            self._perm = order.to(self.images.device) if self.images is not None else order
            self._perm_epoch = epoch
        return self._perm

    def indices(self, g: int) -> torch.Tensor:
        epoch, i = divmod(g, self.steps_per_epoch)
        start = i * self.global_batch + self.rank * self.local_batch
        return self.permutation(epoch)[start : start + self.local_batch]

    def iterate(self, start: int):
        """Yield (images, labels) from global batch ``start`` on: float images in [-1, 1] on
        the device, and their int64 labels (``None`` for a stream without labels)."""
        batches = self._from_memory(start) if self.images is not None else self._from_loader(start)
        for g, (x, y) in enumerate(batches, start):
            if self.dataset.hflip:  # this rank's slice of the global batch's coin flips
                flips = torch.Generator().manual_seed(mix_seed(self.seed, 2, g))
                coins = torch.rand(self.global_batch, generator=flips)
                flip = coins[self.rank * self.local_batch :][: len(x)] < 0.5
                x = torch.where(to_device(flip, x.device).view(-1, 1, 1, 1), x.flip(3), x)
            yield x, y

    def _labels_of(self, idx: torch.Tensor) -> torch.Tensor | None:
        if self.labels is None:
            return None
        return to_device(self.labels.index_select(0, idx), self.device)  # idx lives where the labels do

    def _from_memory(self, start):
        for g in range(start, 1 << 62):
            idx = self.indices(g)
            x = to_device(self.images.index_select(0, idx), self.device)
            yield x.float().div_(127.5).sub_(1.0), self._labels_of(idx)

    def _from_loader(self, start):
        g = start
        while True:
            epoch = g // self.steps_per_epoch
            batches = [self.indices(i).tolist() for i in range(g, (epoch + 1) * self.steps_per_epoch)]
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=batches, num_workers=self.num_workers, pin_memory=self.device.type == "cuda"
            )
            for indices, x in zip(batches, loader):
                yield to_device(x, self.device), self._labels_of(torch.tensor(indices))
            g = (epoch + 1) * self.steps_per_epoch
