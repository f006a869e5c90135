"""Loss values on known scores, gradient penalties on critics with known gradients."""

import math

import pytest
import torch
from torch import nn

from gantool.params import validate
from gantool_plugins.losses.losses import (
    BCELoss,
    HingeLoss,
    LSGANLoss,
    MinimaxLoss,
    NonSaturatingLoss,
    WGANGPLoss,
)

LN2 = math.log(2)
ALL = [BCELoss, NonSaturatingLoss, MinimaxLoss, HingeLoss, LSGANLoss, WGANGPLoss]


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


class Linear(nn.Module):
    """A critic D(x) = <w, x> + b: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor, b: float = 0.0):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = b

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1) + self.b


def unit(shape, norm=1.0):
    w = torch.arange(1.0, 1.0 + math.prod(shape), dtype=torch.float64).reshape(shape)
    return w / w.norm() * norm


def test_bce_at_zero_logits_is_log2():
    loss = BCELoss()
    assert loss.discriminator_loss(t(0, 0), t(0, 0)).item() == pytest.approx(2 * LN2)
    assert loss.generator_loss(t(0, 0)).item() == pytest.approx(LN2)


def test_bce_known_values():
    loss = BCELoss()
    # D(x) = 2 on real, -1 on fake: -log s(2) - log(1 - s(-1)) = softplus(-2) + softplus(-1)
    expected = math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))
    assert loss.discriminator_loss(t(2.0), t(-1.0)).item() == pytest.approx(expected)
    # Non-saturating G: -log s(-1) = softplus(1)
    assert loss.generator_loss(t(-1.0)).item() == pytest.approx(math.log1p(math.e))
    # Agrees with torch's BCEWithLogits (the DCGAN reference implementation).
    real, fake = t(0.3, -1.2, 4.0), t(-0.5, 2.0, 0.1)
    ref = nn.BCEWithLogitsLoss()
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(
        (ref(real, torch.ones_like(real)) + ref(fake, torch.zeros_like(fake))).item()
    )
    assert loss.generator_loss(fake).item() == pytest.approx(ref(fake, torch.ones_like(fake)).item())


def test_ns_is_bce():
    real, fake = t(0.3, -1.2), t(-0.5, 2.0)
    assert NonSaturatingLoss().discriminator_loss(real, fake) == BCELoss().discriminator_loss(real, fake)
    assert NonSaturatingLoss().generator_loss(fake) == BCELoss().generator_loss(fake)


def test_one_sided_label_smoothing():
    loss = BCELoss(real_label=0.9)
    # real term: -(0.9 log s(0) + 0.1 log(1 - s(0))) = log 2; fake term unchanged.
    assert loss.discriminator_loss(t(0.0), t(0.0)).item() == pytest.approx(2 * LN2)
    s = 3.0
    real_term = 0.9 * math.log1p(math.exp(-s)) + 0.1 * math.log1p(math.exp(s))
    assert loss.discriminator_loss(t(s), t(-50.0)).item() == pytest.approx(real_term, abs=1e-12)
    # One-sided: the fake target and G's target are untouched.
    assert loss.generator_loss(t(1.0)).item() == BCELoss().generator_loss(t(1.0)).item()
    with pytest.raises(Exception, match="real_label"):
        validate(BCELoss, {"real_label": 0.0})


def test_minimax_generator_saturates():
    loss = MinimaxLoss()
    # G minimises log(1 - s(D(G(z)))): log(1 - s(0)) = -log 2
    assert loss.generator_loss(t(0.0)).item() == pytest.approx(-LN2)
    # Saturation: when D rejects fakes confidently, the minimax gradient vanishes while
    # the non-saturating one does not.
    s = t(-8.0).requires_grad_(True)
    (g_minimax,) = torch.autograd.grad(loss.generator_loss(s), s)
    s2 = t(-8.0).requires_grad_(True)
    (g_ns,) = torch.autograd.grad(BCELoss().generator_loss(s2), s2)
    assert abs(g_minimax.item()) == pytest.approx(1 / (1 + math.exp(8)))  # sigmoid(-8)
    assert abs(g_ns.item()) == pytest.approx(1 / (1 + math.exp(-8)))  # 1 - sigmoid(-8)
    assert loss.discriminator_loss(t(2.0), t(-1.0)) == BCELoss().discriminator_loss(t(2.0), t(-1.0))


def test_hinge_known_values():
    loss = HingeLoss()
    # relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25 ; relu(1-2)=0, relu(1+0.5)=1.5 -> 0.75
    assert loss.discriminator_loss(t(2.0, 0.5), t(-2.0, 0.5)).item() == pytest.approx(1.0)
    assert loss.generator_loss(t(-2.0, 0.5)).item() == pytest.approx(0.75)


def test_lsgan_known_values():
    loss = LSGANLoss()
    # 0.5*mean((3-1)^2, (1-1)^2) + 0.5*mean(2^2, 0^2) = 0.5*2 + 0.5*2 = 2
    assert loss.discriminator_loss(t(3.0, 1.0), t(2.0, 0.0)).item() == pytest.approx(2.0)
    # 0.5*mean((2-1)^2, (0-1)^2) = 0.5
    assert loss.generator_loss(t(2.0, 0.0)).item() == pytest.approx(0.5)


def test_wgan_values():
    loss = WGANGPLoss()
    assert loss.discriminator_loss(t(3.0, 1.0), t(-1.0, 0.0)).item() == pytest.approx(-0.5 - 2.0)
    assert loss.generator_loss(t(-1.0, 0.0)).item() == pytest.approx(0.5)


@pytest.mark.parametrize("norm, expected", [(1.0, 0.0), (2.0, 10.0), (0.5, 2.5)])
def test_gradient_penalty_on_linear_critic(norm, expected):
    """A linear critic has gradient w at every interpolate: GP = 10 * (||w|| - 1)^2."""
    torch.manual_seed(0)
    shape = (1, 4, 4)
    critic = Linear(unit(shape, norm))
    real = torch.randn(6, *shape, dtype=torch.float64)
    fake = torch.randn(6, *shape, dtype=torch.float64)
    gp = WGANGPLoss().penalty(critic, real, fake)
    assert gp.item() == pytest.approx(expected, abs=1e-12)
    assert WGANGPLoss(gp_weight=1.0).penalty(critic, real, fake).item() == pytest.approx(expected / 10, abs=1e-12)


def test_gradient_penalty_uses_interpolates_and_backpropagates():
    """For D(x) = 0.5 ||x||^2 the gradient at x_hat is x_hat itself."""

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

        def forward(self, x):
            return 0.5 * self.scale * x.flatten(1).pow(2).sum(1)

    critic = Quadratic()
    real = torch.full((3, 1, 2, 2), 1.0, dtype=torch.float64)  # ||x|| = 2
    fake = torch.full((3, 1, 2, 2), 1.0, dtype=torch.float64)
    # Real == fake, so every interpolate is that point whatever e is: GP = 10 * (2 - 1)^2.
    gp = WGANGPLoss().penalty(critic, real, fake)
    assert gp.item() == pytest.approx(10.0)
    gp.backward()
    # d/dscale 10 (2 scale - 1)^2 = 40 (2 scale - 1) * 1 = 40
    assert critic.scale.grad.item() == pytest.approx(40.0)
    # With real = 2 * fake, interpolates lie between: the norm is between 2 and 4.
    gp = WGANGPLoss(gp_weight=1.0).penalty(critic, 2 * real, fake).item()
    assert 1.0 <= gp <= 9.0


@pytest.mark.parametrize("cls", ALL)
def test_r1_penalty_on_every_loss(cls):
    """R1 = gamma/2 * ||grad D(real)||^2; for a linear critic with ||w|| = 3 and gamma = 2: 9."""
    shape = (1, 3, 3)
    critic = Linear(unit(shape, 3.0))
    real = torch.randn(4, *shape, dtype=torch.float64)
    fake = torch.randn(4, *shape, dtype=torch.float64)
    kwargs = {"gp_weight": 0.0} if cls is WGANGPLoss else {}
    assert cls(**kwargs).penalty(critic, real, fake) is None
    r1 = cls(r1_gamma=2.0, **kwargs).penalty(critic, real, fake)
    assert r1.item() == pytest.approx(9.0)
    r1.backward()
    # d/dw (||w||^2) = 2w
    assert torch.allclose(critic.w.grad, 2 * critic.w.detach())


def test_wgan_gp_adds_r1():
    shape = (1, 2, 2)
    critic = Linear(unit(shape, 2.0))
    real, fake = torch.randn(3, *shape, dtype=torch.float64), torch.randn(3, *shape, dtype=torch.float64)
    total = WGANGPLoss(r1_gamma=1.0).penalty(critic, real, fake).item()
    assert total == pytest.approx(10.0 * 1.0 + 0.5 * 4.0)


def test_penalty_works_under_no_grad():
    """The penalty needs input gradients even if the caller disabled autograd."""
    critic = Linear(unit((1, 2, 2), 2.0))
    real = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        value = HingeLoss(r1_gamma=1.0).penalty(critic, real, real)
    assert value.item() == pytest.approx(2.0)


@pytest.mark.parametrize("cls", ALL)
def test_losses_backpropagate_to_scores(cls):
    real = torch.randn(5, requires_grad=True)
    fake = torch.randn(5, requires_grad=True)
    loss = cls()
    loss.discriminator_loss(real, fake).backward()
    loss.generator_loss(fake).backward()
    assert real.grad is not None and fake.grad is not None


def test_penalties_run_in_float32_under_autocast():
    """Mixed precision must not change the penalty: it is computed with autocast off."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    loss = WGANGPLoss(r1_gamma=1.0)
    torch.manual_seed(1)
    plain = loss.penalty(critic, real, fake)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss.penalty(critic, real, fake)
    assert mixed.dtype == torch.float32
    assert mixed.item() == plain.item()
