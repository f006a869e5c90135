"""Metrics as a CSV table: one row per logged step and per evaluation, one column per key.

Wide with a header row, so ``pandas.read_csv(run / "metrics.csv")`` gives a frame with
one column per metric; evaluation rows leave the training columns empty and vice versa
(``df.dropna(subset=["fid"])`` selects the evaluations).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from gantool.interfaces import Callback

_FIRST = ("step", "epoch")  # always the leftmost columns


class CSVLogger(Callback):
    """Write logged and evaluated metrics to ``<run>/<filename>``.

    Keys can appear late (evaluation metrics, a loss statistic that is logged only
    sometimes): a new key rewrites the file with the wider header (atomically, through a
    temporary file); otherwise a row is appended. A resumed run keeps the rows of the
    earlier part up to the checkpoint's step; later rows are logged again by the resume.

    Args:
        filename: file name inside the run directory
    """

    def __init__(self, filename: str = "metrics.csv"):
        self.filename = filename
        self.path: Path | None = None
        self.columns: list[str] = []
        self.rows: list[dict] = []
        self._rewrite = True

    def on_run_start(self, run) -> None:
        self.path = Path(run.out_dir) / self.filename
        self.path.parent.mkdir(parents=True, exist_ok=True)  # filename may name a subfolder
        self.columns, self.rows, self._rewrite = list(_FIRST), [], True
        if run.step > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self._add_columns(reader.fieldnames or ())
                self.rows = [row for row in reader if _step(row) <= run.step]
            self._rewrite_file()  # drop the rows past the checkpoint even if nothing is logged again

    def on_log(self, run, record: dict) -> None:
        self._write(dict(record))

    def on_eval(self, run, results: dict) -> None:
        self._write({"step": run.step, "epoch": run.epoch, **results})

    def _add_columns(self, keys) -> bool:
        new = [k for k in keys if k not in self.columns]
        self.columns += new
        return bool(new)

    def _write(self, row: dict) -> None:
        self.rows.append(row)
        if self._add_columns(row) or self._rewrite:
            self._rewrite_file()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns, restval="").writerow(row)

    def _rewrite_file(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)  # a reader never sees a half-written header
        self._rewrite = False


def _step(row: dict) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0
