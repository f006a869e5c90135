"""The built-in callbacks (csv, mlflow, tensorboard), driven directly with a small fake run.

Each is built through the registry as the engine builds it, then sees the events of a
short run; MLflow and TensorBoard are read back with their own readers, no mocks.
"""

from __future__ import annotations

import csv
import importlib.util
import tomllib
import types

import pytest
import torch

from conftest import TINY_RECIPE
from gantool import GantoolError
from gantool.plugins import get_registry
from gantool.recipe import recipe_from_dict

# SQLAlchemy 2.1 deprecation inside MLflow's own store, not ours.
no_mlflow_noise = pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")

COMPONENTS = {
    "generator": {"type": "dcgan", "qualified_name": "gantool:dcgan", "plugin": "gantool", "version": "0.1.0"},
    "loss": {"type": "bce", "qualified_name": "gantool:bce", "plugin": "gantool", "version": "0.1.0"},
}


def fake_run(out_dir, step=0, epoch=0):
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_from_dict(tomllib.loads(TINY_RECIPE), out_dir / "recipe.toml")
    run = types.SimpleNamespace(out_dir=out_dir, step=step, total_steps=20, epoch=epoch, recipe=recipe,
                                components=COMPONENTS, stop_reason=None)
    run.request_stop = lambda reason: setattr(run, "stop_reason", reason)
    return run


def drive(callback, run, steps, *, eval_at=(), samples_at=(), status="finished"):
    """Call the events a run calls, for generator steps run.step+1 .. steps (logging every 2)."""
    callback.on_run_start(run)
    while run.step < steps:
        run.step += 1
        run.epoch = run.step // 10
        callback.on_step_end(run)
        if run.step % 2 == 0:
            callback.on_log(run, {"step": run.step, "epoch": run.epoch, "loss_d": 1.0 / run.step, "loss_g": 0.5})
        if run.step in samples_at:
            images = torch.rand(4, 1, 8, 8) * 2 - 1
            path = run.out_dir / "samples" / f"step_{run.step:07d}.png"
            path.parent.mkdir(exist_ok=True)
            from torchvision.utils import save_image
            save_image(images, path, nrow=2, normalize=True, value_range=(-1, 1))
            callback.on_samples(run, images, path)
        if run.step in eval_at:
            callback.on_eval(run, {"fid": 100.0 - run.step})
    callback.on_checkpoint(run, run.out_dir / "checkpoints" / "last.safetensors", "last")
    summary = {"status": status}
    if status in ("finished", "stopped"):
        summary.update(steps=run.step, metrics={"fid": 100.0 - run.step})
    callback.on_run_end(run, summary)


def build(name, params=None):
    return get_registry().build("callback", name, params or {})


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


# --- csv ---------------------------------------------------------------------------------------

def test_csv_rows_header_and_late_eval_keys(tmp_path):
    run = fake_run(tmp_path / "run")
    drive(build("csv"), run, 8, eval_at=(6,))
    header, rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert header == ["step", "epoch", "loss_d", "loss_g", "fid"]  # fid appeared at step 6: file rewritten
    assert [r["step"] for r in rows] == ["2", "4", "6", "6", "8"]
    assert float(rows[0]["loss_d"]) == 0.5 and rows[0]["fid"] == ""
    assert rows[3]["fid"] == "94.0" and rows[3]["loss_d"] == ""  # the evaluation row
    assert rows[4]["loss_g"] == "0.5"  # appended after the rewrite, under the wide header
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_csv_loads_with_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    run = fake_run(tmp_path / "run")
    drive(build("csv", {"filename": "log.csv"}), run, 6, eval_at=(4,))
    df = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(df.columns) == ["step", "epoch", "loss_d", "loss_g", "fid"]
    assert df.dropna(subset=["fid"])["step"].tolist() == [4]
    assert df["loss_d"].dtype == float


def test_csv_resume_keeps_earlier_rows(tmp_path):
    out = tmp_path / "run"
    drive(build("csv"), fake_run(out), 8, eval_at=(4,), status="interrupted")
    # The checkpoint was at step 6: rows of steps 7.. are dropped, the resume logs them again.
    resumed = fake_run(out, step=6, epoch=0)
    callback = build("csv")
    callback.on_run_start(resumed)
    assert [r["step"] for r in read_csv(out / "metrics.csv")[1]] == ["2", "4", "4", "6"]
    drive(callback, resumed, 10)
    header, rows = read_csv(out / "metrics.csv")
    assert header == ["step", "epoch", "loss_d", "loss_g", "fid"]
    assert [r["step"] for r in rows] == ["2", "4", "4", "6", "8", "10"]
    assert rows[2]["fid"] == "96.0"


def test_csv_fresh_run_replaces_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("old,stuff\n1,2\n")
    drive(build("csv"), fake_run(out), 4)
    header, rows = read_csv(out / "metrics.csv")
    assert header == ["step", "epoch", "loss_d", "loss_g"] and len(rows) == 2


def test_construction_has_no_side_effects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build("csv")
    if importlib.util.find_spec("mlflow") and importlib.util.find_spec("sqlalchemy"):
        build("mlflow")
    assert list(tmp_path.iterdir()) == []


# --- mlflow ------------------------------------------------------------------------------------

@no_mlflow_noise
def test_mlflow_logs_metrics_params_tags_artifacts(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the cwd (./mlruns)
    out = tmp_path / "run"
    drive(build("mlflow"), fake_run(out), 6, eval_at=(6,), samples_at=(4,))
    run_id = (out / "mlflow_run_id").read_text().strip()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    history = client.get_metric_history(run_id, "loss_d")
    assert [(m.step, m.value) for m in history] == [(2, 0.5), (4, 0.25), (6, 1 / 6)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "fid")] == [(6, 94.0)]
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "run"
    assert client.get_experiment(got.info.experiment_id).name == "tiny"
    params = got.data.params
    assert params["generator.base_channels"] == "8" and params["train.batch_size"] == "64"
    assert params["run.name"] == "tiny"
    assert got.data.tags["gantool.generator"] == "gantool:dcgan 0.1.0"
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/step_0000004.png"]
    assert (out / "mlflow_artifacts").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@no_mlflow_noise
def test_mlflow_resume_continues_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    params = {"tracking_uri": uri, "experiment": "gans", "run_name": "first"}
    monkeypatch.chdir(tmp_path)
    drive(build("mlflow", params), fake_run(out), 4, status="interrupted")
    run_id = (out / "mlflow_run_id").read_text().strip()
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "KILLED"
    drive(build("mlflow", params), fake_run(out, step=4), 8)
    assert (out / "mlflow_run_id").read_text().strip() == run_id
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "first"
    assert got.data.tags["gantool.resumed_at_step"] == "4"
    assert [m.step for m in client.get_metric_history(run_id, "loss_d")] == [2, 4, 6, 8]
    assert len(client.search_runs([client.get_experiment_by_name("gans").experiment_id])) == 1


@no_mlflow_noise
def test_mlflow_resume_with_a_lost_run_starts_a_new_one(tmp_path):
    pytest.importorskip("mlflow")
    out = tmp_path / "run"
    out.mkdir()
    (out / "mlflow_run_id").write_text("0123456789abcdef\n")  # e.g. the database was deleted
    drive(build("mlflow"), fake_run(out, step=4), 6)
    run_id = (out / "mlflow_run_id").read_text().strip()
    assert run_id != "0123456789abcdef"
    from mlflow.tracking import MlflowClient
    assert MlflowClient(f"sqlite:///{out / 'mlflow.db'}").get_run(run_id).info.status == "FINISHED"


@no_mlflow_noise
def test_mlflow_failed_run_and_long_params(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # used when tracking_uri is empty
    run = fake_run(tmp_path / "run")
    run.recipe.data["dataset"]["root"] = "x" * 10_000
    drive(build("mlflow"), run, 2, status="failed")
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text().strip()
    got = MlflowClient(uri).get_run(run_id)
    assert got.info.status == "FAILED"
    assert len(got.data.params["dataset.root"]) == 500 and got.data.params["dataset.root"].endswith("...")


def hide_module(monkeypatch, module):
    """Make ``importlib.util.find_spec(module)`` answer None, as when the package is not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))


def test_mlflow_missing_is_one_line_error(monkeypatch):
    hide_module(monkeypatch, "mlflow")
    with pytest.raises(GantoolError) as info:
        build("mlflow")
    assert str(info.value) == "[callback] mlflow: mlflow is not installed; pip install 'gantool[mlflow]'"


def test_mlflow_missing_via_sys_modules(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mlflow", None)  # what `import mlflow` failing looks like
    with pytest.raises(GantoolError, match=r"mlflow is not installed; pip install 'gantool\[mlflow\]'$"):
        build("mlflow")


# --- tensorboard -------------------------------------------------------------------------------

def test_tensorboard_missing_is_one_line_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(GantoolError) as info:
        build("tensorboard")
    message = "[callback] tensorboard: tensorboard is not installed; pip install 'gantool[tensorboard]'"
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_tensorboard_scalars_and_images(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    drive(build("tensorboard"), fake_run(out), 6, eval_at=(6,), samples_at=(4,))
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["fid", "loss_d", "loss_g"]  # epoch is an int: not a scalar
    assert [(e.step, e.value) for e in events.Scalars("loss_d")] == [(2, 0.5), (4, 0.25), (6, pytest.approx(1 / 6))]
    assert [(e.step, e.value) for e in events.Scalars("fid")] == [(6, 94.0)]
    (image,) = events.Images("samples")
    assert image.step == 4 and image.encoded_image_string.startswith(b"\x89PNG")


def test_tensorboard_resume_purges_steps_after_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    drive(build("tensorboard"), fake_run(out), 8, status="interrupted")
    drive(build("tensorboard"), fake_run(out, step=4), 8)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss_d")] == [2, 4, 6, 8]
