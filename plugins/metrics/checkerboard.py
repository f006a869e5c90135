"""Checkerboard score: periodic up-sampling artifacts measured in the Fourier domain.

A stride-2 transposed convolution stamps a pattern with period 2 pixels on its output
(Odena, Dumoulin, Olah 2016, "Deconvolution and Checkerboard Artifacts"); two of them
in a row add period 4. In the 2-D power spectrum those patterns are sharp peaks at
fixed bins, while natural images have a smooth spectrum there. The score measures how
much those bins stand out from their neighbourhood.

Exact definition (``checkerboard_score``), for a batch of N images (N, C, H, W), H and W
even:

1. grey = mean over channels; subtract each image's own mean (removes the DC term);
2. P = mean over the N images of |FFT2(grey)|^2 (the average power spectrum, H x W,
   frequency index u for rows, v for columns, unshifted, so bin (u, v) has period
   H/u rows and W/v columns);
3. artifact bins: the Nyquist bins (H/2, 0), (0, W/2), (H/2, W/2) (period 2) and, when
   H and W are divisible by 4, the period-4 bins (H/4, 0), (0, W/4), (H/4, W/4),
   (H/4, 3W/4), (H/2, W/4), (H/4, W/2) -- every bin whose row and column periods are
   in {2, 4, none}, each conjugate pair (u, v) ~ (-u, -v) counted once;
4. for each artifact bin b: the reference level m_b = median of P over its neighbours
   (``reference_bins``): for an off-axis bin the 5x5 window centred on it minus the
   axis lines, for an on-axis bin (u = 0 or v = 0) the 3 bins either side along that
   axis (axes carry the energy of straight edges and image borders, so like is
   compared with like); b itself, the DC bin and the other artifact bins are never
   neighbours; indices wrap around, as the spectrum is periodic;
5. ratio_b = 10 log10((P[b] + eps) / (m_b + eps)) dB, with eps = 1e-6 x the mean of P
   over all non-DC bins (keeps an exactly empty bin finite, at most about -60 dB);
6. score = mean of ratio_b over the artifact bins, in dB.

Real photographs and digits score near 0 dB; a generator with checkerboard artifacts
scores well above 0; nearest-neighbour up-sampling (exactly no energy at Nyquist)
scores below 0. The metric reports the generator's score, the real data's score and
the difference ``fake - real`` (lower is better; 0 = as periodic as real images).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from gantool import Metric, Range
from gantool_plugins.metrics import reference

WINDOW = 2  # off-axis bins: a 5x5 window
AXIS_WINDOW = 3  # on-axis bins: 3 bins either side along the axis
EPS_REL = 1e-6


def power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Summed (not averaged) power spectrum of mean-subtracted grey images: (H, W) float64."""
    grey = images.detach().to("cpu", torch.float64).mean(1)
    grey = grey - grey.mean((1, 2), keepdim=True)
    return torch.fft.fft2(grey).abs().pow(2).sum(0)


def artifact_bins(height: int, width: int) -> dict[str, tuple[int, int]]:
    """The bins where period-2 and period-4 patterns put their energy, by name."""
    if height % 2 or width % 2:
        raise ValueError(f"checkerboard score needs even image sides, got {height}x{width}")
    h2, w2 = height // 2, width // 2
    bins = {"nyquist_rows": (h2, 0), "nyquist_cols": (0, w2), "nyquist_both": (h2, w2)}
    if height % 4 == 0 and width % 4 == 0:
        h4, w4 = height // 4, width // 4
        bins.update(
            {
                "p4_rows": (h4, 0),
                "p4_cols": (0, w4),
                "p4_diag": (h4, w4),
                "p4_anti": (h4, 3 * w4),
                "p4_rows_nyq_cols": (h4, w2),
                "p4_cols_nyq_rows": (h2, w4),
            }
        )
    return bins


def reference_bins(height: int, width: int, u: int, v: int) -> list[tuple[int, int]]:
    """The bins whose median is the reference level of artifact bin (u, v).

    Off-axis bins: the 5x5 window around (u, v) without the axis lines. On-axis bins
    (u = 0 or v = 0): the 3 bins either side along the same axis, because the axes carry
    the energy of horizontal/vertical edges and image borders, which the rest of the
    window lacks. In both cases the DC bin and all artifact bins are left out.
    """
    artifacts = set(artifact_bins(height, width).values()) | {(0, 0)}
    excluded = artifacts | {((-a) % height, (-b) % width) for a, b in artifacts}
    if u == 0 or v == 0:
        steps = [(0, d) if u == 0 else (d, 0) for d in range(-AXIS_WINDOW, AXIS_WINDOW + 1) if d]
    else:
        steps = [(du, dv) for du in range(-WINDOW, WINDOW + 1) for dv in range(-WINDOW, WINDOW + 1)]
    out = []
    for du, dv in steps:
        b = ((u + du) % height, (v + dv) % width)
        if b not in excluded and (u == 0 or v == 0 or (b[0] != 0 and b[1] != 0)):
            out.append(b)
    return out


def bin_ratios_db(spectrum: torch.Tensor) -> dict[str, float]:
    """Per artifact bin: its power relative to the median of its reference bins, in dB."""
    height, width = spectrum.shape
    bins = artifact_bins(height, width)
    mean_power = float(spectrum.sum() - spectrum[0, 0]) / max(height * width - 1, 1)
    if mean_power <= 0:
        return {name: 0.0 for name in bins}
    eps = EPS_REL * mean_power
    out = {}
    for name, (u, v) in bins.items():
        ref = reference_bins(height, width, u, v)
        level = float(torch.stack([spectrum[b] for b in ref]).median()) if ref else mean_power
        out[name] = 10.0 * math.log10((float(spectrum[u, v]) + eps) / (level + eps))
    return out


def _mean(ratios: dict[str, float]) -> float:
    return sum(ratios.values()) / len(ratios)


def checkerboard_score(images: torch.Tensor) -> float:
    """The checkerboard score (dB) of an image batch (N, C, H, W); see the module docstring."""
    return _mean(bin_ratios_db(power_spectrum(images)))


class Checkerboard(Metric):
    """Checkerboard artifacts: Nyquist and period-4 peaks of the average power spectrum.

    Returns ``checkerboard_fake_db`` (generated images), ``checkerboard_real_db`` (the
    same number of real images) and ``checkerboard_diff_db`` = fake - real, all in dB
    (see docs/models.md and this module's docstring for the exact definition). Around
    0 dB means no periodic artifacts; transposed-convolution generators score clearly
    above. Latents come from the metric's own seeded generator, never the global RNG; a
    conditional generator gets balanced labels (sample i is class i % num_classes).

    Args:
        seed: Seed of the latent vectors and of the choice of real images.
        batch_size: Images generated per forward pass.
    """

    goals = {"checkerboard_fake_db": "min", "checkerboard_real_db": "min", "checkerboard_diff_db": "min"}

    def __init__(self, *, seed: int = 0, batch_size: Annotated[int, Range(ge=1)] = 250):
        self.seed = seed
        self.batch_size = batch_size
        self._real = {}  # (id(dataset), n) -> (dataset, score); the real score never changes

    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        rng = torch.Generator(device="cpu").manual_seed(self.seed)
        fake = self.fake_spectrum(generator, n=n, device=device, rng=rng)
        # Only a conditional generator gets a protocol (its balanced labels), as in fid/kid/class_coverage.
        self.protocol = reference.fake_labels_protocol(generator) or None
        fake_db = _mean(bin_ratios_db(fake))
        real_db = self.real_score(dataset, n=n)
        return {"checkerboard_fake_db": fake_db, "checkerboard_real_db": real_db, "checkerboard_diff_db": fake_db - real_db}

    @torch.no_grad()
    def fake_spectrum(self, generator, *, n: int, device, rng: torch.Generator) -> torch.Tensor:
        # All latents drawn at once on the CPU from our own generator, then moved in
        # batches: the same images whatever the device and batch_size.
        latents = generator.sample_latent(n, device="cpu", generator=rng)
        labels = reference.fake_labels(generator, n)  # balanced over the classes; None if unconditional
        total = None
        for i, z in enumerate(latents.split(self.batch_size)):
            z = z.to(device, non_blocking=True)
            if labels is None:
                images = generator(z)
            else:
                images = generator(z, labels[i * self.batch_size : i * self.batch_size + len(z)].to(device))
            part = power_spectrum(images)
            total = part if total is None else total + part
        return total / n

    def real_score(self, dataset, *, n: int) -> float:
        key = (id(dataset), n)
        cached = self._real.get(key)
        if cached is not None and cached[0] is dataset:
            return cached[1]
        rng = torch.Generator(device="cpu").manual_seed(self.seed)
        index = torch.randperm(len(dataset), generator=rng)[: min(n, len(dataset))]
        whole = dataset.as_tensor() if hasattr(dataset, "as_tensor") else None
        total = None
        for chunk in index.split(self.batch_size):
            images = whole[chunk] if whole is not None else torch.stack([dataset[int(i)] for i in chunk])
            part = power_spectrum(images)
            total = part if total is None else total + part
        score = _mean(bin_ratios_db(total / len(index)))
        self._real[key] = (dataset, score)
        return score
