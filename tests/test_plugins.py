"""Plugin loading: entry points, isolation of broken plugins, rollback, collisions, env switches."""

import json
import sys

import pytest

from conftest import make_distribution, run_cli
from gantool.errors import GantoolError
from gantool.plugins import load_plugins
from gantool.registry import Registry

GOOD = """
import gantool

@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("loss", "{name}", "{module}_impl:MyLoss", summary="a test loss")
"""

IMPL = """
import gantool
IMPORTED = True

class MyLoss(gantool.Loss):
    def __init__(self, *, weight: float = 1.0):
        self.weight = weight
"""


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A site directory on sys.path where tests put fake distributions."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def add_good(site, dist="gantool-good", module="good_plugin", name="good_loss", version="1.2.3"):
    make_distribution(site, dist, version, {module: GOOD.format(name=name, module=module), f"{module}_impl": IMPL}, {"good": module})


def test_builtin_plugins_load_through_entry_points():
    registry = Registry()
    statuses = load_plugins(registry)
    builtin = [s for s in statuses if s.name == "gantool"]
    assert builtin and all(s.status == "ok" for s in builtin), builtin
    assert registry.get("generator", "dcgan").qualified_name == "gantool:dcgan"
    assert registry.get("loss", "gantool:bce").plugin == "gantool"


def test_third_party_plugin_is_listed_with_distribution_and_version(plugin_path):
    add_good(plugin_path)
    registry = Registry()
    load_plugins(registry)
    component = registry.get("loss", "good_loss")
    assert (component.qualified_name, component.plugin, component.version) == ("gantool-good:good_loss", "gantool-good", "1.2.3")
    # lazy: listing did not import the implementation module
    assert "good_plugin_impl" not in sys.modules
    loss = registry.build("loss", "good_loss", {"weight": 2})
    assert loss.weight == 2.0 and "good_plugin_impl" in sys.modules


def test_broken_import_is_skipped_with_one_warning(plugin_path, capsys):
    make_distribution(plugin_path, "gantool-broken", "0.1", {"broken_plugin": "import does_not_exist_anywhere\n"}, {"broken": "broken_plugin"})
    add_good(plugin_path)
    registry = Registry()
    statuses = {s.name: s for s in load_plugins(registry)}
    assert statuses["gantool-broken"].status == "failed"
    assert "does_not_exist_anywhere" in statuses["gantool-broken"].error
    assert statuses["gantool-good"].status == "ok"
    err = capsys.readouterr().err
    assert err.count("warning: plugin gantool-broken") == 1
    assert registry.get("loss", "good_loss")


def test_hook_that_raises_is_rolled_back(plugin_path):
    source = """
    import gantool

    @gantool.hookimpl
    def gantool_register_components(registry):
        registry.add("loss", "half_registered", "x:y")
        raise RuntimeError("boom")
    """
    make_distribution(plugin_path, "gantool-raiser", "0.1", {"raiser_plugin": source}, {"raiser": "raiser_plugin"})
    registry = Registry()
    statuses = {s.name: s for s in load_plugins(registry)}
    assert statuses["gantool-raiser"].status == "failed" and "boom" in statuses["gantool-raiser"].error
    assert not registry.list("loss", "half_registered")


def test_misspelled_hook_is_an_error_not_silence(plugin_path):
    source = """
    import gantool

    @gantool.hookimpl
    def gantool_register_componets(registry):
        pass
    """
    make_distribution(plugin_path, "gantool-typo", "0.1", {"typo_plugin": source}, {"typo": "typo_plugin"})
    statuses = {s.name: s for s in load_plugins(Registry())}
    assert statuses["gantool-typo"].status == "failed"
    assert "gantool_register_componets" in statuses["gantool-typo"].error


def test_colliding_bare_name_keeps_both_and_asks_for_qualified_name(plugin_path):
    add_good(plugin_path, dist="gantool-rival", module="rival_plugin", name="bce")
    registry = Registry()
    load_plugins(registry)
    with pytest.raises(GantoolError, match=r"ambiguous.*'gantool:bce'.*'gantool-rival:bce'|ambiguous.*'gantool-rival:bce'.*'gantool:bce'"):
        registry.get("loss", "bce")
    assert registry.get("loss", "gantool:bce").plugin == "gantool"
    assert registry.get("loss", "gantool-rival:bce").plugin == "gantool-rival"


def test_same_plugin_registering_twice_fails_that_plugin(plugin_path):
    source = """
    import gantool

    @gantool.hookimpl
    def gantool_register_components(registry):
        registry.add("loss", "twice", "a:b")
        registry.add("loss", "twice", "a:c")
    """
    make_distribution(plugin_path, "gantool-twice", "0.1", {"twice_plugin": source}, {"twice": "twice_plugin"})
    registry = Registry()
    statuses = {s.name: s for s in load_plugins(registry)}
    assert statuses["gantool-twice"].status == "failed" and "registered twice" in statuses["gantool-twice"].error
    assert not registry.list("loss", "twice")


def test_strict_mode_turns_failure_into_error(plugin_path, monkeypatch):
    make_distribution(plugin_path, "gantool-broken", "0.1", {"broken_plugin2": "raise ImportError('nope')\n"}, {"broken": "broken_plugin2"})
    monkeypatch.setenv("GANTOOL_STRICT_PLUGINS", "1")
    with pytest.raises(GantoolError, match="gantool-broken"):
        load_plugins(Registry())


def test_disable_plugins_by_name(plugin_path, monkeypatch):
    add_good(plugin_path)
    monkeypatch.setenv("GANTOOL_DISABLE_PLUGINS", "gantool-good, losses")
    registry = Registry()
    statuses = {(s.name, s.entry_point.split(" ")[0]): s.status for s in load_plugins(registry)}
    assert statuses[("gantool-good", "good")] == "disabled"
    assert statuses[("gantool", "losses")] == "disabled"
    assert not registry.list("loss")


def test_unknown_name_suggests(plugin_path):
    registry = Registry()
    load_plugins(registry)
    with pytest.raises(GantoolError, match="did you mean 'dcgan'"):
        registry.get("generator", "dcgn")


def test_cli_survives_a_broken_plugin(tmp_path):
    site = tmp_path / "site"
    make_distribution(site, "gantool-broken", "0.1", {"broken_cli_plugin": "1/0\n"}, {"broken": "broken_cli_plugin"})
    env = {"PYTHONPATH": str(site)}
    listing = run_cli("list", "--json", env=env, check=0)
    rows = json.loads(listing.stdout)
    assert {"kind", "name", "qualified_name", "plugin", "version", "summary"} == set(rows[0])
    assert "warning: plugin gantool-broken" in listing.stderr and "Traceback" not in listing.stderr
    plugins = json.loads(run_cli("plugins", "--json", env=env, check=0).stdout)
    broken = [p for p in plugins if p["name"] == "gantool-broken"][0]
    assert broken["status"] == "failed" and "ZeroDivisionError" in broken["error"]
    assert set(broken) == {"name", "version", "entry_point", "status", "error", "load_ms", "imports_torch"}
    assert run_cli("--help", env=env, check=0).stdout.startswith("Usage")
    strict = run_cli("list", env={**env, "GANTOOL_STRICT_PLUGINS": "1"}, check=2)
    assert "gantool-broken" in strict.stderr and "Traceback" not in strict.stderr


def test_plugins_shows_load_time_and_warns_about_a_plugin_that_imports_torch(tmp_path):
    site = tmp_path / "site"
    heavy = """
    import torch  # at top level: every `gantool list` now pays for torch
    import gantool

    @gantool.hookimpl
    def gantool_register_components(registry):
        registry.add("loss", "heavy_loss", "heavy_plugin:Nothing")
    """
    make_distribution(site, "gantool-heavy", "0.1", {"heavy_plugin": heavy}, {"heavy": "heavy_plugin"})
    env = {"PYTHONPATH": str(site)}
    rows = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env, check=0).stdout)}
    assert rows["gantool-heavy"]["imports_torch"] is True and rows["gantool-heavy"]["load_ms"] > 0
    assert rows["gantool"]["imports_torch"] is False and rows["gantool"]["load_ms"] > 0
    table = run_cli("plugins", env={**env, "COLUMNS": "200"}, check=0)
    assert "load ms" in table.stdout and "(imports torch)" in table.stdout
    assert "warning: plugin gantool-heavy (heavy = heavy_plugin) imports torch while loading" in table.stderr
    assert "warning" not in run_cli("plugins", check=0).stderr
