"""Class coverage: which digit classes a generator produces, judged by the shipped classifier.

Mode collapse is the GAN failure FID reports only indirectly; on digits a class histogram names it
(on any other data use ``prdc``, ``duplicates`` and ``memorisation`` in ``diversity.py``).
The generated digits are classified by the same network that supplies the ``digits``
features (held-out accuracy in docs/metrics.md), and three numbers summarise the histogram:

- ``class_coverage_classes``: classes holding at least ``min_fraction`` of the samples (10 is all);
- ``class_coverage_kl``: KL divergence of the histogram from uniform, in nats (0 is perfectly
  balanced; log 10 = 2.303 means a single class);
- ``class_coverage_confidence``: mean max-softmax probability (low values mean digits the
  classifier cannot read, i.e. poor sample quality rather than poor diversity).

The dataset is not used: MNIST's classes are roughly balanced, so uniform is the target
(a conditional generator is asked for every class equally, so uniform stays the target).

The metric was called ``coverage`` in gantool 0.1; "coverage" in the literature is Naeem et al.'s
(``prdc``), so ``coverage`` stays for one release as a deprecated alias with the old result keys.
"""

from __future__ import annotations

import math
import warnings
from typing import Annotated

import torch

from gantool import GantoolError, Metric, Range
from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics import reference

NUM_CLASSES = 10


def class_histogram_summary(probs: torch.Tensor, *, min_fraction: float,
                            prefix: str = "class_coverage") -> dict[str, float]:
    """The three class-coverage numbers from softmax probabilities (N, 10), keys ``{prefix}_classes`` etc."""
    counts = torch.bincount(probs.argmax(1), minlength=NUM_CLASSES).to(torch.float64)
    p = counts / counts.sum()
    nonzero = p > 0
    kl = float((p[nonzero] * (p[nonzero] * NUM_CLASSES).log()).sum())
    return {
        f"{prefix}_classes": float((p >= min_fraction).sum()),
        f"{prefix}_kl": max(kl, 0.0),
        f"{prefix}_confidence": float(probs.max(1).values.to(torch.float64).mean()),
    }


class ClassCoverage(Metric):
    """Class histogram of generated digits under the shipped classifier: classes covered, KL to uniform, confidence.

    Args:
        min_fraction: A class counts as covered when it holds at least this fraction of the samples.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation).
    """

    goals = {"class_coverage_classes": "max", "class_coverage_kl": "min", "class_coverage_confidence": "max"}
    prefix = "class_coverage"  # of the result keys

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
            raise GantoolError(f"{self.prefix} needs at least 1 generated sample (n), got {n}")
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
        return class_histogram_summary(probs, min_fraction=self.min_fraction, prefix=self.prefix)


RENAMED = ("metric coverage was renamed class_coverage; coverage will mean Naeem et al.'s coverage "
           "(see prdc) in the next release")
_warned = False


class Coverage(ClassCoverage):
    """Deprecated name of class_coverage (same numbers, old keys coverage_classes, coverage_kl, coverage_confidence).

    Args:
        min_fraction: A class counts as covered when it holds at least this fraction of the samples.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation).
    """

    goals = {"coverage_classes": "max", "coverage_kl": "min", "coverage_confidence": "max"}
    prefix = "coverage"  # the old keys, so keep_best = "coverage_kl" keeps working for one release

    def __init__(
        self,
        *,
        min_fraction: Annotated[float, Range(gt=0, le=1)] = 0.01,
        batch_size: Annotated[int, Range(ge=1)] = 250,
        seed: int = 0,
    ):
        global _warned
        if not _warned:  # once per process, however often check, run and eval build it
            warnings.warn(RENAMED, FutureWarning, stacklevel=2)
            _warned = True
        super().__init__(min_fraction=min_fraction, batch_size=batch_size, seed=seed)
