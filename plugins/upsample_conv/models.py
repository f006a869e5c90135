"""Upsample-then-convolve generator: DCGAN without the checkerboard artifacts.

A stride-2 transposed convolution whose kernel size is not divisible by the stride
covers output pixels unevenly, and even with divisible sizes its four "polyphase"
sub-kernels differ, so any constant input becomes a pattern with period 2 -- the
checkerboard artifacts of Odena, Dumoulin, Olah 2016, "Deconvolution and Checkerboard
Artifacts" (Distill, doi:10.23915/distill.00003). Their fix, used here: resize the
feature map first (nearest-neighbour x2), then apply an ordinary stride-1 convolution.
Nearest-neighbour up-sampling has exactly zero response at the Nyquist frequency, and a
stride-1 convolution treats every pixel alike, so no period-2 pattern is created.

Same layout and widths as the ``dcgan`` generator (so the two compare fairly in the
checkerboard benchmark): z -> start map (4x4, or 7x7 for 28 px) -> x2 blocks -> image.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from gantool import Generator, ParamError, Range
from gantool_plugins.dcgan.models import dcgan_init, resolve_size


class UpsampleConvGenerator(Generator):
    """Generator whose up-sampling blocks are resize (x2) then a stride-1 convolution.

    Each block: Upsample(x2, ``upsample_mode``) -> Conv(``kernel_size``, stride 1,
    ``padding_mode``) -> BatchNorm -> ReLU; the last block ends in a convolution to C
    channels and tanh. The latent is projected to the start map as in DCGAN (a
    transposed convolution of the 1x1 latent, equivalent to a dense layer, which cannot
    produce checkerboards because nothing overlaps). Initialised like DCGAN
    (N(0, 0.02)). Reference: Odena, Dumoulin, Olah 2016, "Deconvolution and
    Checkerboard Artifacts", Distill.

    Args:
        latent_dim: Size of the latent vector z.
        base_channels: Feature maps of the last hidden layer; each layer closer to z has
            twice as many (same widths as ``dcgan``).
        upsample_mode: "nearest" (the paper's recommendation; exactly no Nyquist energy)
            or "bilinear" (smoother, slightly blurrier).
        kernel_size: Side of the square convolution after each resize; odd (3 or 5).
        padding_mode: "zeros" or "reflect" (reflect avoids dark borders from zero padding).
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: Annotated[int, Range(ge=1)] = 100,
        base_channels: Annotated[int, Range(ge=1)] = 64,
        upsample_mode: Literal["nearest", "bilinear"] = "nearest",
        kernel_size: Annotated[int, Range(ge=1)] = 3,
        padding_mode: Literal["zeros", "reflect"] = "zeros",
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ParamError(
                "kernel_size", f"must be odd so the convolution keeps the image centred, got {kernel_size}; use 3 or 5"
            )
        start, steps = resolve_size(image_shape, "upsample_conv")
        if padding_mode == "reflect" and kernel_size // 2 >= 2 * start:
            raise ParamError(
                "kernel_size",
                f"reflect padding needs kernel_size < {4 * start + 1} at {image_shape[1]} px, got {kernel_size}",
            )
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        widths = [base_channels * 2 ** (steps - 1 - i) for i in range(steps)]

        def block(c_in: int, c_out: int, *, last: bool) -> list[nn.Module]:
            up = nn.Upsample(scale_factor=2, mode=upsample_mode, **({} if upsample_mode == "nearest" else {"align_corners": False}))
            conv = nn.Conv2d(c_in, c_out, kernel_size, 1, kernel_size // 2, padding_mode=padding_mode, bias=last)
            return [up, conv, nn.Tanh()] if last else [up, conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], start, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += block(c_in, c_out, last=False)
        layers += block(widths[-1], image_shape[0], last=True)
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))
