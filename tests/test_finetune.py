"""Fine-tuning (`gantool run --init-from`): the mnist5k demo generator fine-tuned on fashion-like
images drawn here (shirt, trouser and shoe silhouettes, 28 px grey).

One tiny mnist5k source run (8 channels, 4 steps, EMA) is trained once per module. The new
run's first weights are read from a Trainer built but not trained; end-to-end runs go through
the real CLI in-process (click's CliRunner).
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import ROOT, invoke_cli as gantool
from gantool.checkpoint import load_checkpoint, validate_metadata
from gantool.engine import Trainer
from gantool.errors import GantoolError
from gantool.finetune import InitFrom, mismatches
from gantool.plugins import get_registry
from gantool.recipe import load_recipe

SMALL = ["run.device=cpu", "train.batch_size=16", "train.log_every=1", "train.sample_grid=4",
         "train.checkpoint_every=1000", "train.sample_every=1000", "eval.metrics=[]"]  # the demo's FID: not here
SOURCE = [*SMALL, "train.max_steps=4", "dataset.limit=64", "generator.base_channels=8",
          "discriminator.base_channels=8", "train.ema_decay=0.9"]

FINETUNE_RECIPE = """
extends = "{base}"

[run]
name = "fashion_finetune"
seed = 7
device = "cpu"

[dataset]
type = "imagefolder"
root = "{root}"
image_size = 28
channels = 1
cache = false

[generator]
base_channels = 8

[discriminator]
base_channels = 8

[train]
ema_decay = 0.9
max_steps = 2
batch_size = 16
log_every = 1
sample_grid = 4

[eval]
metrics = []
"""


def error_lines(result) -> list[str]:
    """The error lines of a command's output (progress lines may come before), with no traceback."""
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def draw_fashion(root, per_class=16, seed=0):
    """Fashion-MNIST-like silhouettes: a light garment on black, 28 x 28 grey, one sub-folder per kind."""
    rng = np.random.default_rng(seed)
    shapes = {
        "shirt": lambda x, y, s: [(x + 4 * s, y + 2 * s), (x + 10 * s, y + 2 * s), (x + 14 * s, y + 7 * s),
                                  (x + 11 * s, y + 9 * s), (x + 11 * s, y + 18 * s), (x + 3 * s, y + 18 * s),
                                  (x + 3 * s, y + 9 * s), (x, y + 7 * s)],
        "trouser": lambda x, y, s: [(x + 3 * s, y), (x + 11 * s, y), (x + 12 * s, y + 20 * s),
                                    (x + 8.5 * s, y + 20 * s), (x + 7 * s, y + 6 * s), (x + 5.5 * s, y + 20 * s),
                                    (x + 2 * s, y + 20 * s)],
        "shoe": lambda x, y, s: [(x, y + 6 * s), (x + 6 * s, y + 6 * s), (x + 9 * s, y + 2 * s),
                                 (x + 12 * s, y + 3 * s), (x + 16 * s, y + 7 * s), (x + 16 * s, y + 10 * s),
                                 (x, y + 10 * s)],
    }
    for kind, outline in shapes.items():
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("L", (28, 28), 0)
            scale = rng.uniform(1.0, 1.25)
            x, y = rng.integers(2, 6), rng.integers(2, 6)
            ImageDraw.Draw(image).polygon(outline(x, y, scale), fill=int(rng.integers(150, 256)))
            image.save(root / kind / f"{kind}_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    source = root / "source"
    gantool("run", ROOT / "recipes" / "dcgan_mnist5k.toml", "--out", source, *[a for s in SOURCE for a in ("--set", s)])
    fashion = draw_fashion(root / "fashion")
    recipe = root / "fashion.toml"
    recipe.write_text(FINETUNE_RECIPE.format(base=ROOT / "recipes" / "dcgan_mnist5k.toml", root=fashion))
    checkpoint = source / "checkpoints" / "last.safetensors"
    tensors, meta = load_checkpoint(checkpoint, require_run=True)
    return types.SimpleNamespace(root=root, source=source, checkpoint=checkpoint, tensors=tensors, meta=meta,
                                 recipe=recipe)


def trainer(setup, out, *overrides, init=None):
    """A run built (its first weights set) but not trained."""
    return Trainer(load_recipe(setup.recipe, list(overrides)), get_registry(), setup.root / out, init_from=init)


def weights(tensors: dict, name: str) -> dict:
    return {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(f"{name}.")}


def same(module, expected: dict) -> bool:
    state = module.state_dict()
    return state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)


def test_the_new_run_starts_from_the_source_weights_with_fresh_optimizers(setup):
    fresh = trainer(setup, "fresh")
    assert not same(fresh.generator, weights(setup.tensors, "generator"))  # the check below can fail

    run = trainer(setup, "tuned", init=InitFrom(setup.checkpoint))
    assert same(run.generator, weights(setup.tensors, "generator"))
    assert same(run.discriminator, weights(setup.tensors, "discriminator"))
    assert same(run.update.ema.model, weights(setup.tensors, "ema_generator"))  # the source's EMA, not its G
    assert not same(run.update.ema.model, weights(setup.tensors, "generator"))
    assert run.step == 0 and run.batches_seen == 0
    assert all(not optimizer.state for optimizer in run.plan.optimizers.values())
    assert run.init_from == {"path": str(setup.checkpoint), "step": 4, "parts": ["generator", "discriminator"]}
    assert run.plan.dataset.image_shape == (1, 28, 28) and run.recipe.run.seed == 7  # its own data and seed


def test_init_generator_leaves_the_discriminator_at_its_fresh_init(setup):
    fresh = trainer(setup, "fresh")
    run = trainer(setup, "g_only", init=InitFrom(setup.checkpoint, ("generator",)))
    assert same(run.generator, weights(setup.tensors, "generator"))
    assert same(run.discriminator, fresh.discriminator.state_dict())
    assert not same(run.discriminator, weights(setup.tensors, "discriminator"))

    run = trainer(setup, "d_only", init=InitFrom(setup.checkpoint, ("discriminator",)))
    assert same(run.generator, fresh.generator.state_dict())
    assert same(run.update.ema.model, fresh.update.ema.model.state_dict())
    assert same(run.discriminator, weights(setup.tensors, "discriminator"))


def test_without_a_source_ema_the_ema_starts_from_its_generator(setup):
    plain = setup.root / "no_ema.safetensors"
    tensors = {k: v for k, v in load_file(setup.checkpoint).items() if not k.startswith("ema_generator.")}
    with safe_open(str(setup.checkpoint), framework="pt") as f:
        save_file(tensors, plain, metadata=f.metadata())
    run = trainer(setup, "from_g", init=InitFrom(plain))
    assert same(run.update.ema.model, weights(setup.tensors, "generator"))


def test_finetune_end_to_end_records_its_source_and_resumes(setup):
    tuned = setup.root / "tuned_cli"
    result = gantool("run", setup.recipe, "--init-from", setup.source, "--out", tuned)
    assert f"--init-from: generator and discriminator from {setup.checkpoint} (step 4)" in result.output
    path = tuned / "checkpoints" / "last.safetensors"
    tensors, meta = load_checkpoint(path, require_run=True)
    assert meta["init_from"] == {"path": str(setup.checkpoint), "step": 4, "parts": ["generator", "discriminator"]}
    assert meta["step"] == 2 and meta["components"]["dataset"]["qualified_name"] == "gantool:imagefolder"
    # Adam counted 4 steps in the source; fresh state counts only this run's 2.
    assert setup.tensors["optimizer.generator.0.step"].item() == 4
    assert tensors["optimizer.generator.0.step"].item() == 2
    assert [json.loads(line)["step"] for line in (tuned / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    # Resume: the run's own weights go on (the source is not loaded again), to the same end as one go.
    gantool("run", setup.recipe, "--resume", "--out", tuned, "--set", "train.max_steps=4")
    one_go = setup.root / "tuned_one_go"
    gantool("run", setup.recipe, "--init-from", setup.checkpoint, "--out", one_go, "--set", "train.max_steps=4")
    resumed, meta = load_checkpoint(path, require_run=True)
    straight, _ = load_checkpoint(one_go / "checkpoints" / "last.safetensors", require_run=True)
    assert meta["step"] == 4 and meta["init_from"]["step"] == 4
    for key in (k for k in straight if k.startswith(("generator.", "discriminator.", "ema_generator."))):
        assert torch.equal(resumed[key], straight[key]), key

    # --resume auto goes with --init-from: this folder has a checkpoint, so it resumes.
    result = gantool("run", setup.recipe, "--resume", "auto", "--init-from", setup.source, "--out", tuned,
                     "--set", "train.max_steps=5")
    assert "--init-from:" not in result.output
    assert load_checkpoint(path, require_run=True)[1]["step"] == 5


def test_metadata_schema_checks_init_from(setup):
    meta = {**setup.meta, "init_from": {"path": "runs/a/checkpoints/last.safetensors", "step": 4,
                                        "parts": ["generator"]}}
    validate_metadata(meta, setup.checkpoint)
    for bad, message in [({"path": 3, "step": 4, "parts": ["generator"]}, "init_from.path"),
                         ({"path": "a", "step": -1, "parts": ["generator"]}, "init_from.step"),
                         ({"path": "a", "step": 4, "parts": ["encoder"]}, "init_from.parts"),
                         ({"path": "a", "step": 4, "parts": []}, "init_from.parts"),
                         ("runs/a", "init_from")]:
        with pytest.raises(GantoolError, match=message):
            validate_metadata({**setup.meta, "init_from": bad}, setup.checkpoint)


def test_shape_mismatch_is_one_line_naming_the_tensors(setup):
    out = setup.root / "wider"
    result = gantool("run", setup.recipe, "--init-from", setup.source, "--out", out,
                     "--set", "generator.base_channels=16", "--set", "discriminator.base_channels=16", code=2)
    [line] = error_lines(result)
    assert line.startswith(f"error: --init-from {setup.checkpoint}: generator.net.0.weight is ")
    assert "(100, 16, 7, 7) there but (100, 32, 7, 7) in this recipe (and 29 more)" in line  # 2 x base_channels
    assert not out.exists()  # checked before the run folder is made

    result = gantool("run", setup.recipe, "--init-from", setup.source, "--out", out,
                     "--set", "train.conditional=true", code=2)
    [line] = error_lines(result)
    assert line.startswith(f"error: --init-from {setup.checkpoint}: generator.") and " more)" in line
    assert line.endswith("hint: the source run is unconditional and this recipe is class-conditional (3 classes); "
                         "set [train] conditional = false to fine-tune it unconditionally")


def test_missing_and_unexpected_tensors_are_named():
    tensors = {"g.weight": torch.zeros(3, 2), "g.extra": torch.zeros(1)}
    assert mismatches(torch.nn.Linear(2, 3), tensors, "g") == [
        "g.bias is in this recipe but not there", "g.extra is there but not in this recipe"]
    assert mismatches(torch.nn.Linear(2, 4), tensors, "g")[0] == "g.weight is (3, 2) there but (4, 2) in this recipe"
    assert mismatches(torch.nn.Linear(2, 3), tensors, "d") == ["it holds no d weights"]


@pytest.mark.parametrize("args, message", [
    (["--resume"], "--init-from starts a new run"),
    (["--init", "gen"], "--init gen: 'gen' is not a network"),
    (["--init", "generator,"], "is not a network"),
])
def test_usage_errors_are_one_line(setup, args, message):
    result = gantool("run", setup.recipe, "--init-from", setup.source, "--out", setup.root / "x", *args, code=2)
    [line] = error_lines(result)
    assert message in line


def test_init_needs_init_from_and_a_real_source(setup):
    result = gantool("run", setup.recipe, "--init", "generator", "--out", setup.root / "x", code=2)
    assert "--init generator needs --init-from" in result.output
    result = gantool("run", setup.recipe, "--init-from", setup.root / "nowhere", "--out", setup.root / "x", code=2)
    assert "--init-from " in result.output and "no such run directory or checkpoint file" in result.output
