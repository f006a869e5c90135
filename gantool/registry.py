"""The component registry: every component of every kind, by name.

Names are qualified by the distribution that registered them (``gantool:dcgan``); a
bare name works while only one distribution uses it. Nothing is ever overwritten.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
from typing import Any, Callable

from gantool.errors import GantoolError
from gantool.params import parameters, suggest, validate

KINDS = ("generator", "discriminator", "loss", "dataset", "metric",
         "augmentation", "optimizer", "scheduler", "callback")
# Parameters the engine passes itself; a recipe must not set them.
INJECTED = {
    "generator": ("image_shape", "num_classes"),
    "discriminator": ("image_shape", "num_classes"),
    "optimizer": ("params",),
    "scheduler": ("optimizer", "total_steps"),
}


@dataclasses.dataclass
class Component:
    kind: str
    name: str
    factory: Callable | str  # a callable or a lazy "module:attr" string
    plugin: str  # distribution name
    version: str
    summary: str = ""
    aliases: tuple[str, ...] = ()
    entry_point: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"

    def load(self) -> Callable:
        """Import a lazy factory on first use."""
        if isinstance(self.factory, str):
            module, _, attr = self.factory.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as e:
                raise GantoolError(
                    f"{self.kind} {self.qualified_name}: cannot import {self.factory!r} ({e}); "
                    f"reinstall the plugin {self.plugin!r}"
                ) from e
            self.factory = obj
        return self.factory


class Registry:
    disabled: tuple[str, ...] = ()  # "dist (entry point)" off by GANTOOL_DISABLE_PLUGINS, named when a lookup fails

    def __init__(self):
        self._components: dict[tuple[str, str], Component] = {}  # (kind, qualified name)

    def add(self, kind, name, factory, *, summary="", aliases=(), plugin="__main__", version="", entry_point=""):
        if kind not in KINDS:
            raise GantoolError(f"unknown component kind {kind!r}{suggest(kind, KINDS)}")
        if not isinstance(factory, str) and not callable(factory):
            raise GantoolError(f"{kind} {name!r}: factory must be a callable or a 'module:attr' string")
        if isinstance(factory, str) and ":" not in factory:
            raise GantoolError(f"{kind} {name!r}: lazy factory {factory!r} must look like 'module:attr'")
        component = Component(kind, name, factory, plugin, version, summary, tuple(aliases), entry_point)
        key = (kind, component.qualified_name)
        if key in self._components:
            raise GantoolError(f"{kind} {component.qualified_name} is registered twice")
        self._components[key] = component
        return component

    def copy(self) -> Registry:
        """A registry with the same components, to add to without touching this one."""
        other = Registry()
        other._components = dict(self._components)
        other.disabled = self.disabled
        return other

    def remove_entry_point(self, plugin: str, entry_point: str):
        """Roll back everything one plugin entry point registered."""
        for key, c in list(self._components.items()):
            if c.plugin == plugin and c.entry_point == entry_point:
                del self._components[key]

    def list(self, kind: str | None = None, pattern: str | None = None) -> list[Component]:
        out = [
            c
            for c in self._components.values()
            if (kind is None or c.kind == kind)
            and (pattern is None or fnmatch.fnmatch(c.name, f"*{pattern}*") or fnmatch.fnmatch(c.qualified_name, pattern))
        ]
        return sorted(out, key=lambda c: (KINDS.index(c.kind), c.name, c.plugin))

    def get(self, kind: str, name: str) -> Component:
        if kind not in KINDS:
            raise GantoolError(f"unknown component kind {kind!r}{suggest(kind, KINDS)}")
        if ":" in name:
            component = self._components.get((kind, name))
            if component is None:
                names = [c.qualified_name for c in self.list(kind)]
                raise GantoolError(f"no {kind} named {name!r}{suggest(name, names)}{self._disabled_note(name)}")
            return component
        matches = [c for c in self.list(kind) if c.name == name or name in c.aliases]
        if len(matches) == 1:
            return matches[0]
        if matches:
            both = " or ".join(repr(c.qualified_name) for c in matches)
            raise GantoolError(f"{kind} name {name!r} is ambiguous: it is registered by several plugins; use {both}")
        names = {c.name for c in self.list(kind)} | {a for c in self.list(kind) for a in c.aliases}
        raise GantoolError(f"no {kind} named {name!r}{suggest(name, names)} (see `gantool list {kind}`)"
                           f"{self._disabled_note(name)}")

    def _disabled_note(self, name: str) -> str:
        """A disabled plugin registers nothing, so which names it would have is unknown: say it is off."""
        if not self.disabled:
            return ""
        plugin = name.partition(":")[0] if ":" in name else None
        exact = [d for d in self.disabled if plugin is not None and d.split(" (")[0].lower() == plugin.lower()]
        if exact:
            return f"; plugin {', '.join(exact)} is disabled by GANTOOL_DISABLE_PLUGINS: remove it from that variable"
        return (f"; note: GANTOOL_DISABLE_PLUGINS disables {', '.join(self.disabled)}, which may provide it: "
                "remove it from that variable")

    def build(self, kind: str, name: str, table: dict | None = None, /, *, locate=None, **injected) -> Any:
        """Validate the recipe ``table`` against the factory's signature, then construct it.

        ``locate(key)`` says where a key came from ("recipe.toml: [generator] key") so
        every error names the file and the key.
        """
        from gantool.errors import ParamError

        locate = locate or (lambda key: f"[{kind}] {key}")
        try:
            component = self.get(kind, name)
        except GantoolError as e:
            raise GantoolError(f"{locate('type')}: {e}") from None
        factory = component.load()
        try:
            kwargs = validate(factory, dict(table or {}), injected=INJECTED.get(kind, ()))
            accepted, takes_any = parameters(factory)
            names = {p.name for p in accepted}
            injected = {k: v for k, v in injected.items() if takes_any or k in names}  # e.g. a fixed-size G
            return factory(**kwargs, **injected)
        except ParamError as e:
            hint = " (from the dataset)" if e.param in injected else ""
            raise GantoolError(f"{locate(e.param)}{hint}: {e.message}") from e
        except GantoolError as e:
            raise GantoolError(f"{locate('type').rsplit(' ', 1)[0]} {component.name}: {e}") from e

    def parameters(self, kind: str, name: str):
        component = self.get(kind, name)
        params, _ = parameters(component.load())
        return component, [p for p in params if p.name not in INJECTED.get(kind, ())]
