"""`gantool --help`, `list`, `plugins` and `info SECTION` must not import torch (it alone costs ~2 s).

Each check runs in a fresh interpreter (the test process itself has torch loaded),
invokes the real click group through CliRunner and reports which heavy modules
ended up in ``sys.modules``. Wall time is measured by benchmarks/cli_startup.py, not
asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys
from click.testing import CliRunner
from gantool.cli import cli

result = CliRunner().invoke(cli, sys.argv[1:], catch_exceptions=False)
heavy = sorted(m for m in ("torch", "torchvision", "numpy", "safetensors", "PIL") if m in sys.modules)
print(json.dumps({"exit_code": result.exit_code, "output": result.output, "heavy": heavy}))
"""


def probe(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"], ["list", "generator"], ["plugins"], ["plugins", "--json"],
                                  ["info", "train"], ["info", "eval"], ["info", "optimizer"]])
def test_fast_commands_do_not_import_torch(args):
    r = probe(*args)
    assert r["exit_code"] == 0, r["output"]
    assert r["output"].strip(), "the command printed nothing"
    assert "torch" not in r["heavy"], f"`gantool {' '.join(args)}` imported {r['heavy']}"
    assert "torchvision" not in r["heavy"]


def test_listing_really_lists_the_builtin_components():
    # Guards the test above against passing because nothing was loaded at all.
    r = probe("list", "--json")
    rows = json.loads(r["output"])
    names = {(row["kind"], row["name"]) for row in rows}
    assert ("generator", "dcgan") in names and ("dataset", "mnist5k") in names
    assert "torch" not in r["heavy"]


def test_probe_detects_a_torch_import():
    # The probe itself must be able to see torch: building a component imports it.
    r = probe("info", "generator", "dcgan")
    assert r["exit_code"] == 0, r["output"]
    assert "torch" in r["heavy"]
