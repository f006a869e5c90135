"""Class-conditional dcgan / upsample_conv models, the projection discriminator, the acgan loss
and the label-aware penalties; and that unconditional models are built exactly as before."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gantool
from gantool.plugins import get_registry
from gantool_plugins.dcgan.models import DCGANDiscriminator, DCGANGenerator, ProjectionDiscriminator
from gantool_plugins.upsample_conv.models import ConditionalBatchNorm2d, UpsampleConvGenerator

K = 5  # classes
N = 6  # batch
LABELS = torch.tensor([0, 1, 2, 3, 4, 0])
OTHER = torch.tensor([1, 2, 3, 4, 0, 2])  # differs from LABELS everywhere
GENERATORS = {"dcgan": DCGANGenerator, "upsample_conv": UpsampleConvGenerator}
G_SIZES = [("dcgan", 28), ("dcgan", 32), ("dcgan", 64), ("upsample_conv", 28), ("upsample_conv", 32)]
CONDITION_BY = ["concat", "projection", "auxiliary"]


def registry():
    return get_registry()


def checksum(module: nn.Module) -> float:
    """An order- and shape-sensitive digest of all weights and buffers."""
    total = 0.0
    for value in module.state_dict().values():
        v = value.detach().double().flatten()
        total += float((v * torch.cos(torch.arange(len(v), dtype=torch.float64))).sum())
    return total


# Digests of models built under torch.manual_seed(0) by the code *before* conditioning existed,
# and the next torch.rand(1) after construction (so later draws in a run are unchanged too).
BEFORE = [
    ("G", 28, {"base_channels": 4, "latent_dim": 8}, 3.0439685459781773, 0.38178592920303345),
    ("G", 32, {"base_channels": 4, "latent_dim": 8}, 4.452133669935918, 0.30247366428375244),
    ("G", 64, {"base_channels": 4, "latent_dim": 8}, 5.39496601109178, 0.35518181324005127),
    ("D", 28, {"base_channels": 4}, 2.534736314627356, 0.3043578863143921),
    ("D", 32, {"base_channels": 4}, 5.348979488848333, 0.5898050665855408),
    ("D", 64, {"base_channels": 4}, 5.950799289000899, 0.4291635751724243),
    ("D", 32, {"base_channels": 4, "spectral_norm": True, "norm": "none"}, -1.375693460757614, 0.09442341327667236),
    ("D", 28, {"base_channels": 4, "norm": "layer", "dropout": 0.3}, 1.056482236313519, 0.3043578863143921),
    ("U", 28, {"base_channels": 4, "latent_dim": 8}, 2.7703750328261623, 0.27751386165618896),
    ("U", 32, {"base_channels": 4, "latent_dim": 8}, 4.228348255651582, 0.17421525716781616),
    ("U", 32, {"base_channels": 4, "latent_dim": 8, "upsample_mode": "bilinear", "kernel_size": 5,
               "padding_mode": "reflect"}, 5.131002898358655, 0.22405022382736206),
]
CLASSES = {"G": DCGANGenerator, "D": DCGANDiscriminator, "U": UpsampleConvGenerator}


# --- unconditional models are unchanged ---

@pytest.mark.parametrize("kind, size, params, digest, next_draw", BEFORE)
def test_unconditional_construction_is_bit_identical_to_before(kind, size, params, digest, next_draw):
    for extra in ({}, {"num_classes": 0}):
        torch.manual_seed(0)
        model = CLASSES[kind](image_shape=(3, size, size), **params, **extra)
        # Spectral norm's power iteration at construction rounds differently on other torch
        # versions (torch 2.4.1: 1.5e-8 relative); every other digest is the same there.
        rel = 1e-7 if params.get("spectral_norm") else 1e-12
        assert checksum(model) == pytest.approx(digest, rel=rel, abs=1e-12)
        assert torch.rand(1).item() == pytest.approx(next_draw, rel=0, abs=0)
        assert model.num_classes == 0
        assert not any(isinstance(m, nn.Embedding | ConditionalBatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("cls", [DCGANGenerator, UpsampleConvGenerator])
def test_unconditional_generator_rejects_labels(cls):
    g = cls(image_shape=(1, 28, 28), base_channels=4, latent_dim=8)
    z = torch.randn(N, 8)
    assert g(z).shape == (N, 1, 28, 28)
    with pytest.raises(ValueError, match="unconditional"):
        g(z, LABELS)


def test_unconditional_discriminator_rejects_labels():
    d = DCGANDiscriminator(image_shape=(1, 28, 28), base_channels=4, condition_by="auxiliary")
    scores = d(torch.randn(N, 1, 28, 28))
    assert torch.is_tensor(scores) and scores.shape == (N,)  # no extras when unconditional
    with pytest.raises(ValueError, match="unconditional"):
        d(torch.randn(N, 1, 28, 28), LABELS)


def test_conditioning_declarations_and_injected_num_classes():
    assert DCGANGenerator.conditioning == UpsampleConvGenerator.conditioning == "optional"
    assert DCGANDiscriminator.conditioning == "optional"
    assert ProjectionDiscriminator.conditioning == "required"
    reg = registry()
    for kind, name in [("generator", "dcgan"), ("generator", "upsample_conv"), ("discriminator", "dcgan"),
                       ("discriminator", "projection")]:
        _, params = reg.parameters(kind, name)
        names = [p.name for p in params]
        assert "num_classes" not in names and "image_shape" not in names
        assert all(p.doc for p in params), f"{kind} {name}: undocumented parameter"
        with pytest.raises(gantool.GantoolError, match="num_classes.*set by the engine"):
            reg.build(kind, name, {"num_classes": 3}, image_shape=(1, 28, 28))
    assert "label_dim" in [p.name for p in reg.parameters("generator", "dcgan")[1]]
    assert "condition_by" in [p.name for p in reg.parameters("discriminator", "dcgan")[1]]
    assert "condition_by" not in [p.name for p in reg.parameters("discriminator", "projection")[1]]


# --- conditional generators ---

def _generator(name, size, channels=3, **kw):
    torch.manual_seed(0)
    return registry().build("generator", name, {"base_channels": 4, "latent_dim": 8, **kw},
                            image_shape=(channels, size, size), num_classes=K)


@pytest.mark.parametrize("name, size", G_SIZES)
def test_conditional_generator_shapes_and_labels_matter(name, size):
    g = _generator(name, size)
    assert g.num_classes == K
    z = torch.randn(N, 8)
    x = g(z, LABELS)
    assert x.shape == (N, 3, size, size) and x.abs().max() <= 1
    assert not torch.allclose(g(z, OTHER), x)
    # In eval mode each image depends on its own label only (nothing mixes across the batch).
    g.eval()
    with torch.no_grad():
        before = g(z, LABELS)
        changed = LABELS.clone()
        changed[0] = 3
        after = g(z, changed)
    assert not torch.allclose(after[0], before[0])
    assert torch.equal(after[1:], before[1:])
    with pytest.raises(ValueError, match="pass labels"):
        g(z)
    with pytest.raises(ValueError, match="shape"):
        g(z, LABELS[:2])


@pytest.mark.parametrize("name, size", G_SIZES)
def test_conditional_generator_gradients_reach_the_embeddings(name, size):
    g = _generator(name, size, channels=1)
    out = g(torch.randn(N, 8), LABELS)
    (out * torch.randn_like(out)).sum().backward()
    embeddings = [m for m in g.modules() if isinstance(m, nn.Embedding)]
    assert embeddings
    for e in embeddings:
        assert e.weight.grad is not None
        used = e.weight.grad[LABELS.unique()]
        assert used.abs().sum() > 0
        assert e.weight.grad[LABELS.max() + 1:].abs().sum() == 0  # classes not in the batch get none


def test_dcgan_generator_joins_the_label_embedding_to_z():
    g = _generator("dcgan", 32, label_dim=7)
    assert g.embed.weight.shape == (K, 7)
    assert g.net[0].in_channels == 8 + 7
    assert sum(isinstance(m, nn.BatchNorm2d) and m.affine for m in g.modules()) == 3  # plain BN, as unconditional


def test_upsample_conv_uses_conditional_batch_norm():
    g = registry().build("generator", "upsample_conv", {"base_channels": 16}, image_shape=(3, 32, 32),
                         num_classes=10)
    cbns = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbns) == 3  # every hidden norm: after the projection and the two hidden up-sampling blocks
    assert all(not m.bn.affine for m in cbns)
    assert not any(isinstance(m, nn.BatchNorm2d) and m.affine for m in g.modules())
    gains = torch.cat([m.embed.weight[:, : m.channels].flatten() for m in cbns])
    biases = torch.cat([m.embed.weight[:, m.channels :].flatten() for m in cbns])
    assert gains.mean().item() == pytest.approx(1.0, abs=0.01)
    assert gains.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.count_nonzero(biases) == 0


def test_conditional_batch_norm_is_a_per_class_affine():
    cbn = ConditionalBatchNorm2d(2, 3)
    with torch.no_grad():
        cbn.embed.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [2.0, 3.0, 0.5, -1.0], [0.0, 0.0, 1.0, 1.0]]))
    x = torch.randn(4, 2, 3, 3)
    labels = torch.tensor([0, 1, 2, 1])
    normed = F.batch_norm(x, None, None, training=True)
    out = cbn(x, labels)
    assert torch.allclose(out[0], normed[0], atol=1e-6)
    assert torch.allclose(out[1], normed[1] * torch.tensor([2.0, 3.0]).view(2, 1, 1)
                          + torch.tensor([0.5, -1.0]).view(2, 1, 1), atol=1e-6)
    assert torch.allclose(out[2], torch.ones_like(out[2]))


# --- conditional discriminators ---

def _discriminator(size, condition_by, channels=3, **kw):
    torch.manual_seed(0)
    params = {"base_channels": 4, "condition_by": condition_by, **kw}
    return registry().build("discriminator", "dcgan", params, image_shape=(channels, size, size), num_classes=K)


def _scores(output):
    return gantool.split_scores(output)[0]


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("condition_by", CONDITION_BY)
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_conditional_discriminator_shapes_and_gradients(size, condition_by, norm):
    d = _discriminator(size, condition_by, norm=norm, spectral_norm=norm == "none")
    assert d.num_classes == K
    x = (torch.rand(N, 3, size, size) * 2 - 1).requires_grad_(True)
    output = d(x, LABELS)
    scores, extras = gantool.split_scores(output)
    assert scores.shape == (N,) and torch.isfinite(scores).all()
    if condition_by == "auxiliary":
        assert isinstance(output, tuple) and set(extras) == {"class_logits"}
        assert extras["class_logits"].shape == (N, K)
        loss = scores.sum() + F.cross_entropy(extras["class_logits"], LABELS)
    else:
        assert torch.is_tensor(output) and not extras
        loss = (scores * torch.randn(N)).sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G learns through D's input gradient
    missing = [n for n, p in d.named_parameters() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    with pytest.raises(ValueError, match="pass labels"):
        d(x)


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("condition_by", ["concat", "projection"])
def test_labels_change_the_scores(size, condition_by):
    d = _discriminator(size, condition_by).eval()
    x = torch.rand(N, 3, size, size) * 2 - 1
    with torch.no_grad():
        before = d(x, LABELS)
        assert not torch.allclose(d(x, OTHER), before)
        changed = LABELS.clone()
        changed[2] = 0
        after = d(x, changed)
    assert after[2] != before[2]
    assert torch.equal(torch.cat([after[:2], after[3:]]), torch.cat([before[:2], before[3:]]))


def test_concat_joins_a_label_map_as_an_extra_input_channel():
    d = _discriminator(28, "concat", channels=1)
    assert d.net[0].in_channels == 2
    assert d.label_map.weight.shape == (K, 28 * 28)
    x = torch.rand(N, 1, 28, 28)
    d(x, LABELS).sum().backward()
    assert d.label_map.weight.grad[LABELS.unique()].abs().sum() > 0


def test_projection_adds_the_inner_product_with_the_pooled_features():
    """score = final conv(h) + <embed(y), sum over space of h>; zero embeddings leave the plain score."""
    d = _discriminator(32, "projection").eval()
    x = torch.rand(N, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        features = d.net[:-1](x)
        plain = d.net[-1](features).reshape(N)
        expected = plain + (d.embed.weight[LABELS] * features.sum((2, 3))).sum(1)
        assert torch.allclose(d(x, LABELS), expected, atol=1e-6)
        d.embed.weight.zero_()
        assert torch.allclose(d(x, OTHER), plain, atol=1e-6)


def test_auxiliary_scores_ignore_the_labels():
    d = _discriminator(28, "auxiliary").eval()
    x = torch.rand(N, 3, 28, 28) * 2 - 1
    with torch.no_grad():
        (s1, e1), (s2, e2) = d(x, LABELS), d(x, OTHER)
    assert torch.equal(s1, s2) and torch.equal(e1["class_logits"], e2["class_logits"])


@pytest.mark.parametrize("condition_by", CONDITION_BY)
def test_conditional_discriminator_supports_double_backprop(condition_by):
    d = _discriminator(28, condition_by, norm="layer")
    x = torch.rand(N, 3, 28, 28).requires_grad_(True)
    (grad,) = torch.autograd.grad(_scores(d(x, LABELS)).sum(), x, create_graph=True)
    grad.pow(2).sum().backward()
    # Every weight the score's input gradient depends on gets a gradient (not the final bias, nor the class head).
    missing = {n for n, p in d.named_parameters() if p.grad is None}
    head = {"classifier.weight", "classifier.bias"} if condition_by == "auxiliary" else set()
    assert missing == {"net.5.bias"} | head


def test_projection_discriminator_defaults_and_num_classes_error():
    reg = registry()
    d = reg.build("discriminator", "projection", {"base_channels": 4}, image_shape=(1, 28, 28), num_classes=K)
    assert isinstance(d, ProjectionDiscriminator) and d.condition_by == "projection"
    assert not any(isinstance(m, nn.BatchNorm2d | nn.GroupNorm) for m in d.modules())  # norm = "none"
    assert nn.utils.parametrize.is_parametrized(d.embed, "weight")  # spectral norm, the embedding included
    assert all(nn.utils.parametrize.is_parametrized(m, "weight") for m in d.modules() if isinstance(m, nn.Conv2d))
    assert d(torch.rand(N, 1, 28, 28), LABELS).shape == (N,)
    with pytest.raises(gantool.GantoolError) as info:
        reg.build("discriminator", "projection", {}, image_shape=(1, 28, 28), num_classes=0)
    message = str(info.value)
    assert "num_classes" in message and "\n" not in message
    with pytest.raises(gantool.ParamError) as info:
        ProjectionDiscriminator(image_shape=(1, 28, 28))
    assert info.value.param == "num_classes"
    with pytest.raises(gantool.GantoolError, match="condition_by"):
        reg.build("discriminator", "projection", {"condition_by": "concat"}, image_shape=(1, 28, 28), num_classes=K)


# --- the acgan loss ---

def _ctx(real_logits=None, fake_logits=None, **kw):
    real_extras = {} if real_logits is None else {"class_logits": real_logits}
    fake_extras = {} if fake_logits is None else {"class_logits": fake_logits}
    kw.setdefault("discriminator", nn.Identity())
    return gantool.StepContext(step=0, batch=0, generator=nn.Identity(), real=torch.zeros(N, 1, 4, 4),
                               fake=torch.zeros(N, 1, 4, 4), real_labels=LABELS, fake_labels=OTHER,
                               real_extras=real_extras, fake_extras=fake_extras, **kw)


@pytest.mark.parametrize("adversarial", ["ns", "hinge"])
@pytest.mark.parametrize("class_weight", [1.0, 0.5])
def test_acgan_loss_values_and_gradients(adversarial, class_weight):
    torch.manual_seed(0)
    loss = registry().build("loss", "acgan", {"adversarial": adversarial, "class_weight": class_weight})
    assert loss.conditioning == "required"
    real_scores, fake_scores = torch.randn(N, requires_grad=True), torch.randn(N, requires_grad=True)
    real_logits, fake_logits = torch.randn(N, K, requires_grad=True), torch.randn(N, K, requires_grad=True)
    ctx = _ctx(real_logits, fake_logits)
    if adversarial == "ns":
        adv_d = F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
        adv_g = F.softplus(-fake_scores).mean()
    else:
        adv_d = F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
        adv_g = -fake_scores.mean()
    ce_real, ce_fake = F.cross_entropy(real_logits, LABELS), F.cross_entropy(fake_logits, OTHER)

    d = loss.discriminator_loss(real_scores, fake_scores, ctx)
    assert d.item() == pytest.approx((adv_d + class_weight * (ce_real + ce_fake)).item(), rel=1e-6)
    g = loss.generator_loss(None, fake_scores, ctx)
    assert g.item() == pytest.approx((adv_g + class_weight * ce_fake).item(), rel=1e-6)

    d.backward()
    assert real_logits.grad.abs().sum() > 0 and fake_logits.grad.abs().sum() > 0
    expected = torch.autograd.grad(class_weight * ce_real, real_logits)[0]
    assert torch.allclose(real_logits.grad, expected, atol=1e-7)

    accuracy = ctx.stats["class_acc_real"]
    assert torch.is_tensor(accuracy)
    assert accuracy.item() == pytest.approx((real_logits.argmax(1) == LABELS).float().mean().item())
    assert "class_acc_fake" in ctx.stats
    assert ("d_real" if adversarial == "ns" else "score_real") in ctx.stats


def test_acgan_without_classify_fakes_trains_the_class_head_on_real_images_only():
    loss = registry().build("loss", "acgan", {"classify_fakes": False})
    real_logits, fake_logits = torch.randn(N, K, requires_grad=True), torch.randn(N, K, requires_grad=True)
    d = loss.discriminator_loss(torch.zeros(N), torch.zeros(N), _ctx(real_logits, fake_logits))
    assert d.item() == pytest.approx(2 * F.softplus(torch.zeros(1)).item() + F.cross_entropy(real_logits, LABELS).item())
    real_grad, fake_grad = torch.autograd.grad(d, [real_logits, fake_logits], allow_unused=True)
    assert real_grad is not None and fake_grad is None
    g = loss.generator_loss(None, torch.zeros(N), _ctx(real_logits, fake_logits))  # G still needs its class term
    assert torch.autograd.grad(g, fake_logits)[0].abs().sum() > 0


def test_acgan_loss_needs_class_logits():
    loss = registry().build("loss", "acgan", {})
    scores = torch.zeros(N)
    for ctx in (_ctx(), _ctx(real_logits=torch.zeros(N, K))):
        with pytest.raises(gantool.GantoolError) as info:
            loss.discriminator_loss(scores, scores, ctx)
        message = str(info.value)
        assert "\n" not in message and "auxiliary classifier" in message and 'condition_by = "auxiliary"' in message
    with pytest.raises(gantool.GantoolError, match="auxiliary classifier"):
        loss.generator_loss(None, scores, _ctx())


def test_acgan_parameters_are_validated():
    reg = registry()
    with pytest.raises(gantool.GantoolError, match="class_weight"):
        reg.build("loss", "acgan", {"class_weight": -1.0})
    with pytest.raises(gantool.GantoolError, match="adversarial"):
        reg.build("loss", "acgan", {"adversarial": "wgan"})
    _, params = reg.parameters("loss", "acgan")
    assert {p.name for p in params} == {"adversarial", "class_weight", "classify_fakes", "r1_gamma", "r1_every"}
    assert all(p.doc for p in params)


def test_acgan_trains_an_auxiliary_dcgan_discriminator():
    """The whole path: D's extras -> StepContext -> acgan loss -> gradients in D's class head, R1 with labels."""
    d = _discriminator(28, "auxiliary", channels=1, norm="layer")
    real, fake = torch.rand(N, 1, 28, 28) * 2 - 1, torch.rand(N, 1, 28, 28) * 2 - 1
    real_scores, real_extras = gantool.split_scores(d(real, LABELS))
    fake_scores, fake_extras = gantool.split_scores(d(fake, OTHER))
    ctx = gantool.StepContext(step=0, batch=0, generator=nn.Identity(), discriminator=d, real=real, fake=fake,
                              real_labels=LABELS, fake_labels=OTHER, real_extras=real_extras, fake_extras=fake_extras)
    loss = registry().build("loss", "acgan", {"r1_gamma": 1.0})
    total = loss.discriminator_loss(real_scores, fake_scores, ctx) + loss.penalty(ctx)
    total.backward()
    assert d.classifier.weight.grad.abs().sum() > 0
    assert "r1" in ctx.stats


# --- penalties with labels ---

class LabelLinear(nn.Module):
    """D(x, y) = <w_y, x>: the input gradient is w_y. Without labels it refuses, like a conditional D."""

    def __init__(self, norms, shape=(1, 3, 3), extras=False):
        super().__init__()
        w = torch.randn(len(norms), math.prod(shape), dtype=torch.float64)
        self.w = nn.Parameter(w / w.norm(dim=1, keepdim=True) * torch.tensor(norms, dtype=torch.float64)[:, None])
        self.extras = extras

    def forward(self, x, labels=None):
        if labels is None:
            raise ValueError("labels required")
        scores = (x.flatten(1) * self.w[labels]).sum(1)
        return (scores, {"class_logits": torch.zeros(len(x), 2)}) if self.extras else scores


NORMS = [1.0, 2.0, 3.0, 0.5, 4.0]


@pytest.mark.parametrize("extras", [False, True])
def test_r1_uses_the_real_labels(extras):
    critic = LabelLinear(NORMS, extras=extras)
    ctx = _ctx(discriminator=critic)
    ctx.real = torch.randn(N, 1, 3, 3, dtype=torch.float64)
    r1 = registry().build("loss", "hinge", {"r1_gamma": 2.0}).penalty(ctx)
    expected = sum(NORMS[y] ** 2 for y in LABELS.tolist()) / N  # gamma/2 * mean ||w_y||^2
    assert r1.item() == pytest.approx(expected)
    r1.backward()
    assert critic.w.grad[LABELS.unique()].abs().sum() > 0


def test_wgan_gp_scores_interpolates_with_the_real_labels():
    critic = LabelLinear(NORMS)
    ctx = _ctx(discriminator=critic)
    ctx.real = torch.randn(N, 1, 3, 3, dtype=torch.float64)
    ctx.fake = torch.randn(N, 1, 3, 3, dtype=torch.float64)
    gp = registry().build("loss", "wgan_gp", {}).penalty(ctx)
    expected = 10 * sum((NORMS[y] - 1) ** 2 for y in LABELS.tolist()) / N  # linear critic: gradient w_y anywhere
    assert gp.item() == pytest.approx(expected)
    with_fake_labels = 10 * sum((NORMS[y] - 1) ** 2 for y in OTHER.tolist()) / N
    assert expected != pytest.approx(with_fake_labels)
    gp.backward()
    assert critic.w.grad is not None


def test_penalties_on_a_conditional_dcgan_discriminator():
    for condition_by in CONDITION_BY:
        d = _discriminator(32, condition_by, norm="none", spectral_norm=True)
        ctx = gantool.StepContext(step=0, batch=0, generator=nn.Identity(), discriminator=d,
                                  real=torch.rand(N, 3, 32, 32), fake=torch.rand(N, 3, 32, 32),
                                  real_labels=LABELS, fake_labels=OTHER)
        value = registry().build("loss", "wgan_gp", {"r1_gamma": 1.0}).penalty(ctx)
        assert value.dim() == 0 and torch.isfinite(value)
        value.backward()
        assert {"gp", "r1"} <= set(ctx.stats)
