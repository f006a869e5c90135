"""docs/recipes.md is generated from the code, and `gantool info SECTION` prints the same reference."""

import dataclasses

import pytest

from conftest import ROOT, run_cli
from gantool import reference
from gantool.recipe import ENGINE_SECTIONS, TOP_LEVEL


def test_committed_recipe_reference_is_current():
    committed = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert committed == reference.markdown(), f"docs/recipes.md is out of date; regenerate it: {reference.COMMAND}"


def test_every_engine_key_is_documented_with_its_default():
    text = reference.markdown()
    for name, cls in ENGINE_SECTIONS.items():
        keys = reference.section(name).keys
        assert [k.name for k in keys] == [f.name for f in dataclasses.fields(cls)]
        for key in keys:
            assert key.doc, f"[{name}] {key.name}: no doc; add it to the Args: section of {cls.__name__}"
            assert f"| `{key.name}` |" in text
    assert reference.section("eval").keys[0].default == "[]"  # a default_factory, not '<factory>'
    assert {k.name: k.default for k in reference.section("train").keys}["amp"] == '"auto"'


def test_every_top_level_key_has_a_section():
    text = reference.markdown()
    for key in TOP_LEVEL:
        assert f"### `{key}" in text or f"### `[{key}" in text, key


def test_component_tables_say_what_type_selects_and_what_is_injected():
    optimizer = "\n".join(reference.section("optimizer").notes)
    assert "`gantool list optimizer`" in optimizer and '"gantool:adam"' in optimizer and "`params`" in optimizer
    scheduler = "\n".join(reference.section("scheduler").notes)
    assert "`optimizer`" in scheduler and "`total_steps`" in scheduler and "required in the table" in scheduler
    assert "`image_shape`" in "\n".join(reference.section("generator").notes)
    assert "defaults to the table name" in "\n".join(reference.section("callbacks").notes)
    assert "`gantool list augmentation`" in "\n".join(reference.section("augment").notes)


def test_builtin_components_are_listed_with_their_parameters():
    text = reference.markdown()
    assert "#### generator `dcgan`" in text and "| `base_channels` | `int >= 1` | `64` |" in text
    assert "| `betas` | `tuple[float >= 0 < 1, float >= 0 < 1]` | `[0.5, 0.999]` |" in text
    assert "| `root` | `str` | (required) |" in text  # imagefolder


@pytest.mark.parametrize("section, expected", [
    ("train", ["[train]", "batch_size", "int >= 1", "128", "d_steps_per_g"]),
    ("run", ["[run]", "seed", "device"]),
    ("eval", ["[eval]", "n_samples", "[eval.<metric>]", "gantool list metric"]),
    ("log", ["[log]", "tensorboard"]),
    ("optimizer", ["[optimizer.<net>]", "gantool list optimizer", "gantool:adam"]),
    ("scheduler", ["[scheduler.<net>]", "gantool list scheduler", "total_steps"]),
    ("augment", ["[augment]", "gantool list augmentation"]),
    ("callbacks", ["[callbacks.<name>]", "gantool list callback"]),
])
def test_info_prints_a_recipe_section(section, expected):
    out = run_cli("info", section, check=0, env={"COLUMNS": "200"}).stdout
    for text in expected:
        assert text in out, f"`gantool info {section}` lacks {text!r}:\n{out}"


def test_info_without_a_name_for_a_component_kind_is_one_line_error():
    proc = run_cli("info", "generator", check=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "gantool list generator" in lines[0] and "run, train, eval, log" in lines[0]


def test_info_section_with_a_name():
    proc = run_cli("info", "train", "batch_size", check=2)
    assert "[train] is a recipe section" in proc.stderr and "`gantool info train`" in proc.stderr
    # a component table's name stands for its kind: [callbacks.csv], [eval.fid], [optimizer.*] type = "adam"
    assert "callback gantool:csv" in run_cli("info", "callbacks", "csv", check=0).stdout
    assert "metric gantool:fid" in run_cli("info", "eval", "fid", check=0).stdout
    assert "optimizer gantool:adam" in run_cli("info", "optimizer", "adam", check=0).stdout
