"""The GAN loss family. All losses work on raw discriminator scores (logits).

Every loss takes ``r1_gamma``: the R1 penalty of Mescheder, Geiger, Nowozin 2018
("Which Training Methods for GANs do actually Converge?"),
``gamma / 2 * E[ ||grad_x D(x)||^2 ]`` on real data, returned by ``penalty`` and added
to the discriminator loss by the engine. ``r1_gamma = 0`` (the default) switches it off.
``r1_every = k`` makes it lazy (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", lazy regularization): computed on every k-th discriminator batch
only, times k, so its average strength is unchanged at a fraction of the cost.

In a class-conditional run the penalties score images with the real batch's labels
(``ctx.scores(images, ctx.real_labels)``), so they differentiate the same D the loss sees.

Each loss logs its own statistics from ``discriminator_loss`` (see ``log_stats``):
``d_real``/``d_fake`` (mean sigmoid) for the BCE family, whose scores are logits of a
probability, and ``score_real``/``score_fake`` (mean raw score) for the others.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from gantool import GantoolError, Loss, Range
from gantool.params import parameters

R1Gamma = Annotated[float, Range(ge=0)]
R1Every = Annotated[int, Range(ge=1)]


Scores = Callable[[torch.Tensor], torch.Tensor]  # images -> D's scores (N,)


def _scores_with_real_labels(ctx) -> Scores:
    """D's scores as a function of the images alone, with the real labels in a conditional run."""
    return lambda images: ctx.scores(images, ctx.real_labels)


def _input_gradient(scores: Scores, x: torch.Tensor) -> torch.Tensor:
    """d(sum of scores(x))/dx per sample, flattened to (N, -1), kept in the graph for backprop.

    ``scores`` is a plain (unconditional) discriminator or any images -> (N,) function.

    Computed in float32 with autocast off, even inside a mixed-precision step: input
    gradients in float16 underflow, and the engine's gradient scaler only scales the
    final loss, not this inner ``autograd.grad``.
    """
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(scores(x).sum(), x, create_graph=True)
    return grad.flatten(1)


def r1_penalty(scores: Scores, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma / 2 * mean_i ||grad_x D(x_i)||^2`` over the real batch."""
    return 0.5 * gamma * _input_gradient(scores, real).pow(2).sum(1).mean()


class GANLoss(Loss):
    """Shared base: the optional (lazy) R1 penalty and the default statistics.

    Subclasses document only the parameters they add: the ones they leave out of their
    ``Args:`` are appended from the base that documents them (``__init_subclass__``),
    so ``gantool info loss NAME`` still lists every parameter.

    Args:
        r1_gamma: Weight gamma of the R1 gradient penalty on real data (0 = off).
        r1_every: Lazy R1 (StyleGAN2): compute it on every r1_every-th discriminator batch only,
            multiplied by r1_every so its average strength is unchanged (1 = every batch; StyleGAN2 uses 16).
    """

    def __init__(self, *, r1_gamma: R1Gamma = 0.0, r1_every: R1Every = 1):
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _inherit_arg_docs(cls)

    def log_stats(self, real_scores, fake_scores, ctx):
        """Log the mean raw scores (what a loss without a probabilistic reading can show); returns them."""
        with torch.no_grad():
            real_mean, fake_mean = real_scores.detach().float().mean(), fake_scores.detach().float().mean()
        ctx.log("score_real", real_mean)
        ctx.log("score_fake", fake_mean)
        return real_mean, fake_mean

    @property
    def capturable(self) -> bool:
        """Lazy R1 picks its batches on the host, which a captured CUDA graph cannot follow."""
        return self.r1_every == 1 or self.r1_gamma <= 0

    def penalty(self, ctx):
        return self.r1(ctx)

    def r1(self, ctx) -> torch.Tensor | None:
        """The R1 term of this batch (logged unscaled as ``r1``), or None when off or lazily skipped."""
        if self.r1_gamma <= 0 or ctx.batch % self.r1_every:
            return None
        value = r1_penalty(_scores_with_real_labels(ctx), ctx.real, self.r1_gamma)
        ctx.log("r1", value)
        return value if self.r1_every == 1 else value * self.r1_every

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _inherit_arg_docs(cls) -> None:
    """Append to ``cls``'s ``Args:`` section the parameters it accepts but does not document.

    The text comes from the nearest base class that documents the parameter; the
    ``Args:`` section must therefore be the docstring's last section.
    """
    if not cls.__doc__:  # python -OO, or no docstring: inspect.getdoc shows the base's
        return
    params, _ = parameters(cls)
    missing = [p.name for p in params if not p.doc]
    if not missing:
        return
    lines = []
    for name in missing:
        for base in cls.__mro__[1:]:
            if issubclass(base, GANLoss):
                doc = next((p.doc for p in parameters(base)[0] if p.name == name and p.doc), "")
                if doc:
                    lines.append(f"    {name}: {doc}")
                    break
    doc = inspect.cleandoc(cls.__doc__)
    if not any(line.strip() == "Args:" for line in doc.splitlines()):
        doc += "\n\nArgs:"
    cls.__doc__ = "\n".join([doc, *lines])


class BCELoss(GANLoss):
    """Binary cross-entropy on logits with the non-saturating generator loss (DCGAN).

    D minimises ``BCE(D(x), real_label) + BCE(D(G(z)), 0)``; G minimises
    ``BCE(D(G(z)), 1) = -log sigmoid(D(G(z)))`` -- Goodfellow et al. 2014's
    non-saturating heuristic, which gives strong gradients early in training when D
    easily rejects fakes. The standard choice; used by the DCGAN paper.
    Logs ``d_real`` and ``d_fake``: D's mean probability that real (fake) images are real.

    Args:
        real_label: Target for real images in D's loss. 1.0 is plain BCE; 0.9 is
            one-sided label smoothing (Salimans et al. 2016), often used with DCGAN.
            Fake targets stay 0 and G's target stays 1.
    """

    def __init__(
        self,
        *,
        real_label: Annotated[float, Range(gt=0, le=1)] = 1.0,
        r1_gamma: R1Gamma = 0.0,
        r1_every: R1Every = 1,
    ):
        super().__init__(r1_gamma=r1_gamma, r1_every=r1_every)
        self.real_label = real_label

    def log_stats(self, real_scores, fake_scores, ctx):
        """Log D's mean probabilities ``d_real`` and ``d_fake``; returns them."""
        with torch.no_grad():
            d_real = torch.sigmoid(real_scores.detach().float()).mean()
            d_fake = torch.sigmoid(fake_scores.detach().float()).mean()
        ctx.log("d_real", d_real)
        ctx.log("d_fake", d_fake)
        return d_real, d_fake

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        self.log_stats(real_scores, fake_scores, ctx)
        real = F.binary_cross_entropy_with_logits(real_scores, torch.full_like(real_scores, self.real_label))
        fake = F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
        return real + fake

    def generator_loss(self, real_scores, fake_scores, ctx):
        # BCE(s, 1) = softplus(-s) = -log sigmoid(s)
        return F.softplus(-fake_scores).mean()


class NonSaturatingLoss(BCELoss):
    """The non-saturating GAN loss (same objective as ``bce``, under its usual name).

    D: ``-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))``; G: ``-log sigmoid(D(G(z)))``.
    """


class MinimaxLoss(BCELoss):
    """The original saturating minimax loss of Goodfellow et al. 2014.

    D as in ``bce``; G *minimises* ``log(1 - sigmoid(D(G(z))))``, which saturates
    (vanishing gradient) when D confidently rejects the fakes. Mostly of historical and
    didactic interest; prefer ``ns``/``bce``.
    """

    def generator_loss(self, real_scores, fake_scores, ctx):
        # log(1 - sigmoid(s)) = -softplus(s)
        return -F.softplus(fake_scores).mean()


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; used by SN-GAN, SAGAN, BigGAN).

    D: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``; G: ``-mean(D(G(z)))``.
    Pairs well with a spectrally normalised discriminator.
    """

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        self.log_stats(real_scores, fake_scores, ctx)
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()

    def generator_loss(self, real_scores, fake_scores, ctx):
        return -fake_scores.mean()


class LSGANLoss(GANLoss):
    """Least-squares GAN (Mao et al. 2017) with targets a = 0 (fake), b = c = 1 (real).

    D: ``0.5 * mean((D(x) - 1)^2) + 0.5 * mean(D(G(z))^2)``;
    G: ``0.5 * mean((D(G(z)) - 1)^2)``. Penalises fakes by their distance from the
    decision boundary, which keeps gradients alive and training steadier than BCE.
    """

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        self.log_stats(real_scores, fake_scores, ctx)
        return 0.5 * (real_scores - 1).pow(2).mean() + 0.5 * fake_scores.pow(2).mean()

    def generator_loss(self, real_scores, fake_scores, ctx):
        return 0.5 * (fake_scores - 1).pow(2).mean()


class WGANGPLoss(GANLoss):
    """Wasserstein loss with gradient penalty (Gulrajani et al. 2017, WGAN-GP).

    Critic: ``mean(D(G(z))) - mean(D(x)) + gp_weight * mean((||grad D(x_hat)|| - 1)^2)``
    with ``x_hat = e * x + (1 - e) * G(z)``, ``e ~ U(0, 1)`` per sample (random
    interpolates between real and fake). Generator: ``-mean(D(G(z)))``.
    Logs ``wasserstein`` (``mean(D(x)) - mean(D(G(z)))``, the critic's estimate of the
    distance, which should fall as G improves) and ``gp`` besides the mean scores.

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
        r1_gamma: R1Gamma = 0.0,
        r1_every: R1Every = 1,
    ):
        super().__init__(r1_gamma=r1_gamma, r1_every=r1_every)
        self.gp_weight = gp_weight

    def log_stats(self, real_scores, fake_scores, ctx):
        real_mean, fake_mean = super().log_stats(real_scores, fake_scores, ctx)
        ctx.log("wasserstein", real_mean - fake_mean)

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        self.log_stats(real_scores, fake_scores, ctx)
        return fake_scores.mean() - real_scores.mean()

    def generator_loss(self, real_scores, fake_scores, ctx):
        return -fake_scores.mean()

    def gradient_penalty(self, scores: Scores, real, fake) -> torch.Tensor:
        """``gp_weight * mean((||grad D(x_hat)||_2 - 1)^2)`` on random interpolates.

        ``scores`` maps images to D's scores; in a conditional run it passes the real labels
        (each interpolate keeps its real image's label).
        """
        real, fake = real.detach(), fake.detach()
        # Uses the global RNG on purpose: it is part of training and restored on resume.
        e = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
        x_hat = e * real + (1 - e) * fake
        norms = _input_gradient(scores, x_hat).norm(2, dim=1)
        return self.gp_weight * (norms - 1).pow(2).mean()

    def penalty(self, ctx):
        total = None
        if self.gp_weight > 0:
            total = self.gradient_penalty(_scores_with_real_labels(ctx), ctx.real, ctx.fake)
            ctx.log("gp", total)
        r1 = self.r1(ctx)
        if r1 is not None:
            total = r1 if total is None else total + r1
        return total


class RelativisticAverageLoss(GANLoss):
    """Relativistic average GAN (Jolicoeur-Martineau 2018, "The relativistic discriminator:
    a key element missing from standard GAN").

    D estimates how much more realistic a real image is than the average fake,
    ``D~(x_r) = D(x_r) - mean D(x_f)``, and vice versa ``D~(x_f) = D(x_f) - mean D(x_r)``.
    G gets the mirrored objective, so it also pulls real scores down relative to fakes:
    both halves carry G's gradient (through ``mean D(x_f)`` in the real half). Each loss
    is the *average* of its real and fake halves (each a batch mean), as in the paper's
    reference code (github.com/AlexiaJM/RelativisticGAN, which divides the paper's sums
    by 2); this puts RaSGAN at ``log 2`` when D cannot tell the two apart. The paper reports
    steadier training than the non-relativistic losses, and plausible 256 px images from 2011
    training images where SGAN and LSGAN fail.

    Subclasses define ``_up(d)`` (the per-sample loss pushing ``d`` towards "more real")
    and ``_down(d)`` (towards "less real").
    """

    generator_needs_real_scores = True

    def _up(self, d: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _down(self, d: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        self.log_stats(real_scores, fake_scores, ctx)
        real_rel, fake_rel = real_scores - fake_scores.mean(), fake_scores - real_scores.mean()
        return (self._up(real_rel).mean() + self._down(fake_rel).mean()) / 2

    def generator_loss(self, real_scores, fake_scores, ctx):
        if real_scores is None:
            raise ValueError(f"{type(self).__name__}.generator_loss needs D's real scores; the engine "
                             "passes them when generator_needs_real_scores is True")
        real_scores = real_scores.detach()  # G's gradient reaches these terms through the fake mean only
        real_rel, fake_rel = real_scores - fake_scores.mean(), fake_scores - real_scores.mean()
        return (self._up(fake_rel).mean() + self._down(real_rel).mean()) / 2


class RaSGANLoss(RelativisticAverageLoss):
    """Relativistic average standard GAN (RaSGAN; Jolicoeur-Martineau 2018).

    D: ``(BCE(D~(x_r), 1) + BCE(D~(x_f), 0)) / 2``; G: ``(BCE(D~(x_f), 1) + BCE(D~(x_r), 0)) / 2``,
    BCE on logits as softplus (``BCE(d, 1) = softplus(-d)``, ``BCE(d, 0) = softplus(d)``).
    """

    def _up(self, d):
        return F.softplus(-d)

    def _down(self, d):
        return F.softplus(d)


class RaLSGANLoss(RelativisticAverageLoss):
    """Relativistic average least-squares GAN (RaLSGAN; Jolicoeur-Martineau 2018).

    D: ``(mean((D~(x_r) - 1)^2) + mean((D~(x_f) + 1)^2)) / 2``;
    G: ``(mean((D~(x_f) - 1)^2) + mean((D~(x_r) + 1)^2)) / 2``.
    """

    def _up(self, d):
        return (d - 1).pow(2)

    def _down(self, d):
        return (d + 1).pow(2)


class RaHingeLoss(RelativisticAverageLoss):
    """Relativistic average hinge loss (RaHinge; Jolicoeur-Martineau 2018).

    D: ``(mean(relu(1 - D~(x_r))) + mean(relu(1 + D~(x_f)))) / 2``;
    G: ``(mean(relu(1 - D~(x_f))) + mean(relu(1 + D~(x_r)))) / 2``.
    """

    def _up(self, d):
        return F.relu(1 - d)

    def _down(self, d):
        return F.relu(1 + d)


_ADVERSARIAL = {"ns": NonSaturatingLoss(), "hinge": HingeLoss()}  # stateless: r1 off, default targets


class ACGANLoss(GANLoss):
    """Auxiliary-classifier GAN (ACGAN; Odena, Olah, Shlens 2017, "Conditional Image
    Synthesis with Auxiliary Classifier GANs").

    D has a second head predicting the class of every image (``[discriminator] type =
    "dcgan"`` with ``condition_by = "auxiliary"``); both networks also minimise its
    cross-entropy: D ``adv_D + class_weight * (CE(real logits, real labels) + CE(fake
    logits, fake labels))``, G ``adv_G + class_weight * CE(fake logits, fake labels)``, so
    G learns to make images D recognises as their class. Logs ``class_acc_real`` and
    ``class_acc_fake`` (D's accuracy on each batch) besides the adversarial statistics.
    With ``classify_fakes = false`` D's classifier learns from real images only, so G
    cannot win the class term with images that only D's own head reads as the class
    (docs/models.md measures both).

    Args:
        adversarial: The adversarial part: "ns" (non-saturating BCE, as in the paper) or "hinge".
        class_weight: Weight of the classification terms (1 in the paper).
        classify_fakes: D also minimises the class cross-entropy of fake images (the paper);
            false trains its classifier on real images only.
    """

    conditioning = "required"

    def __init__(
        self,
        *,
        adversarial: Literal["ns", "hinge"] = "ns",
        class_weight: Annotated[float, Range(ge=0)] = 1.0,
        classify_fakes: bool = True,
        r1_gamma: R1Gamma = 0.0,
        r1_every: R1Every = 1,
    ):
        super().__init__(r1_gamma=r1_gamma, r1_every=r1_every)
        self.adversarial = adversarial
        self.class_weight = class_weight
        self.classify_fakes = classify_fakes

    @staticmethod
    def _cross_entropy(extras: dict, labels, ctx, accuracy_name: str | None = None) -> torch.Tensor:
        """CE of D's class logits (in float32 under mixed precision); logs D's accuracy as ``accuracy_name``."""
        if "class_logits" not in extras:
            raise GantoolError(
                "the acgan loss needs a discriminator with an auxiliary classifier, "
                'e.g. [discriminator] type = "dcgan" with condition_by = "auxiliary"'
            )
        if labels is None:
            raise GantoolError("the acgan loss needs class labels: a labelled dataset and [train] conditional = true")
        logits = extras["class_logits"]
        if accuracy_name:
            ctx.log(accuracy_name, (logits.detach().argmax(1) == labels).float().mean())
        return F.cross_entropy(logits.float(), labels)

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        adversarial = _ADVERSARIAL[self.adversarial].discriminator_loss(real_scores, fake_scores, ctx)
        real = self._cross_entropy(ctx.real_extras, ctx.real_labels, ctx, "class_acc_real")
        fake = self._cross_entropy(ctx.fake_extras, ctx.fake_labels, ctx, "class_acc_fake")
        return adversarial + self.class_weight * (real + fake if self.classify_fakes else real)

    def generator_loss(self, real_scores, fake_scores, ctx):
        adversarial = _ADVERSARIAL[self.adversarial].generator_loss(real_scores, fake_scores, ctx)
        return adversarial + self.class_weight * self._cross_entropy(ctx.fake_extras, ctx.fake_labels, ctx)
