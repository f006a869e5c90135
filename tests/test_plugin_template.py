"""`gantool plugin new` writes distributions that build, register lazily, pass their own tests and check."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import run_cli
from gantool.cli import cli
from gantool.template import KINDS, write_plugin

NAMES = {kind: f"my-{kind}" for kind in KINDS}  # one plugin per kind


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Every kind's plugin, pip-installed into a private folder (never the shared venv)."""
    work = tmp_path_factory.mktemp("template")
    folders = {kind: write_plugin(name, kind, work / "src")[0] for kind, name in NAMES.items()}
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), *map(str, folders.values())], check=True, capture_output=True)
    return folders, site


def test_cli_writes_a_plugin_and_refuses_in_one_line(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["plugin", "new", "style-mix", "--kind", "loss", "--out", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "the loss gantool-style-mix:style_mix" in ok.output
    folder = tmp_path / "gantool-style-mix"
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "style_mix.toml", "gantool_style_mix/__init__.py", "gantool_style_mix/loss.py",
        "tests/test_style_mix.py",
    }
    assert "class StyleMixLoss(gantool.Loss)" in (folder / "gantool_style_mix" / "loss.py").read_text()
    for args, message in [
        (["style-mix", "--kind", "loss"], "gantool-style-mix already exists"),
        (["Style Mix"], "plugin name 'Style Mix': use lowercase letters"),
        (["gantool-mix"], "give the part after 'gantool-' ('mix')"),
    ]:
        result = runner.invoke(cli, ["plugin", "new", *args, "--out", str(tmp_path)])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output, result.output
    assert runner.invoke(cli, ["plugin", "new", "x", "--kind", "nope"]).exit_code == 2


def test_plugin_new_does_not_import_torch(tmp_path):
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom gantool.cli import cli\n"
             "r = CliRunner().invoke(cli, ['plugin', 'new', 'quick', '--out', sys.argv[1]])\n"
             "print(r.exit_code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["0", "False"] and (tmp_path / "gantool-quick" / "quick.toml").exists()


def test_generated_plugins_register_lazily_with_their_distribution(generated):
    _, site = generated
    env = {"PYTHONPATH": str(site)}
    rows = json.loads(run_cli("list", "--json", env=env, check=0).stdout)
    mine = {(r["kind"], r["qualified_name"]) for r in rows if r["plugin"].startswith("gantool-my-")}
    expected = {(kind, f"gantool-{name}:{name.replace('-', '_')}") for kind, name in NAMES.items()}
    assert mine == expected
    plugins = [p for p in json.loads(run_cli("plugins", "--json", env=env, check=0).stdout)
               if p["name"].startswith("gantool-my-")]
    assert len(plugins) == len(KINDS) and all(p["status"] == "ok" and not p["imports_torch"] for p in plugins)


def test_generated_tests_pass(generated):
    folders, site = generated
    tests = [str(f / "tests") for f in folders.values()]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                          capture_output=True, text=True, env=_env(site), cwd=site.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # contract + resume each (the callback's test does both), and a CUDA graph check for the four captured kinds
    assert f"{2 * len(KINDS) - 1 + 4} passed" in proc.stdout


def test_generated_recipes_pass_check(generated):
    """`gantool check` on every example recipe, in one process (CliRunner) to keep it quick."""
    pytest.importorskip("mlxtend")
    folders, site = generated
    recipes = [str(f / f"{f.name.removeprefix('gantool-').replace('-', '_')}.toml") for f in folders.values()]
    probe = (
        "import sys\nfrom click.testing import CliRunner\nfrom gantool.cli import cli\n"
        "for path in sys.argv[1:]:\n"
        "    r = CliRunner().invoke(cli, ['check', path])\n"
        "    print('checked' if r.exit_code == 0 else f'{path}: exit {r.exit_code}: {r.output}')\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *recipes], capture_output=True, text=True, env=_env(site))
    assert proc.returncode == 0 and proc.stdout.split() == ["checked"] * len(recipes), proc.stdout + proc.stderr


def _env(site):
    """The generated plugins importable, caches private."""
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(site),
            "GANTOOL_CACHE_DIR": str(site.parent / "cache")}
