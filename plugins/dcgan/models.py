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
An H x W image starts from an h0 x w0 map doubled k times: H = h0 * 2**k, W = w0 * 2**k,
3 <= h0, w0 <= 7, k >= 2, with the largest such k. So 16, 32, 64 and 128 start from 4x4,
28 from 7x7 (like the TensorFlow DCGAN tutorial for MNIST) and 48x64 from 3x4; D's
final convolution has the kernel h0 x w0.

Both are class-conditional when the engine injects ``num_classes > 0`` (``[train]
conditional = true``): G joins a label embedding to z (Mirza & Osindero 2014), D
conditions by ``condition_by`` -- an input label map, a projection (Miyato & Koyama
2018) or an auxiliary classifier (ACGAN, Odena et al. 2017). Conditional modules are
created after all the unconditional ones, so an unconditional model draws exactly the
same initial weights as before conditioning existed.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from gantool import Discriminator, Generator, ParamError, Range

START_SIDES = range(3, 8)  #: h0 and w0, the sides of G's first (and D's last) feature map
MIN_STEPS = 2  #: x2 steps at least: the smallest images are 12 px, and dcgan_dense needs sides divisible by 4

#: the square sizes of the first releases: side -> (start side, x2 steps); resolve_size gives the same
SUPPORTED_SIZES: dict[int, tuple[int, int]] = {16: (4, 2), 28: (7, 2), 32: (4, 3), 64: (4, 4), 128: (4, 5)}


def start_map(height: int, width: int) -> tuple[tuple[int, int], int] | None:
    """((h0, w0), k) with height = h0 * 2**k and width = w0 * 2**k, the largest such k; None if there is none."""
    for k in range(max(height, width).bit_length(), MIN_STEPS - 1, -1):
        (h0, h_rest), (w0, w_rest) = divmod(height, 2**k), divmod(width, 2**k)
        if not h_rest and not w_rest and h0 in START_SIDES and w0 in START_SIDES:
            return (h0, w0), k
    return None


def resolve_size(image_shape) -> tuple[tuple[int, int], int]:
    """((h0, w0), number of x2 steps) for ``image_shape``; a ParamError naming nearby sizes if unsupported."""
    _, height, width = image_shape
    found = start_map(height, width)
    if found is None:
        examples = ", ".join(f"{h}x{w}" for h, w in nearby_sizes(height, width))
        raise ParamError(
            "image_shape",
            f"cannot make {height}x{width} images; it makes H x W with H = h0*2^k, W = w0*2^k, "
            f"{START_SIDES[0]} <= h0, w0 <= {START_SIDES[-1]}, k >= {MIN_STEPS} (e.g. {examples}); "
            "set [dataset] image_size to one of them",
        )
    return found


def nearby_sizes(height: int, width: int, n: int = 3) -> list[tuple[int, int]]:
    """The ``n`` makeable sizes closest to height x width (squares for a square), in order."""
    sizes = {(h0 * 2**k, w0 * 2**k) for k in range(MIN_STEPS, 11) for h0 in START_SIDES for w0 in START_SIDES
             if height != width or h0 == w0}
    return sorted(sorted(sizes, key=lambda s: (abs(s[0] - height) + abs(s[1] - width), s))[:n])


def check_labels(module: nn.Module, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``labels`` if ``module`` is conditional (then required, shape (n,)); ValueError on a mismatch."""
    name = type(module).__name__
    if not module.num_classes:
        if labels is not None:
            raise ValueError(f"{name} was built unconditional (num_classes = 0) but got labels")
        return None
    if labels is None:
        raise ValueError(f"{name} was built class-conditional (num_classes = {module.num_classes}): "
                         "pass labels, int64 of shape (N,)")
    if labels.shape != (n,):
        raise ValueError(f"{name}: labels must have shape ({n},), got {tuple(labels.shape)}")
    return labels


def check_num_classes(num_classes: int) -> None:
    if num_classes < 0:
        raise ParamError("num_classes", f"must be >= 0, got {num_classes}")


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


class LatentProjection(nn.ConvTranspose2d):
    """G's first layer: the 1x1 latent to the h0 x w0 start map, computed as one matrix product.

    The weights and the state dict are the paper's transposed convolution's, but oneDNN runs
    this degenerate convolution far slower than the equal matmul (on a 2-core AVX2 CPU,
    forward + backward at batch 64: 76 against 44 ms; docs/performance.md).
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if tuple(z.shape[2:]) != (1, 1) or self.stride != (1, 1) or self.padding != (0, 0) or self.groups != 1:
            return super().forward(z)
        n, (h, w), z = z.shape[0], self.kernel_size, z.reshape(z.shape[0], -1)
        if self.weight.is_contiguous():
            out = (z @ self.weight.reshape(self.in_channels, -1)).view(n, self.out_channels, h, w)
        else:  # a channels-last weight gives a channels-last output, as the convolution does
            out = (z @ self.weight.permute(0, 2, 3, 1).reshape(self.in_channels, -1)).view(n, h, w, -1)
            out = out.permute(0, 3, 1, 2)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


class ScoreHead(nn.Conv2d):
    """D's last layer: a kernel as large as its input, so one dot product per image and
    output, computed as a matrix product (same weights and state dict as the convolution;
    oneDNN runs the degenerate convolution several times slower on CPUs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.kernel_size or self.padding != (0, 0) or self.groups != 1:
            return super().forward(x)
        n, weight = x.shape[0], self.weight
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):  # flatten as H, W, C
            x, weight = x.permute(0, 2, 3, 1), weight.permute(0, 2, 3, 1)
        scores = nn.functional.linear(x.reshape(n, -1), weight.reshape(self.out_channels, -1), self.bias)
        return scores.view(n, self.out_channels, 1, 1)


class DCGANGenerator(Generator):
    """DCGAN generator: transposed convolutions with batch norm and ReLU, tanh output.

    Layout for 64x64 with ``base_channels = 64`` (the paper's model): z -> 4x4x512 ->
    8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64xC. Every up-sampling layer is a 4x4
    transposed convolution with stride 2, which is what produces the periodic
    "checkerboard" pattern the ``checkerboard`` metric measures (see ``upsample_conv``).

    Class-conditional when built with ``num_classes > 0`` (Mirza & Osindero 2014,
    "Conditional Generative Adversarial Nets"): a learned embedding of the label
    (``label_dim`` values, N(0, 1) like z) is concatenated to z before the first
    projection; ``forward(z, labels)`` then needs the labels.

    Args:
        latent_dim: Size of the latent vector z (the paper uses 100).
        base_channels: Feature maps of the last hidden layer; each layer closer to z has
            twice as many (64 in the paper).
        label_dim: Size of the label embedding joined to z (conditional runs only).
    """

    conditioning = "optional"

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        latent_dim: Annotated[int, Range(ge=1)] = 100,
        base_channels: Annotated[int, Range(ge=1)] = 64,
        label_dim: Annotated[int, Range(ge=1)] = 50,
        num_classes: int = 0,
    ):
        super().__init__()
        check_num_classes(num_classes)
        start, steps = resolve_size(image_shape)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.label_dim = label_dim
        z_dim = latent_dim + (label_dim if num_classes else 0)
        widths = [base_channels * 2 ** (steps - 1 - i) for i in range(steps)]
        layers: list[nn.Module] = [
            # Projection of the 1x1 latent to an h0 x w0 start map (a "fully connected"
            # layer written as a convolution, as in the paper's figure 1).
            LatentProjection(z_dim, widths[0], start, 1, 0, bias=False),
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
        if num_classes:  # after everything else: an unconditional G draws the same weights as ever
            self.embed = nn.Embedding(num_classes, label_dim)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = check_labels(self, labels, z.shape[0])
        if labels is None:
            return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))
        z = z.reshape(z.shape[0], self.latent_dim)
        z = torch.cat([z, self.embed(labels).to(z.dtype)], 1)
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


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
    4x4x512 -> a 4x4 convolution to one logit (48x64 ends in a 3x4 map and a 3x4
    convolution). No norm on the input layer.

    Class-conditional when built with ``num_classes > 0``; ``forward(x, labels)`` then
    needs the labels and ``condition_by`` says how they enter:

    * "concat": an embedding maps each class to a learned H x W map, joined to x as one
      more input channel (the common conditional DCGAN, after Mirza & Osindero 2014);
    * "projection": score = psi(h) + <embed(y), sum_xy h>, where h is the last feature
      map and psi the usual final convolution (Miyato & Koyama 2018, "cGANs with
      Projection Discriminator"); the embedding is spectrally normalised with the rest;
    * "auxiliary": labels are not an input; a second head on h predicts the class and
      ``forward`` returns ``(scores, {"class_logits": (N, num_classes)})`` for the
      ``acgan`` loss (ACGAN, Odena, Olah, Shlens 2017).

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
        condition_by: How labels enter in a conditional run: "concat" (a label map as an
            extra input channel), "projection" (inner product of a class embedding with the
            pooled features) or "auxiliary" (a class-logit head, for the ``acgan`` loss).
    """

    conditioning = "optional"

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        base_channels: Annotated[int, Range(ge=1)] = 64,
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        spectral_norm: bool = False,
        norm: Literal["batch", "layer", "none"] = "batch",
        condition_by: Literal["concat", "projection", "auxiliary"] = "concat",
        num_classes: int = 0,
    ):
        super().__init__()
        check_num_classes(num_classes)
        start, steps = resolve_size(image_shape)
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.condition_by = condition_by
        widths = [base_channels * 2**i for i in range(steps)]

        def act() -> list[nn.Module]:
            return [nn.LeakyReLU(0.2, inplace=True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])

        in_channels = image_shape[0] + (1 if num_classes and condition_by == "concat" else 0)
        convs: list[nn.Conv2d] = [nn.Conv2d(in_channels, widths[0], 4, 2, 1)]
        layers: list[nn.Module] = [convs[-1], *act()]
        for c_in, c_out in zip(widths, widths[1:]):
            convs.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none"))
            layers += [convs[-1], _norm(norm, c_out), *act()]
        convs.append(ScoreHead(widths[-1], 1, start, 1, 0))
        layers.append(convs[-1])
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if spectral_norm:
            for conv in convs:
                nn.utils.parametrizations.spectral_norm(conv)
        # Conditional modules come last: an unconditional D draws the same weights as ever.
        if num_classes and condition_by == "concat":
            self.label_map = nn.Embedding(num_classes, image_shape[1] * image_shape[2])  # N(0, 1), input scale
        elif num_classes and condition_by == "projection":
            self.embed = nn.Embedding(num_classes, widths[-1])
            nn.init.normal_(self.embed.weight, 0.0, 0.02)  # a weight on the features, like the final conv's
            if spectral_norm:
                nn.utils.parametrizations.spectral_norm(self.embed)
        elif num_classes:  # auxiliary: the ACGAN class head, shaped like the final convolution
            self.classifier = ScoreHead(widths[-1], num_classes, start, 1, 0)
            dcgan_init(self.classifier)
            if spectral_norm:
                nn.utils.parametrizations.spectral_norm(self.classifier)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        n = x.shape[0]
        labels = check_labels(self, labels, n)
        if labels is None:
            return self.net(x).reshape(n)
        if self.condition_by == "concat":
            label_map = self.label_map(labels).reshape(n, 1, *x.shape[2:]).to(x.dtype)
            return self.net(torch.cat([x, label_map], 1)).reshape(n)
        features = x
        for layer in self.net[:-1]:
            features = layer(features)
        scores = self.net[-1](features).reshape(n)
        if self.condition_by == "projection":
            return scores + (self.embed(labels) * features.sum((2, 3))).sum(1)
        return scores, {"class_logits": self.classifier(features).reshape(n, self.num_classes)}


class ProjectionDiscriminator(DCGANDiscriminator):
    """The DCGAN discriminator as a projection discriminator (Miyato & Koyama 2018).

    "cGANs with Projection Discriminator" (ICLR 2018): score = psi(h) + <embed(y), sum_xy h>
    with h the last feature map -- the class enters as an inner product with D's features
    instead of as an input, which the paper shows gives better class-conditional samples
    than concatenation or an auxiliary classifier. Spectral norm on (the embedding
    included) and no batch norm by default, the paper's setup; pair with ``hinge``.
    Always conditional: needs a labelled dataset.

    Args:
        base_channels: Feature maps of the first layer; doubled by every following layer.
        dropout: Dropout probability after every LeakyReLU (0 = none).
        spectral_norm: Spectral normalisation of every convolution and of the class embedding.
        norm: Normalisation of the hidden layers: "none" (the paper, with spectral norm),
            "layer" or "batch".
    """

    conditioning = "required"

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        base_channels: Annotated[int, Range(ge=1)] = 64,
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        spectral_norm: bool = True,
        norm: Literal["batch", "layer", "none"] = "none",
        num_classes: int = 0,
    ):
        if num_classes <= 0:
            raise ParamError(
                "num_classes",
                f"the projection discriminator needs class labels, got num_classes = {num_classes}; "
                'use a labelled dataset, or [discriminator] type = "dcgan" for an unconditional run',
            )
        super().__init__(image_shape=image_shape, base_channels=base_channels, dropout=dropout,
                         spectral_norm=spectral_norm, norm=norm, condition_by="projection", num_classes=num_classes)
