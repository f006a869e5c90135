"""`gantool export`: ONNX and TorchScript generators that match the checkpoint's, at any batch size.

Two tiny runs (unconditional with EMA, conditional) are trained once per module; commands go
through click's CliRunner in-process, so the real `gantool` group's error lines and exit codes
are what is checked.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_RECIPE, invoke_cli as gantool, train_run as train
from gantool_plugins.dcgan.models import DCGANGenerator
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gantool import export
from gantool.errors import RunFailed
from gantool.plugins import get_registry, load_plugins
from gantool.registry import Registry
from gantool.sampling import generator_from_checkpoint

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An unconditional 2-step run with an EMA generator."""
    root = tmp_path_factory.mktemp("export")
    (root / "tiny.toml").write_text(TINY_RECIPE)
    return train(root / "tiny.toml", root / "run", "train.max_steps=2", "train.ema_decay=0.9")


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_conditional")
    return train(ROOT / "recipes" / "cdcgan_mnist5k.toml", root / "run", "run.device=cpu", "train.max_steps=2",
                 "train.batch_size=32", "dataset.limit=320", "dataset.image_size=16", "generator.latent_dim=16",
                 "generator.base_channels=8", "discriminator.base_channels=8", "eval.metrics=[]")


def latents(n, dim=16, seed=5):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_onnx_export_runs_at_any_batch_size_like_the_checkpoint(run):
    result = gantool("export", run)
    out = run / "export" / "generator.onnx"
    assert f"wrote {out} and {out}.json" in result.output and "onnxruntime at batch sizes 1, 8" in result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["generator.onnx", "generator.onnx.json"]  # no temp files

    G, meta = generator_from_checkpoint(run / "checkpoints" / "last.safetensors", get_registry())  # EMA weights
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z"] and isinstance(session.get_inputs()[0].shape[0], str)
    for n in (3, 11):  # neither the exported nor the checked batch sizes
        z = latents(n)
        images = session.run(None, {"z": z.numpy()})[0]
        with torch.no_grad():
            expected = G(z).numpy()
        assert images.shape == (n, 1, 16, 16)
        np.testing.assert_allclose(images, expected, atol=1e-4, rtol=0)

    info = json.loads((run / "export" / "generator.onnx.json").read_text())
    assert info["format"] == "onnx" and info["file"] == "generator.onnx" and info["opset"] >= 17
    assert info["latent_shape"] == [16] and info["image_shape"] == [1, 16, 16] and info["value_range"] == [-1, 1]
    z = {"name": "z", "shape": ["batch", 16], "dtype": "float32", "distribution": "standard normal"}
    assert info["inputs"] == [z]
    assert info["outputs"] == [{"name": "images", "shape": ["batch", 1, 16, 16], "dtype": "float32"}]
    assert info["conditional"] is False and "num_classes" not in info
    assert info["source"]["step"] == meta["step"] == 2 and info["source"]["weights"] == "ema_generator"
    assert info["source"]["generator"] == "gantool:dcgan" and info["gantool_version"] == meta["gantool_version"]
    assert 0 <= info["check"]["max_abs_diff"] <= info["check"]["tolerance"] == 1e-4
    assert info["check"]["batch_sizes"] == [1, 8]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_of_the_raw_generator(run, tmp_path):
    out = tmp_path / "deploy" / "g.pt"
    result = gantool("export", run, "--format", "torchscript", "--no-ema", "--out", out)
    assert "torch.jit.load at batch sizes 1, 8" in result.output
    G, _ = generator_from_checkpoint(run / "checkpoints" / "last.safetensors", get_registry(), ema=False)
    ema, _ = generator_from_checkpoint(run / "checkpoints" / "last.safetensors", get_registry(), ema=True)
    model = torch.jit.load(str(out))
    z = latents(5)
    with torch.no_grad():
        images, expected, smoothed = model(z), G(z), ema(z)
    torch.testing.assert_close(images, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(images, smoothed)  # --no-ema really exported the other weights
    info = json.loads((tmp_path / "deploy" / "g.pt.json").read_text())
    assert info["format"] == "torchscript" and info["source"]["weights"] == "generator"
    result = gantool("export", run, "--format", "torchscript", "--out", tmp_path / "deploy", code=2)
    folder = out.parent
    wanted = f"error: --out {folder}: is a folder; pass a file name, e.g. {folder / 'generator.pt'}"
    assert result.output.strip() == wanted


def test_conditional_export_takes_labels(conditional_run):
    gantool("export", conditional_run)
    out = conditional_run / "export" / "generator.onnx"
    info = json.loads(out.with_name("generator.onnx.json").read_text())
    assert info["conditional"] is True and info["num_classes"] == 10
    assert info["class_names"] == [str(i) for i in range(10)]
    assert [i["name"] for i in info["inputs"]] == ["z", "labels"]
    assert info["inputs"][1] == {"name": "labels", "shape": ["batch"], "dtype": "int64", "range": [0, 9]}

    G, _ = generator_from_checkpoint(conditional_run / "checkpoints" / "last.safetensors", get_registry())
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    z = latents(4)
    for digit in (3, 7):
        labels = torch.full((4,), digit)
        images = session.run(None, {"z": z.numpy(), "labels": labels.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(images, G(z, labels).numpy(), atol=1e-4, rtol=0)
    three = session.run(None, {"z": z.numpy(), "labels": np.full(4, 3, dtype=np.int64)})[0]
    assert not np.allclose(three, images)  # the labels reach the exported graph


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name, params, num_classes", [
    ("dcgan_dense", {}, 0),
    ("upsample_conv", {"upsample_mode": "bilinear", "padding_mode": "reflect"}, 4),  # conditional batch norm
    ("upsample_conv", {}, 0),  # nearest: resize + conv run as one transposed convolution
])
def test_builtin_generators_export_with_a_dynamic_batch(tmp_path, fmt, name, params, num_classes):
    G = get_registry().build("generator", name, {"latent_dim": 8, "base_channels": 4, **params},
                             image_shape=(3, 16, 16), num_classes=num_classes).eval()
    dest = tmp_path / f"g{export.FORMATS[fmt]}"
    export.write_model(G, export.example_inputs(G, export.EXAMPLE_BATCH, num_classes), fmt, dest, name)
    assert export.check_parity(G, dest, fmt, num_classes, name) <= export.TOLERANCE


class FixedBatchGenerator(DCGANGenerator):
    """Turns the batch size into a Python int: right in PyTorch, but the trace bakes the example's in."""

    def forward(self, z, labels=None):
        return self.net(z.reshape(int(z.shape[0]), self.latent_dim, 1, 1))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_fixed_batch_size_fails_the_check(tmp_path, fmt):
    """Both exporters accept this generator and bake in batch size 2; running it at 1 and 8 finds out."""
    G = FixedBatchGenerator(image_shape=(1, 16, 16), latent_dim=8, base_channels=4).eval()
    dest = tmp_path / f"fixed{export.FORMATS[fmt]}"
    export.write_model(G, export.example_inputs(G, export.EXAMPLE_BATCH, 0), fmt, dest, "fixed")
    with pytest.raises(RunFailed, match=rf"^fixed: the exported {fmt} model fails at batch size 1 .*nothing written$"):
        export.check_parity(G, dest, fmt, 0, "fixed")


def test_missing_export_extra_is_one_line(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    result = gantool("export", run, "--out", run / "never.onnx", code=2)
    assert result.output.strip() == ("error: gantool export --format onnx needs onnx, onnxruntime and onnxscript "
                                     "(onnxruntime is not installed); pip install 'gantool[export]'")
    assert not (run / "never.onnx").exists()
    gantool("export", run, "--format", "torchscript", "--out", run / "ok.pt")  # TorchScript needs no extra


def test_parity_failure_exits_1_and_keeps_the_previous_export(run, tmp_path, monkeypatch):
    out = tmp_path / "g.pt"
    gantool("export", run, "--format", "torchscript", "--out", out)
    before = out.read_bytes(), (tmp_path / "g.pt.json").read_text()
    real = export.load_exported

    def slightly_off(*args):  # an exporter whose file computes something a little different
        model = real(*args)
        return lambda *inputs: model(*inputs) + 0.01

    monkeypatch.setattr(export, "load_exported", slightly_off)
    result = gantool("export", run, "--format", "torchscript", "--no-ema", "--out", out, code=1)
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("error: generator 'gantool:dcgan'") and "differs from PyTorch by up to 0.01 " in line
    assert line.endswith("at batch sizes 1 and 8 (tolerance 0.0001); nothing written")
    assert (out.read_bytes(), (tmp_path / "g.pt.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pt", "g.pt.json"]


class BranchyGenerator(DCGANGenerator):
    """A third-party generator with a Python branch on a tensor value: torch.export cannot follow it."""

    def forward(self, z, labels=None):
        images = super().forward(z, labels)
        if images.mean() > 2:
            images = -images
        return images


@pytest.mark.skipif(not export.DYNAMO_ONNX, reason="torch < 2.7 traces through the branch (export.py)")
@pytest.mark.skipif("2.8" <= torch.__version__ < "2.9",
                    reason="torch 2.8's ONNX exporter falls back to draft export, which records the branch taken")
def test_unexportable_third_party_generator_names_the_component(run, tmp_path, monkeypatch):
    registry = Registry()
    load_plugins(registry)
    registry.add("generator", "branchy", BranchyGenerator, plugin="acme", version="1.0")
    path = tmp_path / "branchy.safetensors"
    source = run / "checkpoints" / "last.safetensors"
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    meta = json.loads(metadata["gantool"])
    meta["recipe"]["generator"]["type"] = "acme:branchy"
    meta["components"]["generator"].update(type="branchy", qualified_name="acme:branchy", plugin="acme", version="1.0")
    save_file(load_file(source), path, {**metadata, "gantool": json.dumps(meta)})

    monkeypatch.setattr("gantool.cli._registry", lambda: registry)
    result = gantool("export", path, code=1)
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("error: generator 'acme:branchy' (plugin acme 1.0) cannot be exported to onnx:")
    assert "if images.mean() > 2:" in line and "try --format torchscript" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["branchy.safetensors"]
