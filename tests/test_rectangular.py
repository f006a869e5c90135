"""Rectangular images: ``image_size = [height, width]`` for datasets, the DCGAN family and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gantool import ParamError
from gantool.cli import cli
from gantool.params import validate
from gantool_plugins.datasets.fake import FakeImages
from gantool_plugins.datasets.folders import ImageFolder
from gantool_plugins.datasets.mnist5k import MNIST5k
from gantool_plugins.dcgan.dense import DenseDCGANDiscriminator, DenseDCGANGenerator
from gantool_plugins.dcgan.models import (SUPPORTED_SIZES, DCGANDiscriminator, DCGANGenerator, ProjectionDiscriminator,
                                          resolve_size)
from gantool_plugins.upsample_conv.models import UpsampleConvGenerator

SHAPE = (3, 48, 64)
GREEN, RED = (0, 255, 0), (255, 0, 0)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- the parameter ------------------------------------------------------------------


def test_image_size_takes_an_int_or_height_width():
    assert validate(FakeImages, {"image_size": 64}) == {"image_size": 64}  # an int stays an int
    assert validate(FakeImages, {"image_size": [48, 64]}) == {"image_size": (48, 64)}


@pytest.mark.parametrize("value", [[48], [0, 64], "48x64", [48, 64, 3], [48.0, 64], [True, 64], [48, 5000]])
def test_bad_image_size_is_one_clear_line(value):
    with pytest.raises(ParamError) as info:
        validate(FakeImages, {"image_size": value})
    assert str(info.value) == f"image_size: must be an int or [height, width] of ints in 1..4096, got {value!r}"


# --- datasets -----------------------------------------------------------------------


def test_fake_and_mnist5k_give_height_by_width():
    fake = FakeImages(size=3, image_size=(48, 64))
    assert fake.image_shape == SHAPE and fake.as_tensor().shape == (3, *SHAPE)
    # A square source is resized to cover 48x64 (64x64), then centre-cropped: rows 8..56 of the square.
    digits = MNIST5k(image_size=(48, 64), limit=6).as_tensor()
    assert digits.shape == (6, 1, 48, 64)
    assert torch.equal(digits, MNIST5k(image_size=64, limit=6).as_tensor()[:, :, 8:56, :])


def _banded(path, width, height, margin, horizontal):
    """Green, with red bands of ``margin`` px on the two sides a 48x64 centre crop must cut away."""
    a = np.zeros((height, width, 3), dtype=np.uint8)
    a[:] = GREEN
    if horizontal:
        a[:, :margin], a[:, width - margin:] = RED, RED
    else:
        a[:margin], a[height - margin:] = RED, RED
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def test_imagefolder_crops_every_aspect_to_48x64(tmp_path, monkeypatch):
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "pics"
    _banded(root / "wide.png", 200, 100, 30, horizontal=True)  # keeps a 133x100 box: 33 px cut from each side
    _banded(root / "tall.png", 60, 200, 70, horizontal=False)  # keeps 60x45: 77 px cut from top and bottom
    _banded(root / "square.png", 100, 100, 10, horizontal=False)  # keeps 100x75: 12 px cut
    _banded(root / "exact.png", 64, 48, 0, horizontal=True)  # already 48x64
    ds = ImageFolder(root=str(root), image_size=[48, 64])
    images = ds.as_tensor()
    assert ds.image_shape == SHAPE and images.shape == (4, *SHAPE)
    green = torch.tensor(GREEN, dtype=torch.uint8).view(3, 1, 1)
    assert (images == green).all(), "the centre crop kept part of a red band"
    squashed = ImageFolder(root=str(root), image_size=[48, 64], crop="none", cache=False).as_tensor()
    assert squashed.shape == (4, *SHAPE) and not (squashed[:3] == green).all()  # squashing keeps the bands
    # The cache is keyed on (H, W): a hit gives the same tensor, a transposed size is another entry.
    assert torch.equal(ImageFolder(root=str(root), image_size=[48, 64]).as_tensor(), images)
    assert ImageFolder(root=str(root), image_size=[64, 48]).as_tensor().shape == (4, 3, 64, 48)
    assert len(list((tmp_path / "cache" / "datasets").glob("imagefolder-48x64px-4-*.safetensors"))) == 1
    assert len(list((tmp_path / "cache" / "datasets").glob("imagefolder-64x48px-4-*.safetensors"))) == 1


# --- generators and discriminators --------------------------------------------------


def test_start_map_for_rectangles_and_the_classic_squares():
    assert resolve_size(SHAPE) == ((3, 4), 4)
    assert resolve_size((1, 96, 128)) == ((3, 4), 5)
    assert resolve_size((1, 48, 48)) == ((3, 3), 4)  # the smallest start map (3x3, not 6x6): the most x2 steps
    with pytest.raises(ParamError):
        resolve_size((1, 56, 28))  # 7*8 and 7*4: no common k
    for side, (start, steps) in SUPPORTED_SIZES.items():  # the square builds of the first releases
        assert resolve_size((1, side, side)) == ((start, start), steps)


def test_unsupported_rectangle_names_sizes_it_can_make():
    with pytest.raises(ParamError) as info:
        DCGANGenerator(image_shape=(3, 50, 64))
    assert info.value.param == "image_shape"
    assert "cannot make 50x64 images" in info.value.message and "48x64" in info.value.message
    assert info.value.message.endswith("set [dataset] image_size to one of them")


GENERATORS = [
    (DCGANGenerator, {}),
    (DCGANGenerator, {"num_classes": 3}),
    (UpsampleConvGenerator, {}),
    (UpsampleConvGenerator, {"num_classes": 3, "padding_mode": "reflect"}),
    (DenseDCGANGenerator, {}),
]


@pytest.mark.parametrize("cls, extra", GENERATORS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_generators_make_48x64(cls, extra):
    torch.manual_seed(0)
    g = cls(image_shape=SHAPE, latent_dim=8, base_channels=4, **extra).eval()
    labels = {"labels": torch.tensor([0, 2])} if extra.get("num_classes") else {}
    x = g(g.sample_latent(2), **labels)
    assert x.shape == (2, *SHAPE) and x.min() >= -1 and x.max() <= 1


DISCRIMINATORS = [
    (DCGANDiscriminator, {}),
    (DCGANDiscriminator, {"num_classes": 3, "condition_by": "concat"}),
    (DCGANDiscriminator, {"num_classes": 3, "condition_by": "projection"}),
    (DCGANDiscriminator, {"num_classes": 3, "condition_by": "auxiliary"}),
    (ProjectionDiscriminator, {"num_classes": 3}),
    (DenseDCGANDiscriminator, {}),
]


@pytest.mark.parametrize("cls, extra", DISCRIMINATORS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_discriminators_score_48x64(cls, extra):
    torch.manual_seed(0)
    d = cls(image_shape=SHAPE, base_channels=4, **extra).eval()
    labels = {"labels": torch.tensor([1, 2, 0])} if extra.get("num_classes") else {}
    out = d(torch.rand(3, *SHAPE) * 2 - 1, **labels)
    scores, extras = out if isinstance(out, tuple) else (out, {})
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    if extras:
        assert extras["class_logits"].shape == (3, 3)


def test_dcgan_starts_from_3x4_and_d_ends_with_a_3x4_kernel():
    g = DCGANGenerator(image_shape=SHAPE, base_channels=4)
    d = DCGANDiscriminator(image_shape=SHAPE, base_channels=4)
    assert g.net[0].kernel_size == (3, 4) and d.net[-1].kernel_size == (3, 4)
    assert DenseDCGANGenerator(image_shape=SHAPE, base_channels=4).start[1:] == (6, 8)


# --- the CLI ------------------------------------------------------------------------


RECIPE = """
[run]
name = "rect"
seed = 0
device = "cpu"

[dataset]
type = "mnist5k"
image_size = [48, 64]
limit = 32

[generator]
type = "dcgan"
latent_dim = 8
base_channels = 4

[discriminator]
type = "dcgan"
base_channels = 4

[loss]
type = "bce"

[train]
batch_size = 8
max_steps = 3
sample_every = 3
sample_grid = 4

[eval]
metrics = ["checkerboard", "fid"]
n_samples = 32
"""


def test_check_rejects_a_size_the_generator_cannot_make(tmp_path):
    recipe = tmp_path / "rect.toml"
    recipe.write_text(RECIPE)
    result = invoke("check", recipe, "--set", "dataset.image_size=[50, 64]")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "[dataset] image_size: generator dcgan: cannot make 50x64 images" in lines[0]
    assert "(e.g. 48x56, 48x64, 56x56); set [dataset] image_size to one of them" in lines[0]
    bad = invoke("check", recipe, "--set", 'dataset.image_size="48x64"')
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert "[dataset] image_size: must be an int or [height, width] of ints in 1..4096" in bad.output


def test_run_and_sample_at_48x64(tmp_path):
    recipe = tmp_path / "rect.toml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    result = invoke("run", recipe, "--out", out)
    assert result.exit_code == 0, result.output
    grid = Image.open(out / "samples" / "final.png")
    assert (grid.height - 2) % (48 + 2) == 0 and (grid.width - 2) % (64 + 2) == 0  # torchvision's 2 px padding
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = {key for record in records for key in record}
    assert any(key.startswith("checkerboard") for key in evaluated) and any(key.startswith("fid") for key in evaluated)
    sample = invoke("sample", out, "--n", "3", "--out", tmp_path / "three.png")
    assert sample.exit_code == 0, sample.output
    three = Image.open(tmp_path / "three.png")
    assert (three.height - 2) % 50 == 0 and (three.width - 2) % 66 == 0
