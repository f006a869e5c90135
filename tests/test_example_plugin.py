"""The documented example plugin (docs/example-plugin) is built, installed and used like a real one."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """pip-install the example distribution into a private folder (no dependencies, no network)."""
    work = tmp_path_factory.mktemp("example")
    source = shutil.copytree(ROOT / "docs" / "example-plugin", work / "src")
    site = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(source)],
        check=True, capture_output=True,
    )
    return site


def test_example_components_are_listed_with_distribution_and_version(example_site):
    rows = json.loads(run_cli("list", "--json", env={"PYTHONPATH": str(example_site)}, check=0).stdout)
    mine = {(r["kind"], r["name"]): r for r in rows if r["plugin"] == "gantool-example"}
    assert set(mine) == {("generator", "mlp"), ("discriminator", "mlp"), ("dataset", "shapes"), ("metric", "brightness_gap"),
                         ("loss", "rpgan"), ("augmentation", "noise"), ("optimizer", "lion"), ("scheduler", "step_decay"),
                         ("callback", "plateau")}  # one of every kind: the docs' claims are exercised
    assert mine[("generator", "mlp")]["qualified_name"] == "gantool-example:mlp"
    assert mine[("generator", "mlp")]["version"] == "0.2.0"
    plugins = json.loads(run_cli("plugins", "--json", env={"PYTHONPATH": str(example_site)}, check=0).stdout)
    mine = [p for p in plugins if p["name"] == "gantool-example"]
    assert len(mine) == 1 and mine[0]["version"] == "0.2.0" and mine[0]["status"] == "ok" and mine[0]["error"] is None
    assert mine[0]["entry_point"] == "example = gantool_example"


def test_example_recipe_trains(example_site, tmp_path):
    env = {"PYTHONPATH": str(example_site)}
    out = tmp_path / "run"
    run_cli("run", ROOT / "docs" / "example-plugin" / "shapes_mlp.toml", "--set", "train.epochs=1", "--out", out, env=env, check=0)
    assert (out / "checkpoints" / "last.safetensors").exists() and (out / "samples" / "final.png").exists()
    info = run_cli("info", "generator", "mlp", env=env, check=0).stdout
    assert "hidden" in info and "width of each hidden layer" in info


def test_example_components_say_what_keeps_a_cuda_graph_from_capturing_the_step(example_site):
    """The noise augmentation declares capturable = False; Lion and the schedule are host work too."""
    code = ("import json, sys; from gantool import graphs; from gantool.plan import make_plan; "
            "from gantool.plugins import get_registry; from gantool.recipe import load_recipe; "
            "print(json.dumps(graphs.blockers(make_plan(load_recipe(sys.argv[1]), get_registry()))))")
    recipe = ROOT / "docs" / "example-plugin" / "shapes_everything.toml"
    proc = subprocess.run([sys.executable, "-c", code, str(recipe)], capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(example_site)})
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        "[scheduler.generator] sets the learning rate on the host every step",
        "[optimizer.generator] Lion has no capturable mode",
        "[optimizer.discriminator] Lion has no capturable mode",
        "[augment] gantool-example:noise declares capturable = False",
    ]


def test_example_param_error_is_reported_against_the_recipe(example_site):
    proc = run_cli("check", ROOT / "docs" / "example-plugin" / "shapes_mlp.toml", "--set", "dataset.image_size=18",
                   env={"PYTHONPATH": str(example_site)}, check=2)
    assert "[dataset] image_size: 18 is not a multiple of 4" in proc.stderr


def test_example_plugin_passes_its_own_contract_tests(example_site, tmp_path):
    """Its tests (docs/example-plugin/tests) call gantool.testing, as a plugin author's would."""
    tests = shutil.copytree(ROOT / "docs" / "example-plugin" / "tests", tmp_path / "tests")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(example_site), "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "11 passed" in proc.stdout


def test_every_kind_of_the_example_trains_together(example_site, tmp_path):
    env = {"PYTHONPATH": str(example_site)}
    out = tmp_path / "run"
    run_cli("run", ROOT / "docs" / "example-plugin" / "shapes_everything.toml", "--out", out, env=env, check=0)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"margin", "noise_sigma"} <= set(records[0])  # the loss's and the augmentation's statistics
    assert any("brightness_gap" in r for r in records)
    assert (out / "plateau.log").exists()
    meta = json.loads((out / "summary.json").read_text())
    assert meta["components"]["optimizer.generator"]["qualified_name"] == "gantool-example:lion"
    assert meta["components"]["scheduler.generator"]["qualified_name"] == "gantool-example:step_decay"
    assert meta["components"]["augment"]["qualified_name"] == "gantool-example:noise"


def test_the_example_trains_class_conditionally_and_samples_a_class(example_site, tmp_path):
    env = {"PYTHONPATH": str(example_site)}
    out = tmp_path / "run"
    run_cli("run", ROOT / "docs" / "example-plugin" / "shapes_conditional.toml", "--set", "train.epochs=1",
            "--set", "eval.metrics=[\"brightness_gap\"]", "--out", out, env=env, check=0)
    meta = json.loads((out / "summary.json").read_text())
    assert meta["components"]["dataset"]["class_names"] == ["square", "disc"]
    assert "brightness_gap" in meta["metrics"]  # the example metric passes labels to a conditional G
    proc = run_cli("sample", out, "--class", "disc", "--n", "4", "--device", "cpu", env=env, check=0)
    assert "4 samples of class 'disc'" in proc.stdout
