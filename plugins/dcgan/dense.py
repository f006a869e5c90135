"""The DCGAN variant of the TensorFlow tutorial (tensorflow.org/tutorials/generative/dcgan).

Unlike the paper's all-convolutional model, the generator starts with a dense layer:
z -> Linear -> 7x7x256 (for 28 px) -> reshape -> 5x5 transposed convolutions with
batch norm and LeakyReLU -> tanh. Its discriminator is two 5x5 stride-2 convolutions
with LeakyReLU and dropout 0.3, then flatten and one linear unit. Weights use Keras'
default Glorot-uniform initialisation, as the tutorial does.

For sizes other than 28 the start map is the image divided by 4 (16 -> 4x4, 32 -> 8x8,
48x64 -> 12x16 ...) and larger images get extra stride-2 layers until the start map's
longer side is at most 8 (64 -> 8x8, 48x64 -> 6x8), so the dense layer stays small. The
sizes it accepts are those of ``dcgan`` (``resolve_size``).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from gantool import Discriminator, Generator, Range
from gantool_plugins.dcgan.models import resolve_size


def keras_init(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases; batch norm scale 1, shift 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _start(image_shape) -> tuple[tuple[int, int], int]:
    """((start height, start width), number of stride-2 layers): the start map's sides are at most 8."""
    resolve_size(image_shape)  # H = h0 * 2**k and W = w0 * 2**k, with k >= 2
    _, height, width = image_shape
    steps = 2
    while max(height, width) // 2**steps > 8:  # stops at k at the latest: h0, w0 <= 7
        steps += 1
    return (height // 2**steps, width // 2**steps), steps


class DenseDCGANGenerator(Generator):
    """DCGAN generator of the TensorFlow tutorial: dense projection, then 5x5 transposed convs.

    28 px with the defaults (the tutorial exactly): z(100) -> Linear -> 7x7x256, BN,
    LeakyReLU -> 5x5 stride 1 -> 7x7x128 -> 5x5 stride 2 -> 14x14x64 -> 5x5 stride 2 ->
    28x28xC, tanh. Layers before the output have no bias (batch norm follows).

    Args:
        latent_dim: Size of the latent vector z (100 in the tutorial).
        base_channels: Feature maps of the last hidden layer (64 in the tutorial); the
            dense projection has 4x and the stride-1 layer 2x as many.
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: Annotated[int, Range(ge=1)] = 100,
        base_channels: Annotated[int, Range(ge=1)] = 64,
    ):
        super().__init__()
        (start_h, start_w), steps = _start(image_shape)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.start = (4 * base_channels, start_h, start_w)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 4 * base_channels * start_h * start_w, bias=False),
            nn.BatchNorm1d(4 * base_channels * start_h * start_w),
            nn.LeakyReLU(0.3),  # Keras' LeakyReLU default slope
        )
        # stride 1 to 2b, then stride-2 layers halving down to b, the last one to C.
        widths = [2 * base_channels] + [max(base_channels, 2 * base_channels // 2**i) for i in range(1, steps)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(4 * base_channels, widths[0], 5, 1, 2, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.LeakyReLU(0.3),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            # kernel 5, stride 2, padding 2, output_padding 1: exactly doubles the side ("same").
            layers += [nn.ConvTranspose2d(c_in, c_out, 5, 2, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.3)]
        layers += [nn.ConvTranspose2d(widths[-1], image_shape[0], 5, 2, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(keras_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z.reshape(z.shape[0], self.latent_dim))
        return self.net(h.reshape(z.shape[0], *self.start))


class DenseDCGANDiscriminator(Discriminator):
    """Discriminator of the TensorFlow DCGAN tutorial: conv, conv, flatten, linear.

    28 px with the defaults: 5x5 stride-2 conv to 14x14x64, LeakyReLU, dropout 0.3,
    5x5 stride-2 conv to 7x7x128, LeakyReLU, dropout 0.3, flatten, Linear -> 1 logit.
    No batch norm.

    Args:
        base_channels: Feature maps of the first convolution (64 in the tutorial); the
            second has twice as many.
        dropout: Dropout probability after each convolution block (0.3 in the tutorial).
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        base_channels: Annotated[int, Range(ge=1)] = 64,
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.3,
    ):
        super().__init__()
        resolve_size(image_shape)  # H and W divisible by 4: the two stride-2 convolutions quarter them exactly
        self.image_shape = tuple(image_shape)
        height, width = image_shape[1] // 4, image_shape[2] // 4
        self.net = nn.Sequential(
            nn.Conv2d(image_shape[0], base_channels, 5, 2, 2),
            nn.LeakyReLU(0.3),
            nn.Dropout(dropout),
            nn.Conv2d(base_channels, 2 * base_channels, 5, 2, 2),
            nn.LeakyReLU(0.3),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(2 * base_channels * height * width, 1),
        )
        self.apply(keras_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])
