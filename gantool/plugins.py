"""Discover plugins through the ``gantool`` entry-point group and let them register components.

Each entry point is loaded and called on its own: one that fails to import, misspells a
hook, or raises is rolled back, reported once on stderr and listed as failed by
``gantool plugins`` -- the rest keep working. ``GANTOOL_STRICT_PLUGINS=1`` makes such a
failure an error; ``GANTOOL_DISABLE_PLUGINS=a,b`` skips plugins by entry-point or
distribution name (a name that matches no plugin is warned about). Boolean variables
take 1/true/yes/on or 0/false/no/off (any case); anything else warns and keeps the default.
Each plugin's load time is recorded, and whether it was the one that imported torch (a
plugin should register lazy "module:attr" factories instead).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import sys
import time

import pluggy

from gantool import hookspecs
from gantool.errors import GantoolError, one_line
from gantool.registry import Registry


@dataclasses.dataclass
class PluginStatus:
    name: str  # distribution
    version: str
    entry_point: str
    status: str  # "ok" | "failed" | "disabled"
    error: str | None = None
    load_ms: float = 0.0  # import + registration
    imports_torch: bool = False  # torch was first imported while loading this plugin: slows every `gantool list`


class _PluginRegistry:
    """What a plugin's hook sees: ``add`` stamps the plugin's distribution on each component."""

    def __init__(self, registry: Registry, dist: str, version: str, entry_point: str):
        self._registry, self._stamp = registry, dict(plugin=dist, version=version, entry_point=entry_point)

    def add(self, kind, name, factory, *, summary="", aliases=()):
        self._registry.add(kind, name, factory, summary=summary, aliases=aliases, **self._stamp)


def load_plugins(registry: Registry) -> list[PluginStatus]:
    pm = pluggy.PluginManager("gantool")
    pm.add_hookspecs(hookspecs)
    disabled = {n.strip() for n in os.environ.get("GANTOOL_DISABLE_PLUGINS", "").split(",") if n.strip()}
    strict = env_flag("GANTOOL_STRICT_PLUGINS")
    statuses, matched = [], set()
    entry_points = sorted(importlib.metadata.entry_points(group="gantool"),
                          key=lambda e: (e.dist.name != "gantool", e.dist.name, e.name))
    for ep in entry_points:
        dist, version = ep.dist.name, ep.dist.version
        status = PluginStatus(dist, version, f"{ep.name} = {ep.value}", "ok")
        statuses.append(status)
        hits = {n for n in disabled if n == ep.name or _normal(n) == _normal(dist)}
        if hits:
            matched |= hits
            status.status = "disabled"
            registry.disabled = (*registry.disabled, f"{dist} ({ep.name})")
            continue
        module, had_torch, start = None, "torch" in sys.modules, time.perf_counter()
        try:
            module = ep.load()
            pm.register(module, name=f"{dist}:{ep.name}")
            pm.check_pending()
            call = pm.subset_hook_caller("gantool_register_components", [p for p in pm.get_plugins() if p is not module])
            call(registry=_PluginRegistry(registry, dist, version, status.entry_point))
        except Exception as e:  # a broken plugin must not take the CLI down
            registry.remove_entry_point(dist, status.entry_point)
            if module is not None and pm.is_registered(module):
                pm.unregister(module)
            status.status, status.error = "failed", f"{type(e).__name__}: {e}".splitlines()[0]
            if strict:
                raise GantoolError(f"plugin {dist} ({ep.name}) failed: {status.error}") from e
            print(one_line(f"warning: plugin {dist} ({ep.name}) skipped: {status.error}"), file=sys.stderr)
        finally:
            status.load_ms = round((time.perf_counter() - start) * 1000, 3)
            status.imports_torch = not had_torch and "torch" in sys.modules
    unknown = sorted(disabled - matched)
    if unknown:
        names = sorted({e.dist.name for e in entry_points} | {e.name for e in entry_points})
        print(one_line(f"warning: GANTOOL_DISABLE_PLUGINS names no installed plugin: {', '.join(unknown)} "
                       f"(distributions and entry points: {', '.join(names)})"), file=sys.stderr)
    return statuses


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean environment variable: 1/true/yes/on or 0/false/no/off, any case; unset is ``default``.

    Anything else warns on stderr and keeps the default (GANTOOL_STRICT_PLUGINS=false once meant "on").
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE or value in FALSE:
        return value in TRUE
    print(one_line(f"warning: {name}={raw!r} is not a boolean (use 1/true/yes/on or 0/false/no/off); "
                   f"using the default, {'on' if default else 'off'}"), file=sys.stderr)
    return default


def _normal(name: str) -> str:
    """Distribution names compare as pip compares them: case, '-', '_' and '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


_loaded: tuple[Registry, list[PluginStatus]] | None = None


def get_registry() -> Registry:
    return _load()[0]


def plugin_statuses() -> list[PluginStatus]:
    return _load()[1]


def _load():
    global _loaded
    if _loaded is None:
        registry = Registry()
        statuses = load_plugins(registry)
        _loaded = (registry, statuses)
    return _loaded
