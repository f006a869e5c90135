"""Device-aware speed switches: what `auto` resolves to, and that the engine applies it."""

from __future__ import annotations

import torch

from gantool.engine import Trainer
from gantool.plan import autocast_dtype, channels_last_setting, keep_freed_memory
from gantool.plugins import get_registry
from gantool.recipe import load_recipe

CPU, MPS = torch.device("cpu"), torch.device("mps")


def test_amp_auto_is_off_on_cpu_and_mps_and_explicit_values_win():
    assert autocast_dtype("auto", CPU) is None
    assert autocast_dtype("auto", MPS) is None
    assert autocast_dtype("off", CPU) is None
    assert autocast_dtype("bf16", CPU) == torch.bfloat16
    assert autocast_dtype("fp16", CPU) == torch.float16


def test_channels_last_auto_is_on_for_cpu_off_for_mps_and_explicit_values_win():
    assert channels_last_setting("auto", CPU, "auto") is True
    assert channels_last_setting("auto", MPS, "auto") is False
    assert channels_last_setting(False, CPU, "auto") is False
    assert channels_last_setting(True, MPS, "off") is True


def _conv_weights(module):
    return [p for p in module.parameters() if p.dim() == 4 and p.shape[-1] > 1]


def test_trainer_applies_channels_last_and_trains_the_same_model(tiny_recipe, tmp_path):
    keep_freed_memory()  # a no-op off glibc; must never raise
    default = Trainer(load_recipe(tiny_recipe), get_registry(), tmp_path / "a")
    off = Trainer(load_recipe(tiny_recipe, ["train.channels_last=false"]), get_registry(), tmp_path / "b")
    assert default.plan.channels_last and not off.plan.channels_last
    weights = _conv_weights(default.generator) + _conv_weights(default.discriminator)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in _conv_weights(off.generator))
    # Same initial weights; after a step the layouts agree to float rounding.
    for a, b in zip(default.generator.parameters(), off.generator.parameters()):
        assert torch.equal(a, b)
    batches_a, batches_b = default.plan.data.iterate(0), off.plan.data.iterate(0)
    stats_a, stats_b = default.update(batches_a, 0, 0), off.update(batches_b, 0, 0)
    torch.testing.assert_close(stats_a, stats_b, rtol=1e-4, atol=1e-5)
    for a, b in zip(default.generator.parameters(), off.generator.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
