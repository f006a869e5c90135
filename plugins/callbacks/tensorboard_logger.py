"""TensorBoard scalars and sample grids, written to ``<run>/tensorboard``.

View with ``tensorboard --logdir runs``. torch's own ``SummaryWriter`` writes the
event files; it needs the ``tensorboard`` package.
"""

from __future__ import annotations

import math
from pathlib import Path

from gantool.errors import GantoolError
from gantool.interfaces import Callback


class TensorBoardLogger(Callback):
    """Log every float of the logged records and evaluations as a scalar, and each sample grid as an image.

    The writer is opened at run start and closed (flushed) at run end. A resumed run
    hides the events the earlier part wrote after the checkpoint's step (TensorBoard's
    purge_step), so the curves do not double back.
    """

    def __init__(self):
        try:  # checked here so `gantool check` reports it
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise GantoolError("tensorboard is not installed; pip install 'gantool[tensorboard]'") from None
        self.writer = None

    def on_run_start(self, run) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = run.step + 1 if run.step > 0 else None  # steps <= run.step were logged before the checkpoint
        self.writer = SummaryWriter(str(Path(run.out_dir) / "tensorboard"), purge_step=purge)

    def on_log(self, run, record: dict) -> None:
        self._scalars(record, record.get("step", run.step))

    def on_eval(self, run, results: dict) -> None:
        self._scalars(results, run.step)

    def on_samples(self, run, images, path) -> None:
        from torchvision.utils import make_grid

        grid = make_grid(images, nrow=max(1, int(math.sqrt(len(images)))), normalize=True, value_range=(-1, 1))
        self.writer.add_image("samples", grid, run.step)

    def on_run_end(self, run, summary: dict) -> None:
        if self.writer is not None:
            self.writer.close()  # flushes the event file
            self.writer = None

    def _scalars(self, record: dict, step: int) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, float):
                self.writer.add_scalar(key, value, step)
