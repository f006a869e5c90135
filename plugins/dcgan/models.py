"""DCGAN generator and discriminator (Radford, Metz, Chintala 2015, arXiv:1511.06434).

The paper's architecture guidelines, followed exactly:

* all-convolutional: strided convolutions in D, fractionally strided (transposed)
  convolutions in G; no pooling;
* no fully connected hidden layers: G's first layer projects z (as a 1x1 map) to a
  small feature map with a transposed convolution, D's last layer is a convolution
  that reduces the final feature map to one logit;
* batch norm everywhere except G's output layer and D's input layer;
* ReLU in G with tanh on the output, LeakyReLU(0.2) in D;
* weights from N(0, 0.02); batch-norm scale from N(1, 0.02), shift 0.

Channel widths double per down-sampling step in D and halve per up-sampling step in
G (``base_channels`` is the width next to the image), as in the paper's 64x64 model.
Square sizes 16, 32, 64 and 128 start from a 4x4 map; 28 starts from 7x7 (a 7x7
transposed convolution of the 1x1 latent, then x2, x2), like the TensorFlow DCGAN
tutorial for MNIST.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from gantool import Discriminator, Generator, ParamError, Range

#: image size -> (side of the first feature map, number of x2 up-sampling steps)
SUPPORTED_SIZES: dict[int, tuple[int, int]] = {16: (4, 2), 28: (7, 2), 32: (4, 3), 64: (4, 4), 128: (4, 5)}


def resolve_size(image_shape, family: str = "DCGAN") -> tuple[int, int]:
    """(start side, number of x2 steps) for ``image_shape``; ParamError if unsupported."""
    _, height, width = image_shape
    sizes = ", ".join(str(s) for s in SUPPORTED_SIZES)
    if height != width or height not in SUPPORTED_SIZES:
        raise ParamError(
            "image_shape",
            f"{family} supports square images of size {sizes}, got {height}x{width}; "
            f"set [dataset] image_size to one of {sizes}",
        )
    return SUPPORTED_SIZES[height]


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02); norm scale N(1, 0.02), shift 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d | nn.GroupNorm):
        if module.weight is not None:
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


class DCGANGenerator(Generator):
    """DCGAN generator: transposed convolutions with batch norm and ReLU, tanh output.

    Layout for 64x64 with ``base_channels = 64`` (the paper's model): z -> 4x4x512 ->
    8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64xC. Every up-sampling layer is a 4x4
    transposed convolution with stride 2, which is what produces the periodic
    "checkerboard" pattern the ``checkerboard`` metric measures (see ``upsample_conv``).

    Args:
        latent_dim: Size of the latent vector z (the paper uses 100).
        base_channels: Feature maps of the last hidden layer; each layer closer to z has
            twice as many (64 in the paper).
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: Annotated[int, Range(ge=1)] = 100,
        base_channels: Annotated[int, Range(ge=1)] = 64,
    ):
        super().__init__()
        start, steps = resolve_size(image_shape)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        widths = [base_channels * 2 ** (steps - 1 - i) for i in range(steps)]
        layers: list[nn.Module] = [
            # Projection of the 1x1 latent to a start x start map (a "fully connected"
            # layer written as a convolution, as in the paper's figure 1).
            nn.ConvTranspose2d(latent_dim, widths[0], start, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], image_shape[0], 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # Layer norm over (C, H, W) with a per-channel affine: GroupNorm with one group.
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class DCGANDiscriminator(Discriminator):
    """DCGAN discriminator: strided convolutions with LeakyReLU(0.2), one logit out.

    Mirror image of the generator: for 64x64, C -> 32x32x64 -> 16x16x128 -> 8x8x256 ->
    4x4x512 -> a 4x4 convolution to one logit. No norm on the input layer.

    Args:
        base_channels: Feature maps of the first layer; doubled by every following layer.
        dropout: Dropout probability after every LeakyReLU (0 = none, as in the paper;
            the TensorFlow DCGAN tutorial uses 0.3).
        spectral_norm: Wrap every convolution in spectral normalisation (Miyato et al.
            2018) to bound the discriminator's Lipschitz constant. Usually combined with
            ``norm = "none"``.
        norm: Normalisation of the hidden layers: "batch" (the paper), "layer" (per-sample,
            recommended with ``wgan_gp``/``r1_gamma`` because batch norm mixes samples and
            breaks per-sample gradient penalties), or "none".
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        base_channels: Annotated[int, Range(ge=1)] = 64,
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        spectral_norm: bool = False,
        norm: Literal["batch", "layer", "none"] = "batch",
    ):
        super().__init__()
        start, steps = resolve_size(image_shape)
        self.image_shape = tuple(image_shape)
        widths = [base_channels * 2**i for i in range(steps)]

        def act() -> list[nn.Module]:
            return [nn.LeakyReLU(0.2, inplace=True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])

        convs: list[nn.Conv2d] = [nn.Conv2d(image_shape[0], widths[0], 4, 2, 1)]
        layers: list[nn.Module] = [convs[-1], *act()]
        for c_in, c_out in zip(widths, widths[1:]):
            convs.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none"))
            layers += [convs[-1], _norm(norm, c_out), *act()]
        convs.append(nn.Conv2d(widths[-1], 1, start, 1, 0))
        layers.append(convs[-1])
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if spectral_norm:
            for conv in convs:
                nn.utils.parametrizations.spectral_norm(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])
