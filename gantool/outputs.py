"""A run's own outputs, as callbacks: progress display, metrics.jsonl, sample grids, checkpoints.

They listen to the same events as a plugin's callback (``gantool.Callback``); the only
difference is that every run has them. Order matters where one output reads another's
result: samples and evaluations are written before the checkpoint of the same step.
"""

from __future__ import annotations

import json
import math

import torch

from torchvision.utils import save_image

import gantool
from gantool.errors import GantoolError
from gantool.data import mix_seed
from gantool.plan import labelled
from gantool.sampling import class_grid


def builtin_callbacks(run, console=None) -> list[gantool.Callback]:
    train = run.recipe.train
    return [
        ProgressDisplay(run.total_steps, console),
        MetricsLog(),
        SampleGrids(run, every=train.sample_every, n=train.sample_grid),
        Checkpoints(every=train.checkpoint_every, keep_best=train.keep_best),
    ]


class ProgressDisplay(gantool.Callback):
    """A rich progress bar with ETA on a terminal, plain log lines otherwise."""

    def __init__(self, total_steps: int, console=None):
        self.total_steps, self.console, self.progress = total_steps, console, None

    def on_run_start(self, run):
        from gantool.progress import TrainingProgress

        budget = run.recipe.train.max_minutes * 60
        self.progress = TrainingProgress(self.total_steps, run.step, console=self.console, budget_s=budget).__enter__()

    def on_step_end(self, run):
        self.progress.advance(run.step)

    def on_log(self, run, record):
        self.progress.update(record)

    def phase(self, text: str):
        if self.progress is not None:
            self.progress.phase(text)

    def on_eval(self, run, results):
        self.progress.evaluation(run.step, results)

    def on_run_end(self, run, summary):
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None


class MetricsLog(gantool.Callback):
    """metrics.jsonl: one JSON object per logged step and per evaluation, appended."""

    def on_log(self, run, record):
        self._append(run, record)

    def on_eval(self, run, results):
        self._append(run, {"step": run.step, "epoch": run.epoch, **results})

    def _append(self, run, record: dict):
        with open(run.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


class SampleGrids(gantool.Callback):
    """samples/step_NNNNNNN.png every ``sample_every`` steps and at the end, from fixed latents.

    The same latents every time, so the grids show one set of images evolving. In a
    class-conditional run each row is one class and each column one latent.
    """

    def __init__(self, run, *, every: int, n: int):
        self.every = every
        own_seed = torch.Generator().manual_seed(mix_seed(run.recipe.run.seed, 4))  # not the global RNG
        if run.plan.num_classes:
            latents, labels, self.columns = class_grid(run.generator, run.plan.num_classes, n, own_seed)
            self.labels = labels.to(run.device)
        else:
            latents, self.labels = run.generator.sample_latent(n, generator=own_seed), None
            self.columns = max(1, int(math.sqrt(n)))
        self.latents = latents.to(run.device)

    def on_step_end(self, run):
        if self.every and run.step % self.every == 0:
            self.write(run)

    def on_run_end(self, run, summary):
        if summary["status"] in ("finished", "stopped"):
            self.write(run)

    def write(self, run):
        with run.sampling() as G:
            images = G(self.latents, *labelled(self.labels)).float().cpu()
        folder = run.out_dir / "samples"
        grid = dict(nrow=self.columns, normalize=True, value_range=(-1, 1))
        path = folder / f"step_{run.step:07d}.png"
        save_image(images, path, **grid)
        save_image(images, folder / "final.png", **grid)
        run.emit("on_samples", images, path)


class Checkpoints(gantool.Callback):
    """checkpoints/last.safetensors every ``checkpoint_every`` steps and at the end (also
    when interrupted, so ``--resume`` continues); best.safetensors when ``keep_best`` improves."""

    def __init__(self, *, every: int, keep_best: str):
        self.every, self.keep_best = every, keep_best

    def on_step_end(self, run):
        if self.every and run.step % self.every == 0:
            run.save_checkpoint("last")

    def on_eval(self, run, results):
        key = self.keep_best
        if not key:
            return
        if key not in results:
            got = ", ".join(results) or "none"
            raise GantoolError(f"{run.recipe.locate('train', 'keep_best')}: metric key {key!r} "
                               f"not produced by [eval] metrics (got {got})")
        goal = next((m.goals[key] for _, m in run.plan.metrics if key in getattr(m, "goals", {})), "min")
        value = results[key]
        if run.best is None or (value < run.best["value"] if goal == "min" else value > run.best["value"]):
            run.best = {"key": key, "value": value, "step": run.step}
            run.save_checkpoint("best")

    def on_run_end(self, run, summary):
        if summary["status"] != "failed":
            run.save_checkpoint("last")
