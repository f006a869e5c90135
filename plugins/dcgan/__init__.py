"""Built-in plugin: the DCGAN family (registration only; components live in sibling modules)."""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("generator", "dcgan", "gantool_plugins.dcgan.models:DCGANGenerator",
                 summary="DCGAN transposed-conv generator (Radford et al. 2015)")
    registry.add("discriminator", "dcgan", "gantool_plugins.dcgan.models:DCGANDiscriminator",
                 summary="DCGAN strided-conv discriminator; optional dropout, spectral norm")
    registry.add("discriminator", "projection", "gantool_plugins.dcgan.models:ProjectionDiscriminator",
                 summary="DCGAN discriminator with class projection (Miyato & Koyama 2018); spectral norm, needs labels")
    registry.add("generator", "dcgan_dense", "gantool_plugins.dcgan.dense:DenseDCGANGenerator",
                 summary="TensorFlow-tutorial DCGAN generator: dense projection + 5x5 transposed convs")
    registry.add("discriminator", "dcgan_dense", "gantool_plugins.dcgan.dense:DenseDCGANDiscriminator",
                 summary="TensorFlow-tutorial DCGAN discriminator: conv, conv, dropout 0.3, linear")
