"""Live progress: a rich display on a terminal, plain log lines otherwise (CI, files).

A run shows something from its first second: a spinner with the elapsed time while torch
loads and the dataset and models are built, then the step bar, whose ETA is known after
the first step (and capped by ``train.max_minutes``), then the final evaluation.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


LABELS = {"loss_d": "loss_D", "loss_g": "loss_G", "d_real": "D(x)", "d_fake": "D(G(z))"}


def format_record(record: dict) -> str:
    """'epoch 1.00  loss_D 1.234  loss_G ...': the losses first, then what the loss logged."""
    stats = "  ".join(f"{LABELS.get(k, k)} {v:.3f}" for k, v in record.items()
                      if k not in ("step", "epoch", "images_per_s", "time_s") and isinstance(v, float))
    return f"epoch {record['epoch']:.2f}  {stats}  {record['images_per_s']:.0f} img/s"


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(max(int(round(seconds)), 0), 60)
    return f"{minutes}:{seconds:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


class Preparing:
    """A spinner with the elapsed time while a run is set up; ``say`` names the current stage."""

    def __init__(self, console: Console | None = None, what: str = "preparing"):
        self.console = console or Console(stderr=True)
        self._bar = None
        self.say(what)

    def say(self, what: str):
        if not self.console.is_terminal:
            self.console.print(what, highlight=False, soft_wrap=True)
        elif self._bar is None:
            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(what, total=None)
        else:
            self._bar.update(self._task, description=what)

    def stop(self):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class TrainingProgress:
    """The step bar. ``advance`` every step keeps the ETA current; ``update`` every log step."""

    def __init__(self, total: int, done: int, *, console: Console | None = None, enabled: bool = True,
                 budget_s: float = 0.0):
        self.console = console or Console(stderr=True)
        self.total, self.done, self.enabled, self.budget_s = total, done, enabled, budget_s
        self.live = enabled and self.console.is_terminal
        self._bar = None
        self._stats = ""

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, completed=self.done, stats="", eta="-:--")
        elif self.enabled:
            budget = f", at most {format_seconds(self.budget_s)} (train.max_minutes)" if self.budget_s else ""
            self.console.print(f"training: steps {self.done}/{self.total}{budget}", highlight=False)
        return self

    def eta(self, step: int) -> float | None:
        """Seconds left: the pace of this process's steps so far, capped by the time budget."""
        elapsed = time.perf_counter() - self._t0
        left = (self.total - step) * elapsed / (step - self.done) if step > self.done else None
        if self.budget_s:
            left = min(left, self.budget_s - elapsed) if left is not None else self.budget_s - elapsed
        return None if left is None else max(left, 0.0)

    def advance(self, step: int):
        if self._bar is not None:
            left = self.eta(step)
            self._bar.update(self._task, completed=step, eta="-:--" if left is None else format_seconds(left))

    def update(self, record: dict):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=record["step"], stats=format_record(record))
        else:
            left = self.eta(record["step"])
            eta = "" if left is None else f"  ETA {left:.0f}s"
            self.console.print(f"step {record['step']}/{self.total}  {format_record(record)}{eta}",
                               highlight=False, soft_wrap=True)

    def phase(self, text: str):
        """What the run does now that is not a step (the final evaluation, say)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, stats=text, eta="-:--")
        else:
            self.console.print(text, highlight=False, soft_wrap=True)

    def evaluation(self, step: int, results: dict):
        """One line with the metric values of an evaluation (above the bar on a terminal)."""
        if self.enabled and results:
            values = "  ".join(f"{k} {v:.4g}" for k, v in results.items())
            self.console.print(f"step {step}/{self.total}  eval  {values}", highlight=False, soft_wrap=True)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
