"""A fully connected generator: the simplest possible gantool Generator."""

from typing import Annotated

import torch
from torch import nn

import gantool


class MLPGenerator(gantool.Generator):
    """z -> hidden layers -> image, tanh output.

    Args:
        latent_dim: size of the latent vector z
        hidden: width of each hidden layer
        layers: number of hidden layers
    """

    def __init__(self, *, image_shape: tuple[int, int, int], latent_dim: Annotated[int, gantool.Range(ge=1)] = 64,
                 hidden: Annotated[int, gantool.Range(ge=1)] = 256, layers: Annotated[int, gantool.Range(ge=1, le=8)] = 2):
        super().__init__()
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        blocks, width = [], latent_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            width = hidden
        blocks += [nn.Linear(width, int(torch.tensor(self.image_shape).prod())), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, z):
        return self.net(z).view(len(z), *self.image_shape)


class MLPDiscriminator(gantool.Discriminator):
    """image -> hidden layers -> one raw score (no sigmoid).

    Args:
        hidden: width of each hidden layer
        layers: number of hidden layers
    """

    def __init__(self, *, image_shape: tuple[int, int, int], hidden: Annotated[int, gantool.Range(ge=1)] = 256,
                 layers: Annotated[int, gantool.Range(ge=1, le=8)] = 2):
        super().__init__()
        self.image_shape = tuple(image_shape)
        blocks, width = [nn.Flatten()], int(torch.tensor(self.image_shape).prod())
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2, inplace=True)]
            width = hidden
        blocks += [nn.Linear(width, 1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x):
        return self.net(x).squeeze(1)
