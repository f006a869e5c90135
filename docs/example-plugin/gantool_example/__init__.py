"""Registration only: lazy "module:attr" strings keep `gantool list` from importing torch."""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("generator", "mlp", "gantool_example.models:MLPGenerator",
                 summary="Fully connected generator (Goodfellow et al. 2014 style)")
    registry.add("dataset", "shapes", "gantool_example.shapes:Shapes",
                 summary="Synthetic filled squares and discs; no download")
