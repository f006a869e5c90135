"""The model-zoo recipes: each passes `gantool check`; the mnist5k ones train a few steps."""

import json

import pytest
from click.testing import CliRunner

from conftest import ROOT
from gantool.cli import cli
from gantool.engine import run
from gantool.plugins import get_registry
from gantool.recipe import load_recipe

MNIST = ["upsample_conv_mnist5k", "dcgan_dense_mnist5k", "wgan_gp_mnist5k", "hinge_mnist5k", "cdcgan_mnist5k"]
# Recipes whose data cannot be here: checked with the same shape of random images.
NEEDS_DATA = {
    "upsample_conv_celeba": ["dataset.type=fake", "dataset.image_size=64", "dataset.channels=3", "dataset.size=8", "train.batch_size=8"],
    "dcgan_cifar10": ["dataset.type=fake", "dataset.image_size=32", "dataset.channels=3", "dataset.size=8", "train.batch_size=8"],
    "cdcgan_cifar10": ["dataset.type=fake", "dataset.image_size=32", "dataset.channels=3", "dataset.size=16",
                       "dataset.num_classes=10", "train.batch_size=8"],
    # 5 D steps per G step: at least 5 batches
    "sngan_cifar10": ["dataset.type=fake", "dataset.image_size=32", "dataset.channels=3", "dataset.size=40",
                      "train.batch_size=8"],
    "sngan_folder": ["dataset.type=fake", "dataset.image_size=64", "dataset.channels=3", "dataset.size=40",
                     "train.batch_size=8"],
}


@pytest.mark.parametrize("name", MNIST + list(NEEDS_DATA))
def test_recipe_passes_check(name):
    args = ["check", str(ROOT / "recipes" / f"{name}.toml")]
    for override in NEEDS_DATA.get(name, []):
        args += ["--set", override]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


@pytest.mark.parametrize("name", MNIST)
def test_mnist5k_recipe_trains_a_few_steps(name, tmp_path):
    recipe = load_recipe(
        ROOT / "recipes" / f"{name}.toml",
        ["run.device=cpu", "train.max_steps=2", "train.batch_size=64", "train.sample_grid=4", "dataset.limit=1280", "eval.n_samples=16"],
    )
    summary = run(recipe, get_registry(), out_dir=tmp_path / name)
    assert summary["steps"] == 2
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_d"] == r["loss_d"] for r in records if "loss_d" in r)  # not NaN
    assert (tmp_path / name / "checkpoints" / "last.safetensors").exists()
    if name == "upsample_conv_mnist5k":  # logs the checkerboard score at the end
        assert "checkerboard_fake_db" in summary["metrics"]
