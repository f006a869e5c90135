"""The GAN loss family. All losses work on raw discriminator scores (logits).

Every loss takes ``r1_gamma``: the R1 penalty of Mescheder, Geiger, Nowozin 2018
("Which Training Methods for GANs do actually Converge?"),
``gamma / 2 * E[ ||grad_x D(x)||^2 ]`` on real data, returned by ``penalty`` and added
to the discriminator loss by the engine. ``r1_gamma = 0`` (the default) switches it off.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F

from gantool import Loss, Range


def _input_gradient(discriminator, x: torch.Tensor) -> torch.Tensor:
    """d(sum of D(x))/dx per sample, flattened to (N, -1), kept in the graph for backprop.

    Computed in float32 with autocast off, even inside a mixed-precision step: input
    gradients in float16 underflow, and the engine's gradient scaler only scales the
    final loss, not this inner ``autograd.grad``.
    """
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.detach().float().requires_grad_(True)
        scores = discriminator(x)
        (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return grad.flatten(1)


def r1_penalty(discriminator, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma / 2 * mean_i ||grad_x D(x_i)||^2`` over the real batch."""
    return 0.5 * gamma * _input_gradient(discriminator, real).pow(2).sum(1).mean()


class GANLoss(Loss):
    """Shared base: the optional R1 penalty. Subclasses add their own terms."""

    def __init__(self, *, r1_gamma: Annotated[float, Range(ge=0)] = 0.0):
        self.r1_gamma = r1_gamma

    def penalty(self, discriminator, real, fake):
        if self.r1_gamma > 0:
            return r1_penalty(discriminator, real, self.r1_gamma)
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class BCELoss(GANLoss):
    """Binary cross-entropy on logits with the non-saturating generator loss (DCGAN).

    D minimises ``BCE(D(x), real_label) + BCE(D(G(z)), 0)``; G minimises
    ``BCE(D(G(z)), 1) = -log sigmoid(D(G(z)))`` -- Goodfellow et al. 2014's
    non-saturating heuristic, which gives strong gradients early in training when D
    easily rejects fakes. The standard choice; used by the DCGAN paper.

    Args:
        real_label: Target for real images in D's loss. 1.0 is plain BCE; 0.9 is
            one-sided label smoothing (Salimans et al. 2016), often used with DCGAN.
            Fake targets stay 0 and G's target stays 1.
        r1_gamma: Weight of the R1 gradient penalty on real data (0 = off).
    """

    def __init__(
        self,
        *,
        real_label: Annotated[float, Range(gt=0, le=1)] = 1.0,
        r1_gamma: Annotated[float, Range(ge=0)] = 0.0,
    ):
        super().__init__(r1_gamma=r1_gamma)
        self.real_label = real_label

    def discriminator_loss(self, real_scores, fake_scores):
        real = F.binary_cross_entropy_with_logits(real_scores, torch.full_like(real_scores, self.real_label))
        fake = F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
        return real + fake

    def generator_loss(self, fake_scores):
        # BCE(s, 1) = softplus(-s) = -log sigmoid(s)
        return F.softplus(-fake_scores).mean()


class NonSaturatingLoss(BCELoss):
    """The non-saturating GAN loss (same objective as ``bce``, under its usual name).

    D: ``-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))``; G: ``-log sigmoid(D(G(z)))``.

    Args:
        real_label: Target for real images in D's loss (0.9 = one-sided label smoothing).
        r1_gamma: Weight of the R1 gradient penalty on real data (0 = off).
    """


class MinimaxLoss(BCELoss):
    """The original saturating minimax loss of Goodfellow et al. 2014.

    D as in ``bce``; G *minimises* ``log(1 - sigmoid(D(G(z))))``, which saturates
    (vanishing gradient) when D confidently rejects the fakes. Mostly of historical and
    didactic interest; prefer ``ns``/``bce``.

    Args:
        real_label: Target for real images in D's loss (0.9 = one-sided label smoothing).
        r1_gamma: Weight of the R1 gradient penalty on real data (0 = off).
    """

    def generator_loss(self, fake_scores):
        # log(1 - sigmoid(s)) = -softplus(s)
        return -F.softplus(fake_scores).mean()


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; used by SN-GAN, SAGAN, BigGAN).

    D: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``; G: ``-mean(D(G(z)))``.
    Pairs well with a spectrally normalised discriminator.

    Args:
        r1_gamma: Weight of the R1 gradient penalty on real data (0 = off).
    """

    def discriminator_loss(self, real_scores, fake_scores):
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()

    def generator_loss(self, fake_scores):
        return -fake_scores.mean()


class LSGANLoss(GANLoss):
    """Least-squares GAN (Mao et al. 2017) with targets a = 0 (fake), b = c = 1 (real).

    D: ``0.5 * mean((D(x) - 1)^2) + 0.5 * mean(D(G(z))^2)``;
    G: ``0.5 * mean((D(G(z)) - 1)^2)``. Penalises fakes by their distance from the
    decision boundary, which keeps gradients alive and training steadier than BCE.

    Args:
        r1_gamma: Weight of the R1 gradient penalty on real data (0 = off).
    """

    def discriminator_loss(self, real_scores, fake_scores):
        return 0.5 * (real_scores - 1).pow(2).mean() + 0.5 * fake_scores.pow(2).mean()

    def generator_loss(self, fake_scores):
        return 0.5 * (fake_scores - 1).pow(2).mean()


class WGANGPLoss(GANLoss):
    """Wasserstein loss with gradient penalty (Gulrajani et al. 2017, WGAN-GP).

    Critic: ``mean(D(G(z))) - mean(D(x)) + gp_weight * mean((||grad D(x_hat)|| - 1)^2)``
    with ``x_hat = e * x + (1 - e) * G(z)``, ``e ~ U(0, 1)`` per sample (random
    interpolates between real and fake). Generator: ``-mean(D(G(z)))``.

    The paper's setup: 5 critic steps per generator step (set
    ``train.d_steps_per_g = 5`` in the recipe), Adam lr 1e-4, betas (0.0, 0.9), and no
    batch norm in the critic (use ``[discriminator] norm = "layer"`` or ``"none"``):
    the penalty is defined per sample, which batch norm breaks.

    Args:
        gp_weight: Weight lambda of the gradient penalty (10 in the paper).
        r1_gamma: Weight of an additional R1 penalty on real data (0 = off).
    """

    def __init__(
        self,
        *,
        gp_weight: Annotated[float, Range(ge=0)] = 10.0,
        r1_gamma: Annotated[float, Range(ge=0)] = 0.0,
    ):
        super().__init__(r1_gamma=r1_gamma)
        self.gp_weight = gp_weight

    def discriminator_loss(self, real_scores, fake_scores):
        return fake_scores.mean() - real_scores.mean()

    def generator_loss(self, fake_scores):
        return -fake_scores.mean()

    def gradient_penalty(self, discriminator, real, fake) -> torch.Tensor:
        """``gp_weight * mean((||grad D(x_hat)||_2 - 1)^2)`` on random interpolates."""
        real, fake = real.detach(), fake.detach()
        # Uses the global RNG on purpose: it is part of training and restored on resume.
        e = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
        x_hat = e * real + (1 - e) * fake
        norms = _input_gradient(discriminator, x_hat).norm(2, dim=1)
        return self.gp_weight * (norms - 1).pow(2).mean()

    def penalty(self, discriminator, real, fake):
        total = self.gradient_penalty(discriminator, real, fake) if self.gp_weight > 0 else None
        r1 = super().penalty(discriminator, real, fake)
        if r1 is not None:
            total = r1 if total is None else total + r1
        return total
