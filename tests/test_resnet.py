"""The SNGAN ResNet generator and discriminator (plugins/resnet) and their recipes."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn.utils import parametrize

from conftest import ROOT
from gantool import testing
from gantool.cli import cli
from gantool.errors import ParamError
from gantool_plugins.resnet.models import D_BLOCKS, G_SHIFTS, GBlock, ResNetDiscriminator, ResNetGenerator
from gantool_plugins.upsample_conv.models import ConditionalBatchNorm2d

SIZES = (32, 64, 128)
SMALL = 16  # the smallest base_channels that halves 4 times (64 and 128 px)


def expected_generator_params(size: int, base: int, latent_dim: int = 128, channels: int = 3) -> int:
    """Parameters of the SNGAN generator, counted from its description (not from the module)."""
    ws = [base >> s for s in G_SHIFTS[size]]
    total = latent_dim * 16 * ws[0] + 16 * ws[0]  # linear z -> 4x4 map
    for c_in, c_out in zip(ws, ws[1:]):
        total += 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out  # two 3x3 convolutions
        total += c_in * c_out + c_out  # 1x1 shortcut
        total += 2 * c_in + 2 * c_out  # two batch norms
    return total + 2 * ws[-1] + 9 * ws[-1] * channels + channels  # output BN and conv


def expected_discriminator_params(size: int, base: int, channels: int = 3) -> int:
    """Parameters of the SNGAN discriminator, counted from its description."""
    total, c_in = 0, channels
    for i, (shift, down) in enumerate(D_BLOCKS[size]):
        c_out = base >> shift
        hidden = c_out if i == 0 else c_in
        total += 9 * c_in * hidden + hidden + 9 * hidden * c_out + c_out
        if i == 0 or down or c_in != c_out:
            total += c_in * c_out + c_out
        c_in = c_out
    return total + c_in + 1  # linear -> 1


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("num_classes", [0, 5])
def test_output_shapes(size, num_classes):
    torch.manual_seed(0)
    shape = (3, size, size)
    G = ResNetGenerator(image_shape=shape, latent_dim=8, base_channels=SMALL, num_classes=num_classes)
    D = ResNetDiscriminator(image_shape=shape, base_channels=SMALL, num_classes=num_classes)
    labels = (torch.arange(2) % 5,) if num_classes else ()
    images = G(G.sample_latent(2), *labels)
    assert images.shape == (2, *shape) and images.abs().max() <= 1
    assert D(images, *labels).shape == (2,)
    assert len(G.blocks) == {32: 3, 64: 4, 128: 5}[size]


def test_default_parameter_counts():
    """At the default widths the counts are those of the SNGAN architecture.

    32 px: G 4,276,739 and D 1,053,825 parameters, Mimicry's SNGAN-32 (about 4.3 M and 1.0 M);
    64 px: G 12,220,675, D 10,141,441; 128 px: G 32,150,787, D 29,017,857.
    """
    counts = {}
    for size in SIZES:
        G, D = ResNetGenerator(image_shape=(3, size, size)), ResNetDiscriminator(image_shape=(3, size, size))
        counts[size] = (count(G), count(D))
        g_base, d_base = {32: (256, 128)}.get(size, (1024, 1024))
        assert counts[size] == (expected_generator_params(size, g_base), expected_discriminator_params(size, d_base))
    assert counts == {32: (4_276_739, 1_053_825), 64: (12_220_675, 10_141_441), 128: (32_150_787, 29_017_857)}


@pytest.mark.parametrize("size", SIZES)
def test_spectral_norm_on_every_discriminator_weight(size):
    D = ResNetDiscriminator(image_shape=(3, size, size), base_channels=SMALL, num_classes=4)
    layers = [m for m in D.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding)]
    assert len(layers) == 2 * len(D_BLOCKS[size]) + sum(1 for i, (s, d) in enumerate(D_BLOCKS[size])
                                                        if i == 0 or d) + 2  # + shortcuts, linear, embedding
    for layer in layers:
        assert parametrize.is_parametrized(layer, "weight"), layer
        assert type(layer.parametrizations.weight[0]).__name__ == "_SpectralNorm"
    plain = [n for n, _ in D.named_parameters() if n.endswith("weight") and "parametrizations" not in n]
    assert plain == []
    # The normalised weights have spectral norm ~1 after a few power iterations in train mode.
    D.train()
    for _ in range(20):
        D(torch.zeros(1, 3, size, size), torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        for layer in (D.linear, D.blocks[-1].c2):
            sigma = torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2)
            assert float(sigma) == pytest.approx(1.0, rel=1e-2), layer


def test_generator_has_no_spectral_norm_and_conditional_batch_norm_only_when_labelled():
    G = ResNetGenerator(image_shape=(3, 32, 32), latent_dim=8, base_channels=8)
    assert not any(parametrize.is_parametrized(m) for m in G.modules())
    assert not any(isinstance(m, ConditionalBatchNorm2d) for m in G.modules())
    G = ResNetGenerator(image_shape=(3, 32, 32), latent_dim=8, base_channels=8, num_classes=3)
    assert sum(isinstance(m, ConditionalBatchNorm2d) for m in G.modules()) == 6  # two per block
    assert isinstance(G.bn_out, nn.BatchNorm2d)  # the output norm is shared by all classes


def test_generator_block_is_the_paper_block():
    """GBlock computes BN, ReLU, nearest x2, conv3x3, BN, ReLU, conv3x3 + (x2, conv1x1), in float64."""
    torch.manual_seed(0)
    block = GBlock(6, 4, 0).double()
    x = torch.randn(3, 6, 5, 5, dtype=torch.float64)
    up = nn.functional.interpolate
    h = block.c1(up(torch.relu(block.b1(x)), scale_factor=2))
    expected = block.c2(torch.relu(block.b2(h))) + block.c_sc(up(x, scale_factor=2))
    torch.testing.assert_close(block(x, None), expected, rtol=1e-12, atol=1e-12)


def test_conditional_builds_use_their_labels():
    torch.manual_seed(0)
    G = ResNetGenerator(image_shape=(3, 32, 32), latent_dim=8, base_channels=8, num_classes=3).eval()
    D = ResNetDiscriminator(image_shape=(3, 32, 32), base_channels=8, num_classes=3).eval()
    z, x = torch.randn(4, 8), torch.rand(4, 3, 32, 32) * 2 - 1
    zeros, twos = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    assert not torch.allclose(G(z, zeros), G(z, twos))
    assert not torch.allclose(D(x, zeros), D(x, twos))
    # The projection term is exactly <embed(y), sum-pooled features>: D without it is the unconditional score.
    features = torch.relu(D.blocks(x)).sum((2, 3))
    assert torch.allclose(D(x, twos), D.linear(features).reshape(4) + (D.embed(twos) * features).sum(1), atol=1e-5)
    with pytest.raises(ValueError, match="pass labels"):
        G(z)
    with pytest.raises(ValueError, match="built unconditional"):
        ResNetDiscriminator(image_shape=(3, 32, 32), base_channels=8)(x, zeros)


@pytest.mark.parametrize("shape", [(3, 48, 48), (3, 32, 64), (1, 16, 16)])
def test_unsupported_sizes_name_the_supported_ones(shape):
    for factory in (ResNetGenerator, ResNetDiscriminator):
        with pytest.raises(ParamError, match=r"square images of size 32, 64, 128, got \d+x\d+"):
            factory(image_shape=shape)


def test_base_channels_too_small_to_halve():
    with pytest.raises(ParamError, match="at least 16 at 64 px"):
        ResNetGenerator(image_shape=(3, 64, 64), base_channels=8)
    ResNetGenerator(image_shape=(3, 32, 32), base_channels=1)  # 32 px keeps one width


def test_generator_contract():
    testing.check_generator("resnet", {"latent_dim": 8, "base_channels": 4}, image_shapes=[(3, 32, 32), (1, 32, 32)])
    testing.check_generator("gantool:resnet", {"latent_dim": 8, "base_channels": SMALL}, image_shapes=[(3, 64, 64)])


def test_discriminator_contract():
    testing.check_discriminator("resnet", {"base_channels": 4}, image_shapes=[(3, 32, 32), (1, 32, 32)])
    testing.check_discriminator("gantool:resnet", {"base_channels": SMALL}, image_shapes=[(3, 64, 64)])


STAND_INS = {  # random images of the recipes' shapes: their data cannot be here
    "sngan_cifar10": ["dataset.type=fake", "dataset.image_size=32", "dataset.channels=3", "dataset.size=40",
                      "train.batch_size=8"],
    "sngan_folder": ["dataset.type=fake", "dataset.image_size=64", "dataset.channels=3", "dataset.size=40",
                     "train.batch_size=8"],
}


def overrides(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.parametrize("name", list(STAND_INS))
def test_recipes_pass_check(name):
    result = CliRunner().invoke(cli, ["check", str(ROOT / "recipes" / f"{name}.toml"), *overrides(STAND_INS[name])])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "gantool:resnet" in result.output and "gantool:linear" in result.output


@pytest.mark.parametrize("conditional", [False, True])
def test_tiny_run_at_32px(tmp_path, conditional):
    """Three G steps of the CIFAR-10 recipe (5 D steps each) on random images, small widths."""
    args = STAND_INS["sngan_cifar10"] + [
        "run.device=cpu", "generator.latent_dim=8", "generator.base_channels=8", "discriminator.base_channels=8",
        "train.max_steps=3", "train.log_every=1", "train.sample_grid=4", "train.sample_every=0",
        "train.checkpoint_every=0", "eval.metrics=[]",
    ] + (["dataset.num_classes=3", "train.conditional=true"] if conditional else [])
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(ROOT / "recipes" / "sngan_cifar10.toml"), "--out", str(out),
                                      *overrides(args)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_d"] for r in records if "loss_d" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert (out / "checkpoints" / "last.safetensors").exists()
