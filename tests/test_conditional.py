"""Class-conditional training end to end: recipe -> labelled batches -> G(z, y), D(x, y) -> sample --class."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from conftest import ROOT
from gantool import testing
from gantool.cli import cli
from gantool.plugins import get_registry
from gantool.sampling import generate, generator_from_checkpoint

TINY = ["run.device=cpu", "train.max_steps=3", "train.batch_size=32", "train.sample_grid=20", "dataset.limit=320",
        "generator.base_channels=8", "discriminator.base_channels=8", "train.log_every=1", "eval.metrics=[]"]


def _train(tmp_path, *overrides, recipe="cdcgan_mnist5k"):
    out = tmp_path / "run"
    args = ["run", str(ROOT / "recipes" / f"{recipe}.toml"), "--out", str(out)]
    for override in [*TINY, *overrides]:
        args += ["--set", override]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


def test_conditional_run_samples_the_requested_class(tmp_path):
    out = _train(tmp_path)
    path = out / "checkpoints" / "last.safetensors"
    with safe_open(str(path), framework="pt") as f:
        dataset = json.loads(f.metadata()["gantool"])["components"]["dataset"]
    assert dataset["num_classes"] == 10 and dataset["class_names"] == [str(i) for i in range(10)]

    G, _ = generator_from_checkpoint(path, get_registry())
    assert G.num_classes == 10
    runner = CliRunner()
    result = runner.invoke(cli, ["sample", str(out), "--class", "3", "--n", "6", "--individual", str(tmp_path / "c3"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "class '3'" in result.output
    z = torch.randn(6, G.latent_dim, generator=torch.Generator().manual_seed(0))
    wanted = generate(G, z, torch.device("cpu"), torch.full((6,), 3))
    other = generate(G, z, torch.device("cpu"), torch.full((6,), 5))
    from PIL import Image
    written = torch.stack([torch.from_numpy(__import__("numpy").array(Image.open(p))).float()
                           for p in sorted((tmp_path / "c3").glob("*.png"))])
    as_png = ((wanted.clamp(-1, 1) + 1) * 127.5).round()[:, 0]  # what save_image writes (1 channel -> L)
    assert written.shape[0] == 6
    assert (written[..., 0] if written.dim() == 4 else written).sub(as_png).abs().max() <= 1
    assert not torch.allclose(wanted, other)  # the class changes the images

    # Default grid: one row per class; a name that is not a class is one clean line.
    result = runner.invoke(cli, ["sample", str(out), "--n", "20", "--device", "cpu"])
    assert result.exit_code == 0 and "10 classes x 2 samples" in result.output, result.output
    result = runner.invoke(cli, ["sample", str(out), "--class", "cat", "--device", "cpu"])
    assert result.exit_code == 2 and "not a class" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["sample", str(out), "--interpolate", "--class", "7", "--rows", "2", "--steps", "3",
                                 "--device", "cpu"])
    assert result.exit_code == 0 and "interpolate_class7_seed0.png" in result.output, result.output
    assert (out / "samples" / "final.png").exists()


def test_unconditional_checkpoint_refuses_class(tmp_path):
    out = _train(tmp_path, "train.conditional=false")
    result = CliRunner().invoke(cli, ["sample", str(out), "--class", "3", "--device", "cpu"])
    assert result.exit_code == 2 and "unconditional" in result.output, result.output


@pytest.mark.parametrize("overrides, message", [
    (["dataset.type=fake", "dataset.image_size=28", "dataset.size=64", "dataset.channels=1"], "has no class labels"),
    (["generator.type=dcgan_dense"], "cannot take class labels"),
])
def test_conditional_recipe_errors_in_one_line(overrides, message):
    args = ["check", str(ROOT / "recipes" / "cdcgan_mnist5k.toml")]
    for override in [*TINY, *overrides]:
        args += ["--set", override]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_component_that_requires_labels_makes_the_run_conditional():
    args = ["check", str(ROOT / "recipes" / "dcgan_mnist5k.toml"), "--set", "discriminator.type=projection"]
    result = CliRunner().invoke(cli, args + ["--set", "dataset.limit=64"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, args + ["--set", "dataset.type=fake", "--set", "dataset.size=64",
                                             "--set", "dataset.image_size=28", "--set", "dataset.channels=1"])
    assert result.exit_code == 2 and "requires class labels" in result.output, result.output


CONDITIONAL = {"dataset": {"num_classes": 4}, "train": {"conditional": True}}


@pytest.mark.parametrize("tables", [
    {},
    {"discriminator": {"condition_by": "projection"}},
    {"discriminator": {"type": "gantool:projection", "base_channels": 8}},
    {"discriminator": {"condition_by": "auxiliary"}, "loss": {"type": "gantool:acgan"}},
    {"generator": {"type": "gantool:upsample_conv", "latent_dim": 16, "base_channels": 8}, "loss": {"r1_gamma": 1.0}},
], ids=["concat", "projection", "projection_sn", "acgan", "cbn_r1"])
def test_conditional_resume_is_bit_exact(tmp_path, tables):
    testing.check_resume(tmp_path=tmp_path, **CONDITIONAL, **tables)


def test_labels_reach_the_update_and_follow_the_data(tmp_path):
    """The real labels of each batch are the dataset's labels of the batch's images."""
    from gantool.plan import make_plan
    from gantool.recipe import recipe_from_dict

    recipe = recipe_from_dict(testing.tiny_recipe(**CONDITIONAL))
    plan = make_plan(recipe, get_registry())
    assert plan.num_classes == 4
    images, labels = next(plan.data.iterate(5))
    indices = plan.data.indices(5)
    assert torch.equal(labels, plan.dataset.labels()[indices])
    assert torch.equal(images, plan.dataset.as_tensor()[indices].float() / 127.5 - 1)
