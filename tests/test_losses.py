"""Loss values on known scores, gradient penalties on critics with known gradients, and the
port to the StepContext contract: same numbers as before, statistics, lazy R1, relativistic losses."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gantool
from gantool.params import validate
from gantool.plugins import get_registry
from gantool_plugins.losses.losses import BCELoss

LN2 = math.log(2)
OLD = ["bce", "ns", "minimax", "hinge", "lsgan", "wgan_gp"]
RELATIVISTIC = ["rasgan", "ralsgan", "rahinge"]
ALL = OLD + RELATIVISTIC


def build(name, **params):
    return get_registry().build("loss", name, params)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


class TinyD(nn.Module):
    """(N, 1, 8, 8) -> (N,), nonlinear so input gradients differ per sample."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(64, 1))

    def forward(self, x):
        return self.net(x).flatten()


def make_ctx(batch=0, discriminator=None, real=None, fake=None):
    real = torch.randn(4, 1, 8, 8) if real is None else real
    fake = torch.randn_like(real) if fake is None else fake
    return gantool.StepContext(step=0, batch=batch, generator=nn.Identity(), discriminator=discriminator or TinyD(),
                               real=real, fake=fake)


def d_loss(loss, real, fake):
    return loss.discriminator_loss(real, fake, make_ctx())


def g_loss(loss, fake, real=None):
    if real is None and loss.generator_needs_real_scores:
        raise AssertionError("pass real scores")
    return loss.generator_loss(real, fake, make_ctx())


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


# --- the old (pre-StepContext) formulas, written out: the port must reproduce them bit for bit ---

def old_input_gradient(discriminator, x):
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad.flatten(1)


def old_r1(discriminator, real, gamma):
    return 0.5 * gamma * old_input_gradient(discriminator, real).pow(2).sum(1).mean()


def old_gp(discriminator, real, fake, gp_weight):
    real, fake = real.detach(), fake.detach()
    e = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = e * real + (1 - e) * fake
    norms = old_input_gradient(discriminator, x_hat).norm(2, dim=1)
    return gp_weight * (norms - 1).pow(2).mean()


def old_bce_d(r, f, real_label=1.0):
    return (F.binary_cross_entropy_with_logits(r, torch.full_like(r, real_label))
            + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))


OLD_FORMULAS = {  # name: (D loss of (real, fake), G loss of fake)
    "bce": (old_bce_d, lambda f: F.softplus(-f).mean()),
    "ns": (old_bce_d, lambda f: F.softplus(-f).mean()),
    "minimax": (old_bce_d, lambda f: -F.softplus(f).mean()),
    "hinge": (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(), lambda f: -f.mean()),
    "lsgan": (lambda r, f: 0.5 * (r - 1).pow(2).mean() + 0.5 * f.pow(2).mean(), lambda f: 0.5 * (f - 1).pow(2).mean()),
    "wgan_gp": (lambda r, f: f.mean() - r.mean(), lambda f: -f.mean()),
}


@pytest.mark.parametrize("name", OLD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ported_losses_give_the_old_numbers_exactly(name, dtype):
    gen = torch.Generator().manual_seed(123)
    real = (3 * torch.randn(64, generator=gen)).to(dtype).requires_grad_(True)
    fake = (3 * torch.randn(64, generator=gen)).to(dtype).requires_grad_(True)
    old_d, old_g = OLD_FORMULAS[name]
    loss = build(name)
    new, ref = loss.discriminator_loss(real, fake, make_ctx()), old_d(real, fake)
    assert torch.equal(new, ref)
    assert all(map(torch.equal, torch.autograd.grad(new, (real, fake)), torch.autograd.grad(ref, (real, fake))))
    new, ref = loss.generator_loss(None, fake, make_ctx()), old_g(fake)
    assert torch.equal(new, ref)
    assert torch.equal(torch.autograd.grad(new, fake)[0], torch.autograd.grad(ref, fake)[0])
    if name in ("bce", "ns", "minimax"):
        smoothed = build(name, real_label=0.9).discriminator_loss(real, fake, make_ctx())
        assert torch.equal(smoothed, old_bce_d(real, fake, 0.9))


@pytest.mark.parametrize("name", ALL)
def test_r1_gives_the_old_numbers_exactly(name):
    torch.manual_seed(0)
    ctx = make_ctx()
    params = {"gp_weight": 0.0} if name == "wgan_gp" else {}
    assert build(name, **params).penalty(ctx) is None
    new = build(name, r1_gamma=0.7, **params).penalty(ctx)
    ref = old_r1(ctx.discriminator, ctx.real, 0.7)
    assert torch.equal(new, ref)
    weights = [p for p in ctx.discriminator.parameters() if p.dim() > 1]  # biases do not move input gradients
    grads = [torch.autograd.grad(v, weights) for v in (new, ref)]
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_wgan_gp_penalty_gives_the_old_numbers_exactly():
    torch.manual_seed(0)
    ctx = make_ctx()
    loss = build("wgan_gp", r1_gamma=0.5)
    torch.manual_seed(7)
    new = loss.penalty(ctx)
    torch.manual_seed(7)
    ref = old_gp(ctx.discriminator, ctx.real, ctx.fake, 10.0) + old_r1(ctx.discriminator, ctx.real, 0.5)
    assert torch.equal(new, ref)
    torch.manual_seed(7)
    new = build("wgan_gp", gp_weight=3.0).penalty(ctx)
    torch.manual_seed(7)
    assert torch.equal(new, old_gp(ctx.discriminator, ctx.real, ctx.fake, 3.0))


# --- known values of the classic losses ---

def test_bce_at_zero_logits_is_log2():
    loss = build("bce")
    assert d_loss(loss, t(0, 0), t(0, 0)).item() == pytest.approx(2 * LN2)
    assert g_loss(loss, t(0, 0)).item() == pytest.approx(LN2)


def test_bce_known_values():
    loss = build("bce")
    # D(x) = 2 on real, -1 on fake: -log s(2) - log(1 - s(-1)) = softplus(-2) + softplus(-1)
    expected = math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))
    assert d_loss(loss, t(2.0), t(-1.0)).item() == pytest.approx(expected)
    # Non-saturating G: -log s(-1) = softplus(1)
    assert g_loss(loss, t(-1.0)).item() == pytest.approx(math.log1p(math.e))
    # Agrees with torch's BCEWithLogits (the DCGAN reference implementation).
    real, fake = t(0.3, -1.2, 4.0), t(-0.5, 2.0, 0.1)
    ref = nn.BCEWithLogitsLoss()
    assert d_loss(loss, real, fake).item() == pytest.approx(
        (ref(real, torch.ones_like(real)) + ref(fake, torch.zeros_like(fake))).item()
    )
    assert g_loss(loss, fake).item() == pytest.approx(ref(fake, torch.ones_like(fake)).item())


def test_ns_is_bce():
    real, fake = t(0.3, -1.2), t(-0.5, 2.0)
    assert d_loss(build("ns"), real, fake) == d_loss(build("bce"), real, fake)
    assert g_loss(build("ns"), fake) == g_loss(build("bce"), fake)


def test_one_sided_label_smoothing():
    loss = build("bce", real_label=0.9)
    # real term: -(0.9 log s(0) + 0.1 log(1 - s(0))) = log 2; fake term unchanged.
    assert d_loss(loss, t(0.0), t(0.0)).item() == pytest.approx(2 * LN2)
    s = 3.0
    real_term = 0.9 * math.log1p(math.exp(-s)) + 0.1 * math.log1p(math.exp(s))
    assert d_loss(loss, t(s), t(-50.0)).item() == pytest.approx(real_term, abs=1e-12)
    # One-sided: the fake target and G's target are untouched.
    assert g_loss(loss, t(1.0)).item() == g_loss(build("bce"), t(1.0)).item()
    with pytest.raises(Exception, match="real_label"):
        validate(BCELoss, {"real_label": 0.0})
    with pytest.raises(gantool.GantoolError, match="real_label"):
        build("bce", real_label=0.0)


def test_minimax_generator_saturates():
    loss = build("minimax")
    # G minimises log(1 - s(D(G(z)))): log(1 - s(0)) = -log 2
    assert g_loss(loss, t(0.0)).item() == pytest.approx(-LN2)
    # Saturation: when D rejects fakes confidently, the minimax gradient vanishes while
    # the non-saturating one does not.
    s = t(-8.0).requires_grad_(True)
    (g_minimax,) = torch.autograd.grad(g_loss(loss, s), s)
    s2 = t(-8.0).requires_grad_(True)
    (g_ns,) = torch.autograd.grad(g_loss(build("bce"), s2), s2)
    assert abs(g_minimax.item()) == pytest.approx(1 / (1 + math.exp(8)))  # sigmoid(-8)
    assert abs(g_ns.item()) == pytest.approx(1 / (1 + math.exp(-8)))  # 1 - sigmoid(-8)
    assert d_loss(loss, t(2.0), t(-1.0)) == d_loss(build("bce"), t(2.0), t(-1.0))


def test_hinge_known_values():
    loss = build("hinge")
    # relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25 ; relu(1-2)=0, relu(1+0.5)=1.5 -> 0.75
    assert d_loss(loss, t(2.0, 0.5), t(-2.0, 0.5)).item() == pytest.approx(1.0)
    assert g_loss(loss, t(-2.0, 0.5)).item() == pytest.approx(0.75)


def test_lsgan_known_values():
    loss = build("lsgan")
    # 0.5*mean((3-1)^2, (1-1)^2) + 0.5*mean(2^2, 0^2) = 0.5*2 + 0.5*2 = 2
    assert d_loss(loss, t(3.0, 1.0), t(2.0, 0.0)).item() == pytest.approx(2.0)
    # 0.5*mean((2-1)^2, (0-1)^2) = 0.5
    assert g_loss(loss, t(2.0, 0.0)).item() == pytest.approx(0.5)


def test_wgan_values():
    loss = build("wgan_gp")
    assert d_loss(loss, t(3.0, 1.0), t(-1.0, 0.0)).item() == pytest.approx(-0.5 - 2.0)
    assert g_loss(loss, t(-1.0, 0.0)).item() == pytest.approx(0.5)


# --- gradient penalties ---

@pytest.mark.parametrize("norm, expected", [(1.0, 0.0), (2.0, 10.0), (0.5, 2.5)])
def test_gradient_penalty_on_linear_critic(norm, expected):
    """A linear critic has gradient w at every interpolate: GP = 10 * (||w|| - 1)^2."""
    torch.manual_seed(0)
    shape = (1, 4, 4)
    ctx = make_ctx(discriminator=Linear(unit(shape, norm)), real=torch.randn(6, *shape, dtype=torch.float64))
    # The input gradient is float32 by design (_input_gradient): torch 2.4.1 gives 9.999998.
    assert build("wgan_gp").penalty(ctx).item() == pytest.approx(expected, abs=1e-5)
    assert build("wgan_gp", gp_weight=1.0).penalty(ctx).item() == pytest.approx(expected / 10, abs=1e-6)


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
    gp = build("wgan_gp").penalty(make_ctx(discriminator=critic, real=real, fake=fake))
    assert gp.item() == pytest.approx(10.0)
    gp.backward()
    # d/dscale 10 (2 scale - 1)^2 = 40 (2 scale - 1) * 1 = 40
    assert critic.scale.grad.item() == pytest.approx(40.0)
    # With real = 2 * fake, interpolates lie between: the norm is between 2 and 4.
    gp = build("wgan_gp", gp_weight=1.0).penalty(make_ctx(discriminator=critic, real=2 * real, fake=fake)).item()
    assert 1.0 <= gp <= 9.0


@pytest.mark.parametrize("name", ALL)
def test_r1_penalty_on_every_loss(name):
    """R1 = gamma/2 * ||grad D(real)||^2; for a linear critic with ||w|| = 3 and gamma = 2: 9."""
    shape = (1, 3, 3)
    critic = Linear(unit(shape, 3.0))
    ctx = make_ctx(discriminator=critic, real=torch.randn(4, *shape, dtype=torch.float64))
    params = {"gp_weight": 0.0} if name == "wgan_gp" else {}
    r1 = build(name, r1_gamma=2.0, **params).penalty(ctx)
    assert r1.item() == pytest.approx(9.0)
    assert ctx.stats["r1"].item() == pytest.approx(9.0)
    r1.backward()
    # d/dw (||w||^2) = 2w
    assert torch.allclose(critic.w.grad, 2 * critic.w.detach())


def test_wgan_gp_adds_r1():
    shape = (1, 2, 2)
    ctx = make_ctx(discriminator=Linear(unit(shape, 2.0)), real=torch.randn(3, *shape, dtype=torch.float64))
    total = build("wgan_gp", r1_gamma=1.0).penalty(ctx).item()
    assert total == pytest.approx(10.0 * 1.0 + 0.5 * 4.0)
    assert ctx.stats["gp"].item() == pytest.approx(10.0)
    assert ctx.stats["r1"].item() == pytest.approx(2.0)


def test_penalty_works_under_no_grad():
    """The penalty needs input gradients even if the caller disabled autograd."""
    real = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    ctx = make_ctx(discriminator=Linear(unit((1, 2, 2), 2.0)), real=real, fake=real)
    with torch.no_grad():
        value = build("hinge", r1_gamma=1.0).penalty(ctx)
    assert value.item() == pytest.approx(2.0)


def test_penalties_run_in_float32_under_autocast():
    """Mixed precision must not change the penalty: it is computed with autocast off."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    ctx = make_ctx(discriminator=critic, real=torch.randn(4, 1, 4, 4), fake=torch.randn(4, 1, 4, 4))
    loss = build("wgan_gp", r1_gamma=1.0)
    torch.manual_seed(1)
    plain = loss.penalty(ctx)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss.penalty(ctx)
    assert mixed.dtype == torch.float32
    assert mixed.item() == plain.item()


# --- lazy R1 ---

@pytest.mark.parametrize("name", ["hinge", "bce", "wgan_gp"])
def test_lazy_r1_runs_every_kth_batch_scaled_by_k(name):
    torch.manual_seed(0)
    real, fake, D = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), TinyD()
    params = {"gp_weight": 0.0} if name == "wgan_gp" else {}
    loss = build(name, r1_gamma=2.0, r1_every=4, **params)
    r1 = old_r1(D, real, 2.0)
    for batch in range(9):
        ctx = make_ctx(batch=batch, discriminator=D, real=real, fake=fake)
        value = loss.penalty(ctx)
        if batch % 4:
            assert value is None and "r1" not in ctx.stats
        else:
            assert torch.equal(value, 4 * r1)
            assert torch.equal(ctx.stats["r1"], r1.detach())  # logged unscaled: comparable across r1_every


def test_lazy_r1_leaves_the_gradient_penalty_on_every_batch():
    torch.manual_seed(0)
    loss = build("wgan_gp", r1_gamma=1.0, r1_every=2)
    ctx = make_ctx(batch=1)
    torch.manual_seed(3)
    value = loss.penalty(ctx)
    torch.manual_seed(3)
    assert torch.equal(value, old_gp(ctx.discriminator, ctx.real, ctx.fake, 10.0))
    assert "r1" not in ctx.stats and "gp" in ctx.stats


def test_r1_every_is_validated():
    with pytest.raises(gantool.GantoolError, match="r1_every"):
        build("hinge", r1_every=0)
    with pytest.raises(gantool.GantoolError, match="r1_every"):
        build("bce", r1_every=1.5)


# --- relativistic average losses ---

def test_relativistic_known_values():
    # real - mean(fake) = [0, -1]; fake - mean(real) = [0, 1]
    real, fake = t(0.5, -0.5), t(0.0, 1.0)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  softplus
    expected = {  # name: (D, G)
        # D: (mean(sp(-[0, -1])) + mean(sp([0, 1]))) / 2; G: (mean(sp(-[0, 1])) + mean(sp([0, -1]))) / 2
        "rasgan": ((LN2 + sp(1)) / 2, (LN2 + sp(-1)) / 2),
        # D: (mean(([0, -1] - 1)^2) + mean(([0, 1] + 1)^2)) / 2 = (2.5 + 2.5) / 2
        # G: (mean(([0, 1] - 1)^2) + mean(([0, -1] + 1)^2)) / 2 = (0.5 + 0.5) / 2
        "ralsgan": (2.5, 0.5),
        # D: (mean(relu(1 - [0, -1])) + mean(relu(1 + [0, 1]))) / 2 = (1.5 + 1.5) / 2
        # G: (mean(relu(1 + [0, -1])) + mean(relu(1 - [0, 1]))) / 2 = (0.5 + 0.5) / 2
        "rahinge": (1.5, 0.5),
    }
    for name, (d, g) in expected.items():
        loss = build(name)
        assert d_loss(loss, real, fake).item() == pytest.approx(d, abs=1e-12), name
        assert g_loss(loss, fake, real).item() == pytest.approx(g, abs=1e-12), name
    # Scores D cannot tell apart: RaSGAN is log 2 (the mean of two BCEs, not their sum).
    assert d_loss(build("rasgan"), t(0.3, 0.3), t(0.3, 0.3)).item() == pytest.approx(LN2)


def test_relativistic_match_the_reference_code():
    """The formulas of github.com/AlexiaJM/RelativisticGAN (code/GAN_losses_iter.py), on random scores."""
    gen = torch.Generator().manual_seed(5)
    r, f = torch.randn(32, generator=gen, dtype=torch.float64), torch.randn(32, generator=gen, dtype=torch.float64)
    bce = nn.BCEWithLogitsLoss()
    one, zero = torch.ones_like(r), torch.zeros_like(r)
    ref = {
        "rasgan": ((bce(r - f.mean(), one) + bce(f - r.mean(), zero)) / 2,
                   (bce(r - f.mean(), zero) + bce(f - r.mean(), one)) / 2),
        "ralsgan": ((((r - f.mean() - 1) ** 2).mean() + ((f - r.mean() + 1) ** 2).mean()) / 2,
                    (((r - f.mean() + 1) ** 2).mean() + ((f - r.mean() - 1) ** 2).mean()) / 2),
        "rahinge": ((F.relu(1 - (r - f.mean())).mean() + F.relu(1 + (f - r.mean())).mean()) / 2,
                    (F.relu(1 + (r - f.mean())).mean() + F.relu(1 - (f - r.mean())).mean()) / 2),
    }
    for name, (d, g) in ref.items():
        loss = build(name)
        torch.testing.assert_close(d_loss(loss, r, f), d)
        torch.testing.assert_close(g_loss(loss, f, r), g)


@pytest.mark.parametrize("name", RELATIVISTIC)
def test_relativistic_gradients(name):
    loss = build(name)
    assert loss.generator_needs_real_scores is True
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(6, generator=gen)
    fake = torch.randn(6, generator=gen).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss.generator_loss(real, fake, make_ctx()), fake)
    assert grad.abs().sum() > 0
    # Real scores carrying D's graph must not leak gradient into them from G's loss.
    real_d = real.clone().requires_grad_(True)
    loss.generator_loss(real_d, fake, make_ctx()).backward()
    assert real_d.grad is None
    # D's loss reaches both.
    real_d, fake_d = real.clone().requires_grad_(True), fake.detach().clone().requires_grad_(True)
    loss.discriminator_loss(real_d, fake_d, make_ctx()).backward()
    assert real_d.grad.abs().sum() > 0 and fake_d.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="real scores"):
        loss.generator_loss(None, fake, make_ctx())


@pytest.mark.parametrize("name", OLD)
def test_classic_losses_do_not_ask_for_real_scores_in_g(name):
    assert build(name).generator_needs_real_scores is False


# --- statistics, shapes, documentation ---

STATS = {
    "bce": {"d_real", "d_fake"},
    "ns": {"d_real", "d_fake"},
    "minimax": {"d_real", "d_fake"},
    "hinge": {"score_real", "score_fake"},
    "lsgan": {"score_real", "score_fake"},
    "wgan_gp": {"score_real", "score_fake", "wasserstein"},
    "rasgan": {"score_real", "score_fake"},
    "ralsgan": {"score_real", "score_fake"},
    "rahinge": {"score_real", "score_fake"},
}


@pytest.mark.parametrize("name", ALL)
def test_discriminator_loss_logs_its_statistics(name):
    real = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    fake = torch.tensor([-3.0, 0.0, 1.0], requires_grad=True)
    ctx = make_ctx()
    build(name).discriminator_loss(real, fake, ctx)
    assert set(ctx.stats) == STATS[name]
    for value in ctx.stats.values():
        assert value.dim() == 0 and value.dtype == torch.float32 and not value.requires_grad
    if "d_real" in STATS[name]:
        assert ctx.stats["d_real"].item() == pytest.approx(torch.sigmoid(real).mean().item())
        assert ctx.stats["d_fake"].item() == pytest.approx(torch.sigmoid(fake).mean().item())
    else:
        assert ctx.stats["score_real"].item() == pytest.approx(0.5)
        assert ctx.stats["score_fake"].item() == pytest.approx(-2 / 3)
    if name == "wgan_gp":
        assert ctx.stats["wasserstein"].item() == pytest.approx(0.5 + 2 / 3)
    # The generator update logs nothing of D's.
    ctx = make_ctx()
    build(name).generator_loss(real.detach(), fake, ctx)
    assert "d_real" not in ctx.stats and "score_real" not in ctx.stats


def test_hinge_logs_no_probabilities():
    ctx = make_ctx()
    build("hinge").discriminator_loss(t(1.0, 2.0), t(0.0, -1.0), ctx)
    assert "d_real" not in ctx.stats and "d_fake" not in ctx.stats


def test_wgan_gp_logs_gp_from_penalty():
    torch.manual_seed(0)
    ctx = make_ctx()
    gp = build("wgan_gp").penalty(ctx)
    assert torch.equal(ctx.stats["gp"], gp.detach())


@pytest.mark.parametrize("name", ALL)
def test_every_loss_returns_a_scalar_and_backpropagates(name):
    torch.manual_seed(0)
    real = torch.randn(5, requires_grad=True)
    fake = torch.randn(5, requires_grad=True)
    loss = build(name, r1_gamma=1.0)
    ctx = make_ctx()
    d = loss.discriminator_loss(real, fake, ctx)
    g = loss.generator_loss(real.detach(), fake, ctx)
    p = loss.penalty(ctx)
    assert d.dim() == 0 and g.dim() == 0 and p.dim() == 0
    d.backward()
    g.backward()
    assert real.grad is not None and fake.grad is not None


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_is_documented(name):
    """`gantool info loss NAME` shows the Args docstring section: no parameter may be missing."""
    _, params = get_registry().parameters("loss", name)
    assert {"r1_gamma", "r1_every"} <= {p.name for p in params}
    for p in params:
        assert p.doc, f"{name}: {p.name} is undocumented"
    assert "Lazy R1" in next(p.doc for p in params if p.name == "r1_every")
