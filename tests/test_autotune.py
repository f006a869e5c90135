"""amp / channels_last "auto": the candidates, the cache, the choice, the CPU rule and resume."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_RECIPE

from gantool import autotune, graphs
from gantool.autotune import Speed
from gantool.checkpoint import read_metadata, validate_metadata
from gantool.engine import Trainer
from gantool.errors import GantoolError
from gantool.plan import make_plan
from gantool.plugins import get_registry
from gantool.recipe import load_recipe
from gantool.update import GANUpdate

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
BF16_NHWC, BF16_NCHW, OFF_NHWC, OFF_NCHW = Speed("bf16", True), Speed("bf16", False), Speed("off", True), Speed("off", False)


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    """One plan for the tests that only read it (building one takes a few seconds)."""
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return make_plan(load_recipe(path, ["train.amp=auto"]), get_registry())


@pytest.fixture
def fake_steps(monkeypatch):
    """Candidates whose steps cost nothing (the clock is injected): the labels of those built."""
    built = []

    def trial(plan, registry, speed):
        built.append(speed.label)
        return lambda batches, step, batch: {}

    monkeypatch.setattr(autotune, "_trial_update", trial)
    return built


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "autotune"


def plan_of(recipe, *overrides):
    """The plan of ``recipe`` with ``amp = "auto"`` (the tests' recipe pins it off) and ``overrides``."""
    return make_plan(load_recipe(recipe, ["train.amp=auto", *overrides]), get_registry())


def ticks(*elapsed):
    """A clock for ``measure``: it is read before and after each candidate's timed steps."""
    readings = iter([t for e in elapsed for t in (100.0, 100.0 + e)])
    return lambda: next(readings)


# ----------------------------------------------------------------------------- candidates


def test_candidates_vary_only_the_auto_dimensions_with_the_rules_guess_first():
    assert autotune.candidates("auto", "auto", bf16=True) == [BF16_NHWC, BF16_NCHW, OFF_NHWC, OFF_NCHW]
    assert autotune.candidates("auto", "auto", bf16=False) == [Speed("fp16", True), Speed("fp16", False),
                                                               OFF_NHWC, OFF_NCHW]
    assert autotune.candidates("off", "auto", bf16=True) == [OFF_NHWC, OFF_NCHW]
    assert autotune.candidates("auto", False, bf16=True) == [BF16_NCHW, OFF_NCHW]
    assert autotune.candidates("fp16", True, bf16=True) == [Speed("fp16", True)]


# ----------------------------------------------------------------------------- the rule (CPU, MPS)


@pytest.mark.parametrize("kind", ["AVX512", "AVX2", "DEFAULT", "SVE256", "VSX"])
def test_cpu_rule_is_fp32_and_nhwc_for_every_cpu_kind(kind, monkeypatch):
    monkeypatch.setattr(autotune, "cpu_kind", lambda: kind)
    assert autotune.rule(CPU) == OFF_NHWC
    assert autotune.rule(CPU, "bf16") == BF16_NHWC  # an explicit amp is kept
    nhwc, evidence = autotune.CPU_LAYOUT.get(kind, autotune.UNMEASURED_CPU)
    assert nhwc and evidence.startswith("measured" if kind in ("AVX512", "AVX2") else "not measured")


def test_mps_rule_is_fp32_nchw():
    assert autotune.rule(MPS) == OFF_NCHW


def test_resolve_on_a_cpu_without_bf16_keeps_make_plans_rule_without_measuring(tiny_plan, monkeypatch, capsys):
    monkeypatch.setattr(autotune, "cpu_bf16", lambda: False)
    monkeypatch.setattr(autotune, "tune", lambda *a, **k: pytest.fail("this CPU is not measured"))
    assert (tiny_plan.amp_dtype, tiny_plan.channels_last) == (None, True)
    assert autotune.resolve(tiny_plan, get_registry()) == OFF_NHWC
    assert capsys.readouterr().err == ""


def test_resolve_on_a_cpu_with_bf16_measures_when_amp_is_auto(tiny_recipe, monkeypatch):
    monkeypatch.setattr(autotune, "cpu_bf16", lambda: True)
    tuned = []
    monkeypatch.setattr(autotune, "tune", lambda plan, registry: tuned.append(plan.recipe.train) or BF16_NHWC)
    assert autotune.resolve(plan_of(tiny_recipe), get_registry()) == BF16_NHWC
    assert autotune.resolve(plan_of(tiny_recipe, "train.channels_last=false"), get_registry()) == BF16_NHWC
    assert len(tuned) == 2
    # An explicit amp leaves nothing worth measuring on a CPU: the layout is the rule's.
    assert autotune.resolve(plan_of(tiny_recipe, "train.amp=off"), get_registry()) == OFF_NHWC
    assert len(tuned) == 2


@pytest.mark.parametrize("device, amp, channels_last, bf16, measured", [
    (CUDA, "auto", "auto", False, True), (CUDA, "off", "auto", False, True), (CUDA, "auto", True, False, True),
    (CUDA, "off", False, True, False),
    (CPU, "auto", "auto", True, True), (CPU, "auto", False, True, True), (CPU, "off", "auto", True, False),
    (CPU, "auto", "auto", False, False), (MPS, "auto", "auto", True, False),
])
def test_what_is_measured_where(device, amp, channels_last, bf16, measured, monkeypatch):
    monkeypatch.setattr(autotune, "cpu_bf16", lambda: bf16)
    assert autotune.measures(device, amp, channels_last) is measured


def test_an_onednn_isa_cap_below_bf16_turns_cpu_bf16_off():
    """The AVX2 emulation on an AVX-512 machine (docs/performance.md) must not measure an emulated bf16."""
    code = "from gantool import autotune; print(autotune.cpu_bf16())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_cpus_identity_keys_its_threads_and_isa_cap(monkeypatch):
    monkeypatch.setattr(autotune, "cpu_bf16", lambda: True)
    monkeypatch.setattr(autotune, "cpu_kind", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    name, plain = autotune.device_identity(CPU)
    assert name == "CPU AVX512 with bf16" and f"{torch.get_num_threads()} threads" in plain
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert autotune.device_identity(CPU)[1] != plain


def test_a_cpu_times_fewer_steps_than_a_gpu(tiny_plan, cache, fake_steps, monkeypatch):
    counted = []
    monkeypatch.setattr(autotune, "_time_steps", lambda update, real, d_steps, clock, warmup, steps:
                        counted.append((warmup, steps)) or 0.01)
    autotune.tune(tiny_plan, get_registry())
    assert set(counted) == {(autotune.CPU_WARMUP, autotune.CPU_STEPS)}


# ----------------------------------------------------------------------------- the cache


def test_cache_key_changes_with_batch_size_device_and_component_params(tiny_recipe):
    options = autotune.candidates("auto", "auto", bf16=True)
    base = autotune.cache_key(plan_of(tiny_recipe), options, "NVIDIA H200", "9.0")
    assert base["batch"] == 64 and base["image_shape"] == [1, 16, 16] and base["generator"]["base_channels"] == 8
    assert base == autotune.cache_key(plan_of(tiny_recipe), options, "NVIDIA H200", "9.0")
    others = [autotune.cache_key(plan_of(tiny_recipe, "train.batch_size=32"), options, "NVIDIA H200", "9.0"),
              autotune.cache_key(plan_of(tiny_recipe), options, "NVIDIA A100-SXM4-80GB", "8.0"),
              autotune.cache_key(plan_of(tiny_recipe, "generator.base_channels=16"), options, "NVIDIA H200", "9.0"),
              autotune.cache_key(plan_of(tiny_recipe), options[:2], "NVIDIA H200", "9.0")]
    paths = {autotune.cache_path(k) for k in [base, *others]}
    assert all(k != base for k in others) and len(paths) == 5


def test_cache_round_trip_and_atomic_write(cache):
    key = {"device": "NVIDIA H200", "batch": 64}
    times = {BF16_NHWC: 0.0094, OFF_NCHW: 0.0081, OFF_NHWC: None}
    path = autotune.cache_path(key)
    assert autotune.read_cache(path, key) is None  # nothing yet
    assert autotune.write_cache(path, key, OFF_NCHW, times) == f"cached in {path}"
    assert autotune.read_cache(path, key) == (OFF_NCHW, times)
    assert autotune.read_cache(path, {**key, "batch": 256}) is None  # a file holding another key is not used
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp file left behind


def test_a_failed_cache_write_keeps_the_old_file_and_leaves_no_temp_file(cache, monkeypatch):
    key = {"batch": 64}
    path = autotune.cache_path(key)
    autotune.write_cache(path, key, OFF_NCHW, {OFF_NCHW: 0.008})

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    note = autotune.write_cache(path, key, BF16_NHWC, {BF16_NHWC: 0.001})
    assert note.startswith("not cached: No space left on device")
    assert autotune.read_cache(path, key) == (OFF_NCHW, {OFF_NCHW: 0.008})
    assert [p.name for p in cache.iterdir()] == [path.name]


@pytest.mark.parametrize("content", [
    b"", b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
    json.dumps({"key": {"batch": 64}, "choice": {"amp": "fp8", "channels_last": True}, "times": []}).encode(),
    json.dumps({"key": {"batch": 64}, "choice": {"amp": "off", "channels_last": 1}, "times": []}).encode(),
    json.dumps({"key": {"batch": 64}, "choice": {"amp": "off", "channels_last": True}, "times": [[1, 2]]}).encode(),
    json.dumps({"key": {"batch": 64}, "choice": {"amp": "off", "channels_last": True}, "times": [],
                "padding": "x" * autotune.MAX_CACHE_BYTES}).encode(),
])
def test_a_corrupt_or_oversized_cache_file_is_ignored(cache, content):
    key = {"batch": 64}
    path = autotune.cache_path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert autotune.read_cache(path, key) is None


def test_a_cache_path_that_is_a_folder_or_fifo_is_ignored(cache):
    cache.mkdir(parents=True)
    (cache / "folder.json").mkdir()
    assert autotune.read_cache(cache / "folder.json", {}) is None
    if hasattr(os, "mkfifo"):
        os.mkfifo(cache / "fifo.json")
        assert autotune.read_cache(cache / "fifo.json", {}) is None  # returns at once, does not block


def test_cache_folder_follows_gantool_cache_dir_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("GANTOOL_CACHE_DIR", str(tmp_path / "g"))
    assert autotune.cache_dir() == tmp_path / "g" / "autotune"
    monkeypatch.delenv("GANTOOL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert autotune.cache_dir() == tmp_path / "x" / "gantool" / "autotune"


# ----------------------------------------------------------------------------- measuring and choosing


def test_tune_picks_the_fastest_logs_it_caches_it_and_reuses_it(tiny_plan, cache, fake_steps, capsys):
    plan = tiny_plan
    # Candidates run in order bf16/NHWC, bf16/NCHW, off/NHWC, off/NCHW: the third is fastest.
    speed = autotune.tune(plan, get_registry(), clock=ticks(0.0094, 0.0120, 0.0081, 0.0090), warmup=1, steps=1)
    assert speed == OFF_NHWC and fake_steps == ["bf16/NHWC", "bf16/NCHW", "off/NHWC", "off/NCHW"]
    path = next(cache.iterdir())
    line = capsys.readouterr().err.strip()
    kind = autotune.device_identity(CPU)[0].removeprefix("CPU ")
    assert line == (f"auto settings for CPU {kind}, batch 64: amp off, channels_last on (measured per step: "
                    f"bf16/NHWC 9.4 ms, bf16/NCHW 12.0 ms, off/NHWC 8.1 ms, off/NCHW 9.0 ms; cached in {path})")
    # The second run of the same model and batch reads the cache: nothing is measured.
    again = autotune.tune(plan, get_registry(), clock=lambda: pytest.fail("measured again"))
    assert again == OFF_NHWC and len(fake_steps) == 4
    assert capsys.readouterr().err.strip() == (f"auto settings for CPU {kind}, batch 64: amp off, channels_last on "
                                               f"(cached in {path}; measured per step: bf16/NHWC 9.4 ms, "
                                               "bf16/NCHW 12.0 ms, off/NHWC 8.1 ms, off/NCHW 9.0 ms)")


def test_ties_go_to_the_rules_guess_and_explicit_values_are_not_varied(tiny_recipe, cache, fake_steps, capsys):
    plan = plan_of(tiny_recipe, "train.amp=off")
    assert autotune.tune(plan, get_registry(), clock=ticks(0.01, 0.01), warmup=1, steps=1) == OFF_NHWC
    assert "measured per step: off/NHWC 10.0 ms, off/NCHW 10.0 ms;" in capsys.readouterr().err


def test_a_candidate_out_of_memory_is_skipped(tiny_plan, cache, monkeypatch, capsys):
    def trial(plan, registry, speed):
        if speed.amp == "bf16":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return lambda batches, step, batch: {}

    monkeypatch.setattr(autotune, "_trial_update", trial)
    assert autotune.tune(tiny_plan, get_registry(), clock=ticks(0.02, 0.01), warmup=1, steps=1) == OFF_NCHW
    assert "bf16/NHWC out of memory, bf16/NCHW out of memory, off/NHWC 20.0 ms, off/NCHW 10.0 ms" in (
        capsys.readouterr().err)


def _snapshot(plan, update):
    return ({k: v.clone() for net in (plan.generator, plan.discriminator) for k, v in net.state_dict().items()},
            [{k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
             for opt in plan.optimizers.values() for state in opt.state.values()],
            torch.get_rng_state(), update.noise.get_state())


def test_measuring_leaves_weights_optimizer_state_and_rng_untouched(tiny_recipe):
    """The real measuring code on CPU: afterwards the run trains exactly as if it had not run."""
    measured, control = plan_of(tiny_recipe, "train.ema_decay=0.9"), plan_of(tiny_recipe, "train.ema_decay=0.9")
    updates = [GANUpdate(measured), GANUpdate(control)]
    streams = [measured.data.iterate(0), control.data.iterate(0)]
    for update, stream in zip(updates, streams):  # a step first, so the optimizers have state
        update(stream, 0, 0)
    before = _snapshot(measured, updates[0])
    options = [BF16_NHWC, OFF_NCHW]  # both dimensions change (bf16 is slow on a CPU without it: two suffice)
    times = autotune.measure(measured, get_registry(), options, clock=time.perf_counter, warmup=1, steps=1)
    assert list(times) == options and all(t > 0 for t in times.values())
    after = _snapshot(measured, updates[0])
    for a, b in zip(before[0].values(), after[0].values()):
        assert torch.equal(a, b)
    assert len(before[1]) == len(after[1]) == sum(len(list(n.parameters())) for n in (measured.generator,
                                                                                       measured.discriminator))
    for state_a, state_b in zip(before[1], after[1]):
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(before[2], after[2]) and torch.equal(before[3], after[3])
    assert measured.channels_last and measured.amp_dtype is None  # the plan's settings are not changed
    # The next steps are bit-identical to those of a run that never measured.
    stats = [update(stream, 1, 1) for update, stream in zip(updates, streams)]
    assert all(torch.equal(stats[0][k], stats[1][k]) for k in stats[0])
    for a, b in zip(measured.generator.parameters(), control.generator.parameters()):
        assert torch.equal(a, b)


def test_measuring_frees_its_trials_before_the_run_starts(tiny_recipe):
    """A trial's update and its graph refer to each other, so only the cycle collector frees
    their copies of the networks and optimizers (and, on a GPU, the graph's memory)."""
    plan = plan_of(tiny_recipe)
    gc.collect()
    gc.disable()  # no automatic collection: only what measure frees itself is gone
    try:
        before = {id(o) for o in gc.get_objects() if type(o) is GANUpdate}
        with graphs.replay_on_any_device():
            autotune.measure(plan, get_registry(), [OFF_NCHW], clock=time.perf_counter, warmup=1, steps=1)
        left = [o for o in gc.get_objects() if type(o) is GANUpdate and id(o) not in before]
    finally:
        gc.enable()
    assert left == []


# ----------------------------------------------------------------------------- resume, apply, the checkpoint


def fake_cuda_plan(amp="auto", channels_last="auto"):
    train = SimpleNamespace(amp=amp, channels_last=channels_last)
    return SimpleNamespace(recipe=SimpleNamespace(train=train), device=CUDA, amp_dtype=torch.bfloat16,
                           channels_last=True, data=SimpleNamespace(local_batch=64))


def test_resume_on_cuda_reuses_the_stored_choice_instead_of_measuring(monkeypatch, capsys):
    monkeypatch.setattr(autotune, "tune", lambda *a, **k: pytest.fail("a resumed run is not measured"))
    monkeypatch.setattr(autotune, "device_identity", lambda device: ("NVIDIA H200", "9.0"))
    stored = {"amp": "off", "channels_last": False, "device": "cuda"}
    assert autotune.resolve(fake_cuda_plan(), None, resuming=True, stored=stored) == OFF_NCHW
    assert capsys.readouterr().err.strip() == ("auto settings for NVIDIA H200, batch 64: amp off, channels_last off "
                                               "(kept from the checkpoint)")
    # An explicit recipe value wins over the stored one.
    assert autotune.resolve(fake_cuda_plan(channels_last=True), None, resuming=True, stored=stored) == Speed("off", True)
    # A checkpoint from before measuring: the rule it was trained with (make_plan's values).
    assert autotune.resolve(fake_cuda_plan(), None, resuming=True, stored=None) == BF16_NHWC
    assert "predates measured settings" in capsys.readouterr().err


@pytest.mark.parametrize("has_bf16", [True, False])
def test_resume_on_a_cpu_keeps_a_measured_bf16_only_where_the_cpu_has_it(tiny_plan, has_bf16, monkeypatch, capsys):
    monkeypatch.setattr(autotune, "cpu_bf16", lambda: has_bf16)
    monkeypatch.setattr(autotune, "tune", lambda *a, **k: pytest.fail("a resumed run is not measured"))
    stored = {"amp": "bf16", "channels_last": False, "device": "cpu"}
    speed = autotune.resolve(tiny_plan, None, resuming=True, stored=stored)
    err = capsys.readouterr().err
    if has_bf16:
        assert speed == BF16_NCHW and err.endswith("(kept from the checkpoint)\n")
    else:  # emulated bf16 is ~28x slower: fp32, and the stored layout
        assert speed == OFF_NCHW and "not the checkpoint's bf16: this CPU has no bf16 instructions" in err


def test_resume_on_another_device_type_chooses_again(monkeypatch):
    monkeypatch.setattr(autotune, "tune", lambda plan, registry: OFF_NCHW)
    stored = {"amp": "bf16", "channels_last": True, "device": "cpu"}
    assert autotune.resolve(fake_cuda_plan(), None, resuming=True, stored=stored) == OFF_NCHW


def test_under_torchrun_rank_0_measures_eagerly_and_every_rank_takes_its_choice(tiny_plan, monkeypatch):
    import dataclasses

    from gantool import distributed

    tuned = []
    monkeypatch.setattr(autotune, "tune", lambda plan, registry: tuned.append(plan) or OFF_NCHW)
    sent = []
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, ctx: sent.append(obj) or OFF_NCHW)
    plan = dataclasses.replace(tiny_plan, device=CUDA)  # resolve only looks at the device's type here
    assert autotune.resolve(plan, None, rank=0, world_size=2) == OFF_NCHW
    assert sent == [OFF_NCHW] and tuned[0].recipe.train.cuda_graphs is False  # graphs are off under DDP
    assert tiny_plan.recipe.train.cuda_graphs == "auto"  # the run's recipe is not changed
    assert autotune.resolve(plan, None, rank=1, world_size=2) == OFF_NCHW
    assert sent[1] is None and len(tuned) == 1  # rank 1 only receives


def test_the_trainer_stores_the_settings_and_a_resumed_auto_run_keeps_them(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    first = Trainer(load_recipe(tiny_recipe, ["train.channels_last=false", "train.max_steps=2"]), get_registry(), out)
    first.fit()
    meta = read_metadata(out / "checkpoints" / "last.safetensors", require_run=True)
    assert meta["speed"] == {"amp": "off", "channels_last": False, "device": "cpu"}
    # Resumed with channels_last = "auto" (the rule would say NHWC): the stored NCHW is kept.
    resumed = Trainer(load_recipe(tiny_recipe, ["train.max_steps=4"]), get_registry(), out, resume=True)
    assert resumed.plan.channels_last is False and resumed.speed["channels_last"] is False
    conv = [p for p in resumed.generator.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    # A fresh run of the same recipe follows the rule.
    assert Trainer(load_recipe(tiny_recipe), get_registry(), tmp_path / "fresh").plan.channels_last is True


@pytest.mark.skipif(not autotune.cpu_bf16(), reason="needs a CPU with bf16 instructions (AVX512-BF16 or AMX)")
def test_a_cpu_with_bf16_measures_caches_and_a_resumed_run_keeps_the_choice(tiny_recipe, tmp_path, cache, capsys):
    """The real measurement, on a CPU where bf16 and fp32 are both worth timing."""
    recipe = load_recipe(tiny_recipe, ["train.amp=auto", "train.max_steps=2"])
    trainer = Trainer(recipe, get_registry(), tmp_path / "run")
    err = capsys.readouterr().err
    assert " with bf16, batch 64: " in err and "measured per step: bf16/NHWC " in err and " off/NCHW " in err, err
    speed = Speed(trainer.speed["amp"], trainer.speed["channels_last"])
    assert (trainer.plan.amp_dtype, trainer.plan.channels_last) == (speed.dtype, speed.channels_last)
    trainer.fit()
    Trainer(recipe, get_registry(), tmp_path / "again")
    assert "(cached in " in capsys.readouterr().err
    longer = load_recipe(tiny_recipe, ["train.amp=auto", "train.max_steps=4"])
    resumed = Trainer(longer, get_registry(), tmp_path / "run", resume=True)
    assert "(kept from the checkpoint)" in capsys.readouterr().err and resumed.speed == trainer.speed


def test_apply_converts_the_networks_in_place(tiny_recipe):
    plan = plan_of(tiny_recipe)
    params = list(plan.generator.parameters())
    autotune.apply(plan, OFF_NCHW)
    assert plan.channels_last is False and plan.amp_dtype is None
    assert all(a is b for a, b in zip(params, plan.generator.parameters()))  # the optimizers' parameters
    assert all(p.is_contiguous() for p in params)
    autotune.apply(plan, BF16_NHWC)
    assert plan.amp_dtype == torch.bfloat16
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in params if p.dim() == 4)


@pytest.mark.parametrize("speed, problem", [
    ({"amp": "fp8", "channels_last": True, "device": "cuda"}, "speed.amp"),
    ({"amp": "off", "channels_last": "yes", "device": "cuda"}, "speed.channels_last"),
    ({"amp": "off", "channels_last": True}, "speed.device: missing"),
    ([], "speed: expected an object"),
])
def test_checkpoint_metadata_checks_the_speed_record(speed, problem):
    with pytest.raises(GantoolError, match=re.escape(problem)):
        validate_metadata({"speed": speed}, "x.safetensors", require_run=False)


def test_log_line():
    assert autotune.describe("NVIDIA H200", 64, OFF_NCHW, "cached in /c/x.json") == (
        "auto settings for NVIDIA H200, batch 64: amp off, channels_last off (cached in /c/x.json)")


# ----------------------------------------------------------------------------- on a GPU


@pytest.mark.cuda
def test_cuda_run_measures_once_caches_and_applies_the_choice(cuda_recipe, tmp_path, cache, capsys):
    recipe = load_recipe(cuda_recipe, ["train.max_steps=2"])
    trainer = Trainer(recipe, get_registry(), tmp_path / "run")
    err = capsys.readouterr().err
    name = torch.cuda.get_device_name(trainer.device)
    assert f"auto settings for {name}, batch 64:" in err and "measured per step:" in err, err
    assert len(list(cache.iterdir())) == 1
    fast = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    speed = Speed(trainer.speed["amp"], trainer.speed["channels_last"])
    assert speed in autotune.candidates("auto", "auto", bf16=fast == "bf16")
    assert trainer.plan.amp_dtype == speed.dtype and trainer.plan.channels_last == speed.channels_last
    convs = [p for p in trainer.generator.parameters() if p.dim() == 4 and min(p.shape[1:]) > 1]  # layout shows
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) == speed.channels_last for p in convs)
    trainer.fit()
    # The same model and batch again: read from the cache, not measured.
    Trainer(recipe, get_registry(), tmp_path / "again")
    assert "(cached in " in capsys.readouterr().err
