"""MLflow tracking: the recipe as params, component names as tags, metrics and sample grids.

Uses ``MlflowClient`` with an explicit tracking URI rather than the fluent
``mlflow.start_run`` API, so the callback never touches the process-wide active run or
tracking URI of a user who also uses MLflow around gantool.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import time
from pathlib import Path

from gantool.errors import GantoolError
from gantool.interfaces import Callback

_MISSING = "{} is not installed; pip install 'gantool[mlflow]'"
# MLflow >= 2 accepts 6000 characters, older tracking servers 500: stay within both.
_MAX_PARAM = 500
# How each end of a run shows in MLflow; a run stopped early by a callback did finish.
_STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


class MLflowLogger(Callback):
    """Track the run in MLflow.

    Without a tracking URI, the ``MLFLOW_TRACKING_URI`` environment variable is used,
    else a SQLite database in the run directory (``mlflow ui --backend-store-uri
    sqlite:///runs/.../mlflow.db``), with artifacts beside it in ``mlflow_artifacts/``.
    The MLflow run id is kept in ``<run>/mlflow_run_id``, so ``--resume`` continues the
    same MLflow run. Checkpoints are not uploaded: they can be large and stay in the run
    directory.

    Args:
        tracking_uri: MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<run>/mlflow.db)
        experiment: experiment name, created if missing (default: the recipe's run name)
        run_name: MLflow run name (default: the run directory's name)
    """

    def __init__(self, tracking_uri: str = "", experiment: str = "", run_name: str = ""):
        # Checked here (cheaply: nothing is imported) so that `gantool check` reports it.
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        needed = ["mlflow"] + (["sqlalchemy", "alembic"] if not uri or uri.startswith("sqlite:") else [])
        for module in needed:
            if importlib.util.find_spec(module) is None:
                raise GantoolError(_MISSING.format(module))
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client = self.run_id = None
        self._log_level = None

    def on_run_start(self, run) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # MLflow announces database creation and migrations with INFO lines on stderr,
        # which the progress bar shares; quiet them for the run, restore at run end.
        logger = logging.getLogger("mlflow")
        self._log_level = logger.level
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))

        out = Path(run.out_dir)
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        own_store = not uri  # a database of our own, in the run directory
        uri = uri or f"sqlite:///{(out / 'mlflow.db').resolve().as_posix()}"
        self.client = client = MlflowClient(tracking_uri=uri)
        id_file = out / "mlflow_run_id"
        self.run_id = id_file.read_text().strip() if run.step > 0 and id_file.exists() else None
        if self.run_id is not None and self._resume(run):
            return  # params are immutable in MLflow: the first part logged them
        name = self.experiment or run.recipe.run.name or out.name
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # our own database keeps its artifacts in the run directory, not in ./mlruns of the cwd
            artifacts = (out / "mlflow_artifacts").resolve().as_uri() if own_store else None
            experiment_id = client.create_experiment(name, artifact_location=artifacts)
        tags = {"gantool.out_dir": str(out)}
        for kind, info in (run.components or {}).items():
            tags[f"gantool.{kind}"] = f"{info['qualified_name']} {info.get('version', '')}".strip()
        self.run_id = client.create_run(experiment_id, run_name=self.run_name or out.name, tags=tags).info.run_id
        id_file.write_text(self.run_id + "\n")
        params = [Param(k, v) for k, v in _flatten(run.recipe.data).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(self.run_id, params=params[i:i + 100])

    def _resume(self, run) -> bool:
        """Reopen the earlier MLflow run; False (start a new one) if the tracking store lost it."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(self.run_id)
        except MlflowException:
            logging.getLogger(__name__).warning("MLflow run %s not found; starting a new one", self.run_id)
            self.run_id = None
            return False
        self.client.update_run(self.run_id, status="RUNNING")
        self.client.set_tag(self.run_id, "gantool.resumed_at_step", str(run.step))
        return True

    def on_log(self, run, record: dict) -> None:
        self._metrics(record, record.get("step", run.step))

    def on_eval(self, run, results: dict) -> None:
        self._metrics(results, run.step)

    def on_samples(self, run, images, path) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="samples")

    def on_checkpoint(self, run, path, which: str) -> None:
        """Checkpoints are not uploaded: each is the size of the networks (and optimizer state)."""

    def on_run_end(self, run, summary: dict) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=_STATUS.get(summary.get("status"), "FAILED"))
            self.run_id = None
        if self._log_level is not None:
            logging.getLogger("mlflow").setLevel(self._log_level)
            self._log_level = None

    def _metrics(self, record: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(_key(key), float(value), now, int(step))
            for key, value in record.items()
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)


def _flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """{"generator": {"base_channels": 32}} -> {"generator.base_channels": "32"}, as MLflow params take them."""
    out = {}
    for key, value in data.items():
        name = prefix + _key(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            text = str(value)
            out[name] = text if len(text) <= _MAX_PARAM else text[:_MAX_PARAM - 3] + "..."
    return out


def _key(key) -> str:
    """A metric or param name with only the characters MLflow accepts in one."""
    return re.sub(r"[^\w\-. /]", "_", str(key))
