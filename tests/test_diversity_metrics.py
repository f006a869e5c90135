"""prdc / duplicates / memorisation: the math against the reference formulas, and sanity cases on any data.

"The generator" is ``Replay``, which hands out fixed images in order: held-out real images (a
healthy generator), 4 training images repeated (mode collapse that copies), or the training images
themselves. The data are colour 32 px shapes drawn with PIL (random features) and mnist5k digits
(digit features), n <= 500 each. Also: the feature-space choice of ``features = "auto"``, the random
embedding, and the ``coverage`` -> ``class_coverage`` rename.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gantool import GantoolError, ParamError
from gantool.testing import check_metric
from gantool_plugins.metrics import coverage as coverage_module
from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics.diversity import PRDC, Duplicates, Memorisation, close_pairs, kth_neighbour_distance, prdc
from test_metrics import Images, Replay  # the same stand-ins as the other metric tests

pytestmark = pytest.mark.usefixtures("isolated_cache")

N = 400  # real (training) images and generated images per case


def shapes(n: int, *, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` uint8 RGB images (n, 3, size, size): 1-3 filled ellipses, boxes or triangles on a flat background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
            w, h = (int(v) for v in rng.integers(6, size // 2 + 4, 2))
            box = [x0, y0, min(x0 + w, size - 1), min(y0 + h, size - 1)]
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                draw.ellipse(box, fill=colour)
            elif kind == 1:
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
        out[i] = np.asarray(img)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def as_float(u8):
    return u8.float() / 127.5 - 1


def scores(generator, train, features="auto") -> dict[str, float]:
    out = {}
    for metric in (PRDC(features=features), Duplicates(features=features), Memorisation(features=features)):
        generator.position = 0
        out.update(metric.compute(generator, Images(train), n=N, device="cpu"))
        out[f"{metric.name}_features"] = metric.protocol["features"]
    return out


@pytest.fixture(scope="module")
def colour():
    torch.set_num_threads(1)
    return shapes(2 * N)


@pytest.fixture(scope="module")
def digits():
    from gantool_plugins.datasets.mnist5k import MNIST5k

    torch.set_num_threads(1)
    return MNIST5k().as_tensor()[: 2 * N]


# --- The math --------------------------------------------------------------------------------------


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al.'s reference code (clovaai/generative-evaluation-prdc, prdc.py), brute force in numpy."""

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(x):
        return np.partition(dist(x, x), k, axis=-1)[:, k]  # k-th smallest after the 0 to itself

    real_r, fake_r, d = radii(real), radii(fake), dist(real, fake)
    return {
        "precision": float((d < real_r[:, None]).any(axis=0).mean()),
        "recall": float((d < fake_r[None, :]).any(axis=1).mean()),
        "density": float((1 / k) * (d < real_r[:, None]).sum(axis=0).mean()),
        "coverage": float((d.min(axis=1) < real_r).mean()),
    }


@pytest.mark.parametrize("k", [1, 5])
def test_prdc_matches_the_reference_formulas(monkeypatch, k):
    from gantool_plugins.metrics import diversity

    g = torch.Generator().manual_seed(k)
    real = torch.randn(300, 8, generator=g, dtype=torch.float64)
    fake = torch.randn(250, 8, generator=g, dtype=torch.float64) * 0.7 + 0.7  # narrower, and off-centre
    expected = reference_prdc(real.numpy(), fake.numpy(), k)
    monkeypatch.setattr(diversity, "BLOCK", 64)  # several distance blocks, as at n = 5000
    got = prdc(real, fake, k)
    assert got == pytest.approx(expected, abs=1e-12)
    assert all(0.1 < v < 1 for k, v in expected.items() if k != "density")  # not a trivial case


def test_neighbour_primitives_against_brute_force(monkeypatch):
    from gantool_plugins.metrics import diversity

    monkeypatch.setattr(diversity, "BLOCK", 32)
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[7] = x[3]  # one exact duplicate: its nearest other row is at 0, not itself
    d = torch.cdist(x, x)
    assert torch.equal(kth_neighbour_distance(x, 1)[[3, 7]], torch.zeros(2, dtype=torch.float64))
    off = d + torch.diag(torch.full((100,), float("inf"), dtype=torch.float64))
    assert torch.allclose(kth_neighbour_distance(x, 3), off.sort(dim=1).values[:, 2])
    threshold = float(d[d > 0].quantile(0.05))
    assert close_pairs(x, threshold) == int(((d <= threshold).sum() - 100) // 2) > 0


# --- Sanity: collapse is flagged, real vs real is healthy, on any data ----------------------------


@pytest.mark.parametrize("data", ["colour", "digits"])
def test_metrics_flag_repeated_images_and_pass_held_out_real_images(data, request):
    images = request.getfixturevalue(data)
    train, held_out = images[:N], images[N : 2 * N]
    healthy = scores(Replay(as_float(held_out)), train)
    collapsed = scores(Replay(as_float(train[:4])), train)  # 4 training images, repeated

    expected_space = "random" if data == "colour" else "digits"
    assert {healthy[f"{m}_features"] for m in ("prdc", "duplicates", "memorisation")} == {expected_space}
    # Real vs real (measured at N = 400: precision/recall/coverage 0.88-0.98, duplicates 1-2 %, no copies).
    assert healthy["precision"] > 0.8 and healthy["recall"] > 0.8 and healthy["coverage"] > 0.85
    assert healthy["duplicates"] < 0.1 and healthy["duplicates_ratio"] < 3 and healthy["memorisation_copies"] < 0.02
    assert 0.8 < healthy["memorisation_median"] < 1.5
    # Collapse: precision stays (the images are real) but recall and coverage fall; every sample has
    # a duplicate and the support is the 4 images; every sample is a copy of a training image.
    assert collapsed["precision"] > 0.9
    assert collapsed["recall"] < 0.05 and collapsed["coverage"] < 0.1
    assert collapsed["duplicates"] == 1.0 and collapsed["duplicates_ratio"] > 10
    assert 3.5 < collapsed["support_size"] < 4.5
    assert healthy["support_size"] > 100 * collapsed["support_size"]
    assert collapsed["memorisation_copies"] == 1.0 and collapsed["memorisation_median"] < 0.01
    # The real baselines do not depend on the generator.
    for key in ("duplicates_real", "support_size_real", "memorisation_copies_real", "memorisation_median_real"):
        assert healthy[key] == collapsed[key]
    assert healthy["duplicates_real"] < 0.1 and healthy["memorisation_copies_real"] < 0.02


def test_partial_collapse_shows_in_duplicates(colour):
    train, held_out = colour[:N], colour[N : 2 * N]
    mixed = torch.cat([held_out[: N // 2], train[:4].repeat(N // 8, 1, 1, 1)])  # half of it 4 repeated images
    mixed = mixed[torch.randperm(len(mixed), generator=torch.Generator().manual_seed(0))]
    out = scores(Replay(as_float(mixed)), train)
    assert 0.4 < out["duplicates"] < 0.7  # the repeated half, plus chance
    assert out["support_size"] < 20
    assert 0.4 < out["memorisation_copies"] < 0.6
    assert out["precision"] > 0.85  # the repeated images are real ones: fidelity metrics cannot see this


def test_memorisation_does_not_flag_repeats_of_unseen_images(colour):
    out = Memorisation().compute(Replay(as_float(colour[N : N + 4])), Images(colour[:N]), n=N, device="cpu")
    assert out["memorisation_copies"] == 0.0  # collapsed, but onto images it never saw: not memorisation


def test_check_metric_passes():
    for name in ("prdc", "duplicates", "memorisation", "class_coverage"):
        check_metric(name)
    check_metric("prdc", {"features": "random", "k": 3})
    check_metric("prdc", {"features": "digits"})


# --- Feature space -----------------------------------------------------------------------------------


def test_auto_feature_space_follows_the_data(monkeypatch):
    monkeypatch.setattr(feats, "inception_available", lambda: False)
    assert feats.resolve_features("auto", (1, 28, 28)) == "digits"
    assert feats.resolve_features("auto", (3, 32, 32)) == "random"
    assert feats.resolve_features("auto", (1, 64, 64)) == "random"
    assert feats.resolve_features("random", (1, 28, 28)) == "random"
    assert feats.resolve_features("auto", (3, 32, 32), inception_weights="w.safetensors") == "inception"
    monkeypatch.setattr(feats, "inception_available", lambda: True)
    assert feats.resolve_features("auto", (1, 28, 28)) == "inception"


def test_unusable_inception_weights_are_a_parameter_error(tmp_path):
    with pytest.raises(ParamError, match="does not exist"):
        PRDC(features="inception", inception_weights=str(tmp_path / "missing.safetensors"))
    (tmp_path / "inception.pth").write_bytes(b"")
    with pytest.raises(ParamError, match="pickle"):
        Duplicates(inception_weights=str(tmp_path / "inception.pth"))


def test_random_embedding_is_fixed_and_recorded(colour):
    a = feats.RandomFeatures()
    b = feats.RandomFeatures()
    x = as_float(colour[:8])
    assert torch.equal(a.features(x), b.features(x)) and a.features(x).shape == (8, 512)
    # The weights come from torch.Generator(0) alone: this digest is the same on every machine and
    # names the space in cache keys; a torch that draws differently would fail here, not silently.
    assert a.id == "random:randconv5-v1:seed0:64px:2060ae9862a07543"
    assert not torch.equal(feats.RandomFeatures(seed=1).features(x), a.features(x))
    grey = x.mean(1, keepdim=True)
    assert torch.equal(a.features(grey), a.features(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(GantoolError, match="1- or 3-channel"):
        a.features(torch.zeros(2, 4, 16, 16))

    metric = PRDC()
    metric.compute(Replay(x), Images(colour[:40]), n=8, device="cpu")
    assert metric.protocol["feature_space"] == {"name": "random", "arch": "randconv5-v1", "seed": 0, "dim": 512,
                                                "input_size": 64}
    assert metric.protocol["n_real"] == 8 and metric.protocol["n_fake"] == 8 and metric.protocol["k"] == 5


def test_too_few_samples_are_one_line_errors(colour):
    with pytest.raises(GantoolError, match="more generated samples than k"):
        PRDC().compute(Replay(as_float(colour[:5])), Images(colour[:40]), n=5, device="cpu")
    with pytest.raises(GantoolError, match="at least 8 real images"):
        Memorisation().compute(Replay(as_float(colour[:5])), Images(colour[:6]), n=5, device="cpu")


# --- The coverage rename -----------------------------------------------------------------------------


def test_coverage_is_a_deprecated_alias_of_class_coverage(digits, monkeypatch):
    monkeypatch.setattr(coverage_module, "_warned", False)
    with pytest.warns(FutureWarning, match="renamed class_coverage; coverage will mean Naeem"):
        old = coverage_module.Coverage()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coverage_module.Coverage()  # once per process
    new = coverage_module.ClassCoverage()
    old_values = old.compute(Replay(as_float(digits[:300])), None, n=300, device="cpu")
    new_values = new.compute(Replay(as_float(digits[:300])), None, n=300, device="cpu")
    assert set(new_values) == set(new.goals) == {"class_coverage_classes", "class_coverage_kl",
                                                 "class_coverage_confidence"}
    assert {k.replace("coverage", "class_coverage"): v for k, v in old_values.items()} == new_values
    assert set(old_values) == set(old.goals)
    check_metric("coverage")
