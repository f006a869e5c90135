"""Metrics of class-conditional generators: does G(z, c) draw class c, and how well, class by class?

Unconditional metrics (fid, kid, class_coverage) score a conditional generator over all classes
at once (balanced labels), so a generator that ignores its label scores as well as one that
obeys it. These two look at each requested class:

- ``conditional_accuracy``: the share of samples requested as class c that the shipped digit
  classifier reads as c (digits only: it knows the 10 digit classes);
- ``intra_fid`` (Miyato & Koyama 2018, "cGANs with Projection Discriminator"): FID between the
  real images of class c and the samples requested as class c, for every class; any labelled data.

Samples use ``reference.fake_batches``' balanced labels (sample i is class i % K) and the
metric's seeded latents, so every evaluation asks for the same classes with the same latents.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import torch

from gantool import GantoolError, Metric, Range
from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics import reference
from gantool_plugins.metrics.distances import FID, frechet_distance

DIGIT_CLASSES = 10


def generator_classes(generator, metric: str) -> int:
    """The generator's ``num_classes``; a one-line error when it is not conditional."""
    k = int(getattr(generator, "num_classes", 0) or 0)
    if k <= 0:
        raise GantoolError(f"{metric} needs a conditional generator (num_classes > 0, called G(z, labels)); "
                           "this one is unconditional: train with [train] conditional = true")
    return k


class ConditionalAccuracy(Metric):
    """Share of generated digits the shipped classifier reads as the class they were requested as (higher is better).

    Reports ``conditional_accuracy`` (over all samples, balanced labels) and
    ``conditional_accuracy_min`` (the worst class). A generator that ignores its label scores
    about 0.1. Needs a conditional generator with 10 classes (the digit classifier's); for
    other labelled data use ``intra_fid``.

    Args:
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation).
    """

    goals = {"conditional_accuracy": "max", "conditional_accuracy_min": "max"}
    conditioning = "required"  # scores G(z, labels) only

    def __init__(self, *, batch_size: Annotated[int, Range(ge=1)] = 250, seed: int = 0):
        self.batch_size = batch_size
        self.seed = seed
        self.protocol: dict = {}

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        k = generator_classes(generator, "conditional_accuracy")
        if k != DIGIT_CLASSES:
            raise GantoolError(f"conditional_accuracy uses the shipped digit classifier, which knows the 10 digit "
                               f"classes; the generator has {k} classes: use intra_fid for other data")
        if n < k:
            raise GantoolError(f"conditional_accuracy needs at least one sample per class (n >= {k}), got n = {n}")
        classifier = feats.get_extractor("digits", device=device)
        correct = torch.zeros(k, dtype=torch.int64)
        for x, labels in reference.fake_batches(generator, n, seed=self.seed, batch_size=self.batch_size,
                                                device=device, with_labels=True):
            hit = classifier.logits(x).argmax(1).cpu() == labels
            correct += torch.bincount(labels[hit], minlength=k)
        counts = torch.bincount(reference.fake_labels(generator, n), minlength=k)
        per_class = (correct.double() / counts.double()).tolist()
        self.protocol = {
            "classifier": classifier.id,
            "classifier_heldout_accuracy": float(classifier.metadata.get("accuracy", "nan")),
            "n_fake": n,
            "per_class_accuracy": per_class,
            "latent_seed": self.seed,
            **reference.fake_labels_protocol(generator),
        }
        return {"conditional_accuracy": float(correct.sum()) / n, "conditional_accuracy_min": min(per_class)}


def labels_digest(labels: torch.Tensor) -> str:
    """Names the class labels of the reference images in the protocol (the features' cache key has only pixels)."""
    data = labels.detach().to("cpu", torch.int64).contiguous()
    return hashlib.blake2b(data.numpy().tobytes(), digest_size=16).hexdigest()


class IntraFID(FID):
    """Intra-class FID: the FID of each class's samples against that class's real images, averaged (lower is better).

    Reports ``intra_fid`` (mean over classes) and ``intra_fid_max`` (the worst class). Each
    class gets n // num_classes generated images (its balanced share) and the real images of
    that class among the reference set (``n_real`` images, as fid chooses them). Needs a
    conditional generator and a labelled dataset with the same number of classes. Per-class
    sets are small, so values sit above a whole-set FID of the same samples (FID is biased
    upwards at small n): compare intra_fid only under the same n and n_real.

    Args:
        features: Feature space: "digits" (shipped MNIST classifier) or "inception" (FID weights, fetched once).
        n_real: Real images in the reference set, split by class; capped at the dataset size.
        inception_weights: Local safetensors Inception-v3 weights (torchvision, FID-Inception); empty: the FID weights.
        batch_size: Generated images per forward pass.
        seed: Seeds the latents (the same every evaluation) and the choice of real images.
    """

    goals = {"intra_fid": "min", "intra_fid_max": "min"}
    conditioning = "required"  # scores G(z, labels) only

    @torch.no_grad()
    def compute(self, generator, dataset, *, n, device) -> dict[str, float]:
        k = generator_classes(generator, "intra_fid")
        labels = dataset.labels() if int(getattr(dataset, "num_classes", 0) or 0) > 0 else None
        if labels is None:
            raise GantoolError("intra_fid needs a labelled dataset (num_classes > 0 and labels()); "
                               "this dataset has no class labels")
        if dataset.num_classes != k:
            raise GantoolError(f"intra_fid: the dataset has {dataset.num_classes} classes but the generator has "
                               f"{k}; they must match")
        per_class = n // k
        if per_class < 2:
            raise GantoolError(f"intra_fid needs at least 2 generated samples per class (n >= {2 * k} for "
                               f"{k} classes), got n = {n}")
        labels = torch.as_tensor(labels).to("cpu", torch.int64)
        if labels.shape != (len(dataset),) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < k):
            raise GantoolError(f"intra_fid: dataset labels() must be {len(dataset)} ints in [0, {k}), got "
                               f"shape {tuple(labels.shape)}")
        indices, _ = reference.reference_indices(len(dataset), self.n_real, self.seed)
        real_labels = labels[indices]
        real_counts = torch.bincount(real_labels, minlength=k)
        if int(real_counts.min()) < 2:
            c = int(real_counts.argmin())
            raise GantoolError(f"intra_fid: class {c} has {int(real_counts[c])} real image(s) among the n_real = "
                               f"{len(indices)} reference images; it needs at least 2 (raise n_real)")

        # Real side: the cached features of fid's reference set (shared with fid/kid), split by label.
        extractor = self._extractor(device)
        real, real_info = reference.real_features(dataset, extractor, n_real=self.n_real, seed=self.seed)

        # Generated side: the first per_class * k balanced samples, so every class gets exactly per_class.
        fake, fake_labels = [], []
        for x, y in reference.fake_batches(generator, per_class * k, seed=self.seed, batch_size=self.batch_size,
                                           device=device, with_labels=True):
            fake.append(extractor.features(x).cpu())
            fake_labels.append(y)
        fake, fake_labels = torch.cat(fake), torch.cat(fake_labels)

        fids = []
        for c in range(k):
            mu_r, sigma_r = reference.mean_cov(real[real_labels == c])
            mu_f, sigma_f = reference.mean_cov(fake[fake_labels == c])
            fids.append(frechet_distance(mu_r, sigma_r, mu_f, sigma_f))
        self.protocol = self._protocol(
            extractor, real_info, per_class * k,
            n_fake_per_class=per_class,
            n_real_per_class=real_counts.tolist(),
            per_class_fid=fids,
            labels_digest=labels_digest(real_labels),
            **reference.fake_labels_protocol(generator),
        )
        if getattr(dataset, "class_names", None):
            self.protocol["class_names"] = [str(name) for name in dataset.class_names]
        return {"intra_fid": sum(fids) / k, "intra_fid_max": max(fids)}
