"""gantool: train GANs from TOML recipes; every component arrives through a plugin.

Importing ``gantool`` is cheap: torch is imported only when a component interface
(``Generator``, ``Discriminator``, ...) is first touched.
"""

from gantool.errors import GantoolError, ParamError
from gantool.hookspecs import hookimpl, hookspec
from gantool.params import HeightWidth, Range

__version__ = "0.1.0"

_INTERFACES = {"Generator", "Discriminator", "Loss", "Dataset", "Metric", "Augmentation", "Callback", "StepContext",
               "split_scores"}

__all__ = sorted(
    _INTERFACES | {"hookimpl", "hookspec", "Range", "HeightWidth", "GantoolError", "ParamError", "__version__"}
)


def __getattr__(name):
    if name in _INTERFACES:
        from gantool import interfaces

        return getattr(interfaces, name)
    raise AttributeError(f"module 'gantool' has no attribute {name!r}")
