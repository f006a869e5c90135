"""Diversity and memorisation from nearest neighbours in a feature space: works on any image data.

FID summarises two Gaussians; a generator that repeats a handful of good images can still score
well, and the class histogram (``class_coverage``) only reads digits. These three metrics look at
nearest-neighbour distances between individual samples instead:

- ``prdc``: precision, recall, density and coverage (Kynkäänniemi et al. 2019, "Improved Precision
  and Recall Metric for Assessing Generative Models"; Naeem et al. 2020, "Reliable Fidelity and
  Diversity Metrics for Generative Models"), with k-nearest-neighbour balls;
- ``duplicates``: the birthday-paradox test of Arora & Zhang (2018, "Do GANs learn the
  distribution?"), automated: near-duplicate pairs among generated samples, with the threshold
  and a baseline taken from real data, and the support size they imply;
- ``memorisation``: how close each generated image is to its nearest training image, relative to
  how close real images lie to each other (copies of training images score near 0).

All three share ``features = "auto"``: Inception when its weights are at hand, the shipped digit
classifier for 28 px grey images, else a fixed random conv embedding (``features.RandomFeatures``;
Naeem et al. show random embeddings are informative for these metrics). Distances are Euclidean
(``torch.cdist`` in float64), computed in row blocks so memory stays O(block x n).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch

from gantool import GantoolError, Range
from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics import reference
from gantool_plugins.metrics.distances import _FeatureMetric

BLOCK = 1024  # rows of a distance block: 1024 x 5000 float64 = 40 MB


# --- Nearest-neighbour primitives (float64, blockwise) -------------------------------------------


def _blocks(x: torch.Tensor):
    for i in range(0, len(x), BLOCK):
        yield i, x[i : i + BLOCK]


def kth_neighbour_distance(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest *other* row (self excluded by index)."""
    x = x.to(torch.float64)
    out = torch.empty(len(x), dtype=torch.float64)
    for i, block in _blocks(x):
        d = torch.cdist(block, x)
        d[torch.arange(len(block)), torch.arange(i, i + len(block))] = math.inf
        out[i : i + len(block)] = d.topk(k, dim=1, largest=False).values[:, -1]
    return out


def nearest(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``x``: the distance to its nearest row of ``y`` and that row's index."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    dist, index = torch.empty(len(x), dtype=torch.float64), torch.empty(len(x), dtype=torch.int64)
    for i, block in _blocks(x):
        dist[i : i + len(block)], index[i : i + len(block)] = torch.cdist(block, y).min(dim=1)
    return dist, index


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake`` against ``real`` with k-NN balls.

    The formulas of Naeem et al.'s reference code (github.com/clovaai/generative-evaluation-prdc):
    a sample lies in a ball when its distance is strictly below the ball's k-NN radius.
    """
    real, fake = real.to(torch.float64), fake.to(torch.float64)
    real_radius, fake_radius = kth_neighbour_distance(real, k), kth_neighbour_distance(fake, k)
    in_real_balls = 0  # fakes inside at least one real ball (precision)
    ball_hits = 0  # (fake, real ball) pairs (density)
    covered = torch.zeros(len(real), dtype=torch.bool)  # real balls holding a fake (coverage)
    recalled = torch.zeros(len(real), dtype=torch.bool)  # reals inside a fake ball (recall)
    for i, block in _blocks(fake):
        d = torch.cdist(block, real)  # (fakes, reals)
        inside = d < real_radius[None, :]
        in_real_balls += int(inside.any(dim=1).sum())
        ball_hits += int(inside.sum())
        covered |= inside.any(dim=0)
        recalled |= (d < fake_radius[i : i + len(block), None]).any(dim=0)
    return {
        "precision": in_real_balls / len(fake),
        "recall": float(recalled.double().mean()),
        "density": ball_hits / (k * len(fake)),
        "coverage": float(covered.double().mean()),
    }


def close_pairs(x: torch.Tensor, threshold: float) -> int:
    """Unordered pairs of distinct rows of ``x`` at distance <= ``threshold``."""
    x = x.to(torch.float64)
    count = 0
    for i, block in _blocks(x):
        d = torch.cdist(block, x)
        count += int((d <= threshold).sum()) - len(block)  # minus each row with itself
    return count // 2


# --- Shared plumbing -------------------------------------------------------------------------------


class _NeighbourMetric(_FeatureMetric):
    """Feature-space resolution and protocol shared by the nearest-neighbour metrics (parameters: FID's)."""

    name = ""

    @staticmethod
    def may_use_inception(features: str) -> bool:
        return True  # "auto" may resolve to inception, and a bad path is refused whatever the space

    def _features(self, generator, dataset, n: int, device, *, min_real: int):
        """(real features, fake features, extractor, real-side protocol) in the resolved space."""
        if n < 2:
            raise GantoolError(f"{self.name} needs at least 2 generated samples (n), got {n}")
        space = feats.resolve_features(self.features, dataset.image_shape, inception_weights=self.inception_weights)
        extractor = feats.get_extractor(space, device=device, inception_weights=self.inception_weights)
        real, real_info = reference.real_features(dataset, extractor, n_real=self.n_real, seed=self.seed)
        if len(real) < min_real:
            raise GantoolError(f"{self.name} needs at least {min_real} real images; got {len(real)} "
                               f"(raise [eval.{self.name}] n_real or use a larger dataset)")
        fake = reference.fake_features(generator, extractor, n, seed=self.seed, batch_size=self.batch_size,
                                       device=device)
        return real, fake, extractor, real_info

    def _shuffled(self, real: torch.Tensor) -> torch.Tensor:
        """The reference features in a seeded random order, so splits of it are random (not by class)."""
        return real[torch.randperm(len(real), generator=torch.Generator().manual_seed(self.seed))]

    def _protocol(self, generator, extractor, real_info, **extra) -> dict:
        space = extractor.describe() if hasattr(extractor, "describe") else {"name": extractor.name,
                                                                              "dim": extractor.dim}
        return {
            "features": extractor.name,
            "features_requested": self.features,
            "extractor": extractor.id,
            "feature_space": space,
            "reference": real_info["reference"],
            "reference_digest": real_info["reference_digest"],
            "latent_seed": self.seed,
            "fake_quantized": "8-bit",
            "distance": "euclidean",
            **extra,
            **reference.fake_labels_protocol(generator),
        }


# --- The metrics -------------------------------------------------------------------------------------


class PRDC(_NeighbourMetric):
    """Precision, recall, density and coverage of generated vs real images with k-NN balls (higher is better).

    precision: share of samples inside some real image's k-NN ball (fidelity); recall: share of
    real images inside some sample's ball (diversity); density: how many real balls hold a sample,
    over k (about 1 when matched; above 1 for samples crowded where real data is dense); coverage:
    share of real balls holding a sample (diversity, robust to outliers). A generator that repeats a
    few images keeps its precision but loses recall and coverage.

    Args:
        features: Feature space: "auto" (inception if its weights are available, digits for 28 px
            grey images, else random), "inception", "digits" or "random" (a fixed seeded conv net).
        k: Nearest neighbour whose distance sets each ball's radius.
        n_real: Real images in the reference set (capped at the dataset size); min(n, n_real) of them
            are compared.
        inception_weights: Local safetensors file with Inception-v3 weights; empty: the standard FID weights.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation) and the choice of real images.
    """

    name = "prdc"
    goals = {"precision": "max", "recall": "max", "density": "max", "coverage": "max"}

    def __init__(
        self,
        *,
        features: Literal["auto", "inception", "digits", "random"] = "auto",
        k: Annotated[int, Range(ge=1)] = 5,
        n_real: Annotated[int, Range(ge=2)] = 5000,
        inception_weights: str = "",
        batch_size: Annotated[int, Range(ge=1)] = 250,
        seed: int = 0,
    ):
        super().__init__(features=features, n_real=n_real, inception_weights=inception_weights,
                         batch_size=batch_size, seed=seed)
        self.k = k

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        if n <= self.k:
            raise GantoolError(f"prdc needs more generated samples than k = {self.k} (n = {n})")
        real, fake, extractor, real_info = self._features(generator, dataset, n, device, min_real=self.k + 1)
        real = self._shuffled(real)[: min(n, len(real))]  # n real vs n fake, as Naeem et al. compare
        self.protocol = self._protocol(generator, extractor, real_info, k=self.k, n_real=len(real), n_fake=n)
        return prdc(real, fake, self.k)


class Duplicates(_NeighbourMetric):
    """Near-duplicate rate among generated samples vs real ones: the birthday-paradox test (lower is better).

    Two images are near-duplicates when their features lie closer than the ``quantile`` of the
    nearest-neighbour distances within a set of real images. On s samples (s = min(n, n_real // 2)),
    ``duplicates`` is the share of generated samples with a near-duplicate among the others and
    ``duplicates_real`` the same share among s other real images (about ``quantile``, measured on
    a second real set; 0.05 by default because rarer tails make a noisy threshold at s in the
    thousands); ``duplicates_ratio`` = (fake count + 1) /
    (real count + 1). ``support_size`` = pairs / near-duplicate pairs: for a uniform distribution
    over N images a random pair collides with probability 1 / N (Arora & Zhang: a batch of
    about sqrt(N) holds a duplicate half the time). With no duplicate pair it is pairs / 1, a lower
    bound; ``support_size_real`` is the same for the real images at the same resolution.

    Args:
        features: Feature space: "auto" (inception if its weights are available, digits for 28 px
            grey images, else random), "inception", "digits" or "random" (a fixed seeded conv net).
        quantile: Quantile of real-vs-real nearest-neighbour distances below which two images are
            near-duplicates.
        n_real: Real images in the reference set (capped at the dataset size); two disjoint sets of s
            are used.
        inception_weights: Local safetensors file with Inception-v3 weights; empty: the standard FID weights.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation) and the choice and split of real images.
    """

    name = "duplicates"
    goals = {"duplicates": "min", "duplicates_ratio": "min", "support_size": "max"}

    def __init__(
        self,
        *,
        features: Literal["auto", "inception", "digits", "random"] = "auto",
        quantile: Annotated[float, Range(gt=0, lt=1)] = 0.05,
        n_real: Annotated[int, Range(ge=4)] = 5000,
        inception_weights: str = "",
        batch_size: Annotated[int, Range(ge=1)] = 250,
        seed: int = 0,
    ):
        super().__init__(features=features, n_real=n_real, inception_weights=inception_weights,
                         batch_size=batch_size, seed=seed)
        self.quantile = quantile

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        real, fake, extractor, real_info = self._features(generator, dataset, n, device, min_real=4)
        s = min(n, len(real) // 2)
        real = self._shuffled(real)
        # The threshold comes from one real set and the real baseline from another, so the baseline
        # is measured, not fixed by construction; all three sets have s images (NN distances shrink with s).
        calibration, baseline, fake = real[:s], real[s : 2 * s], fake[:s]
        threshold = float(torch.quantile(kth_neighbour_distance(calibration, 1), self.quantile))
        fake_dups = int((kth_neighbour_distance(fake, 1) <= threshold).sum())
        real_dups = int((kth_neighbour_distance(baseline, 1) <= threshold).sum())
        pairs = s * (s - 1) // 2
        self.protocol = self._protocol(generator, extractor, real_info, quantile=self.quantile,
                                       threshold=threshold, n_real=2 * s, n_fake=s, sample_size=s)
        return {
            "duplicates": fake_dups / s,
            "duplicates_real": real_dups / s,
            "duplicates_ratio": (fake_dups + 1) / (real_dups + 1),
            "support_size": pairs / max(close_pairs(fake, threshold), 1),
            "support_size_real": pairs / max(close_pairs(baseline, threshold), 1),
        }


class Memorisation(_NeighbourMetric):
    """How close generated images lie to training images, relative to real-vs-real distances (copies score ~0).

    For each generated image x with nearest reference (training) image t: ratio = d(x, t) / d(t, t'),
    where t' is t's own nearest other reference image, so dense regions (where real images lie close
    together anyway) are not mistaken for copies. ``memorisation_copies`` is the share of samples with
    ratio < ``threshold``, ``memorisation_median`` their median ratio. The ``_real`` keys are the
    same for held-out real images (a quarter of the reference set, at most n) against the rest:
    what an honest generator looks like.

    Args:
        features: Feature space: "auto" (inception if its weights are available, digits for 28 px
            grey images, else random), "inception", "digits" or "random" (a fixed seeded conv net).
        threshold: A sample whose distance ratio is below this counts as a copy of its nearest training
            image.
        n_real: Real (training) images in the reference set; capped at the dataset size.
        inception_weights: Local safetensors file with Inception-v3 weights; empty: the standard FID weights.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation) and the choice and split of real images.
    """

    name = "memorisation"
    goals = {"memorisation_copies": "min", "memorisation_median": "max"}

    def __init__(
        self,
        *,
        features: Literal["auto", "inception", "digits", "random"] = "auto",
        threshold: Annotated[float, Range(gt=0)] = 0.5,
        n_real: Annotated[int, Range(ge=8)] = 5000,
        inception_weights: str = "",
        batch_size: Annotated[int, Range(ge=1)] = 250,
        seed: int = 0,
    ):
        super().__init__(features=features, n_real=n_real, inception_weights=inception_weights,
                         batch_size=batch_size, seed=seed)
        self.threshold = threshold

    @staticmethod
    def ratios(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
        """d(x, t) / d(t, t') for each row x, t its nearest row of ``train``, t' t's nearest other row."""
        own = kth_neighbour_distance(train, 1)
        # Exact duplicates in the training set give d(t, t') = 0: a floor keeps the ratio finite.
        floor = max(float(own.median()) * 1e-6, 1e-12)
        dist, index = nearest(x, train)
        return dist / own[index].clamp(min=floor)

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        real, fake, extractor, real_info = self._features(generator, dataset, n, device, min_real=8)
        shuffled = self._shuffled(real)
        held = min(n, len(real) // 4)
        fake_ratio = self.ratios(fake, real)  # every reference image counts as training data
        real_ratio = self.ratios(shuffled[:held], shuffled[held:])
        self.protocol = self._protocol(generator, extractor, real_info, threshold=self.threshold,
                                       n_real=len(real), n_fake=n, n_held_out=held)
        return {
            "memorisation_copies": float((fake_ratio < self.threshold).double().mean()),
            "memorisation_median": float(fake_ratio.median()),
            "memorisation_copies_real": float((real_ratio < self.threshold).double().mean()),
            "memorisation_median_real": float(real_ratio.median()),
        }
