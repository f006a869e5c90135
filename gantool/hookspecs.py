"""The hooks a gantool plugin can implement. Hook names start with ``gantool_``."""

import pluggy

hookspec = pluggy.HookspecMarker("gantool")
hookimpl = pluggy.HookimplMarker("gantool")


@hookspec
def gantool_register_components(registry):
    """Add components with ``registry.add(kind, name, factory, *, summary="", aliases=())``.

    ``kind`` is one of generator, discriminator, loss, dataset, metric. ``factory`` is a
    class/callable or a lazy ``"module:attr"`` string, imported only when the component
    is built or inspected, so ``gantool list`` stays fast.
    """
