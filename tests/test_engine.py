"""Training runs end to end: outputs, exact resume, safetensors-only checkpoints."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import run_cli
from gantool.checkpoint import load_checkpoint
from gantool.data import BatchStream
from gantool.engine import Trainer
from gantool.plan import resolve_device
from gantool.sampling import generator_from_checkpoint
from gantool.errors import GantoolError
from gantool.plugins import get_registry
from gantool.recipe import load_recipe


def train(recipe_path, out, *overrides, resume=False):
    trainer = Trainer(load_recipe(recipe_path, list(overrides)), get_registry(), out, resume=resume)
    return trainer, trainer.fit()


def test_short_run_writes_every_output(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    trainer, summary = train(tiny_recipe, out)
    assert summary["steps"] == 8 == trainer.total_steps  # 256 images / 64 per batch * 2 epochs
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert {"loss_d", "loss_g", "d_real", "d_fake", "images_per_s", "epoch"} <= set(records[0])
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in records)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["final.png", "step_0000003.png", "step_0000006.png", "step_0000008.png"]
    from PIL import Image

    assert Image.open(out / "samples" / "final.png").size == (4 * 16 + 5 * 2, 4 * 16 + 5 * 2)  # 4x4 grid, padding 2
    assert (out / "recipe.toml").read_text().startswith("[run]")
    assert json.loads((out / "summary.json").read_text())["steps"] == 8
    assert not list(out.glob("checkpoints/*.tmp"))
    tensors, meta = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert meta["step"] == 8 and meta["components"]["generator"]["qualified_name"] == "gantool:dcgan"
    assert meta["recipe"]["generator"]["latent_dim"] == 16 and meta["gantool_version"]
    assert any(k.startswith("optimizer.generator.") for k in tensors) and "rng.torch" in tensors


def test_training_changes_weights_and_losses_respond(tiny_recipe, tmp_path):
    trainer, _ = train(tiny_recipe, tmp_path / "run", "train.epochs=1")
    torch.manual_seed(0)
    fresh = get_registry().build("generator", "dcgan", {"latent_dim": 16, "base_channels": 8}, image_shape=(1, 16, 16))
    moved = [not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trainer.generator.cpu().state_dict().values())]
    assert sum(moved) > len(moved) // 2


def test_resume_after_epoch_one_is_bit_identical(tiny_recipe, tmp_path):
    train(tiny_recipe, tmp_path / "straight", "train.epochs=2")
    train(tiny_recipe, tmp_path / "split", "train.epochs=1")
    _, summary = train(tiny_recipe, tmp_path / "split", "train.epochs=2", resume=True)
    assert summary["steps"] == 8
    a = load_file(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


def test_resume_with_ema_and_dropout_is_bit_identical(tiny_recipe, tmp_path):
    extra = ("train.ema_decay=0.9", "discriminator.dropout=0.3", "train.epochs=2")
    train(tiny_recipe, tmp_path / "straight", *extra)
    train(tiny_recipe, tmp_path / "split", *extra, "train.max_steps=3")
    train(tiny_recipe, tmp_path / "split", *extra, resume=True)
    a = load_file(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "last.safetensors")
    assert any(k.startswith("ema_generator.") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_resumed_optimizer_state_takes_its_parameters_layout(tiny_recipe, tmp_path):
    """Checkpoints store Adam's moments contiguous, while the CPU default trains in channels_last.
    Restored moments must get their parameter's strides: CUDA's fused Adam refuses a mismatch,
    and torch's fused CPU Adam silently computes wrong updates from one."""
    train(tiny_recipe, tmp_path / "run", "train.max_steps=1")
    trainer, _ = train(tiny_recipe, tmp_path / "run", "train.max_steps=2", resume=True)
    moments = [(p, s["exp_avg"]) for opt in trainer.plan.optimizers.values() for p, s in opt.state.items()]
    assert any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p, _ in moments)
    assert [p.stride() for p, _ in moments] == [m.stride() for _, m in moments]


def test_a_fused_adam_resumes_channels_last_state_exactly(tmp_path):
    from gantool.checkpoint import restore_optimizer, save_checkpoint

    def adam(param):
        return torch.optim.Adam([param], lr=0.1, fused=True)

    weight = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    grads = [torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(i)) for i in (1, 2)]
    straight, split = (torch.nn.Parameter(weight.contiguous(memory_format=torch.channels_last)) for _ in "ab")
    opt = adam(straight)
    for grad in grads:
        straight.grad = grad.contiguous(memory_format=torch.channels_last)
        opt.step()
    opt = adam(split)
    split.grad = grads[0].contiguous(memory_format=torch.channels_last)
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", modules={}, optimizers={"g": opt}, rng={}, metadata={})
    tensors, meta = load_checkpoint(tmp_path / "c.safetensors")
    opt = adam(split)
    restore_optimizer(opt, tensors, meta, "g")
    split.grad = grads[1].contiguous(memory_format=torch.channels_last)
    opt.step()
    assert torch.equal(straight, split)


def test_a_run_saved_on_another_device_type_resumes_with_fresh_latents(tiny_recipe, tmp_path, capsys):
    """CUDA's latent generator state is 16 bytes (seed, offset), the CPU's 5056: a run trained on
    a GPU resumes on a CPU (and back), with one line saying its latents continue from a new seed."""
    train(tiny_recipe, tmp_path / "run", "train.max_steps=1")
    path = tmp_path / "run" / "checkpoints" / "last.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    tensors["rng.noise"] = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    save_file(tensors, path, metadata=metadata)
    _, summary = train(tiny_recipe, tmp_path / "run", "train.max_steps=2", resume=True)
    assert summary["steps"] == 2
    assert "the latent generator was saved on another device type" in capsys.readouterr().err


def test_checkpoint_is_pure_safetensors_and_rebuilds_generator(tiny_recipe, tmp_path):
    train(tiny_recipe, tmp_path / "run", "train.epochs=1")
    path = tmp_path / "run" / "checkpoints" / "last.safetensors"
    blob = path.read_bytes()
    header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    assert set(header["__metadata__"]) == {"gantool"}
    assert b"\x80\x04\x95" not in blob[: 8 + int.from_bytes(blob[:8], "little")]  # no pickle protocol-4 header
    (tmp_path / "run" / "recipe.toml").unlink()
    G, meta = generator_from_checkpoint(path, get_registry())
    images = G(G.sample_latent(3))
    assert images.shape == (3, 1, 16, 16) and images.abs().max() <= 1


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(GantoolError, match="not a gantool safetensors checkpoint"):
        load_checkpoint(bad)


def test_batch_order_depends_only_on_seed_and_index():
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 2, 2).contiguous()

    class Data:
        hflip = False

        def as_tensor(self):
            return images

    a = BatchStream(Data(), 10, seed=3, device=torch.device("cpu"))
    first = [x[:, 0, 0, 0] for _, (x, _labels) in zip(range(20), a.iterate(0))]
    epoch0 = torch.cat(first[:10])
    assert sorted(((epoch0 + 1) * 127.5).round().long().tolist()) == list(range(100))  # each image once per epoch
    later, _ = next(BatchStream(Data(), 10, seed=3, device=torch.device("cpu")).iterate(13))
    assert torch.equal(later[:, 0, 0, 0], first[13])
    # two ranks of a data-parallel run split the same global batch
    r0, _ = next(BatchStream(Data(), 10, seed=3, device=torch.device("cpu"), rank=0, world_size=2).iterate(13))
    r1, _ = next(BatchStream(Data(), 10, seed=3, device=torch.device("cpu"), rank=1, world_size=2).iterate(13))
    assert torch.equal(torch.cat([r0, r1])[:, 0, 0, 0], first[13])


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(GantoolError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cli_run_and_resume(tiny_recipe, tmp_path):
    out = tmp_path / "cli"
    proc = run_cli("run", tiny_recipe, "--set", "train.epochs=1", "--out", out, check=0)
    assert "done: 4 steps" in proc.stdout
    assert "step 4/4" in proc.stderr  # plain progress lines when not a terminal
    proc = run_cli("run", tiny_recipe, "--out", out, "--resume", check=0)
    assert "done: 8 steps" in proc.stdout
    missing = run_cli("run", tiny_recipe, "--out", tmp_path / "nothing", "--resume", check=2)
    assert "last.safetensors not found" in missing.stderr


def test_ema_decay_warms_up_with_the_step():
    from gantool.update import EMA

    net = torch.nn.Linear(2, 2)
    ema = EMA(net, 0.999)
    start = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net, step=0)  # decay min(0.999, 1/10) = 0.1: mostly the live weights
    for p_ema, p0, p in zip(ema.model.parameters(), start, net.parameters()):
        torch.testing.assert_close(p_ema, 0.1 * p0 + 0.9 * p)
    assert min(0.999, (1 + 100_000) / (10 + 100_000)) == 0.999  # long runs reach the configured decay
