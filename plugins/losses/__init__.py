"""Built-in plugin: GAN losses (registration only; the losses live in losses.py)."""

import gantool

_LOSSES = "gantool_plugins.losses.losses"


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("loss", "bce", f"{_LOSSES}:BCELoss",
                 summary="BCE on logits, non-saturating G loss (DCGAN default); real_label smoothing")
    registry.add("loss", "ns", f"{_LOSSES}:NonSaturatingLoss",
                 summary="Non-saturating GAN loss (Goodfellow et al. 2014); same objective as bce")
    registry.add("loss", "minimax", f"{_LOSSES}:MinimaxLoss",
                 summary="Original saturating minimax GAN loss (Goodfellow et al. 2014)")
    registry.add("loss", "hinge", f"{_LOSSES}:HingeLoss",
                 summary="Hinge loss (Lim & Ye 2017; SN-GAN, BigGAN)")
    registry.add("loss", "lsgan", f"{_LOSSES}:LSGANLoss",
                 summary="Least-squares GAN loss (Mao et al. 2017)")
    registry.add("loss", "wgan_gp", f"{_LOSSES}:WGANGPLoss",
                 summary="Wasserstein loss with gradient penalty (Gulrajani et al. 2017); use d_steps_per_g = 5")
    registry.add("loss", "rasgan", f"{_LOSSES}:RaSGANLoss",
                 summary="Relativistic average standard GAN (Jolicoeur-Martineau 2018): real vs the average fake")
    registry.add("loss", "ralsgan", f"{_LOSSES}:RaLSGANLoss",
                 summary="Relativistic average least-squares GAN (Jolicoeur-Martineau 2018)")
    registry.add("loss", "rahinge", f"{_LOSSES}:RaHingeLoss",
                 summary="Relativistic average hinge loss (Jolicoeur-Martineau 2018)")
    registry.add("loss", "acgan", f"{_LOSSES}:ACGANLoss",
                 summary="Auxiliary-classifier GAN (Odena et al. 2017); needs D with condition_by = \"auxiliary\"")
