"""FID and KID: distances between real and generated images in a feature space.

FID (Heusel et al. 2017) fits a Gaussian to each feature set and reports the Fréchet
distance between them; KID (Bińkowski et al. 2018) is the unbiased MMD² with the cubic
polynomial kernel, averaged over random subsets, which is unbiased for small sample counts
where FID is not. Both take ``features = "digits"`` (the shipped classifier; the default,
right for MNIST-like data) or ``"inception"`` (Inception-v3: a local file, or the FID weights fetched once).

Scores are only comparable under the same protocol, so each metric leaves a JSON-ready
description of the last computation in ``self.protocol`` (extractor and its weights digest,
n_real, n_fake, which real images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch

from gantool import GantoolError, Metric, ParamError, Range
from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics import reference


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½), in float64.

    tr((S1 S2)^½) is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix S1^½ S2 S1^½ (same spectrum as S1 S2). Unlike a general matrix
    square root (scipy.linalg.sqrtm) this never goes complex, and it stays exact when the
    covariances are singular (fewer samples than feature dimensions).
    """
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    w, v = torch.linalg.eigh(sigma1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    m = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    value = diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return max(float(value), 0.0)  # rounding can leave -1e-12 for identical sets


def kernel_inception_distance(real, fake, *, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """Mean and standard deviation over ``subsets`` of the unbiased MMD² estimate.

    Kernel k(x, y) = (x·y / d + 1)³; each subset draws ``subset_size`` real and fake
    features without replacement (the reference implementation's protocol).
    """
    real, fake = real.to(torch.float64), fake.to(torch.float64)
    d = real.shape[1]
    m = min(subset_size, len(real), len(fake))
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=g)[:m]]
        y = fake[torch.randperm(len(fake), generator=g)[:m]]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - kxx.trace()) + (kyy.sum() - kyy.trace())) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(mmd)
    values = torch.stack(values)
    std = values.std().item() if len(values) > 1 else 0.0
    return values.mean().item(), std


class _FeatureMetric(Metric):
    """Shared parameters and plumbing of feature-space metrics."""

    def __init__(self, *, features: str, n_real: int, inception_weights: str, batch_size: int, seed: int):
        if inception_weights and self.may_use_inception(features):  # without: the FID weights, fetched at first use
            try:
                feats.check_inception_path(Path(inception_weights).expanduser())
            except Exception as e:  # noqa: BLE001 - reported as a parameter problem
                raise ParamError("inception_weights", str(e).removeprefix("inception_weights: ")) from None
        self.features = features
        self.n_real = n_real
        self.inception_weights = inception_weights
        self.batch_size = batch_size
        self.seed = seed
        self.protocol: dict = {}

    @staticmethod
    def may_use_inception(features: str) -> bool:
        """Whether ``inception_weights`` matters for ``features`` (so a bad path is refused when built)."""
        return features == "inception"

    def _extractor(self, device):
        return feats.get_extractor(self.features, device=device, inception_weights=self.inception_weights)

    def _fake(self, generator, extractor, n, device):
        if n < 2:
            raise GantoolError(f"{type(self).__name__.lower()} needs at least 2 generated samples (n), got {n}")
        return reference.fake_features(generator, extractor, n, seed=self.seed, batch_size=self.batch_size, device=device)

    def _protocol(self, extractor, real_info, n_fake, **extra):
        return {
            "features": self.features,
            "extractor": extractor.id,
            "n_real": real_info["n_real"],
            "n_fake": n_fake,
            "reference": real_info["reference"],
            "reference_digest": real_info["reference_digest"],
            "latent_seed": self.seed,
            "fake_quantized": "8-bit",
            **extra,
        }


class FID(_FeatureMetric):
    """Fréchet distance between Gaussians fitted to real and generated features (lower is better).

    With ``features = "digits"`` scores are on the shipped classifier's 128-d feature scale:
    not comparable to published Inception FIDs, but comparable between gantool runs.

    Args:
        features: Feature space: "digits" (shipped MNIST classifier) or "inception" (FID weights, fetched once).
        n_real: Real images for the reference statistics; capped at the dataset size.
        inception_weights: Local safetensors Inception-v3 weights (torchvision, FID-Inception); empty: the FID weights.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation) and the choice of real images.
    """

    goals = {"fid": "min"}

    def __init__(
        self,
        *,
        features: Literal["digits", "inception"] = "digits",
        n_real: Annotated[int, Range(ge=2)] = 5000,
        inception_weights: str = "",
        batch_size: Annotated[int, Range(ge=1)] = 250,
        seed: int = 0,
    ):
        super().__init__(features=features, n_real=n_real, inception_weights=inception_weights,
                         batch_size=batch_size, seed=seed)

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        extractor = self._extractor(device)
        mu_r, sigma_r, real_info = reference.real_stats(dataset, extractor, n_real=self.n_real, seed=self.seed)
        mu_f, sigma_f = reference.mean_cov(self._fake(generator, extractor, n, device))
        self.protocol = self._protocol(extractor, real_info, n, **reference.fake_labels_protocol(generator))
        return {"fid": frechet_distance(mu_r, sigma_r, mu_f, sigma_f)}


class KID(_FeatureMetric):
    """Kernel Inception Distance: unbiased polynomial-kernel MMD² over random subsets (lower is better).

    Reports ``kid`` (mean over subsets) and ``kid_std``. Unbiased, so it can be slightly
    negative when the two sets are indistinguishable.

    Args:
        features: Feature space: "digits" (shipped MNIST classifier) or "inception" (FID weights, fetched once).
        n_real: Real images in the reference set; capped at the dataset size.
        subsets: Number of random subsets averaged.
        subset_size: Samples per subset (capped at n_real and n).
        inception_weights: Local safetensors Inception-v3 weights (torchvision, FID-Inception); empty: the FID weights.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents, the choice of real images and the subsets.
    """

    goals = {"kid": "min", "kid_std": "min"}

    def __init__(
        self,
        *,
        features: Literal["digits", "inception"] = "digits",
        n_real: Annotated[int, Range(ge=2)] = 5000,
        subsets: Annotated[int, Range(ge=1)] = 100,
        subset_size: Annotated[int, Range(ge=2)] = 1000,
        inception_weights: str = "",
        batch_size: Annotated[int, Range(ge=1)] = 250,
        seed: int = 0,
    ):
        super().__init__(features=features, n_real=n_real, inception_weights=inception_weights,
                         batch_size=batch_size, seed=seed)
        self.subsets = subsets
        self.subset_size = subset_size

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        extractor = self._extractor(device)
        real, real_info = reference.real_features(dataset, extractor, n_real=self.n_real, seed=self.seed)
        fake = self._fake(generator, extractor, n, device)
        mean, std = kernel_inception_distance(real, fake, subsets=self.subsets, subset_size=self.subset_size,
                                              seed=self.seed)
        m = min(self.subset_size, len(real), len(fake))
        self.protocol = self._protocol(extractor, real_info, n, subsets=self.subsets, subset_size=m,
                                       **reference.fake_labels_protocol(generator))
        return {"kid": mean, "kid_std": std}
