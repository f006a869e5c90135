"""The training lifecycle is open to plugins: augmentations, optimizers and schedules,
callbacks and loggers, the Loss contract, and `gantool check` running the same plan as `run`.

Third-party components here are real distributions (conftest.make_distribution) loaded
through entry points in a fresh `gantool` process, as a user's would be.
"""

import json

import pytest
import torch

from conftest import make_distribution, run_cli
from gantool.checkpoint import load_checkpoint

FAST = ["--set", "train.epochs=1", "--set", "train.log_every=1"]  # 4 steps of the tiny recipe


def plugin(tmp_path, source: str, registrations: str):
    """A third-party distribution 'gantool-thirdparty' whose module holds ``source``."""
    hook = f"import gantool\n\n@gantool.hookimpl\ndef gantool_register_components(registry):\n{registrations}\n"
    site = make_distribution(tmp_path / "site", "gantool-thirdparty", "1.0", {"thirdparty": hook, "thirdparty_impl": source},
                             {"thirdparty": "thirdparty"})
    return {"PYTHONPATH": str(site)}


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


VECTOR_LOSS = """
import gantool

class VectorLoss(gantool.Loss):
    def discriminator_loss(self, real_scores, fake_scores, ctx):
        return (fake_scores - real_scores)          # forgot .mean()

    def generator_loss(self, real_scores, fake_scores, ctx):
        return -fake_scores.mean()

class OldLoss(gantool.Loss):
    def discriminator_loss(self, real_scores, fake_scores):   # the contract before ctx
        return (fake_scores - real_scores).mean()

    def generator_loss(self, fake_scores):
        return -fake_scores.mean()
"""


def test_check_calls_the_loss_and_names_it_when_it_returns_a_vector(tiny_recipe, tmp_path):
    env = plugin(tmp_path, VECTOR_LOSS, '    registry.add("loss", "vector", "thirdparty_impl:VectorLoss")\n'
                                        '    registry.add("loss", "old", "thirdparty_impl:OldLoss")')
    proc = run_cli("check", tiny_recipe, "--set", "loss.type=vector", env=env, check=2)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "[loss] type: loss gantool-thirdparty:vector.discriminator_loss returned (2,); it must return a scalar" in proc.stderr
    old = run_cli("check", tiny_recipe, "--set", "loss.type=old", env=env, check=2)
    assert "[loss] type: gantool-thirdparty:old.discriminator_loss failed on a real batch: TypeError" in old.stderr


def test_check_runs_the_cross_key_checks_of_run(tiny_recipe):
    proc = run_cli("check", tiny_recipe, "--set", "train.keep_best=fid", check=2)
    assert "[train] keep_best: no [eval] metrics" in proc.stderr
    proc = run_cli("check", tiny_recipe, "--set", "eval.metrics=[\"fidd\"]", check=2)
    assert "no metric named 'fidd'; did you mean 'fid'?" in proc.stderr


STOPPER = """
import json
from typing import Annotated

import gantool

class StopAfter(gantool.Callback):
    \"\"\"Writes its own log and stops the run early.

    Args:
        steps: stop once this many steps are logged
    \"\"\"

    def __init__(self, *, steps: Annotated[int, gantool.Range(ge=1)] = 2):
        self.steps, self.events = steps, []

    def _write(self, run, event, **extra):
        with open(run.out_dir / "stopper.jsonl", "a") as f:
            f.write(json.dumps({"event": event, "step": run.step, **extra}) + "\\n")

    def on_run_start(self, run):
        self._write(run, "start", total=run.total_steps)

    def on_log(self, run, record):
        self._write(run, "log", loss_d=record["loss_d"])
        if record["step"] >= self.steps:
            run.request_stop(f"{self.steps} steps are enough")

    def on_checkpoint(self, run, path, which):
        self._write(run, "checkpoint", which=which, exists=path.exists())

    def on_run_end(self, run, summary):
        self._write(run, "end", status=summary["status"])
"""


def test_third_party_callback_writes_its_log_and_stops_the_run_early(tiny_recipe, tmp_path):
    env = plugin(tmp_path, STOPPER, '    registry.add("callback", "stop_after", "thirdparty_impl:StopAfter")')
    out = tmp_path / "run"
    proc = run_cli("run", tiny_recipe, "--set", "callbacks.stop_after.steps=3", "--set", "train.log_every=1", "--out", out, env=env, check=0)
    assert "done: 3 steps (stopped early: 3 steps are enough)" in proc.stdout
    events = [json.loads(line) for line in (out / "stopper.jsonl").read_text().splitlines()]
    assert events[0] == {"event": "start", "step": 0, "total": 8}
    assert [e["step"] for e in events if e["event"] == "log"] == [1, 2, 3]
    assert events[-2] == {"event": "checkpoint", "step": 3, "which": "last", "exists": True}
    assert events[-1] == {"event": "end", "step": 3, "status": "stopped"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps"] == 3
    assert load_checkpoint(out / "checkpoints" / "last.safetensors")[1]["step"] == 3
    assert (out / "samples" / "step_0000003.png").exists()


def test_augmentation_wraps_the_builtin_dcgan_discriminator_and_ada_p_is_checkpointed(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    run_cli("run", tiny_recipe, *FAST, "--set", "augment.type=ada", "--set", "augment.initial_p=0.5",
            "--set", "augment.interval=1", "--set", "augment.speed_kimg=0.1", "--out", out, check=0)
    tensors, meta = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert meta["components"]["augment"]["qualified_name"] == "gantool:ada"
    assert meta["components"]["discriminator"]["qualified_name"] == "gantool:dcgan"
    p = [r["augment_p"] for r in records(out) if "augment_p" in r]
    assert len(p) == 4 and len(set(p)) > 1  # adapted at every update
    assert tensors["augment.probability"].item() == pytest.approx(p[-1])


def test_a_logged_buffer_is_averaged_over_the_interval_not_read_at_its_end(tiny_recipe, tmp_path):
    """ADA logs its live probability buffer and changes it in place at the next step: the
    interval's mean must use each step's value."""
    from gantool.engine import Trainer
    from gantool.plugins import get_registry
    from gantool.recipe import load_recipe

    ada = ["train.epochs=1", "augment.type=ada", "augment.interval=1", "augment.initial_p=0.5", "augment.speed_kimg=1"]
    for every in (1, 2):
        recipe = load_recipe(tiny_recipe, [*ada, f"train.log_every={every}"])
        Trainer(recipe, get_registry(), tmp_path / str(every)).fit()
    each = [r["augment_p"] for r in records(tmp_path / "1")]
    pairs = [r["augment_p"] for r in records(tmp_path / "2")]
    assert len(set(each)) == 4
    assert pairs == pytest.approx([(each[0] + each[1]) / 2, (each[2] + each[3]) / 2], rel=1e-6)


def test_a_logged_float_goes_to_the_batches_device():
    """The engine stacks the interval's statistics into one tensor: a float logged as a CPU
    tensor would fail there on a GPU ("meta" stands in for one)."""
    import gantool

    real = torch.empty(2, 1, 4, 4, device="meta")
    ctx = gantool.StepContext(0, 0, None, None, real, real)
    ctx.log("gamma", 0.5)
    assert ctx.stats["gamma"].device == real.device and ctx.stats["gamma"].dtype == torch.float32


def test_a_loss_that_is_a_module_is_moved_to_the_run_device(tiny_recipe, tmp_path):
    import gantool
    from gantool.engine import Trainer
    from gantool.plugins import get_registry
    from gantool.recipe import load_recipe

    moved = []

    class MarginLoss(gantool.Loss, torch.nn.Module):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.register_buffer("margin", torch.tensor(1.0))

        def _apply(self, fn, *args, **kwargs):  # what .to(device) calls
            moved.append(fn)
            return super()._apply(fn, *args, **kwargs)

        def discriminator_loss(self, real_scores, fake_scores, ctx):
            return (self.margin - real_scores).relu().mean() + (self.margin + fake_scores).relu().mean()

        def generator_loss(self, real_scores, fake_scores, ctx):
            return -fake_scores.mean()

    registry = get_registry().copy()
    registry.add("loss", "margin", MarginLoss, plugin="acme", version="1.0")
    trainer = Trainer(load_recipe(tiny_recipe, ["loss.type=margin", "train.max_steps=1"]), registry, tmp_path / "run")
    assert moved and trainer.plan.loss.margin.device == trainer.plan.device
    trainer.fit()


def test_diffaugment_is_applied_to_what_d_sees(tiny_recipe, tmp_path):
    from gantool.engine import Trainer
    from gantool.plugins import get_registry
    from gantool.recipe import load_recipe

    trainer = Trainer(load_recipe(tiny_recipe, ["augment.type=diffaugment", "augment.policy=cutout"]), get_registry(), tmp_path)
    seen = []
    trainer.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    trainer.update(trainer.plan.data.iterate(0), 0, 0)
    real_seen = seen[0]
    assert (real_seen == 0).flatten(1).all(1).sum() == 0  # images, not blanks ...
    holes = (real_seen.flatten(1) == 0).sum(1)  # ... each with a cut-out square of exact zeros
    assert (holes >= 8 * 8 // 4).all()


def test_relativistic_loss_trains_with_real_scores_in_the_generator_step(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    run_cli("run", tiny_recipe, *FAST, "--set", "loss.type=rasgan", "--out", out, check=0)
    rows = records(out)
    assert {"loss_d", "loss_g", "score_real", "score_fake"} <= set(rows[0]) and "d_real" not in rows[0]
    assert all(torch.isfinite(torch.tensor([r["loss_d"], r["loss_g"]])).all() for r in rows)


def test_optimizer_and_schedule_from_the_recipe_are_used_and_checkpointed(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    run_cli("run", tiny_recipe, "--set", "optimizer.generator.type=adamw", "--set", "optimizer.discriminator.type=rmsprop",
            "--set", "scheduler.generator.type=linear", "--set", "scheduler.discriminator.type=cosine",
            "--set", "scheduler.discriminator.min_lr=1e-5", "--out", out, check=0)
    tensors, meta = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert meta["components"]["optimizer.generator"]["qualified_name"] == "gantool:adamw"
    assert meta["optimizers"]["generator"]["param_groups"][0]["lr"] == pytest.approx(0.0)  # linear decay ends at 0
    assert meta["optimizers"]["discriminator"]["param_groups"][0]["lr"] == pytest.approx(1e-5)  # rmsprop, cosine to min_lr
    assert "square_avg" in {k.rsplit(".", 1)[1] for k in tensors if k.startswith("optimizer.discriminator.")}
    assert meta["schedulers"]["generator"]["last_epoch"] == 8


class StopAt:
    """Stops a run after ``step`` steps, as Ctrl-C would, without changing the recipe (a
    smaller max_steps would also shorten the cosine schedule)."""

    def __init__(self, step):
        self.step = step

    def __getattr__(self, event):  # every other event: nothing
        return lambda run, *args: None

    def on_step_end(self, run):
        if run.step == self.step:
            run.request_stop("test")


def test_resume_with_schedule_and_augmentation_is_bit_identical(tiny_recipe, tmp_path):
    from safetensors.torch import load_file

    from gantool.engine import Trainer
    from gantool.plugins import get_registry
    from gantool.recipe import load_recipe

    recipe = load_recipe(tiny_recipe, ["scheduler.generator.type=cosine", "augment.type=ada", "augment.interval=1",
                                       "augment.initial_p=0.3", "loss.type=rahinge", "train.d_steps_per_g=2"])
    Trainer(recipe, get_registry(), tmp_path / "straight").fit()
    first = Trainer(recipe, get_registry(), tmp_path / "split")
    first.callbacks.append(StopAt(2))
    assert first.fit()["steps"] == 2
    assert Trainer(recipe, get_registry(), tmp_path / "split", resume=True).fit()["steps"] == 4
    a = load_file(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and "augment.probability" in a
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_csv_and_mlflow_loggers_record_a_real_run(tiny_recipe, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    run_cli("run", tiny_recipe, *FAST, "--set", "callbacks.csv={}", "--set", "callbacks.mlflow.experiment=tiny-test",
            "--out", out, check=0)
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,loss_d,loss_g") and len(lines) == 1 + 4
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    run_id = (out / "mlflow_run_id").read_text().strip()
    history = client.get_metric_history(run_id, "loss_d")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert history[-1].value == pytest.approx(records(out)[-1]["loss_d"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["generator.base_channels"] == "8"


def test_list_and_info_cover_the_new_kinds():
    rows = json.loads(run_cli("list", "--json", check=0).stdout)
    builtin = {(r["kind"], r["name"]) for r in rows if r["plugin"] == "gantool"}
    expected = {("augmentation", "diffaugment"), ("augmentation", "ada"), ("augmentation", "none"),
                ("optimizer", "adam"), ("optimizer", "sgd"), ("scheduler", "cosine"), ("scheduler", "warmup"),
                ("callback", "csv"), ("callback", "mlflow"), ("loss", "rasgan"), ("loss", "ralsgan"), ("loss", "rahinge")}
    assert expected <= builtin
    info = run_cli("info", "scheduler", "linear", check=0).stdout
    assert "start_step" in info and "keep lr, then decay" in info.lower() or "start_step" in info
    info = run_cli("info", "augmentation", "none", check=0).stdout
    assert "No parameters." in info and "parameter" not in info.replace("No parameters.", "")


LOOSE = """
import torch

class OnlyOnLog:                      # no gantool.Callback base: the other events are skipped
    def on_log(self, run, record):
        (run.out_dir / "seen.txt").open("a").write(f"{record['step']}\\n")

def halve(optimizer, *, every: int = 2):   # takes no total_steps: the engine passes only what it accepts
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=0.5)

def unsaveable(optimizer, total_steps):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [Keep()])

class Keep:                           # a callable object: LambdaLR puts its __dict__ in state_dict
    def __init__(self):
        self.factor = torch.tensor(1.0)    # ... and a tensor is not JSON

    def __call__(self, step):
        return float(self.factor)
"""


def test_loose_plugins_work_and_an_unsaveable_schedule_fails_check(tiny_recipe, tmp_path):
    env = plugin(tmp_path, LOOSE, '    registry.add("callback", "only_on_log", "thirdparty_impl:OnlyOnLog")\n'
                                  '    registry.add("scheduler", "halve", "thirdparty_impl:halve")\n'
                                  '    registry.add("scheduler", "unsaveable", "thirdparty_impl:unsaveable")')
    out = tmp_path / "run"
    run_cli("run", tiny_recipe, *FAST, "--set", "callbacks.only_on_log={}", "--set", "scheduler.generator.type=halve",
            "--out", out, env=env, check=0)
    assert (out / "seen.txt").read_text().split() == ["1", "2", "3", "4"]
    lr = load_checkpoint(out / "checkpoints" / "last.safetensors")[1]["optimizers"]["generator"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(2e-4 / 4)  # halved at steps 2 and 4
    proc = run_cli("check", tiny_recipe, "--set", "scheduler.generator.type=unsaveable", env=env, check=2)
    assert "[scheduler.generator] type: its state_dict() cannot be stored as JSON" in proc.stderr


def test_a_run_stopped_between_log_steps_logs_the_steps_since_the_last_line(tiny_recipe, tmp_path):
    from gantool.engine import Trainer
    from gantool.plugins import get_registry
    from gantool.recipe import load_recipe

    trainer = Trainer(load_recipe(tiny_recipe), get_registry(), tmp_path / "run")  # log_every = 2
    trainer.callbacks.append(StopAt(3))
    assert trainer.fit()["status"] == "stopped"
    assert [r["step"] for r in records(tmp_path / "run") if "loss_d" in r] == [2, 3]
