"""`gantool sample --truncation PSI` and `--seeds LIST`, on an unconditional and a conditional run.

Two tiny runs (3 steps each) are trained once per module; commands go through the real CLI
in-process (click's CliRunner).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, TINY_RECIPE, invoke_cli as gantool
from gantool.errors import GantoolError
from gantool.plugins import get_registry
from gantool.sampling import generator_from_checkpoint, parse_seeds, per_seed_latents, seeded_latents, seeds_label

CONDITIONAL = ["run.device=cpu", "train.max_steps=3", "train.batch_size=32", "train.sample_grid=10",
               "dataset.limit=320", "generator.base_channels=8", "discriminator.base_channels=8", "eval.metrics=[]"]


def pixels(path) -> np.ndarray:
    return np.array(Image.open(path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    gantool("run", recipe, "--out", root / "plain", "--set", "train.max_steps=3")
    gantool("run", ROOT / "recipes" / "cdcgan_mnist5k.toml", "--out", root / "cond",
            *[a for s in CONDITIONAL for a in ("--set", s)])
    return types.SimpleNamespace(root=root, plain=root / "plain", cond=root / "cond")


def test_truncation_keeps_latents_inside_psi_and_changes_the_images(runs):
    G, _ = generator_from_checkpoint(runs.plain / "checkpoints" / "last.safetensors", get_registry())
    z = seeded_latents(G, 64, 3)
    truncated = seeded_latents(G, 64, 3, truncation=0.5)
    assert z.abs().max() > 0.5 and truncated.abs().max() <= 0.5
    inside = z.abs() <= 0.5
    assert torch.equal(truncated[inside], z[inside])  # only the components outside are redrawn
    assert not torch.equal(truncated[~inside], z[~inside])
    assert torch.equal(truncated, seeded_latents(G, 64, 3, truncation=0.5))  # a function of the seed
    assert not torch.equal(truncated, seeded_latents(G, 64, 4, truncation=0.5))
    # The kept values follow N(0, 1) truncated to [-psi, psi]: E|z| = 0.2448 for psi = 0.5 (a few sigma here).
    assert abs(seeded_latents(G, 2000, 0, truncation=0.5).abs().mean().item() - 0.2448) < 0.01

    out = runs.root / "trunc"
    result = gantool("sample", runs.plain, "--seed", 3, "--n", 9, "--truncation", 0.5, "--device", "cpu",
                     "--individual", out / "a")
    assert "seed 3, truncation 0.5)" in result.output
    gantool("sample", runs.plain, "--seed", 3, "--n", 9, "--truncation", 0.5, "--device", "cpu",
            "--individual", out / "b")
    gantool("sample", runs.plain, "--seed", 3, "--n", 9, "--device", "cpu", "--individual", out / "c")
    for name in (f"sample_{i:04d}.png" for i in range(9)):
        assert np.array_equal(pixels(out / "a" / name), pixels(out / "b" / name))
    assert not np.array_equal(pixels(out / "a" / "sample_0000.png"), pixels(out / "c" / "sample_0000.png"))
    result = gantool("sample", runs.plain, "--seed", 3, "--n", 9, "--truncation", 0.5, "--device", "cpu")
    assert (runs.plain / "samples" / "sample_seed3_trunc0.5.png").is_file(), result.output


def test_an_image_per_seed_is_the_same_alone_or_in_a_range(runs):
    out = runs.root / "seeds"
    result = gantool("sample", runs.plain, "--seeds", "1-16", "--individual", out / "range", "--device", "cpu",
                     "--out", out / "grid.png")
    assert "16 samples" in result.output and "seeds 1-16" in result.output
    assert sorted(p.name for p in (out / "range").iterdir()) == [f"seed{s:04d}.png" for s in range(1, 17)]
    gantool("sample", runs.plain, "--seed", 7, "--n", 1, "--individual", out / "alone", "--device", "cpu")
    seven = pixels(out / "alone" / "sample_0000.png")
    assert np.array_equal(seven, pixels(out / "range" / "seed0007.png"))
    assert not np.array_equal(seven, pixels(out / "range" / "seed0008.png"))
    grid = pixels(out / "grid.png")  # 4 x 4, seed order: seed 7 is row 1, column 2 (16 px images, 2 px padding)
    assert np.array_equal(grid[20:36, 38:54], seven)

    gantool("sample", runs.plain, "--seeds", "3,5,9-12", "--truncation", 0.7, "--individual", out / "list",
            "--device", "cpu")
    gantool("sample", runs.plain, "--seed", 10, "--n", 1, "--truncation", 0.7, "--individual", out / "ten",
            "--device", "cpu")
    assert np.array_equal(pixels(out / "ten" / "sample_0000.png"), pixels(out / "list" / "seed0010.png"))
    result = gantool("sample", runs.plain, "--seeds", "3,5,9-12", "--truncation", 0.7, "--device", "cpu")
    assert (runs.plain / "samples" / "sample_seeds3_5_9-12_trunc0.7.png").is_file(), result.output


def test_seed_lists_parse_and_bad_ones_are_refused():
    assert parse_seeds("3,5,9-12") == [3, 5, 9, 10, 11, 12]
    assert parse_seeds(" 12 - 14 , 2,13") == [2, 12, 13, 14]
    assert parse_seeds("0-9999") == list(range(10_000))
    assert seeds_label([1, 2, 3, 7, 9, 10]) == "1-3_7_9-10" and seeds_label(list(range(0, 400, 2))) == "0to398_n200"
    for bad in ("", "a", "1-", "-3", "1,,2", "5-2", "1.5", "0-10000", "0-5000,6000-11000", "1" + "0" * 20, "9" * 5000):
        with pytest.raises(GantoolError, match="--seeds"):
            parse_seeds(bad)


@pytest.mark.parametrize("args, message", [
    (["--seeds", "1-16", "--n", "4"], "--seeds picks the images itself, one per seed; drop --n"),
    (["--seeds", "1-16", "--seed", "0"], "drop --seed"),
    (["--seeds", "1-16", "--n", "4", "--seed", "2"], "drop --n and --seed"),
    (["--seeds", "1-3", "--interpolate"], "--seeds does not apply to --interpolate"),
    (["--seeds", "x-3"], "'x-3' is not a seed or a range"),
    (["--seeds", "5-2"], "the range 5-2 runs backwards; write 2-5"),
    (["--seeds", "1-20000"], "more than 10,000 seeds"),
    (["--truncation", "0"], "--truncation 0: must be a finite number > 0"),
    (["--truncation", "-0.5"], "--truncation -0.5: must be"),
    (["--truncation", "nan"], "--truncation nan: must be"),
    (["--truncation", "inf"], "--truncation inf: must be"),
])
def test_usage_errors_are_one_line(runs, args, message):
    result = gantool("sample", runs.plain, "--device", "cpu", *args, code=2)
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert message in result.output


def test_truncation_and_seeds_on_a_conditional_checkpoint(runs):
    path = runs.cond / "checkpoints" / "last.safetensors"
    G, _ = generator_from_checkpoint(path, get_registry())
    assert per_seed_latents(G, [1, 2], truncation=0.3).abs().max() <= 0.3
    out = runs.root / "cond_out"
    result = gantool("sample", runs.cond, "--seeds", "1-4", "--class", "3", "--truncation", 0.5,
                     "--individual", out / "class3", "--device", "cpu")
    assert "4 samples of class '3'" in result.output
    gantool("sample", runs.cond, "--seed", 2, "--n", 1, "--class", 3, "--truncation", 0.5,
            "--individual", out / "alone", "--device", "cpu")
    assert np.array_equal(pixels(out / "alone" / "sample_0000.png"), pixels(out / "class3" / "seed0002.png"))

    # The per-class grid: a row per class, a column per seed; files seedNNNN_classC.png.
    result = gantool("sample", runs.cond, "--seeds", "1-3", "--truncation", 0.5, "--individual", out / "grid",
                     "--device", "cpu")
    assert "10 classes x 3 seeds" in result.output
    assert len(list((out / "grid").iterdir())) == 30
    assert np.array_equal(pixels(out / "alone" / "sample_0000.png"), pixels(out / "grid" / "seed0002_class3.png"))
    assert not np.array_equal(pixels(out / "grid" / "seed0002_class3.png"),
                              pixels(out / "grid" / "seed0002_class4.png"))
    result = gantool("sample", runs.cond, "--n", 20, "--truncation", 0.5, "--device", "cpu")
    assert "10 classes x 2 samples" in result.output
    assert (runs.cond / "samples" / "sample_classes_seed0_trunc0.5.png").is_file()

    result = gantool("sample", runs.cond, "--interpolate", "--class", 7, "--rows", 2, "--steps", 3,
                     "--truncation", 0.5, "--device", "cpu")
    assert (runs.cond / "samples" / "interpolate_class7_seed0_trunc0.5.png").is_file(), result.output
