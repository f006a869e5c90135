"""Mode coverage: which digit classes a generator produces, judged by the shipped classifier.

Mode collapse is the GAN failure FID reports only indirectly; a class histogram names it.
The generated digits are classified by the same network that supplies the ``digits``
features (held-out accuracy in docs/metrics.md), and three numbers summarise the histogram:

- ``coverage_classes``: classes holding at least ``min_fraction`` of the samples (10 is all);
- ``coverage_kl``: KL divergence of the histogram from uniform, in nats (0 is perfectly
  balanced; log 10 = 2.303 means a single class);
- ``coverage_confidence``: mean max-softmax probability (low values mean digits the
  classifier cannot read, i.e. poor sample quality rather than poor diversity).

The dataset is not used: MNIST's classes are roughly balanced, so uniform is the target
(a conditional generator is asked for every class equally, so uniform stays the target).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from gantool import GantoolError, Metric, Range
from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics import reference

NUM_CLASSES = 10


def class_histogram_summary(probs: torch.Tensor, *, min_fraction: float) -> dict[str, float]:
    """The three coverage numbers from softmax probabilities (N, 10)."""
    counts = torch.bincount(probs.argmax(1), minlength=NUM_CLASSES).to(torch.float64)
    p = counts / counts.sum()
    nonzero = p > 0
    kl = float((p[nonzero] * (p[nonzero] * NUM_CLASSES).log()).sum())
    return {
        "coverage_classes": float((p >= min_fraction).sum()),
        "coverage_kl": max(kl, 0.0),
        "coverage_confidence": float(probs.max(1).values.to(torch.float64).mean()),
    }


class Coverage(Metric):
    """Class histogram of generated digits under the shipped classifier: classes covered, KL to uniform, confidence.

    Args:
        min_fraction: A class counts as covered when it holds at least this fraction of the samples.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation).
    """

    goals = {"coverage_classes": "max", "coverage_kl": "min", "coverage_confidence": "max"}

    def __init__(
        self,
        *,
        min_fraction: Annotated[float, Range(gt=0, le=1)] = 0.01,
        batch_size: Annotated[int, Range(ge=1)] = 250,
        seed: int = 0,
    ):
        self.min_fraction = min_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.protocol: dict = {}

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        if n < 1:
            raise GantoolError(f"coverage needs at least 1 generated sample (n), got {n}")
        classifier = feats.get_extractor("digits", device=device)
        probs = torch.cat([
            classifier.logits(x).softmax(1).cpu()
            for x in reference.fake_batches(generator, n, seed=self.seed, batch_size=self.batch_size, device=device)
        ])
        self.protocol = {
            "classifier": classifier.id,
            "classifier_heldout_accuracy": float(classifier.metadata.get("accuracy", "nan")),
            "n_fake": n,
            "min_fraction": self.min_fraction,
            "latent_seed": self.seed,
            "kl_single_class": math.log(NUM_CLASSES),
            **reference.fake_labels_protocol(generator),
        }
        return class_histogram_summary(probs, min_fraction=self.min_fraction)
