"""Built-in plugin: the SNGAN ResNet backbone (registration only; the networks live in models.py)."""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("generator", "resnet", "gantool_plugins.resnet.models:ResNetGenerator",
                 summary="SNGAN ResNet generator, 32/64/128 px (Miyato et al. 2018); conditional BN with labels")
    registry.add("discriminator", "resnet", "gantool_plugins.resnet.models:ResNetDiscriminator",
                 summary="SNGAN ResNet discriminator, spectral norm (Miyato et al. 2018); projection with labels")
