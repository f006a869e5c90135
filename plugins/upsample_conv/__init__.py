"""Built-in plugin: the upsample+convolution generator (registration only; see models.py)."""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("generator", "upsample_conv", "gantool_plugins.upsample_conv.models:UpsampleConvGenerator",
                 summary="Resize (x2) + conv generator without checkerboard artifacts (Odena et al. 2016)")
