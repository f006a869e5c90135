"""Whole-step CUDA graphs: when a run is captured, and that a captured step trains what an eager one does.

A CPU has no CUDA graphs, so most tests swap in ``graphs.ReplayedClosure``: the same
warm-up, capture, input buffers and replays, with "replay" calling the captured step
again. A bug in the plumbing (a replay that keeps the first batch, statistics that the
next replay overwrites, a step number read at the wrong time) changes the weights, and
the comparison with an eager run of the same recipe fails. The CUDA tests at the end run
real graphs and skip without a GPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file

from gantool import graphs
from gantool.checkpoint import restore_optimizer, save_checkpoint
from gantool.engine import Trainer
from gantool.plugins import get_registry
from gantool.recipe import load_recipe


def _trainer(recipe, out, *overrides, resume=False) -> Trainer:
    return Trainer(load_recipe(recipe, list(overrides)), get_registry(), out, resume=resume)


@pytest.fixture
def replayed():
    """Capture on the CPU: every run in the test takes the graph path with ReplayedClosure."""
    with graphs.replay_on_any_device():
        yield


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / "last.safetensors")


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not k.startswith("rng.") and not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# ----------------------------------------------------------------------------- when a run is captured


@pytest.mark.parametrize("overrides, reason", [
    (["train.amp=fp16"], "fp16's GradScaler"),
    (["scheduler.generator.type=cosine"], "[scheduler.generator] sets the learning rate"),
    (["optimizer.discriminator.type=sgd"], "[optimizer.discriminator] SGD has no capturable mode"),
    (["loss.type=hinge", "loss.r1_gamma=1.0", "loss.r1_every=4"], "[loss] gantool:hinge declares capturable = False"),
    (["train.compile=reduce-overhead"], "captures its own CUDA graphs"),
])
def test_blockers_name_what_keeps_the_step_eager(tiny_recipe, tmp_path, overrides, reason):
    plan = _trainer(tiny_recipe, tmp_path / "run", "train.cuda_graphs=false", *overrides).plan
    found = graphs.blockers(plan)
    assert len(found) == 1 and reason in found[0], found


def test_a_plain_recipe_has_no_blockers_but_several_processes_do(tiny_recipe, tmp_path):
    plan = _trainer(tiny_recipe, tmp_path / "run", "train.ema_decay=0.9", "loss.r1_gamma=1.0").plan
    assert graphs.blockers(plan) == []
    assert "DDP" in graphs.blockers(plan, world_size=2)[0]


def test_on_cpu_auto_stays_eager_silently_and_true_says_why_in_one_line(tiny_recipe, tmp_path, capsys):
    auto = _trainer(tiny_recipe, tmp_path / "a")
    assert auto.update.graph is None and capsys.readouterr().err == ""
    forced = _trainer(tiny_recipe, tmp_path / "b", "train.cuda_graphs=true")
    err = capsys.readouterr().err.strip().splitlines()
    assert forced.update.graph is None
    assert err == ["warning: [train] cuda_graphs: training eagerly: [train] cuda_graphs = true needs a CUDA device, "
                   "and this run is on cpu"]


def test_a_lazy_r1_loss_is_capturable_only_when_the_penalty_is_on_every_batch():
    from gantool_plugins.losses.losses import HingeLoss

    assert HingeLoss(r1_gamma=1.0).capturable
    assert HingeLoss(r1_every=16).capturable  # no penalty at all
    assert not HingeLoss(r1_gamma=1.0, r1_every=16).capturable


# ----------------------------------------------------------------------------- a captured step trains the same weights


@pytest.mark.parametrize("overrides", [
    [],
    # two D steps per G step, a conditional run, ADA (it logs through ctx.log), EMA and R1 on every batch
    ["train.d_steps_per_g=2", "train.conditional=true", "train.ema_decay=0.9", "augment.type=ada",
     "augment.initial_p=0.5", "loss.r1_gamma=1.0"],
])
def test_a_replayed_run_trains_the_same_weights_as_an_eager_one(tiny_recipe, tmp_path, replayed, overrides):
    steps = ["train.max_steps=8", *overrides]
    eager = _trainer(tiny_recipe, tmp_path / "eager", "train.cuda_graphs=false", *steps)
    eager.fit()
    graphed = _trainer(tiny_recipe, tmp_path / "graphed", *steps)
    assert isinstance(graphed.update.graph, graphs.StepGraph)
    graphed.fit()
    assert graphed.update.graph is not None and graphed.update.graph.inputs is not None  # captured, then replayed
    _assert_same(_weights(tmp_path / "eager"), _weights(tmp_path / "graphed"))
    eager_log = (tmp_path / "eager" / "metrics.jsonl").read_text().splitlines()
    graphed_log = (tmp_path / "graphed" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in __import__("json").loads(line).items() if k not in ("time_s", "images_per_s")}  # noqa: E731
    assert [strip(x) for x in eager_log] == [strip(x) for x in graphed_log]  # statistics are copied per replay


def test_a_resumed_replayed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_recipe, tmp_path, replayed):
    _trainer(tiny_recipe, tmp_path / "whole", "train.max_steps=9").fit()
    _trainer(tiny_recipe, tmp_path / "split", "train.max_steps=5").fit()
    _trainer(tiny_recipe, tmp_path / "split", "train.max_steps=9", resume=True).fit()
    _assert_same(_weights(tmp_path / "whole"), _weights(tmp_path / "split"))


def test_a_failed_capture_trains_on_eagerly_after_one_warning(tiny_recipe, tmp_path, replayed, monkeypatch, capsys):
    class Refuses(graphs.ReplayedClosure):
        def capture(self, step, optimizers):
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(graphs, "backend", lambda device: Refuses())
    _trainer(tiny_recipe, tmp_path / "eager", "train.max_steps=6", "train.cuda_graphs=false").fit()
    capsys.readouterr()
    run = _trainer(tiny_recipe, tmp_path / "fallback", "train.max_steps=6")
    run.fit()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cuda_graphs" in line]
    assert warnings == ["warning: [train] cuda_graphs: training eagerly: capturing step 3 failed "
                        "(RuntimeError: operation not permitted when stream is capturing)"]
    assert run.update.graph is None
    _assert_same(_weights(tmp_path / "eager"), _weights(tmp_path / "fallback"))


def test_a_capture_that_fails_in_the_g_step_leaves_d_trainable(tiny_recipe, tmp_path, replayed, monkeypatch, capsys):
    """A capture can fail anywhere in the step; D, frozen for G's half, must train in the eager steps after it."""
    capturing = False

    class FailsMidStep(graphs.ReplayedClosure):
        def capture(self, step, optimizers):
            nonlocal capturing
            capturing = True
            try:
                step()
            finally:
                capturing = False

    monkeypatch.setattr(graphs, "backend", lambda device: FailsMidStep())
    run = _trainer(tiny_recipe, tmp_path / "run", "train.max_steps=6")
    generator_loss = run.update.loss.generator_loss

    def refused_while_capturing(*args):
        if capturing:
            raise RuntimeError("operation not permitted when stream is capturing")
        return generator_loss(*args)

    monkeypatch.setattr(run.update.loss, "generator_loss", refused_while_capturing)
    run.fit()
    assert "capturing step 3 failed (RuntimeError: operation not permitted" in capsys.readouterr().err
    assert run.update.graph is None
    assert all(p.requires_grad for p in run.update.D.module.parameters())


def test_host_syncs_are_recorded_and_other_warnings_pass_on(monkeypatch):
    """The last warm-up step's check (torch's sync debug mode is CUDA-only, so it is stood in for here)."""
    modes = []
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def step():
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)  # torch's words
        warnings.warn("passed on", DeprecationWarning, stacklevel=1)
        return step.__code__.co_firstlineno + 1

    with pytest.warns(DeprecationWarning, match="passed on"), graphs.host_syncs_recorded() as found:
        line = step()
    assert modes == ["warn", 0]  # and the previous mode is back
    assert found == [f"test_cuda_graphs.py:{line}"]
    with pytest.warns(UserWarning), graphs.host_syncs_recorded(False) as found:  # earlier warm-up steps
        warnings.warn("called a synchronizing CUDA operation", UserWarning)
    assert found == [] and modes == ["warn", 0]


def test_check_capturable_passes_the_built_in_training_components(tmp_path):
    from gantool import testing

    assert testing.check_capturable(tmp_path=tmp_path, augment={"type": "ada", "initial_p": 0.3, "interval": 1},
                                    loss={"type": "rasgan", "r1_gamma": 1.0}, train={"d_steps_per_g": 2}) == []


def test_check_capturable_catches_a_decision_taken_on_the_host_from_the_step(tmp_path, monkeypatch):
    from gantool import testing
    from gantool_plugins.augment.diffaugment import AdaptiveAugment

    def update(self, real_scores, ctx):
        self.probability.fill_(1.0 if ctx.step >= 4 else 0.0)  # a graph keeps step 3's choice

    monkeypatch.setattr(AdaptiveAugment, "update", update)
    ada = {"type": "ada", "policy": "translation"}
    with pytest.raises(AssertionError, match=r"replaying a captured step trains other tensors .*capturable = False"):
        testing.check_capturable(tmp_path=tmp_path / "a", augment=ada)
    monkeypatch.setattr(AdaptiveAugment, "capturable", False)
    assert testing.check_capturable(tmp_path=tmp_path / "b", augment=ada) == [
        "[augment] gantool:ada declares capturable = False"]


def test_an_optimizer_saved_with_capturable_steps_resumes_without_them(tmp_path):
    """A run checkpointed while graphed (capturable Adam) resumes on a CPU, where capturable is refused."""
    weight = torch.nn.Parameter(torch.ones(3))
    saved = torch.optim.Adam([weight], lr=0.1)
    weight.grad = torch.ones(3)
    saved.step()
    saved.param_groups[0]["capturable"] = True
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, modules={}, optimizers={"generator": saved}, rng={"torch": torch.get_rng_state()},
                    metadata={})
    from gantool.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(path)
    fresh = torch.optim.Adam([weight], lr=0.1)
    restore_optimizer(fresh, tensors, meta, "generator")
    assert fresh.param_groups[0]["capturable"] is False
    assert float(fresh.state[weight]["step"]) == 1.0
    fresh.step()  # a capturable Adam would refuse CPU tensors here


# ----------------------------------------------------------------------------- real CUDA graphs


# 12 steps (3 epochs of 4 batches): 3 eager warm-up steps, a capture, 8 replays; resumed
# at step 7, the run warms up again and captures at step 10. Layout and precision are
# pinned, so the two runs compared cannot measure their way to different choices.
CUDA_STEPS = ["train.epochs=3", "train.max_steps=12", "train.amp=off", "train.channels_last=false"]


def test_the_cuda_tests_recipe_trains_on_a_cpu(cuda_recipe, tmp_path, replayed):
    """So that a mistake in it shows here, not first on a GPU machine."""
    run = _trainer(cuda_recipe, tmp_path / "run", *CUDA_STEPS, "run.device=cpu", "train.max_steps=5")
    assert run.plan.dataset.image_shape == (3, 16, 16) and run.plan.channels_last is False
    run.fit()
    assert run.update.graph is not None and run.update.graph.inputs is not None


@pytest.mark.cuda
def test_cuda_graphs_train_the_eager_weights_to_float_tolerance(cuda_recipe, tmp_path):
    eager = _trainer(cuda_recipe, tmp_path / "eager", "train.cuda_graphs=false", *CUDA_STEPS)
    eager.fit()
    graphed = _trainer(cuda_recipe, tmp_path / "graphed", "train.cuda_graphs=true", *CUDA_STEPS)
    graphed.fit()
    assert graphed.update.graph is not None and graphed.update.graph.inputs is not None
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "graphed")
    for key in a:
        if not key.startswith("rng.") and a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.cuda
def test_cuda_graphed_resume_is_bit_exact(cuda_recipe, tmp_path):
    _trainer(cuda_recipe, tmp_path / "whole", *CUDA_STEPS).fit()
    _trainer(cuda_recipe, tmp_path / "split", *CUDA_STEPS, "train.max_steps=7").fit()
    resumed = _trainer(cuda_recipe, tmp_path / "split", *CUDA_STEPS, resume=True)
    resumed.fit()
    assert resumed.update.graph is not None and resumed.update.graph.inputs is not None  # captured after resume
    _assert_same(_weights(tmp_path / "whole"), _weights(tmp_path / "split"))


@pytest.mark.cuda
def test_cuda_a_component_that_is_not_capturable_keeps_the_run_eager(cuda_recipe, tmp_path, capsys):
    run = _trainer(cuda_recipe, tmp_path / "run", *CUDA_STEPS, "loss.type=hinge", "loss.r1_gamma=1.0",
                   "loss.r1_every=4")
    assert run.update.graph is None
    assert "declares capturable = False" in capsys.readouterr().err
    run.fit()


@pytest.mark.cuda
def test_cuda_a_channels_last_run_resumes_bit_exact(cuda_recipe, tmp_path):
    """Restored Adam moments take the parameters' NHWC strides, which fused Adam requires."""
    steps = [*CUDA_STEPS[:-1], "train.channels_last=true"]
    _trainer(cuda_recipe, tmp_path / "whole", *steps).fit()
    _trainer(cuda_recipe, tmp_path / "split", *steps, "train.max_steps=7").fit()
    resumed = _trainer(cuda_recipe, tmp_path / "split", *steps, resume=True)
    assert resumed.plan.channels_last
    resumed.fit()
    _assert_same(_weights(tmp_path / "whole"), _weights(tmp_path / "split"))


@pytest.mark.cuda
def test_cuda_batches_reach_the_gpu_without_waiting_for_it():
    """A plain copy from pageable host memory synchronises the stream: between graph replays
    the host could then never queue the next step while the GPU runs the current one."""
    from gantool.data import BatchStream

    class Images:
        hflip = True

        def as_tensor(self):
            return torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)

    stream = BatchStream(Images(), 8, seed=0, device=torch.device("cuda"), labels=torch.arange(40) % 3)
    batches = stream.iterate(0)
    next(batches)  # the epoch's order goes to the GPU once, with a sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        x, labels = next(batches)
        x, labels = next(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.is_cuda and labels.is_cuda and x.shape == (8, 3, 8, 8)
