"""Fully connected G and D: the simplest possible gantool networks, optionally class-conditional."""

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

import gantool


class MLPGenerator(gantool.Generator):
    """z -> hidden layers -> image, tanh output. In a conditional run (``[train]
    conditional = true``) the one-hot label is joined to z (Mirza & Osindero 2014).

    Args:
        latent_dim: size of the latent vector z
        hidden: width of each hidden layer
        layers: number of hidden layers
    """

    conditioning = "optional"  # the engine injects num_classes > 0 in a conditional run

    def __init__(self, *, image_shape: tuple[int, int, int], num_classes: int = 0,
                 latent_dim: Annotated[int, gantool.Range(ge=1)] = 64,
                 hidden: Annotated[int, gantool.Range(ge=1)] = 256, layers: Annotated[int, gantool.Range(ge=1, le=8)] = 2):
        super().__init__()
        self.image_shape, self.latent_dim, self.num_classes = tuple(image_shape), latent_dim, num_classes
        blocks, width = [], latent_dim + num_classes
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            width = hidden
        blocks += [nn.Linear(width, int(torch.tensor(self.image_shape).prod())), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, z, labels=None):
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z)], 1)
        return self.net(z).view(len(z), *self.image_shape)


class MLPDiscriminator(gantool.Discriminator):
    """image -> hidden layers -> one raw score (no sigmoid); conditional: the one-hot label joins the pixels.

    Args:
        hidden: width of each hidden layer
        layers: number of hidden layers
    """

    conditioning = "optional"

    def __init__(self, *, image_shape: tuple[int, int, int], num_classes: int = 0,
                 hidden: Annotated[int, gantool.Range(ge=1)] = 256, layers: Annotated[int, gantool.Range(ge=1, le=8)] = 2):
        super().__init__()
        self.image_shape, self.num_classes = tuple(image_shape), num_classes
        blocks, width = [], int(torch.tensor(self.image_shape).prod()) + num_classes
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2, inplace=True)]
            width = hidden
        blocks += [nn.Linear(width, 1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x, labels=None):
        x = x.flatten(1)
        if self.num_classes:
            x = torch.cat([x, F.one_hot(labels, self.num_classes).to(x)], 1)
        return self.net(x).squeeze(1)
