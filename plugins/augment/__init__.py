"""Built-in plugin: differentiable augmentations (registration only; they live in diffaugment.py)."""

import gantool

_AUG = "gantool_plugins.augment.diffaugment"


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("augmentation", "diffaugment", f"{_AUG}:DiffAugment",
                 summary="DiffAugment color/translation/cutout on real and fake images (Zhao et al. 2020)")
    registry.add("augmentation", "ada", f"{_AUG}:AdaptiveAugment",
                 summary="DiffAugment ops, probability steered by the signs of real scores (ADA, Karras et al. 2020)")
    registry.add("augmentation", "none", f"{_AUG}:NoAugment",
                 summary="images unchanged: turns off a base recipe's [augment] (--set augment.type=none)")
