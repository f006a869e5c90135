"""The SNGAN ResNet generator and discriminator (Miyato et al. 2018, arXiv:1802.05957).

The backbone of "Spectral Normalization for Generative Adversarial Networks", as in the
authors' Chainer code (pfnet-research/sngan_projection) and its PyTorch reproduction in
Mimicry (kwotsin/mimicry, ``torch_mimicry/nets/sngan``), whose widths are used here:

* G: linear z -> 4x4 map, residual up-blocks (BN, ReLU, nearest x2, conv3x3, BN, ReLU,
  conv3x3; shortcut: x2 then conv1x1), then BN, ReLU, conv3x3 to C channels, tanh.
* D: an "optimized" first block (conv, ReLU, conv, avgpool; shortcut: avgpool then
  conv1x1), residual down-blocks (ReLU, conv, ReLU, conv, avgpool; a conv1x1 shortcut
  where the block changes width or downsamples), ReLU, global sum pooling, linear -> 1.
  Spectral norm on every weight of D.
* Xavier-uniform weights, gain sqrt(2) on the residual convolutions (they feed ReLUs),
  1 on shortcuts, the linear layers and G's output convolution; biases 0 (Chainer's default).

Mimicry's G up-samples bilinearly; this one uses nearest neighbour like the Chainer
original, which also keeps G free of Nyquist-frequency energy (see ``upsample_conv``).

Class-conditional with ``num_classes > 0`` (Miyato & Koyama 2018, "cGANs with Projection
Discriminator"): G's block norms become conditional batch norms, and D adds the
projection ``<embed(y), sum_xy relu(h)>`` to its score.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gantool import Discriminator, Generator, ParamError, Range
from gantool_plugins.dcgan.models import check_labels, check_num_classes
from gantool_plugins.upsample_conv.models import ConditionalBatchNorm2d, resize_conv

SIZES = (32, 64, 128)
#: image size -> default base_channels (G, D): Mimicry's ngf and ndf
DEFAULT_WIDTHS = {32: (256, 128), 64: (1024, 1024), 128: (1024, 1024)}
#: image size -> widths of G's 4x4 map and of each up-block's output, as right shifts of base_channels
G_SHIFTS = {32: (0, 0, 0, 0), 64: (0, 1, 2, 3, 4), 128: (0, 0, 1, 2, 3, 4)}
#: image size -> D's blocks as (right shift of base_channels for the output width, downsample);
#: the first is the optimized block
D_BLOCKS = {
    32: ((0, True), (0, True), (0, False), (0, False)),
    64: ((4, True), (3, True), (2, True), (1, True), (0, True)),
    128: ((4, True), (3, True), (2, True), (1, True), (0, True), (0, False)),
}


def check_size(image_shape) -> int:
    """The side of a supported square ``image_shape``; ParamError naming the sizes otherwise."""
    _, height, width = image_shape
    sizes = ", ".join(map(str, SIZES))
    if height != width or height not in SIZES:
        raise ParamError("image_shape", f"ResNet (SNGAN) supports square images of size {sizes}, "
                                        f"got {height}x{width}; set [dataset] image_size to one of {sizes}")
    return height


def widths(base_channels: int | None, shifts, size: int, which: int) -> list[int]:
    """``base_channels >> shift`` for each shift; the size's default width when ``base_channels`` is None."""
    base = DEFAULT_WIDTHS[size][which] if base_channels is None else base_channels
    if base >> max(shifts) < 1:
        raise ParamError("base_channels", f"must be at least {1 << max(shifts)} at {size} px "
                                          f"(the widths halve {max(shifts)} times), got {base}")
    return [base >> s for s in shifts]


def xavier(layer: nn.Module, gain: float) -> nn.Module:
    """Xavier-uniform weight with ``gain``, zero bias: the SNGAN code's initialisation."""
    nn.init.xavier_uniform_(layer.weight, gain)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv(c_in: int, c_out: int, kernel: int, gain: float) -> nn.Conv2d:
    return xavier(nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2), gain)


class GBlock(nn.Module):
    """BN, ReLU, nearest x2, conv3x3, BN, ReLU, conv3x3; plus the shortcut x2 -> conv1x1."""

    def __init__(self, c_in: int, c_out: int, num_classes: int):
        super().__init__()
        self.c1 = conv(c_in, c_out, 3, math.sqrt(2))
        self.c2 = conv(c_out, c_out, 3, math.sqrt(2))
        self.c_sc = conv(c_in, c_out, 1, 1.0)
        self.b1 = ConditionalBatchNorm2d(c_in, num_classes) if num_classes else nn.BatchNorm2d(c_in)
        self.b2 = ConditionalBatchNorm2d(c_out, num_classes) if num_classes else nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(self.b1(x) if labels is None else self.b1(x, labels))
        h = resize_conv(h, self.c1)  # = self.c1(nearest x2 of h), at 4/9 of the cost
        h = F.relu(self.b2(h) if labels is None else self.b2(h, labels))
        # A 1x1 convolution commutes with nearest up-sampling: convolving first gives the same
        # values as "x2 then conv1x1" at a quarter of the cost.
        return self.c2(h) + F.interpolate(self.c_sc(x), scale_factor=2, mode="nearest")


class DBlock(nn.Module):
    """[ReLU,] conv3x3, ReLU, conv3x3[, avgpool]; plus a (spectrally normalised) 1x1 shortcut where needed.

    The ``optimized`` first block sees the image itself: no ReLU in front, hidden width =
    output width, and its shortcut pools before the 1x1 convolution (cheaper, same
    function). Later blocks keep the input width inside, as in the SNGAN code.
    """

    def __init__(self, c_in: int, c_out: int, *, downsample: bool, optimized: bool = False):
        super().__init__()
        hidden = c_out if optimized else c_in
        self.optimized, self.downsample = optimized, downsample
        self.c1 = spectral_norm(conv(c_in, hidden, 3, math.sqrt(2)))
        self.c2 = spectral_norm(conv(hidden, c_out, 3, math.sqrt(2)))
        learnable = optimized or downsample or c_in != c_out
        self.c_sc = spectral_norm(conv(c_in, c_out, 1, 1.0)) if learnable else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(x if self.optimized else F.relu(x))))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        if self.c_sc is None:
            return h + x
        if self.optimized:
            return h + self.c_sc(F.avg_pool2d(x, 2))
        shortcut = self.c_sc(x)
        return h + (F.avg_pool2d(shortcut, 2) if self.downsample else shortcut)


class ResNetGenerator(Generator):
    """SNGAN's ResNet generator (Miyato et al. 2018) for 32, 64 and 128 px square images.

    z -> linear -> 4x4 map -> one residual up-block per x2 -> BN, ReLU, conv3x3, tanh.
    Widths (Mimicry's SNGAN): 32 px: ``base_channels`` (256) in every block; 64 px:
    1024 -> 512 -> 256 -> 128 -> 64; 128 px: 1024 -> 1024 -> 512 -> 256 -> 128 -> 64.
    Class-conditional with ``num_classes > 0``: every block's batch norm is a conditional
    batch norm (a per-class gain and bias; Miyato & Koyama 2018); the output BN is not.

    Args:
        latent_dim: Size of the latent vector z (128 in SNGAN).
        base_channels: Width of the 4x4 map; the blocks keep it (32 px) or halve it per
            block after the first (64 px) or second (128 px). Unset: 256 at 32 px, 1024 at 64 and 128.
    """

    conditioning = "optional"

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: Annotated[int, Range(ge=1)] = 128,
        base_channels: Annotated[int | None, Range(ge=1)] = None,
        num_classes: int = 0,
    ):
        super().__init__()
        check_num_classes(num_classes)
        size = check_size(image_shape)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        ws = widths(base_channels, G_SHIFTS[size], size, 0)
        self.linear = xavier(nn.Linear(latent_dim, 16 * ws[0]), 1.0)
        self.blocks = nn.ModuleList(GBlock(c_in, c_out, num_classes) for c_in, c_out in zip(ws, ws[1:]))
        self.bn_out = nn.BatchNorm2d(ws[-1])
        self.conv_out = conv(ws[-1], image_shape[0], 3, 1.0)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = check_labels(self, labels, z.shape[0])
        h = self.linear(z.reshape(z.shape[0], self.latent_dim)).reshape(z.shape[0], -1, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.conv_out(F.relu(self.bn_out(h))))


class ResNetDiscriminator(Discriminator):
    """SNGAN's ResNet discriminator (Miyato et al. 2018) for 32, 64 and 128 px square images.

    Optimized block, residual down-blocks, ReLU, global sum pooling, linear -> one logit;
    spectral norm on every weight. Widths (Mimicry's SNGAN): 32 px: ``base_channels``
    (128) in all four blocks, down-sampling in the first two; 64 px: 64 -> 128 -> 256 ->
    512 -> 1024, all down-sampling; 128 px: the same plus a 1024 block at 4x4. Pair it
    with the ``hinge`` loss and Adam(lr 2e-4, betas (0, 0.9)), as the paper does.
    Class-conditional with ``num_classes > 0``: the projection of Miyato & Koyama 2018,
    score += <embed(y), pooled features>, with a spectrally normalised embedding.

    Args:
        base_channels: Width of the last blocks; at 64 and 128 px the first block has
            1/16 of it, doubling per block. Unset: 128 at 32 px, 1024 at 64 and 128.
    """

    conditioning = "optional"

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        base_channels: Annotated[int | None, Range(ge=1)] = None,
        num_classes: int = 0,
    ):
        super().__init__()
        check_num_classes(num_classes)
        size = check_size(image_shape)
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        shifts, downsample = zip(*D_BLOCKS[size])
        ws = [image_shape[0], *widths(base_channels, shifts, size, 1)]
        self.blocks = nn.Sequential(*(DBlock(c_in, c_out, downsample=down, optimized=i == 0)
                                      for i, (c_in, c_out, down) in enumerate(zip(ws, ws[1:], downsample))))
        self.linear = spectral_norm(xavier(nn.Linear(ws[-1], 1), 1.0))
        if num_classes:  # created last: an unconditional D draws the same weights
            self.embed = spectral_norm(xavier(nn.Embedding(num_classes, ws[-1]), 1.0))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = check_labels(self, labels, x.shape[0])
        features = F.relu(self.blocks(x)).sum((2, 3))  # global sum pooling
        scores = self.linear(features).reshape(x.shape[0])
        if labels is None:
            return scores
        return scores + (self.embed(labels) * features).sum(1)
