"""Never lose a run: owned run folders, one writer, divergence stops, truthful resume, preemption."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

from gantool import testing
from gantool.cli import cli
from gantool.engine import DivergenceGuard
from gantool.rundir import RunLock

TINY = ["--set", "train.max_steps=4", "--set", "train.log_every=1", "--set", "train.checkpoint_every=2"]


def gantool(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def meta(run):
    with safe_open(str(run / "checkpoints" / "last.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["gantool"])


def test_a_folder_that_holds_a_run_is_never_overwritten(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert gantool("run", tiny_recipe, "--out", out, *TINY)[0] == 0
    before = (out / "checkpoints" / "last.safetensors").read_bytes()
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY)
    assert code == 2 and "already holds a checkpoint" in output and "--resume" in output and "--overwrite" in output
    assert (out / "checkpoints" / "last.safetensors").read_bytes() == before
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4  # not mixed with a second run

    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=2", "--overwrite")
    assert code == 0, output
    (aside,) = tmp_path.glob("run.old-*")
    assert (aside / "checkpoints" / "last.safetensors").read_bytes() == before  # moved, not deleted
    assert meta(out)["step"] == 2


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from gantool.rundir import RunLock\n"
                               f"with RunLock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, output = gantool("run", tiny_recipe, "--out", out, *TINY)
        assert code == 2 and f"in use by pid {holder.pid}" in output, output
        holder.kill()  # like kill -9: the lock file stays behind, naming a dead process
        holder.wait()
        assert (out / ".gantool.lock").exists()
        code, output = gantool("run", tiny_recipe, "--out", out, *TINY)
        assert code == 0, output
    finally:
        holder.kill()


def test_the_lock_is_held_for_the_whole_run(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(Exception, match="in use by pid"):
            RunLock(tmp_path / "run").__enter__()
    with RunLock(tmp_path / "run"):  # released
        pass


def test_orphaned_temp_files_are_removed_at_start(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=2")[0] == 0
    orphan = out / "checkpoints" / ".last.safetensors.99999.tmp"
    orphan.write_bytes(b"x" * 1000)
    assert gantool("run", tiny_recipe, "--out", out, *TINY, "--resume")[0] == 0
    assert not orphan.exists()


def test_non_finite_losses_stop_the_run_and_keep_the_last_finite_checkpoint(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=2")[0] == 0
    good = (out / "checkpoints" / "last.safetensors").read_bytes()
    huge = ["--set", "optimizer.generator.lr=1e30", "--set", "optimizer.discriminator.lr=1e30"]
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=40",
                           "--set", "train.checkpoint_every=1", *huge, "--resume",
                           "--allow-change", "optimizer.generator.lr", "--allow-change", "optimizer.discriminator.lr")
    assert code == 1, output
    assert "step 3: loss_" in output and "is nan: the run diverged" in output and "Traceback" not in output
    assert f"the last finite checkpoint is {out / 'checkpoints' / 'last.safetensors'}" in output
    assert (out / "checkpoints" / "last.safetensors").read_bytes() == good
    code, output = gantool("run", tiny_recipe, "--out", tmp_path / "fresh", *TINY, *huge)
    assert code == 1 and "no checkpoint had been written" in output, output


def test_warn_mode_trains_on_but_never_saves_non_finite_weights(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=2")[0] == 0
    good = (out / "checkpoints" / "last.safetensors").read_bytes()
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=6",
                           "--set", "train.checkpoint_every=1", "--set", "train.divergence=warn",
                           "--set", "optimizer.discriminator.lr=1e30", "--resume",
                           "--allow-change", "optimizer.discriminator.lr")
    assert code == 0, output
    assert "training on" in output and "the last finite checkpoint is kept" in output
    assert (out / "checkpoints" / "last.safetensors").read_bytes() == good


def test_exploding_losses_warn_once(capsys, tmp_path):
    class Run:
        step, out_dir = 7, tmp_path

    guard = DivergenceGuard("stop")
    for value in (0.7, 0.6, 0.8, 0.7, 9e4, 1e5):
        guard.check_losses(Run, {"loss_d": value, "loss_g": 1.0})
    err = capsys.readouterr().err
    assert err.count("over 100x its typical size") == 1 and "loss_d = 9e+04" in err
    DivergenceGuard("stop").check_losses(Run, {"loss_d": 2e4, "loss_g": 3.0})  # huge from the first log on
    assert "loss_d = 2e+04, over 10,000" in capsys.readouterr().err
    DivergenceGuard("off").check_losses(Run, {"loss_d": 2e4, "loss_g": float("nan")})
    assert capsys.readouterr().err == ""


def test_resume_refuses_trajectory_changes_and_applies_allowed_ones(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=2")[0] == 0
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--resume", "--set", "optimizer.generator.lr=0.001")
    assert code == 2 and "optimizer.generator.lr (unset -> 0.001)" in output, output
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--resume", "--set", "run.seed=5")
    assert code == 2 and "run.seed (0 -> 5)" in output, output
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--resume", "--set", "train.batch_size=32",
                           "--allow-change", "train.batch_size")
    assert code == 2 and "cannot change on resume" in output, output

    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--resume", "--set", "optimizer.generator.lr=0.001",
                           "--allow-change", "optimizer.generator.lr")
    assert code == 0, output
    saved = meta(out)
    assert saved["step"] == 4  # the budget (max_steps 2 -> 4) changed freely
    assert {g["lr"] for g in saved["optimizers"]["generator"]["param_groups"]} == {0.001}
    assert saved["history"] == [{"step": 2, "changes": {"optimizer.generator.lr": ["unset", "0.001"]}}]
    assert "lr = 0.001" in (out / "recipe.toml").read_text()


def test_an_allowed_lr_change_goes_through_a_schedule(tmp_path):
    """With a schedule, the new lr becomes its base: the lr in use is base * schedule(step)."""
    warmup = {"generator": {"type": "gantool:warmup", "warmup_steps": 10, "start_factor": 0.5}}
    base = testing.tiny_recipe(scheduler=warmup, train={"max_steps": 2})
    from gantool.engine import run
    from gantool.plugins import get_registry
    from gantool.recipe import recipe_from_dict

    run(recipe_from_dict(base), get_registry(), out_dir=tmp_path / "run")
    changed = testing.tiny_recipe(scheduler=warmup, train={"max_steps": 3}, optimizer={"generator": {"lr": 0.01}})
    run(recipe_from_dict(changed), get_registry(), out_dir=tmp_path / "run", resume=True,
        allow_changes=("optimizer.generator.lr",))
    groups = meta(tmp_path / "run")["optimizers"]["generator"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(0.01 * (0.5 + 0.5 * 3 / 10))  # lr at step 3 of the warm-up


def test_resume_auto_starts_fresh_then_continues(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=2", "--resume", "auto")
    assert code == 0 and meta(out)["step"] == 2, output
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY, "--resume", "auto")
    assert code == 0 and meta(out)["step"] == 4, output
    code, output = gantool("run", tiny_recipe, *TINY, "--resume", "auto")
    assert code == 2 and "--resume auto needs --out" in output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_sigterm_and_sigusr1_save_a_checkpoint_and_exit_with_their_code(tiny_recipe, tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gantool", "run", str(tiny_recipe), "--out", str(out),
                             "--set", "train.max_steps=100000", "--set", "train.epochs=100000", "--set", "train.log_every=1",
                             "--set", "train.checkpoint_every=0", "--set", "train.sample_every=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text()):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"{signal.Signals(sig).name} at step" in err and "checkpoint saved" in err
    step = meta(out)["step"]
    assert step >= 1
    code, output = gantool("run", tiny_recipe, "--out", out, "--set", f"train.max_steps={step + 1}",
                           "--set", "train.log_every=1", "--set", "train.checkpoint_every=0",
                           "--set", "train.sample_every=0", "--set", "train.epochs=100000", "--resume", "auto")
    assert code == 0 and meta(out)["step"] == step + 1, output


def test_a_full_disk_names_the_path_and_keeps_the_last_checkpoint(tiny_recipe, tmp_path, monkeypatch):
    from gantool import checkpoint

    out = tmp_path / "run"
    real_write, calls = checkpoint._atomic_write, []

    def full_after_first(path, blob):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, blob)

    monkeypatch.setattr(checkpoint, "_atomic_write", full_after_first)
    code, output = gantool("run", tiny_recipe, "--out", out, *TINY)
    assert code == 1, output
    assert f"{out / 'checkpoints' / 'last.safetensors'}: No space left on device at step 4" in output
    assert "the last good checkpoint is" in output
    assert meta(out)["step"] == 2


def test_eval_prints_its_results_before_writing_them(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    assert gantool("run", tiny_recipe, "--out", out, *TINY, "--set", "train.max_steps=2")[0] == 0
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, output = gantool("eval", out, "--metric", "fid", "--n", "64", "--json", blocker / "eval.json")
    assert code == 2, output
    assert "fid" in output and "cannot write the results" in output and "printed above" in output
