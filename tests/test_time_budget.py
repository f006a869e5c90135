"""train.max_minutes stops a run cleanly, and the progress display is there from the start."""

from __future__ import annotations

import io
import json
import time

from rich.console import Console

from conftest import run_cli
from gantool.progress import Preparing, TrainingProgress, format_seconds


def test_max_minutes_stops_cleanly_and_resume_continues(tiny_recipe, tmp_path):
    out = tmp_path / "budget"
    budget = ["--set", "train.epochs=1000", "--set", "train.max_minutes=0.0005"]  # 30 ms: a step or two
    proc = run_cli("run", tiny_recipe, *budget, "--out", out, check=0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert summary["stop_reason"] == "train.max_minutes = 0.0005 reached"
    assert 1 <= summary["steps"] < 100
    assert "stopped early: train.max_minutes" in proc.stdout
    assert (out / "checkpoints" / "last.safetensors").is_file()  # the clean stop keeps the work
    assert (out / "samples" / "final.png").is_file()
    # The plain display: what is being prepared, then the step budget, before any step.
    lines = proc.stderr.splitlines()
    assert lines[:2] == ["tiny.toml: loading torch", "tiny.toml: building the dataset and the models"]
    assert lines[2].startswith("training: steps 0/") and "(train.max_minutes)" in lines[2]
    # Each process gets the budget again: --resume continues from the checkpoint's step.
    again = run_cli("run", tiny_recipe, *budget, "--out", out, "--resume", check=0)
    assert json.loads((out / "summary.json").read_text())["steps"] > summary["steps"]
    assert "done:" in again.stdout


def test_eta_follows_the_pace_and_is_capped_by_the_budget():
    progress = TrainingProgress(1000, 0, console=Console(file=io.StringIO()), budget_s=60)
    with progress:
        assert 59 < progress.eta(0) <= 60  # no step yet: only the budget is known
        progress._t0 -= 10  # ten seconds for 100 steps: 900 steps left take 90 s, the budget ends at 50 s
        assert 49 < progress.eta(100) <= 50
    unbounded = TrainingProgress(1000, 200, console=Console(file=io.StringIO()))
    with unbounded:
        assert unbounded.eta(200) is None  # resumed at step 200, no pace yet
        unbounded._t0 -= 10
        assert 29 < unbounded.eta(400) <= 30.1  # 200 steps in 10 s, 600 left at that pace
    assert [format_seconds(s) for s in (0, 59.6, 61, 3725)] == ["0:00", "1:00", "1:01", "1:02:05"]


def test_terminal_display_shows_a_spinner_then_the_bar_with_eta():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with Preparing(console, "demo.toml: building the dataset and the models") as preparing:
        time.sleep(0.15)
        preparing.say("demo.toml: caching real features")
        time.sleep(0.15)
    with TrainingProgress(50, 0, console=console) as progress:
        for step in range(1, 6):
            time.sleep(0.02)
            progress.advance(step)
        progress._bar.refresh()
        progress.phase("evaluating fid on 5,000 samples")
        progress._bar.refresh()
    text = buffer.getvalue()
    assert "building the dataset" in text and "caching real features" in text
    assert "5/50" in text and "ETA 0:0" in text  # an ETA after five steps, not "-:--"
    assert "evaluating fid on 5,000 samples" in text
