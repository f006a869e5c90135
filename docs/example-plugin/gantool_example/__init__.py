"""Registration only: lazy "module:attr" strings keep `gantool list` from importing torch."""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("generator", "mlp", "gantool_example.models:MLPGenerator",
                 summary="Fully connected generator (Goodfellow et al. 2014 style)")
    registry.add("discriminator", "mlp", "gantool_example.models:MLPDiscriminator",
                 summary="Fully connected discriminator with LeakyReLU")
    registry.add("dataset", "shapes", "gantool_example.shapes:Shapes",
                 summary="Synthetic filled squares and discs; no download")
    registry.add("metric", "brightness_gap", "gantool_example.shapes:BrightnessGap",
                 summary="|mean brightness of fakes - of reals|: a cheap sanity check")
    registry.add("loss", "rpgan", "gantool_example.training:RpGAN",
                 summary="Relativistic pairing GAN loss (Jolicoeur-Martineau 2018)")
    registry.add("augmentation", "noise", "gantool_example.training:InstanceNoise",
                 summary="Annealed instance noise on D's inputs (Sønderby et al. 2016)")
    registry.add("optimizer", "lion", "gantool_example.training:lion",
                 summary="Lion: sign of an interpolated momentum (Chen et al. 2023)")
    registry.add("scheduler", "step_decay", "gantool_example.training:step_decay",
                 summary="Multiply the learning rate by gamma every `every` steps")
    registry.add("callback", "plateau", "gantool_example.training:Plateau",
                 summary="Writes plateau.log; stops the run when a logged value stops improving")
