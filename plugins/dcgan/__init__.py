"""Built-in plugin (registration only; components live in sibling modules)."""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    pass
