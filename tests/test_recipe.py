"""Recipes: extends, overrides, schema checks; every error names file, key and fix."""

import pytest

from conftest import TINY_RECIPE, run_cli
from gantool.errors import GantoolError
from gantool.recipe import load_recipe, parse_override


def write(path, text):
    path.write_text(text)
    return path


def test_extends_deep_merges_tables_and_replaces_arrays(tmp_path):
    write(tmp_path / "base.toml", TINY_RECIPE + "\n[optimizer.generator]\nlr = 1e-3\nbetas = [0.1, 0.2]\n")
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub" / "child.toml", 'extends = "../base.toml"\n[generator]\nbase_channels = 4\n[optimizer.generator]\nbetas = [0.3, 0.4]\n')
    r = load_recipe(child)
    assert r.data["generator"] == {"type": "dcgan", "latent_dim": 16, "base_channels": 4}
    assert r.data["optimizer"]["generator"] == {"lr": 1e-3, "betas": [0.3, 0.4]}
    assert r.component("optimizer", "generator") == ("gantool:adam", {"lr": 1e-3, "betas": [0.3, 0.4]})
    assert r.locate("generator", "base_channels") == f"{child}: [generator] base_channels"
    assert r.locate("generator", "latent_dim") == f"{tmp_path / 'base.toml'}: [generator] latent_dim"


def test_changing_type_replaces_the_whole_table(tmp_path):
    write(tmp_path / "base.toml", TINY_RECIPE)
    child = write(tmp_path / "child.toml", 'extends = "base.toml"\n[loss]\ntype = "hinge"\n')
    assert load_recipe(child).data["loss"] == {"type": "hinge"}
    r = load_recipe(tmp_path / "base.toml", ["generator.type=upsample_conv"])
    assert r.data["generator"] == {"type": "upsample_conv"}


@pytest.mark.parametrize("overrides", [
    ["generator.base_channels=8", "generator.type=upsample_conv", "train.epochs=2"],
    ["generator.type=upsample_conv", "generator.base_channels=8", "train.epochs=2"],
    ["generator.base_channels=8", 'generator={type = "upsample_conv"}', "train.epochs=2"],
])
def test_set_type_keeps_the_other_set_keys_in_any_order(tmp_path, overrides):
    """A type change drops the recipe's parameters, not the ones given with it on the command line."""
    write(tmp_path / "base.toml", TINY_RECIPE)
    r = load_recipe(tmp_path / "base.toml", overrides)
    assert r.data["generator"] == {"type": "upsample_conv", "base_channels": 8}  # the recipe's latent_dim is gone
    assert r.train.epochs == 2
    assert r.locate("generator", "base_channels") == "--set generator.base_channels=8: [generator] base_channels"


def test_set_overrides_parse_toml_values_with_string_fallback(tiny_recipe):
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("optimizer.generator.betas=[0.0, 0.9]") == (["optimizer", "generator", "betas"], [0.0, 0.9])
    assert parse_override("dataset.root=data/x") == (["dataset", "root"], "data/x")
    r = load_recipe(tiny_recipe, ["train.epochs=7", "run.device=cpu"])
    assert r.train.epochs == 7 and r.locate("train", "epochs") == "--set train.epochs=7: [train] epochs"


@pytest.mark.parametrize(
    "extra, overrides, message",
    [
        ("", ["train.bach_size=3"], r"--set train.bach_size=3: \[train\] bach_size: unknown parameter; did you mean 'batch_size'\?"),
        ("", ["train.batch_size=0"], r"\[train\] batch_size: must be >= 1, got 0"),
        ("", ["train.epochs=lots"], r"\[train\] epochs: expected an integer, got string 'lots'"),
        ("", ["optimiser.generator.lr=1"], r"unknown section 'optimiser'; did you mean 'optimizer'\?"),
        ("", ["train.amp=fast"], r"\[train\] amp: 'fast' is not allowed"),
        ("", ["bad"], r"expected KEY.PATH=VALUE"),
        ("[trainn]\nepochs = 1\n", [], r"tiny.toml: unknown section \[trainn\]; did you mean 'train'\?"),
        ("[optimizer.gen]\nlr = 1.0\n", [], r"\[optimizer\] gen: unknown network; valid: discriminator, generator"),
        ("", ["train=3"], r"--set train=3: \[train\]: expected a table of settings, got 3"),
        ("", ["generator=3"], r"--set generator=3: \[generator\]: expected a table"),
    ],
)
def test_bad_values_name_file_key_and_fix(tiny_recipe, extra, overrides, message):
    tiny_recipe.write_text(tiny_recipe.read_text() + extra)
    with pytest.raises(GantoolError, match=message):
        load_recipe(tiny_recipe, overrides)


def test_missing_section_and_missing_type(tmp_path):
    no_loss = write(tmp_path / "a.toml", TINY_RECIPE.replace('[loss]\ntype = "bce"\n', ""))
    with pytest.raises(GantoolError, match=r"a.toml: missing section \[loss\]; add it"):
        load_recipe(no_loss)
    no_type = write(tmp_path / "b.toml", TINY_RECIPE.replace('[loss]\ntype = "bce"\n', "[loss]\n"))
    with pytest.raises(GantoolError, match=r"b.toml: \[loss\] type: missing"):
        load_recipe(no_type)


def test_syntax_errors_garbage_missing_files_and_cycles(tmp_path):
    with pytest.raises(GantoolError, match=r"bad.toml: TOML syntax error: .*line 2"):
        load_recipe(write(tmp_path / "bad.toml", "[run]\nname = \n"))
    garbage = tmp_path / "garbage.toml"
    garbage.write_bytes(bytes(range(256)))
    with pytest.raises(GantoolError, match=r"garbage.toml: not a text TOML file"):
        load_recipe(garbage)
    with pytest.raises(GantoolError, match=r"nope.toml: recipe file not found"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(GantoolError, match=r"missing.toml: recipe file not found \(extended by"):
        load_recipe(write(tmp_path / "ext.toml", 'extends = "missing.toml"\n'))
    write(tmp_path / "x.toml", 'extends = "y.toml"\n')
    write(tmp_path / "y.toml", 'extends = "x.toml"\n')
    with pytest.raises(GantoolError, match=r"extends cycle: .*x.toml -> .*y.toml -> .*x.toml"):
        load_recipe(tmp_path / "x.toml")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["generator.base_chanels=8"], "--set generator.base_chanels=8: [generator] base_chanels: unknown parameter; did you mean 'base_channels'?"),
        (["generator.latent_dim=0"], "[generator] latent_dim: must be >= 1"),
        (["generator.type=dcgn"], "[generator] type: no generator named 'dcgn'; did you mean 'dcgan'?"),
        (["dataset.image_size=50"], "[dataset] image_size: generator dcgan: cannot make 50x50 images"),
        (["dataset.channels=2"], "[dataset] channels: 2 is not allowed"),
        (["run.device=cuda:7"], "[run] device"),
        (["run.device=tpu"], "[run] device"),
        (["optimizer.generator.lr=-1"], "[optimizer.generator] lr: must be > 0"),
        (["optimizer.generator.betas=[0.5]"], "[optimizer.generator] betas: expected an array of 2 values"),
        (["optimizer.discriminator.type=adamm"], "[optimizer.discriminator] type: no optimizer named 'adamm'; did you mean 'adam'?"),
        (["scheduler.generator.type=cosine", "scheduler.generator.min_lr=-1"], "[scheduler.generator] min_lr"),
        (["augment.type=diffaugment", "augment.policy=colour"], "[augment] policy"),
        (["callbacks.csvv={}"], "[callbacks.csvv] type: no callback named 'csvv'; did you mean 'csv'?"),
        (["train.keep_best=fid"], "[train] keep_best: no [eval] metrics"),
        (["train.batch_size=512"], "[train] batch_size: 512 is larger than the dataset (256 images)"),
    ],
)
def test_check_reports_component_errors_with_exit_2(tiny_recipe, overrides, message):
    proc = run_cli("check", tiny_recipe, *[a for o in overrides for a in ("--set", o)], check=2)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_check_prints_shapes(tiny_recipe):
    out = run_cli("check", tiny_recipe, check=0).stdout
    assert "(2, 16) -> (2, 1, 16, 16)" in out and "-> (2,)" in out


def test_debug_shows_traceback(tiny_recipe):
    proc = run_cli("--debug", "check", tiny_recipe, "--set", "generator.latent_dim=0")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
