"""Results out of a run: sample/interpolate/eval/plot commands, EMA, keep_best, TensorBoard.

One tiny run (8 steps, EMA, checkerboard evaluated every 2 steps, keep_best) is trained
once per module and shared; tests that delete things work on copies of it. Commands go
through click's CliRunner in-process (the real `gantool` group, its error handling and
exit codes) except where a fresh process is the point.
"""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.utils import save_image

from conftest import TINY_RECIPE, run_cli
from gantool import Generator, Metric
from gantool.checkpoint import load_checkpoint
from gantool.cli import cli
from gantool.data import mix_seed
from gantool.engine import Trainer
from gantool.sampling import generator_from_checkpoint
from gantool.update import EMA
from gantool.errors import GantoolError
from gantool.evaluation import evaluate_checkpoint
from gantool.plugins import get_registry, load_plugins
from gantool.plotting import plot_run
from gantool.recipe import load_recipe
from gantool.registry import Registry
from gantool.sampling import interpolation_latents, load_generator, seeded_latents, slerp

RUN_SETTINGS = (
    "train.ema_decay=0.9",
    'eval.metrics=["checkerboard"]',
    "eval.every=2",
    "eval.n_samples=64",
    "train.keep_best=checkerboard_diff_db",
)


def gantool(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.stderr}"
    return result


def train(recipe_path, out, *overrides, registry=None):
    trainer = Trainer(load_recipe(recipe_path, list(overrides)), registry or get_registry(), out)
    return trainer, trainer.fit()


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def png(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB")))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 8-step run with EMA, checkerboard every 2 steps and keep_best."""
    root = tmp_path_factory.mktemp("shared")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    out = root / "run"
    trainer, summary = train(recipe, out, *RUN_SETTINGS)
    return types.SimpleNamespace(dir=out, recipe=recipe, trainer=trainer, summary=summary)


@pytest.fixture
def run_copy(run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(run.dir, dest)
    return dest


# ----------------------------------------------------------------------------- sample


def test_sample_needs_only_the_checkpoint(run_copy, tmp_path, monkeypatch):
    for item in run_copy.iterdir():  # the run folder keeps nothing but its checkpoints
        if item.name != "checkpoints":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    result = gantool("sample", run_copy, "--n", 9, "--seed", 1, "--device", "cpu")
    out = run_copy / "samples" / "sample_seed1.png"
    assert f"wrote {out}" in result.output and "ema_generator" in result.output
    assert Image.open(out).size == (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)  # 3x3 grid of 16px, padding 2

    # The same images as the EMA generator rebuilt in-process with the same seed.
    G, _ = generator_from_checkpoint(run_copy / "checkpoints" / "last.safetensors", get_registry())
    with torch.no_grad():
        expected = G(seeded_latents(G, 9, 1))
    save_image(expected, tmp_path / "expected.png", nrow=3, normalize=True, value_range=(-1, 1))
    assert torch.equal(png(out), png(tmp_path / "expected.png"))

    # Now the run folder is gone too: a bare checkpoint file writes to the working directory.
    bare = tmp_path / "elsewhere" / "model.safetensors"
    bare.parent.mkdir()
    shutil.copy(run_copy / "checkpoints" / "last.safetensors", bare)
    shutil.rmtree(run_copy)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    gantool("sample", bare, "--n", 9, "--seed", 1)
    assert torch.equal(png(cwd / "sample_seed1.png"), png(tmp_path / "expected.png"))


def test_individual_writes_n_pngs(run, tmp_path):
    folder = tmp_path / "pngs"
    result = gantool("sample", run.dir / "checkpoints" / "best.safetensors", "--n", 5, "--individual", folder)
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"sample_{i:04d}.png" for i in range(5)]
    assert all(Image.open(f).size == (16, 16) for f in files)
    assert "wrote 5 PNGs" in result.output
    assert not (run.dir / "samples" / "sample_seed0.png").exists()  # --individual alone writes no grid


def test_sample_errors_are_one_line_exit_2(run, tmp_path):
    missing = gantool("sample", tmp_path / "nope", ok=False)
    assert missing.exit_code == 2 and "no such run directory" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "last.safetensors: not found" in gantool("sample", empty, ok=False).stderr
    assert "train.keep_best" in gantool("sample", empty, "--best", ok=False).stderr
    tensors, meta = load_checkpoint(run.dir / "checkpoints" / "last.safetensors")
    plain = tmp_path / "plain.safetensors"  # the same checkpoint without its EMA generator
    save_file({k: v for k, v in tensors.items() if not k.startswith("ema_generator.")}, plain, metadata={"gantool": json.dumps(meta)})
    assert "generator, seed 0" in gantool("sample", plain, "--n", 1, "--out", tmp_path / "x.png").output
    no_ema = gantool("sample", plain, "--ema", ok=False)
    assert no_ema.exit_code == 2 and "has none" in no_ema.stderr and "Traceback" not in no_ema.output


# ----------------------------------------------------------------------------- EMA


def test_ema_update_is_the_moving_average_and_copies_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(net, 0.75)
    before = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(8, 3))  # moves the BN running statistics
    ema.update(net)
    for p_ema, p_old, p_new in zip(ema.model.parameters(), before, net.parameters()):
        torch.testing.assert_close(p_ema, 0.75 * p_old + 0.25 * p_new)
    for b_ema, b in zip(ema.model.buffers(), net.buffers()):
        assert torch.equal(b_ema, b)


def test_ema_checkpoint_and_samples_use_the_ema_generator(run, tmp_path):
    path = run.dir / "checkpoints" / "last.safetensors"
    tensors = load_file(path)
    ema_keys = sorted(k for k in tensors if k.startswith("ema_generator."))
    assert ema_keys and len(ema_keys) == len([k for k in tensors if k.startswith("generator.")])
    weights = [k for k in ema_keys if k.endswith("weight")]
    assert any(not torch.equal(tensors[k], tensors["generator." + k.split(".", 1)[1]]) for k in weights)

    G_ema, _, source = load_generator(path, get_registry(), torch.device("cpu"))
    G_raw, _, raw_source = load_generator(path, get_registry(), torch.device("cpu"), ema=False)
    assert (source, raw_source) == ("ema_generator", "generator")
    for name, value in G_ema.state_dict().items():
        assert torch.equal(value, tensors[f"ema_generator.{name}"])

    # The training-time grid (samples/final.png) was drawn by the EMA generator.
    fixed_z = G_ema.sample_latent(16, generator=torch.Generator().manual_seed(mix_seed(0, 4)))
    with torch.no_grad():
        for G, name in ((G_ema, "ema.png"), (G_raw, "raw.png")):
            save_image(G(fixed_z), tmp_path / name, nrow=4, normalize=True, value_range=(-1, 1))
    final = png(run.dir / "samples" / "final.png")
    assert torch.equal(final, png(tmp_path / "ema.png"))
    assert not torch.equal(final, png(tmp_path / "raw.png"))

    # gantool sample: EMA by default, the raw generator with --no-ema.
    gantool("sample", path, "--n", 4, "--out", tmp_path / "cli_ema.png")
    gantool("sample", path, "--n", 4, "--no-ema", "--out", tmp_path / "cli_raw.png")
    assert not torch.equal(png(tmp_path / "cli_ema.png"), png(tmp_path / "cli_raw.png"))


# ----------------------------------------------------------------------------- interpolation


def test_slerp_endpoints_are_exact_and_norm_is_kept():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(5, 100, generator=g), torch.randn(5, 100, generator=g)
    t = torch.linspace(0, 1, 7)
    walk = slerp(z0, z1, t)
    assert walk.shape == (5, 7, 100) and walk.dtype == z0.dtype
    assert torch.equal(walk[:, 0], z0) and torch.equal(walk[:, -1], z1)

    # Equal norms: every point on the path keeps that norm (a straight line would not).
    u0, u1 = z0 / z0.norm(dim=1, keepdim=True) * 10, z1 / z1.norm(dim=1, keepdim=True) * 10
    arc = slerp(u0, u1, t)
    norms = arc.norm(dim=2)
    torch.testing.assert_close(norms, torch.full_like(norms, 10.0))
    assert ((u0 + u1) / 2).norm(dim=1).max() < 9  # lerp's midpoint of near-orthogonal vectors shrinks
    # Constant angular speed along the great circle: the angle to u0 grows linearly with t.
    cos = torch.nn.functional.cosine_similarity(arc.double(), u0.double().unsqueeze(1), dim=2)
    omega = cos[:, -1].clamp(-1, 1).acos()
    torch.testing.assert_close(cos.clamp(-1, 1).acos(), omega.unsqueeze(1) * t.double(), atol=1e-5, rtol=0)
    # Parallel endpoints fall back to a straight line instead of dividing by sin(0).
    flat = slerp(z0[:1], 2 * z0[:1], torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(flat[0, 1], 1.5 * z0[0])


class BlockLatentGenerator(Generator):
    """A generator whose latent is a (4, 2, 2) block, not a flat vector."""

    def __init__(self):
        super().__init__()
        self.latent_dim, self.image_shape = 16, (1, 8, 8)
        self.net = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 1, 4, stride=4), torch.nn.Tanh())

    def sample_latent(self, n, *, device=None, generator=None):
        return torch.randn(n, 4, 2, 2, device=device, generator=generator)

    def forward(self, z):
        return self.net(z)


@pytest.mark.parametrize("make", [BlockLatentGenerator, None])
def test_interpolation_rows_walk_between_their_endpoints(make, run):
    if make is None:
        G, _ = generator_from_checkpoint(run.dir / "checkpoints" / "last.safetensors", get_registry())
    else:
        G = make().eval()
    rows, steps = 3, 5
    z, start, end = interpolation_latents(G, rows, steps, seed=7)
    assert z.shape == (rows * steps, *start.shape[1:])
    walk = z.view(rows, steps, *start.shape[1:])
    assert torch.equal(walk[:, 0], start) and torch.equal(walk[:, -1], end)
    assert not torch.equal(start, end)
    with torch.no_grad():
        images = G(z).view(rows, steps, *G.image_shape)
        torch.testing.assert_close(images[:, 0], G(start))
        torch.testing.assert_close(images[:, -1], G(end))
    z_again, _, _ = interpolation_latents(G, rows, steps, seed=7)
    assert torch.equal(z, z_again)


def test_interpolate_command_writes_rows_by_steps_grid(run, tmp_path):
    out = tmp_path / "walk.png"
    result = gantool("sample", run.dir, "--interpolate", "--steps", 5, "--rows", 3, "--out", out)
    assert "3 walks x 5 steps" in result.output
    assert Image.open(out).size == (5 * 16 + 6 * 2, 3 * 16 + 4 * 2)  # columns = steps, rows = walks
    assert gantool("sample", run.dir, "--interpolate", "--steps", 1, ok=False).exit_code == 2


# ----------------------------------------------------------------------------- eval


def test_eval_writes_json_that_matches_training_time_values(run_copy):
    (run_copy / "recipe.toml").unlink()
    result = gantool("eval", run_copy, "--metric", "checkerboard", "--n", 64)
    written = json.loads((run_copy / "eval.json").read_text())
    assert written["step"] == 8 and written["generator"] == "ema_generator" and written["n"] == 64
    (entry,) = written["metrics"]
    assert entry["qualified_name"] == "gantool:checkerboard" and entry["protocol"]["n_fake"] == 64
    assert set(written["values"]) == {"checkerboard_fake_db", "checkerboard_real_db", "checkerboard_diff_db"}
    assert "checkerboard_diff_db" in result.output and f"{run_copy / 'eval.json'}" in result.output
    # Same generator, same metric seed, same n: the value the run logged at its last step.
    last = [r for r in records(run_copy) if "checkerboard_diff_db" in r][-1]
    assert last["step"] == 8
    assert written["values"]["checkerboard_diff_db"] == pytest.approx(last["checkerboard_diff_db"], rel=1e-9)


def test_eval_defaults_to_the_recipes_metrics_and_writes_where_asked(run, tmp_path):
    out = tmp_path / "scores" / "best.json"
    gantool("eval", run.dir, "--best", "--json", out)
    written = json.loads(out.read_text())
    assert written["checkpoint"].endswith("best.safetensors") and written["n"] == 64  # recipe's eval.n_samples
    assert [m["metric"] for m in written["metrics"]] == ["checkerboard"]
    bad = gantool("eval", run.dir, "--metric", "nosuchmetric", ok=False)
    assert bad.exit_code == 2 and "--metric nosuchmetric" in bad.stderr
    bad_set = gantool("eval", run.dir, "--set", "train.epochs=1", ok=False)
    assert bad_set.exit_code == 2 and "dataset.<key>" in bad_set.stderr


class ScriptedMetric(Metric):
    """Returns preset values in order (and the generator's output mean), never touching RNG."""

    goals = {"score": "max", "pixel_mean": "min"}
    values = [1.0, 5.0, 2.0, 3.0]

    def __init__(self, *, offset: float = 0.0):
        self.calls, self.offset = 0, offset

    def compute(self, generator, dataset, *, n, device):
        assert not generator.training and not torch.is_grad_enabled()
        z = generator.sample_latent(n, device=device, generator=torch.Generator(device=device).manual_seed(0))
        value = self.values[self.calls % len(self.values)] + self.offset
        self.calls += 1
        self.protocol = {"n_fake": n, "script": "values"}
        return {"score": value, "pixel_mean": generator(z).mean().item()}


@pytest.fixture
def scripted_registry():
    registry = Registry()
    load_plugins(registry)
    registry.add("metric", "scripted", ScriptedMetric, plugin="tests", version="0")
    return registry


def test_eval_uses_recipe_metric_parameters_and_overrides(run, scripted_registry):
    path = run.dir / "checkpoints" / "last.safetensors"
    result = evaluate_checkpoint(path, scripted_registry, ["scripted"], n=8, device=torch.device("cpu"), overrides=["eval.scripted.offset=10"])
    assert result["values"]["score"] == 11.0 and result["metrics"][0]["params"] == {"offset": 10}
    assert result["metrics"][0]["protocol"] == {"n_fake": 8, "script": "values"}
    with pytest.raises(GantoolError, match=r"\[eval.scripted\] offset"):
        evaluate_checkpoint(path, scripted_registry, ["scripted"], n=8, device=torch.device("cpu"), overrides=["eval.scripted.offset=high"])


# ----------------------------------------------------------------------------- keep_best


def test_keep_best_keeps_the_lowest_recorded_value(run):
    evals = [r for r in records(run.dir) if "checkerboard_diff_db" in r]
    assert [r["step"] for r in evals] == [2, 4, 6, 8]  # the last step is evaluated once, not twice
    best = min(evals, key=lambda r: r["checkerboard_diff_db"])
    G, meta = generator_from_checkpoint(run.dir / "checkpoints" / "best.safetensors", get_registry())
    assert meta["step"] == best["step"] and meta["best"]["value"] == best["checkerboard_diff_db"]
    assert run.summary["best"] == meta["best"]
    # Re-scoring best.safetensors gives the very value that made it best.
    rescored = evaluate_checkpoint(run.dir / "checkpoints" / "best.safetensors", get_registry(), ["checkerboard"], n=64, device=torch.device("cpu"))
    assert rescored["values"]["checkerboard_diff_db"] == pytest.approx(best["checkerboard_diff_db"], rel=1e-9)


def test_keep_best_follows_the_metric_goal_and_saves_that_steps_weights(tiny_recipe, tmp_path, scripted_registry):
    settings = ('eval.metrics=["scripted"]', "eval.every=2", "eval.n_samples=4", "train.keep_best=score")
    _, summary = train(tiny_recipe, tmp_path / "run", *settings, registry=scripted_registry)
    scores = [(r["step"], r["score"]) for r in records(tmp_path / "run") if "score" in r]
    assert scores == [(2, 1.0), (4, 5.0), (6, 2.0), (8, 3.0)]
    assert summary["best"] == {"key": "score", "value": 5.0, "step": 4}  # goal "max"
    assert summary["eval_protocol"] == {"scripted": {"n_fake": 4, "script": "values"}}
    # best.safetensors holds exactly the weights of step 4: compare with a run stopped there.
    train(tiny_recipe, tmp_path / "upto4", *settings, "train.max_steps=4", registry=scripted_registry)
    best = load_file(tmp_path / "run" / "checkpoints" / "best.safetensors")
    at4 = load_file(tmp_path / "upto4" / "checkpoints" / "last.safetensors")
    nets = [k for k in at4 if k.startswith(("generator.", "discriminator."))]
    assert nets and all(torch.equal(best[k], at4[k]) for k in nets)

    with pytest.raises(GantoolError, match="keep_best.*not produced"):
        train(tiny_recipe, tmp_path / "typo", *settings[:3], "train.keep_best=scor", registry=scripted_registry)
    with pytest.raises(GantoolError, match="no \\[eval\\] metrics"):
        train(tiny_recipe, tmp_path / "nometrics", "train.keep_best=score", registry=scripted_registry)


# ----------------------------------------------------------------------------- plot


def test_plot_writes_a_png_with_a_panel_per_metric(run, run_copy, tmp_path):
    result = gantool("plot", run_copy)
    out = run_copy / "metrics.png"
    assert Image.open(out).size[0] > 400
    assert "losses, discriminator outputs, checkerboard_fake_db, checkerboard_real_db, checkerboard_diff_db" in result.output
    # A resumed run repeats steps (the later line wins); a line cut by a crash is skipped.
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 8, "epoch": 2.0, "loss_d": 9.0, "loss_g": 9.0, "d_real": 0.5, "d_fake": 0.5}) + "\n")
        f.write('{"step": 9, "loss_d"')
    _, panels, bad = plot_run(run_copy, tmp_path / "again.png")
    assert bad == 1 and len(panels) == 5 and (tmp_path / "again.png").exists()
    from gantool.plotting import best_record, read_metrics

    assert best_record(run_copy) == run.summary["best"]  # starred on its panel
    training, evals, _ = read_metrics(run_copy / "metrics.jsonl")
    assert [r["step"] for r in training] == [2, 4, 6, 8] and training[-1]["loss_d"] == 9.0
    assert [s for s, _ in evals["checkerboard_diff_db"]] == [2, 4, 6, 8]


def test_plot_errors(tmp_path, monkeypatch):
    empty = gantool("plot", tmp_path, ok=False)
    assert empty.exit_code == 2 and "metrics.jsonl: not found" in empty.stderr
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss_d": 1, "loss_g": 1, "d_real": 0.5, "d_fake": 0.5}\n')
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    missing = gantool("plot", tmp_path, ok=False)
    assert missing.exit_code == 2 and "pip install 'gantool[plot]'" in missing.stderr


# ----------------------------------------------------------------------------- TensorBoard


def test_tensorboard_missing_is_a_clear_error(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(GantoolError, match=r"\[log\] tensorboard: tensorboard is not installed; pip install 'gantool\[tensorboard\]'"):
        train(tiny_recipe, tmp_path / "run", "log.tensorboard=true")


def test_tensorboard_missing_from_the_command_line_exits_2(tiny_recipe, tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorboard is installed here; the in-process test covers the message")
    proc = run_cli("run", tiny_recipe, "--set", "log.tensorboard=true", "--out", tmp_path / "run", check=2)
    assert "pip install 'gantool[tensorboard]'" in proc.stderr and "Traceback" not in proc.stderr


def test_tensorboard_gets_scalars_eval_values_and_sample_grids(tiny_recipe, tmp_path, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, logdir, purge_step=None):
            calls.append(("init", logdir))

        def add_scalar(self, tag, value, step):
            calls.append(("scalar", tag, step))

        def add_image(self, tag, image, step):
            calls.append(("image", tag, tuple(image.shape), step))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    train(tiny_recipe, tmp_path / "run", "log.tensorboard=true", 'eval.metrics=["checkerboard"]', "eval.every=4", "eval.n_samples=16")
    assert calls[0] == ("init", str(tmp_path / "run" / "tensorboard")) and calls[-1] == ("close",)
    scalars = {(c[1], c[2]) for c in calls if c[0] == "scalar"}
    assert {("loss_d", 2), ("loss_g", 8), ("d_fake", 6), ("checkerboard_diff_db", 4), ("checkerboard_diff_db", 8)} <= scalars
    images = [c for c in calls if c[0] == "image"]
    assert [c[3] for c in images] == [3, 6, 8] and images[0][2] == (3, 4 * 16 + 5 * 2, 4 * 16 + 5 * 2)


def test_sample_from_a_fresh_process(run, tmp_path):
    # The real console entry, as a user runs it: exit 0 and the path it wrote.
    out = tmp_path / "grid.png"
    proc = run_cli("sample", run.dir, "--n", 4, "--out", out, check=0)
    assert f"wrote {out}" in proc.stdout and Image.open(out).size == (2 * 16 + 3 * 2,) * 2
