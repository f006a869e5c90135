"""Upsample-then-convolve generator: DCGAN without the checkerboard artifacts.

A stride-2 transposed convolution whose kernel size is not divisible by the stride
covers output pixels unevenly, and even with divisible sizes its four "polyphase"
sub-kernels differ, so any constant input becomes a pattern with period 2 -- the
checkerboard artifacts of Odena, Dumoulin, Olah 2016, "Deconvolution and Checkerboard
Artifacts" (Distill, doi:10.23915/distill.00003). Their fix, used here: resize the
feature map first (nearest-neighbour x2), then apply an ordinary stride-1 convolution.
Nearest-neighbour up-sampling has exactly zero response at the Nyquist frequency, and a
stride-1 convolution treats every pixel alike, so no period-2 pattern is created.

The pair is *computed* as one stride-2 transposed convolution (``resize_conv``): the same
function, with a (k+1)x(k+1) kernel made from the kxk weights whose four polyphase
sub-kernels all have the same sum, so it still turns a constant into a constant. For
k = 3 that is 4/9 of the multiply-adds of convolving the enlarged map.

Same layout and widths as the ``dcgan`` generator (so the two compare fairly in the
checkerboard benchmark): z -> start map (4x4, 7x7 for 28 px, 3x4 for 48x64) -> x2 blocks -> image.

Class-conditional when built with ``num_classes > 0``: every hidden batch norm becomes a
conditional batch norm, whose per-channel gain and bias are looked up per class (de Vries
et al. 2017, "Modulating early visual processing by language"; the generator of Miyato &
Koyama 2018).
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal

import torch
from torch import nn

from gantool import Generator, ParamError, Range
from gantool_plugins.dcgan.models import LatentProjection, check_labels, check_num_classes, dcgan_init, resolve_size


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose affine gain and bias depend on the class: ``gain[y] * bn(x) + bias[y]``.

    The gains start at N(1, 0.02) and the biases at 0, DCGAN's batch-norm init, so at
    initialisation every class is normalised almost alike.
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.channels = channels
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.embed = nn.Embedding(num_classes, 2 * channels)  # [gain | bias] per class
        with torch.no_grad():
            nn.init.normal_(self.embed.weight[:, :channels], 1.0, 0.02)
            nn.init.zeros_(self.embed.weight[:, channels:])

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        gain, bias = self.embed(labels).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        out = self.bn(x)
        return gain.to(out.dtype) * out + bias.to(out.dtype)


@functools.cache
def phase_taps(kernel_size: int) -> tuple[tuple[int, ...], ...]:
    """For each of the k+1 taps of the transposed convolution, the taps of the kxk one that add up to it.

    An output row 2i + a (a = 0, 1) of the k-tap convolution over the enlarged map reads
    source row i + floor((a - k//2 + t) / 2) with tap t; each (a, t) is one tap of a stride-2
    transposed convolution with padding k//2, and taps of one phase reading the same source
    row add up. Zero padding of the enlarged map is exactly the transposed convolution's
    missing rows, so the borders agree too.
    """
    half, taps = kernel_size // 2, [[] for _ in range(kernel_size + 1)]
    for a in (0, 1):
        for t in range(kernel_size):
            taps[a - 2 * ((a - half + t) // 2) + half].append(t)
    return tuple(map(tuple, taps))


def resize_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(nearest_x2(x))`` for a stride-1, zero-padded, odd kxk ``conv``, as one transposed convolution.

    Why: over the enlarged map a 3x3 convolution spends 9 multiply-adds per output where
    only 4 distinct source pixels are read; the transposed convolution does just those 4
    (docs/performance.md). The kernel is built from ``conv.weight`` by slicing and adding,
    with no constant tensors, so it traces for export and captures in a CUDA graph.
    """
    taps, weight = phase_taps(conv.kernel_size[0]), conv.weight
    for dim in (2, 3):
        parts = [[weight.narrow(dim, t, 1) for t in tap] for tap in taps]
        weight = torch.cat([sum(part[1:], part[0]) for part in parts], dim)
    weight = weight.transpose(0, 1)  # (C_in, C_out, k+1, k+1), as conv_transpose2d takes it
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        weight = weight.contiguous(memory_format=torch.channels_last)
    return nn.functional.conv_transpose2d(x, weight, conv.bias, stride=2, padding=conv.kernel_size[0] // 2)


def fusable(up: nn.Module, conv: nn.Module) -> bool:
    """Whether ``up`` then ``conv`` is a nearest x2 resize and a convolution ``resize_conv`` computes."""
    return (isinstance(up, nn.Upsample) and up.mode == "nearest" and up.size is None
            and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0)) and type(conv) is nn.Conv2d
            and conv.padding_mode == "zeros" and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.kernel_size[0] == conv.kernel_size[1] and conv.kernel_size[0] % 2 == 1
            and conv.padding == (conv.kernel_size[0] // 2,) * 2)


class LabelledSequential(nn.Sequential):
    """``nn.Sequential`` that also hands the labels to its conditional batch norms, and runs
    a nearest x2 resize and the convolution after it as one ``resize_conv``."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        layers, i = list(self), 0
        while i < len(layers):
            layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
            if fusable(layer, after):
                x, i = resize_conv(x, after), i + 2
                continue
            x, i = (layer(x, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)), i + 1
        return x


class UpsampleConvGenerator(Generator):
    """Generator whose up-sampling blocks are resize (x2) then a stride-1 convolution.

    Each block: Upsample(x2, ``upsample_mode``) -> Conv(``kernel_size``, stride 1,
    ``padding_mode``) -> BatchNorm -> ReLU; the last block ends in a convolution to C
    channels and tanh. The latent is projected to the start map as in DCGAN (a
    transposed convolution of the 1x1 latent, equivalent to a dense layer, which cannot
    produce checkerboards because nothing overlaps). Initialised like DCGAN
    (N(0, 0.02)). Reference: Odena, Dumoulin, Olah 2016, "Deconvolution and
    Checkerboard Artifacts", Distill.

    Class-conditional when built with ``num_classes > 0``: every hidden BatchNorm is a
    ``ConditionalBatchNorm2d`` (a per-class gain and bias; de Vries et al. 2017, Miyato &
    Koyama 2018) and ``forward(z, labels)`` needs the labels. z is projected as before.

    Args:
        latent_dim: Size of the latent vector z.
        base_channels: Feature maps of the last hidden layer; each layer closer to z has
            twice as many (same widths as ``dcgan``).
        upsample_mode: "nearest" (the paper's recommendation; exactly no Nyquist energy)
            or "bilinear" (smoother, slightly blurrier).
        kernel_size: Side of the square convolution after each resize; odd (3 or 5).
        padding_mode: "zeros" or "reflect" (reflect avoids dark borders from zero padding).
    """

    conditioning = "optional"

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: Annotated[int, Range(ge=1)] = 100,
        base_channels: Annotated[int, Range(ge=1)] = 64,
        upsample_mode: Literal["nearest", "bilinear"] = "nearest",
        kernel_size: Annotated[int, Range(ge=1)] = 3,
        padding_mode: Literal["zeros", "reflect"] = "zeros",
        num_classes: int = 0,
    ):
        super().__init__()
        check_num_classes(num_classes)
        if kernel_size % 2 == 0:
            raise ParamError(
                "kernel_size", f"must be odd so the convolution keeps the image centred, got {kernel_size}; use 3 or 5"
            )
        start, steps = resolve_size(image_shape)
        if padding_mode == "reflect" and kernel_size // 2 >= 2 * min(start):  # reflect needs pad < side
            raise ParamError(
                "kernel_size",
                f"reflect padding needs kernel_size < {4 * min(start) + 1} at {image_shape[1]}x{image_shape[2]} px, "
                f"got {kernel_size}",
            )
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        widths = [base_channels * 2 ** (steps - 1 - i) for i in range(steps)]

        def norm(channels: int) -> nn.Module:
            # A plain BatchNorm2d draws no random numbers when built (dcgan_init sets its scale below),
            # so the unconditional G is unchanged; the conditional one initialises itself.
            return ConditionalBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)

        def block(c_in: int, c_out: int, *, last: bool) -> list[nn.Module]:
            up = nn.Upsample(scale_factor=2, mode=upsample_mode, **({} if upsample_mode == "nearest" else {"align_corners": False}))
            conv = nn.Conv2d(c_in, c_out, kernel_size, 1, kernel_size // 2, padding_mode=padding_mode, bias=last)
            return [up, conv, nn.Tanh()] if last else [up, conv, norm(c_out), nn.ReLU(inplace=True)]

        layers: list[nn.Module] = [
            LatentProjection(latent_dim, widths[0], start, 1, 0, bias=False),
            norm(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += block(c_in, c_out, last=False)
        layers += block(widths[-1], image_shape[0], last=True)
        self.net = LabelledSequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = check_labels(self, labels, z.shape[0])
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1), labels)
