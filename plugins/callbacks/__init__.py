"""Built-in plugin: run callbacks that log to files and trackers (registration only).

Each callback lives in its own module, imported only when a recipe uses it, so listing
components never imports mlflow or tensorboard.
"""

import gantool

_PKG = "gantool_plugins.callbacks"


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("callback", "csv", f"{_PKG}.csv_logger:CSVLogger",
                 summary="Logged and evaluated metrics as one wide CSV table (header row; pandas.read_csv)")
    registry.add("callback", "mlflow", f"{_PKG}.mlflow_logger:MLflowLogger",
                 summary="MLflow tracking: recipe as params, metrics, sample grids as artifacts (gantool[mlflow])")
    registry.add("callback", "tensorboard", f"{_PKG}.tensorboard_logger:TensorBoardLogger",
                 summary="TensorBoard scalars and sample grids in <run>/tensorboard (needs gantool[tensorboard])")
