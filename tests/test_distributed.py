"""Data parallelism: two gloo processes on CPU, launched the way users launch them (torchrun).

* ``torchrun -m gantool run`` with the BatchNorm DCGAN: ranks stay bitwise in sync, only
  rank 0 writes, and a resumed 2-process run ends exactly where an uninterrupted one does.
* With a BatchNorm-free class-conditional model, 2 processes x 4 images equal 1 process x
  8 images: same images and labels, same latents and fake labels, same flips, averaged
  gradients (up to float rounding). BatchNorm
  normalises each rank's half-batch separately, so the DCGAN cannot match; on GPUs
  SyncBatchNorm could, but it has no CPU kernel (see docs/scaling.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")

RECIPE = """
[run]
name = "ddp"
seed = 3
device = "cpu"

[dataset]
type = "fake"
size = 64
image_size = 16
hflip = true

[generator]
type = "{generator}"
latent_dim = 8
{generator_extra}

[discriminator]
type = "dcgan"
base_channels = 4
{discriminator_extra}

[loss]
type = "bce"

[optimizer.generator]
lr = 1e-3

[optimizer.discriminator]
lr = 1e-3

[train]
batch_size = 8
epochs = 100
max_steps = 6
amp = "off"  # not "auto": on a CPU with bf16 one process and two measure at different batches
log_every = 1
sample_every = 0
checkpoint_every = 0
sample_grid = 4
"""

# A BatchNorm-free generator, registered by a driver script that then calls engine.run.
DRIVER = '''
import argparse
import torch
from torch import nn
import gantool
from gantool import engine
from gantool.plugins import get_registry
from gantool.recipe import load_recipe


class NoNormGenerator(gantool.Generator):
    """Linear -> ReLU -> transposed conv -> tanh; no BatchNorm; the label's embedding joins z."""

    conditioning = "optional"

    def __init__(self, *, image_shape: tuple[int, int, int], num_classes: int = 0, latent_dim: int = 8):
        super().__init__()
        self.latent_dim, self.image_shape, self.num_classes = latent_dim, tuple(image_shape), num_classes
        c, h, w = image_shape
        self.fc = nn.Linear(latent_dim, 8 * (h // 2) * (w // 2))
        self.up = nn.ConvTranspose2d(8, c, 4, 2, 1)
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None

    def forward(self, z, labels=None):
        c, h, w = self.image_shape
        if labels is not None:
            z = z + self.embed(labels)
        return torch.tanh(self.up(torch.relu(self.fc(z)).view(len(z), 8, h // 2, w // 2)))


p = argparse.ArgumentParser()
p.add_argument("recipe")
p.add_argument("out")
p.add_argument("--resume", action="store_true")
p.add_argument("--set", action="append", default=[])
a = p.parse_args()
registry = get_registry()
registry.add("generator", "nonorm", NoNormGenerator, plugin="testdist", version="0")
summary = engine.run(load_recipe(a.recipe, a.set), registry, out_dir=a.out, resume=a.resume)
'''


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _launch(args, *, nproc: int | None, cwd):
    """Run ``args`` (a module or script invocation) alone or under torchrun with gloo."""
    prefix = [sys.executable]
    if nproc:
        prefix += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    proc = subprocess.run(prefix + [str(a) for a in args], capture_output=True, text=True, env=_env(), cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def _weights(run_dir, prefixes=("generator.", "discriminator.")):
    tensors = load_file(str(run_dir / "checkpoints" / "last.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith(prefixes)}


def test_torchrun_gantool_run_stays_in_sync_and_resumes_exactly(tmp_path):
    recipe = tmp_path / "ddp.toml"
    recipe.write_text(RECIPE.format(generator="dcgan", generator_extra="base_channels = 4", discriminator_extra=""))
    gantool = ["-m", "gantool", "run", recipe]

    _launch([*gantool, "--out", tmp_path / "full"], nproc=2, cwd=tmp_path)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 6
    assert summary["ranks_in_sync"] is True
    assert summary["rank_param_checksums"][0] == summary["rank_param_checksums"][1]
    # Only rank 0 logs: one record per step, not two.
    steps = [json.loads(line)["step"] for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]

    _launch([*gantool, "--out", tmp_path / "split", "--set", "train.max_steps=3"], nproc=2, cwd=tmp_path)
    _launch([*gantool, "--out", tmp_path / "split", "--resume"], nproc=2, cwd=tmp_path)
    full, split = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert full.keys() == split.keys()
    for key in full:
        assert torch.equal(full[key], split[key]), key
    full_opt = load_file(str(tmp_path / "full" / "checkpoints" / "last.safetensors"))
    split_opt = load_file(str(tmp_path / "split" / "checkpoints" / "last.safetensors"))
    for key in (k for k in full_opt if k.startswith("optimizer.")):
        assert torch.equal(full_opt[key], split_opt[key]), key


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    recipe = tmp_path / "nonorm.toml"
    conditional = RECIPE.replace("hflip = true", "hflip = true\nnum_classes = 4").replace("[train]", "[train]\nconditional = true")
    recipe.write_text(conditional.format(generator="nonorm", generator_extra="",
                                         discriminator_extra='norm = "none"\ncondition_by = "projection"'))
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))

    _launch([driver, recipe, tmp_path / "one"], nproc=None, cwd=tmp_path)
    # The 2-process run is also interrupted and resumed on the way.
    _launch([driver, recipe, tmp_path / "two", "--set", "train.max_steps=3"], nproc=2, cwd=tmp_path)
    _launch([driver, recipe, tmp_path / "two", "--resume"], nproc=2, cwd=tmp_path)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["ranks_in_sync"] is True and summary["steps"] == 6

    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    first = _after_one_step(tmp_path, driver, recipe)
    assert one.keys() == two.keys()
    moved = max((one[k] - first[k]).abs().max().item() for k in one)
    assert moved > 1e-3  # steps 2..6 changed the weights far beyond the tolerance below
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=2e-5, msg=key)
    # The logged losses match too (rank statistics are averaged before logging).
    logs = [[json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("one", "two")]
    for a, b in zip(*logs):
        assert a["step"] == b["step"]
        assert a["loss_d"] == pytest.approx(b["loss_d"], rel=1e-4) and a["loss_g"] == pytest.approx(b["loss_g"], rel=1e-4)


def _after_one_step(tmp_path, driver, recipe):
    _launch([driver, recipe, tmp_path / "first", "--set", "train.max_steps=1"], nproc=None, cwd=tmp_path)
    return _weights(tmp_path / "first")
