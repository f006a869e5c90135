"""Live training progress: a rich bar on a terminal, plain log lines otherwise (CI, files)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


LABELS = {"loss_d": "loss_D", "loss_g": "loss_G", "d_real": "D(x)", "d_fake": "D(G(z))"}


def format_record(record: dict) -> str:
    """'epoch 1.00  loss_D 1.234  loss_G ...': the losses first, then what the loss logged."""
    stats = "  ".join(f"{LABELS.get(k, k)} {v:.3f}" for k, v in record.items()
                      if k not in ("step", "epoch", "images_per_s", "time_s") and isinstance(v, float))
    return f"epoch {record['epoch']:.2f}  {stats}  {record['images_per_s']:.0f} img/s"


class TrainingProgress:
    def __init__(self, total: int, done: int, *, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.total, self.done, self.enabled = total, done, enabled
        self.live = enabled and self.console.is_terminal
        self._bar = None

    def __enter__(self):
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.total, completed=self.done, stats="")
        self._t0 = time.perf_counter()
        return self

    def update(self, record: dict):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=record["step"], stats=format_record(record))
        else:
            left = (self.total - record["step"]) * (time.perf_counter() - self._t0) / max(record["step"] - self.done, 1)
            self.console.print(f"step {record['step']}/{self.total}  {format_record(record)}  ETA {left:.0f}s", highlight=False, soft_wrap=True)

    def evaluation(self, step: int, results: dict):
        """One line with the metric values of an evaluation (above the bar on a terminal)."""
        if self.enabled and results:
            values = "  ".join(f"{k} {v:.4g}" for k, v in results.items())
            self.console.print(f"step {step}/{self.total}  eval  {values}", highlight=False, soft_wrap=True)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
