"""Bounded inputs (issue 13): every malformed file, value or environment variable is one
error line naming it, exit status 2, never a traceback, a hang or an exhausted machine.

One tiny run is trained once per module; the checkpoint tests corrupt copies of its
checkpoint. Commands go through click's CliRunner in-process (the real `gantool` group
and its error handling), except where something could hang: those run in a fresh
process under a timeout.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tomli_w
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gantool import limits, plugins
from gantool.cli import cli
from gantool.errors import GantoolError, one_line
from gantool.params import Range, check_value
from gantool.plugins import env_flag, get_registry, load_plugins
from gantool.registry import Registry
from gantool.testing import tiny_recipe
from gantool_plugins.datasets.files import find_images

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def one_error(result, *needles, code=2) -> str:
    """The single ``error:`` line of a failed command; checks the exit code and that no traceback shows."""
    text = result.output
    assert result.exit_code == code, f"exit {result.exit_code}: {text}"
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def run_fresh(*args, timeout=120, env=None) -> subprocess.CompletedProcess:
    """``gantool ARGS`` in a fresh process that must finish within ``timeout`` seconds (a hang fails)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "gantool", *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=timeout)


# ----------------------------------------------------------------------------- a tiny run to corrupt


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(recipe file, run folder, checkpoint) of a 6-step 16 px run."""
    root = tmp_path_factory.mktemp("bounded")
    recipe = root / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_recipe()))
    out = root / "run"
    result = invoke("run", recipe, "--out", out)
    assert result.exit_code == 0, result.output
    return recipe, out, out / "checkpoints" / "last.safetensors"


@pytest.fixture(scope="module")
def stored(run):
    """(tensors, metadata) of the valid checkpoint."""
    path = run[2]
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["gantool"])
    return load_file(path), meta


def write_checkpoint(path: Path, tensors: dict, metadata) -> Path:
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    save_file(tensors, str(path), metadata={"gantool": text})
    return path


# ----------------------------------------------------------------------------- A. checkpoint files


def test_the_valid_checkpoint_samples(run, tmp_path):
    assert invoke("sample", run[2], "--n", "4", "--out", tmp_path / "x.png").exit_code == 0


@pytest.mark.parametrize("make, needle", [
    (lambda blob: blob[: len(blob) // 2], "not a gantool safetensors checkpoint"),
    (lambda blob: b"", "too short"),
    (lambda blob: blob[:5], "too short"),
    (lambda blob: b"\x80\x04\x95" + b"\x00" * 40, "never unpickles"),
    (lambda blob: b"PK\x03\x04" + b"\x00" * 40, "never unpickles"),
    (lambda blob: struct.pack("<Q", 2**62) + b"{}", "header claims"),
    (lambda blob: struct.pack("<Q", 200 * 10**6) + b"{" * 16, "header claims"),
    (lambda blob: struct.pack("<Q", 2) + b"[]", "malformed header"),
    (lambda blob: struct.pack("<Q", 4) + b"\xff\xfe{}", "unreadable header"),
    (lambda blob: struct.pack("<Q", 100_000) + b"[" * 100_000, "unreadable header"),
])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_broken_checkpoint_file_is_one_line_naming_it(run, tmp_path, make, needle, command):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(make(run[2].read_bytes()))
    one_error(invoke(command, bad), str(bad), needle)


@pytest.mark.parametrize("header_bytes", [640, 896, 1152, 1408])
def test_a_header_length_that_starts_like_a_pickle_still_loads(tmp_path, header_bytes):
    """As the file's first bytes, 640 is 0x80 0x02: a pickle's signature. Seen with torch 2.4's Adam state."""
    from gantool.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "ckpt.safetensors"
    for pad in range(header_bytes):
        save_checkpoint(path, modules={"w": torch.nn.Linear(2, 2)}, optimizers={}, rng={},
                        metadata={"pad": "x" * pad})
        if struct.unpack("<Q", path.read_bytes()[:8])[0] == header_bytes:
            break
    assert path.read_bytes()[:2] == bytes([0x80, header_bytes >> 8])
    tensors, meta = load_checkpoint(path)
    assert meta["pad"] == "x" * pad and tensors["w.weight"].shape == (2, 2)


def test_the_header_length_is_checked_against_the_size_cap(run, tmp_path, monkeypatch):
    from gantool import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", 100)
    one_error(invoke("sample", run[2]), str(run[2]), "over the 0 MB limit")


def test_a_folder_or_fifo_as_checkpoint_is_refused_without_blocking(tmp_path):
    folder = tmp_path / "ckpt.safetensors"
    folder.mkdir()
    one_error(invoke("sample", folder, "--best"), "best.safetensors")  # a folder is a run directory
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    proc = run_fresh("sample", fifo, timeout=120)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def corrupt(meta: dict, edit) -> dict:
    meta = copy.deepcopy(meta)
    edit(meta)
    return meta


METADATA_CASES = {
    "no recipe": (lambda m: m.pop("recipe"), "recipe: missing"),
    "no generator component": (lambda m: m["components"].pop("generator"), "components.generator: missing"),
    "no generator table": (lambda m: m["recipe"].pop("generator"), "recipe.generator: missing"),
    "shape a string": (lambda m: m["components"]["dataset"].update(image_shape="x"), "image_shape: expected a list"),
    "shape of 2": (lambda m: m["components"]["dataset"].update(image_shape=[16, 16]), "image_shape: expected 3"),
    "shape negative": (lambda m: m["components"]["dataset"].update(image_shape=[1, -16, 16]), "image_shape"),
    "shape floats": (lambda m: m["components"]["dataset"].update(image_shape=[1.0, 16, 16]), "image_shape"),
    "step negative": (lambda m: m.update(step=-1), "step: must be an integer"),
    "step a string": (lambda m: m.update(step="6"), "step: expected an integer"),
    "step a bool": (lambda m: m.update(step=True), "step: expected an integer"),
    "step huge": (lambda m: m.update(step=10**30), "step: must be an integer"),
    "epoch NaN": (lambda m: m.update(epoch=float("nan")), "epoch: must be a finite number"),
    "no batches_seen": (lambda m: m.pop("batches_seen"), "batches_seen: missing"),
    "format missing": (lambda m: m.pop("format"), "format: missing"),
    "format foreign": (lambda m: m.update(format="other-1"), "format: 'other-1'"),
    "optimizers a list": (lambda m: m.update(optimizers=[]), "optimizers: expected an object"),
    "param_groups bad": (lambda m: m["optimizers"]["generator"].update(param_groups=[{"params": ["x"]}]),
                         "optimizers.generator.param_groups[0].params"),
    "scalars bad": (lambda m: m["optimizers"]["generator"].update(scalars={"x": 1}), "optimizers.generator.scalars"),
    "num_classes negative": (lambda m: m["components"]["dataset"].update(num_classes=-3), "num_classes"),
    "class_names mismatch": (lambda m: m["components"]["dataset"].update(num_classes=2, class_names=["a"]),
                             "class_names"),
    "class_names not strings": (lambda m: m["components"]["dataset"].update(num_classes=1, class_names=[1]),
                                "class_names"),
    "components not objects": (lambda m: m["components"].update(loss="bce"), "components.loss"),
    "best wrong": (lambda m: m.update(best={"key": "fid"}), "best.value: missing"),
    "eval metrics wrong": (lambda m: m["recipe"].update(eval={"metrics": "fid"}), "recipe.eval.metrics"),
    "eval n_samples huge": (lambda m: m["recipe"].update(eval={"n_samples": 10**15}), "recipe.eval.n_samples"),
    "deep nesting": (lambda m: m["recipe"].update(x=json.loads("[" * 500 + "]" * 500)), "nested deeper"),
    "schedulers wrong": (lambda m: m.update(schedulers={"generator": 3}), "schedulers.generator"),
}


@pytest.mark.parametrize("case", METADATA_CASES)
def test_bad_metadata_is_one_line_naming_the_file_and_key(stored, tmp_path, case):
    edit, needle = METADATA_CASES[case]
    bad = write_checkpoint(tmp_path / "bad.safetensors", stored[0], corrupt(stored[1], edit))
    one_error(invoke("sample", bad), f"{bad}: checkpoint metadata: ", needle)


@pytest.mark.parametrize("text, needle", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected an object"),
    ('{"step": ' + "9" * 5000 + "}", "not valid JSON"),
])
def test_unparsable_metadata_is_one_line(stored, tmp_path, text, needle):
    bad = write_checkpoint(tmp_path / "bad.safetensors", stored[0], text)
    one_error(invoke("eval", bad), str(bad), needle)


def test_a_safetensors_file_without_gantool_metadata_is_refused(stored, tmp_path):
    bad = tmp_path / "foreign.safetensors"
    save_file(stored[0], str(bad))
    one_error(invoke("sample", bad), str(bad), "without gantool metadata")


def test_resume_validates_the_metadata_too(run, stored, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run[1], out)
    write_checkpoint(out / "checkpoints" / "last.safetensors", stored[0], corrupt(stored[1], lambda m: m.pop("recipe")))
    one_error(invoke("run", run[0], "--resume", "--out", out), "last.safetensors: checkpoint metadata: recipe")


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_non_finite_weights_are_refused(stored, tmp_path, command):
    tensors = {k: v.clone() for k, v in stored[0].items()}
    tensors["generator.net.0.weight"][0, 0, 0, 0] = float("nan")
    bad = write_checkpoint(tmp_path / "nan.safetensors", tensors, stored[1])
    extra = ["--metric", "class_coverage"] if command == "eval" else []
    one_error(invoke(command, bad, *extra), str(bad), "generator.net.0.weight", "NaN or inf")


def test_non_finite_discriminator_weights_do_not_stop_sampling(stored, tmp_path):
    tensors = {k: v.clone() for k, v in stored[0].items()}
    tensors["discriminator.net.0.weight"][0, 0, 0, 0] = float("inf")
    path = write_checkpoint(tmp_path / "d.safetensors", tensors, stored[1])
    assert invoke("sample", path, "--n", "1", "--out", tmp_path / "x.png").exit_code == 0


# ----------------------------------------------------------------------------- B. model size


@pytest.mark.parametrize("base_channels", [4000, 12000])
def test_a_small_checkpoint_claiming_a_huge_generator_is_refused_before_allocating(stored, tmp_path, monkeypatch,
                                                                                     base_channels):
    monkeypatch.setenv(limits.ENV, "off")  # even without a memory limit: the weights in the file bound it
    meta = corrupt(stored[1], lambda m: m["recipe"]["generator"].update(base_channels=base_channels))
    bad = write_checkpoint(tmp_path / "big.safetensors", stored[0], meta)
    line = one_error(invoke("sample", bad), str(bad), "the metadata does not match the weights")
    assert " GB" in line


def test_sample_refuses_a_generator_over_the_memory_limit(run, monkeypatch):
    monkeypatch.setenv(limits.ENV, "10kB")
    one_error(invoke("sample", run[2]), str(run[2]), "25.5 kB", "limit of 10 kB", limits.ENV)


def test_check_refuses_a_network_over_the_limit_and_says_how_to_override(run, monkeypatch):
    monkeypatch.setenv(limits.ENV, "20kB")
    line = one_error(invoke("check", run[0]), f"{run[0]}: [generator] type", "25.5 kB", "limit of 20 kB",
                     f"{limits.ENV}=")
    monkeypatch.delenv(limits.ENV)
    line = one_error(invoke("check", run[0], "--set", "generator.base_channels=1000000"), "[generator]",
                     "half of the memory available")
    assert "TB" in line or "GB" in line


def test_an_overflowing_size_is_one_line(run):
    one_error(invoke("check", run[0], "--set", f"generator.latent_dim={2**62}"), "[generator]", "could not be built")


def test_a_bad_memory_limit_is_one_line(run, monkeypatch):
    monkeypatch.setenv(limits.ENV, "lots")
    one_error(invoke("check", run[0]), f"{limits.ENV}='lots'", "8GB")


def test_check_shows_the_estimate(run):
    result = invoke("check", run[0], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "6,321 parameters (25.5 kB)" in result.output and "2,473 parameters (10 kB)" in result.output


def test_parse_size():
    assert limits.parse_size("8GB") == 8 * 10**9
    assert limits.parse_size("512MiB") == 512 * 2**20
    assert limits.parse_size(" 1.5 g ") == 1_500_000_000
    assert limits.parse_size("off") is None and limits.parse_size("0") is None
    with pytest.raises(GantoolError, match=limits.ENV):
        limits.parse_size("8 apples")


@pytest.mark.parametrize("kind", ["generator", "discriminator"])
def test_every_builtin_network_is_estimated_exactly_without_touching_the_rng(kind):
    registry = get_registry()
    for component in registry.list(kind):
        names = {p.name for p in registry.parameters(kind, component.qualified_name)[1]}
        for num_classes, extra in ((0, {}), (3, {}), (3, {"spectral_norm": True})):
            params = extra if set(extra) <= names else {}

            def build():
                return registry.build(kind, component.qualified_name, params, image_shape=(3, 32, 32),
                                      num_classes=num_classes)

            if component.name == "projection" and not num_classes:
                continue
            before = torch.get_rng_state()
            estimate = limits.estimate_bytes(build, load=component.load)
            assert torch.equal(before, torch.get_rng_state()), component.qualified_name
            assert estimate == limits.module_bytes(build()), (component.qualified_name, num_classes, params)


def test_a_factory_that_cannot_run_on_meta_gets_no_estimate():
    def build():
        return torch.nn.Linear(int(torch.ones(1).sum().item()), 2)  # .item() has no value on meta

    assert limits.estimate_bytes(build) is None
    assert limits.estimate_bytes(lambda: "not a module") is None


# ----------------------------------------------------------------------------- C. recipes


def test_a_fifo_recipe_or_extends_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    (tmp_path / "child.toml").write_text('extends = "pipe.toml"\n')
    for target, needle in ((fifo, str(fifo)), (tmp_path / "child.toml", "pipe.toml")):
        proc = run_fresh("check", target, timeout=120)
        assert proc.returncode == 2 and "not a regular file" in proc.stderr and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("extends, needle", [
    ("/dev/zero", "not a regular file"),
    (".", "is a directory"),
    ("missing.toml", "not found"),
    ("a\u0000b.toml", "embedded null"),  # Python 3.13 says "embedded null character in path"
])
def test_extends_to_a_non_recipe_is_one_line(tmp_path, extends, needle):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tomli_w.dumps({"extends": extends}))
    one_error(invoke("check", recipe), needle)


def test_an_oversized_recipe_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 1_000_000 + "\n")
    one_error(invoke("check", big), str(big), "1000 kB limit")


def test_a_long_extends_chain_is_capped(run, tmp_path):
    shutil.copy(run[0], tmp_path / "r0.toml")
    for i in range(1, 40):
        (tmp_path / f"r{i}.toml").write_text(f'extends = "r{i - 1}.toml"\n')
    one_error(invoke("check", tmp_path / "r39.toml"), "`extends` chain longer than 32 files", "r39.toml")
    assert invoke("check", tmp_path / "r20.toml").exit_code == 0


@pytest.mark.parametrize("text, needle", [
    ("a = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("a = " + "{b = " * 3000 + "1" + "}" * 3000, "nested too deeply"),
    ("a = " + "[" * 40 + "]" * 40, "nested more than 32 levels"),
    ("[run]\nseed = " + "9" * 5000, "not a usable TOML file"),
    ("[run]\nseed = 1\n\x00", "TOML syntax error"),
    ("\xff\xfe", "not a text TOML file"),
])
def test_pathological_toml_is_one_line(tmp_path, text, needle):
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(text.encode("utf-8", "surrogateescape") if not text.startswith("\xff") else b"\xff\xfe")
    one_error(invoke("check", recipe), str(recipe), needle)


@pytest.mark.parametrize("override, needle", [
    ("run.x=" + "[" * 100_000, "nested more than 32"),
    ("." * 100 + "=1", "nested more than 32"),
    ("run.seed=" + "9" * 5000, "too large"),
])
def test_pathological_overrides_are_one_line(run, override, needle):
    one_error(invoke("check", run[0], "--set", override), "--set", needle)


@pytest.mark.parametrize("name, needle", [
    ("../../escape", "path separator"),
    ("a/b", "path separator"),
    ("a\\b", "path separator"),
    ("..", "not a folder name"),
    (" ", "not a folder name"),
    ("red\x1b[31m", "control characters"),
    ("two\nlines", "control characters"),
    ("x" * 101, "longer than 100"),
])
def test_run_name_must_be_a_plain_folder_name(run, tmp_path, name, needle):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tomli_w.dumps(tiny_recipe(run={"name": name})))
    line = one_error(invoke("check", recipe), f"{recipe}: [run] name", needle)
    assert "\x1b" not in line and "\n" not in line


def test_a_run_name_from_a_bad_file_name_says_so(run, tmp_path):
    recipe = tmp_path / "bad\x1bname.toml"
    recipe.write_text(tomli_w.dumps({k: v for k, v in tiny_recipe().items() if k != "run"}))
    one_error(invoke("check", recipe), "(from the recipe's file name)", "control characters")


@pytest.mark.parametrize("override, needle", [
    ("optimizer.generator.lr=inf", "[optimizer.generator] lr: must be a finite number, got inf"),
    ("optimizer.generator.lr=nan", "[optimizer.generator] lr: must be a finite number"),
    ("optimizer.discriminator.eps=+inf", "[optimizer.discriminator] eps: must be a finite number"),
    ("train.ema_decay=-inf", "[train] ema_decay: must be a finite number"),
    ("discriminator.dropout=nan", "[discriminator] dropout: must be a finite number"),
    (f"optimizer.generator.lr={10**400}", "[optimizer.generator] lr: expected a finite number"),
    ("run.seed=99999999999999999999999", "[run] seed: must fit in 64 bits"),
    ("run.seed=-1", "[run] seed: must be >= 0"),
    ("train.batch_size=12345678901234567890", "[train] batch_size: must fit in 64 bits"),
    ("train.batch_size=1234567890123456789", "[train] batch_size: must be <= 1_048_576"),
    ("train.sample_grid=100000", "[train] sample_grid: must be <= 1024"),
    ("train.max_steps=10000000000000", "[train] max_steps: must be <= 1_000_000_000_000"),
    ("eval.n_samples=100000000", "[eval] n_samples: must be <= 10_000_000"),
])
def test_out_of_range_numbers_are_one_line(run, override, needle):
    one_error(invoke("check", run[0], "--set", override), f"--set {override}", needle)


def test_inf_in_a_toml_file_is_refused_too(run, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(run[0].read_text() + "\n[optimizer.generator]\nlr = inf\n")
    one_error(invoke("check", recipe), f"{recipe}: [optimizer.generator] lr", "finite")


def test_allow_inf_marks_an_unbounded_float():
    from typing import Annotated

    assert check_value(Annotated[float, Range(gt=0)], float("inf"))[1] == "must be a finite number, got inf"
    assert check_value(Annotated[float, Range(gt=0, allow_inf=True)], float("inf")) == (float("inf"), None)
    assert check_value(Annotated[float, Range(gt=0, allow_inf=True)], float("-inf"))[1].startswith("must be > 0")
    assert "finite" in check_value(Annotated[float, Range(allow_inf=True)], float("nan"))[1]
    assert "finite" in check_value(list[float], [1.0, float("inf")])[1]
    assert check_value(float | None, float("inf"))[1] is not None


# ----------------------------------------------------------------------------- D. image folders


def _png(path: Path):
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def test_find_images_reads_regular_files_only(tmp_path):
    _png(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    short = Path(tempfile.mkdtemp(prefix="gt"))  # AF_UNIX paths are short
    try:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(short / "sock.png"))
        assert [p.name for p in find_images(short)] == []
        server.close()
    finally:
        shutil.rmtree(short)
    assert [p.name for p in find_images(tmp_path)] == ["a.png", "link.png"]


def test_a_fifo_in_an_image_folder_does_not_hang_preview(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        _png(folder / f"img{i}.png")
    os.mkfifo(folder / "pipe.png")
    proc = run_fresh("data", "preview", "imagefolder", "--set", f"root={folder}", "--set", "image_size=16",
                     "--set", "cache=false", "--out", tmp_path / "p.png", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "the first 3 of 3 images" in proc.stdout and "pipe.png" in proc.stderr


# ----------------------------------------------------------------------------- E. messages


def test_one_line_escapes_control_characters_and_caps_length():
    assert one_line("a\x1b[31mb\nc\td\u202ee") == "a\\x1b[31mb\\nc\\td\\u202ee"
    long = one_line("x" * 50_000_000)
    assert len(long) < 600 and long.endswith("… (49999500 more characters)")
    assert one_line("caf\u00e9 ok") == "caf\u00e9 ok"


def test_errors_escape_control_characters_in_paths(tmp_path):
    name = tmp_path / "evil\x1b]0;owned\x07\nname.toml"
    line = one_error(invoke("check", name), "evil\\x1b]0;owned\\x07\\nname.toml", "not found")
    assert "\x1b" not in line and "\x07" not in line


def test_a_huge_name_gives_a_short_line():
    result = invoke("check", "n" * 50_000_000)
    line = one_error(result, "more characters)")
    assert len(line) < 700 and len(result.output) < 2000


def test_a_multi_line_message_is_printed_as_one(monkeypatch):
    from gantool import cli as cli_module

    def boom(*_args, **_kwargs):
        raise GantoolError("first\nsecond \x1b[2J")

    monkeypatch.setattr(cli_module, "_load", boom)
    one_error(invoke("check", "x.toml"), "first\\nsecond \\x1b[2J")


# ----------------------------------------------------------------------------- F. environment variables


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("Yes", True), ("on", True), (" 1 ", True),
    ("0", False), ("false", False), ("False", False), ("no", False), ("OFF", False), ("", False),
])
def test_boolean_environment_variables(monkeypatch, capsys, raw, expected):
    monkeypatch.setenv("GANTOOL_STRICT_PLUGINS", raw)
    assert env_flag("GANTOOL_STRICT_PLUGINS") is expected
    assert capsys.readouterr().err == ""


def test_an_unrecognised_boolean_warns_and_keeps_the_default(monkeypatch, capsys):
    monkeypatch.setenv("GANTOOL_STRICT_PLUGINS", "maybe")
    assert env_flag("GANTOOL_STRICT_PLUGINS") is False
    assert env_flag("GANTOOL_STRICT_PLUGINS", default=True) is True
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "GANTOOL_STRICT_PLUGINS='maybe' is not a boolean" in err[0]


def test_strict_false_does_not_make_a_broken_plugin_fatal(tmp_path, monkeypatch, capsys):
    from conftest import make_distribution

    site = tmp_path / "site"
    make_distribution(site, "gantool-broken", "0.1", {"broken_bool_plugin": "1/0\n"}, {"broken": "broken_bool_plugin"})
    monkeypatch.syspath_prepend(str(site))
    for value in ("false", "no", "off", "0"):
        monkeypatch.setenv("GANTOOL_STRICT_PLUGINS", value)
        statuses = {s.name: s.status for s in load_plugins(Registry())}
        assert statuses["gantool-broken"] == "failed"
    monkeypatch.setenv("GANTOOL_STRICT_PLUGINS", "yes")
    with pytest.raises(GantoolError, match="gantool-broken"):
        load_plugins(Registry())


def test_disabling_an_unknown_plugin_warns(monkeypatch, capsys):
    monkeypatch.setenv("GANTOOL_DISABLE_PLUGINS", "losses, no-such-plugin")
    registry = Registry()
    load_plugins(registry)
    err = [line for line in capsys.readouterr().err.splitlines() if "GANTOOL_DISABLE_PLUGINS" in line]
    assert len(err) == 1 and "names no installed plugin: no-such-plugin (" in err[0]
    assert registry.disabled == ("gantool (losses)",)


def test_a_component_of_a_disabled_plugin_says_so(run, monkeypatch):
    monkeypatch.setenv("GANTOOL_DISABLE_PLUGINS", "losses")
    monkeypatch.setattr(plugins, "_loaded", None)  # a fresh registry for this environment
    one_error(invoke("check", run[0]), "[loss] type", "no loss named 'gantool:bce'",
              "plugin gantool (losses) is disabled by GANTOOL_DISABLE_PLUGINS")
    registry = Registry()
    registry.disabled = ("gantool-extra (extra)",)
    with pytest.raises(GantoolError, match=r"no loss named 'mine'.*GANTOOL_DISABLE_PLUGINS disables gantool-extra"):
        registry.get("loss", "mine")


# ----------------------------------------------------------------------------- G. fuzzing

SCALARS = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12), st.booleans())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
RECIPE_KEYS = [("run", "seed"), ("run", "name"), ("run", "device"), ("train", "batch_size"), ("train", "epochs"),
               ("train", "max_steps"), ("train", "d_steps_per_g"), ("train", "sample_grid"), ("train", "ema_decay"),
               ("train", "amp"), ("train", "keep_best"), ("eval", "metrics"), ("eval", "n_samples"),
               ("generator", "latent_dim"), ("generator", "base_channels"), ("discriminator", "base_channels"),
               ("discriminator", "dropout"), ("discriminator", "norm"), ("optimizer", "generator", "lr"),
               ("optimizer", "discriminator", "betas"), ("loss", "type"), ("generator", "type"), ("extends",),
               ("bogus",), ("train", "bogus"), ("callbacks", "csv"), ("scheduler", "generator", "type")]


def _set(table: dict, path: tuple, value):
    for key in path[:-1]:
        table = table.setdefault(key, {}) if isinstance(table.get(key, {}), dict) else {}
    table[path[-1]] = value


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(RECIPE_KEYS), VALUES), min_size=1, max_size=3),
       splice=st.one_of(st.none(), st.tuples(st.integers(0, 400), st.text(max_size=8))))
def test_fuzz_recipes_give_exit_0_or_one_line_exit_2(run, edits, splice):
    data = tiny_recipe()
    for path, value in edits:
        _set(data, path, value)
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError):  # e.g. a NaN key or a None: not expressible in TOML
        return
    if splice is not None:
        at, extra = splice
        text = text[:at] + extra + text[at:]
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "fuzz.toml"
        recipe.write_text(text, errors="surrogateescape")
        result = invoke("check", recipe, env={limits.ENV: "200MB"})
    event(f"exit {result.exit_code}")
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        one_error(result)


META_PATHS = ["format", "step", "epoch", "batches_seen", "best", "recipe", "recipe.generator",
              "recipe.generator.type", "recipe.generator.base_channels", "recipe.generator.latent_dim",
              "recipe.dataset", "recipe.eval", "components", "components.generator",
              "components.generator.qualified_name", "components.dataset", "components.dataset.image_shape",
              "components.dataset.num_classes", "components.dataset.class_names", "optimizers",
              "optimizers.generator", "optimizers.generator.param_groups", "optimizers.generator.scalars",
              "schedulers", "history", "gantool_version"]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)


def _mutate(meta: dict, path: str, delete: bool, value):
    *parents, last = path.split(".")
    table = meta
    for key in parents:
        table = table.get(key) if isinstance(table, dict) else None
    if not isinstance(table, dict):
        return
    if delete:
        table.pop(last, None)
    else:
        table[last] = value


@FUZZ
@given(mutations=st.lists(st.tuples(st.sampled_from(META_PATHS), st.booleans(), JSON), min_size=1, max_size=3))
def test_fuzz_checkpoint_metadata_gives_exit_0_or_one_line_exit_2(stored, mutations):
    meta = copy.deepcopy(stored[1])
    for path, delete, value in mutations:
        _mutate(meta, path, delete, value)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(Path(tmp) / "fuzz.safetensors", stored[0], meta)
        result = invoke("sample", ckpt, "--n", "1", "--out", Path(tmp) / "x.png", env={limits.ENV: "200MB"})
    event(f"exit {result.exit_code}")
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        one_error(result, str(ckpt))


@FUZZ
@given(prefix=st.one_of(st.binary(max_size=8), st.integers(0, 2**64 - 1).map(lambda n: struct.pack("<Q", n))),
       body=st.binary(max_size=64))
def test_fuzz_checkpoint_bytes_give_one_line_exit_2(prefix, body):
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "fuzz.safetensors"
        ckpt.write_bytes(prefix + body)
        result = invoke("eval", ckpt)
    one_error(result, str(ckpt))


# ----------------------------------------------------------------------------- dataset sizes


@pytest.mark.parametrize("overrides, needles", [
    (["dataset.size=1000000000"], ["[dataset] size", "GiB", "over the"]),
    (["dataset.image_size=5000"], ["[dataset] image_size", "must be <= 4096"]),
    (["dataset.type=mnist5k", "dataset.image_size=4096", "dataset.channels=3"], ["[dataset] image_size", "GiB"]),
])
def test_a_dataset_that_cannot_fit_in_memory_is_refused_before_allocating(run, overrides, needles):
    recipe = run[0]
    args = ["data", "preview", recipe, "--out", recipe.parent / "preview.png"]  # the dataset alone
    for override in overrides:
        args += ["--set", override]
    one_error(invoke(*args), *needles)
