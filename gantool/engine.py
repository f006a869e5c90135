"""The training engine: build a run from a recipe, train it, sample, evaluate, checkpoint.

Read ``Trainer.train_step`` for the GAN update itself and ``Trainer.fit`` for the loop
around it. Everything is deterministic given ``run.seed``: the data order of batch ``g``
depends only on (seed, g), latents come from a dedicated generator whose state is
checkpointed, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from torchvision.utils import save_image

import gantool
from gantool.checkpoint import has_module, load_checkpoint, restore_module, restore_optimizer, save_checkpoint
from gantool.errors import GantoolError, RunFailed
from gantool.recipe import Recipe

# ----------------------------------------------------------------------------- building


def resolve_device(spec: str, where: str = "[run] device") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise GantoolError(f"{where}: unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GantoolError(f"{where}: {spec!r} requested but CUDA is not available here; use device = \"auto\" or \"cpu\"")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GantoolError(f"{where}: {spec!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise GantoolError(f"{where}: 'mps' requested but not available here; use device = \"auto\" or \"cpu\"")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise GantoolError(f"{where}: unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


@dataclasses.dataclass
class Components:
    dataset: gantool.Dataset
    generator: gantool.Generator
    discriminator: gantool.Discriminator
    loss: gantool.Loss
    info: dict  # kind -> {"type", "qualified_name", "plugin", "version"}


def build_components(recipe: Recipe, registry) -> Components:
    """Dataset first: its image_shape is injected into the generator and discriminator."""
    info = {}

    def build(kind, **injected):
        name, params = recipe.component(kind)
        built = registry.build(kind, name, params, locate=lambda key: recipe.locate(kind, key), **injected)
        component = registry.get(kind, name)
        info[kind] = {"type": name, "qualified_name": component.qualified_name, "plugin": component.plugin, "version": component.version}
        return built

    dataset = build("dataset")
    shape = tuple(int(s) for s in dataset.image_shape)
    info["dataset"]["image_shape"] = list(shape)
    generator = build("generator", image_shape=shape)
    discriminator = build("discriminator", image_shape=shape)
    loss = build("loss")
    return Components(dataset, generator, discriminator, loss, info)


def generator_from_checkpoint(path: Path, registry, device="cpu", *, ema: bool = True) -> tuple[gantool.Generator, dict]:
    """Rebuild the (EMA) generator from a checkpoint's metadata alone: no recipe file needed."""
    tensors, meta = load_checkpoint(path)
    params = dict(meta["recipe"]["generator"])
    params.pop("type")
    qualified = meta["components"]["generator"]["qualified_name"]
    shape = tuple(meta["components"]["dataset"]["image_shape"])
    try:
        registry.get("generator", qualified)
    except GantoolError:
        raise GantoolError(f"{path}: generator {qualified!r} is not installed; install the plugin {meta['components']['generator']['plugin']!r}") from None
    generator = registry.build("generator", qualified, params, locate=lambda k: f"{path}: [generator] {k}", image_shape=shape)
    source = "ema_generator" if ema and has_module(tensors, "ema_generator") else "generator"
    restore_module(generator, tensors, source)
    return generator.to(device).eval(), meta


# ----------------------------------------------------------------------------- data


def _mix(*numbers: int) -> int:
    """A deterministic seed from integers (Python's hash() of strings varies per process)."""
    h = 0x9E3779B97F4A7C15
    for n in numbers:
        h = (h ^ (n + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) % (1 << 63)
    return h


class BatchStream:
    """Global batch ``g`` = a fixed slice of epoch ``g // steps_per_epoch``'s permutation.

    In-memory datasets are indexed straight from one uint8 tensor (on the training
    device when it fits); others go through a DataLoader with workers and pinned memory.
    Under data parallelism each rank takes its own slice of the same global batch.
    """

    def __init__(self, dataset, batch_size: int, seed: int, device: torch.device, *, num_workers=2, rank=0, world_size=1):
        if batch_size % world_size:
            raise GantoolError(f"batch_size: {batch_size} does not divide over {world_size} processes")
        self.dataset, self.seed, self.device = dataset, seed, device
        self.global_batch, self.local_batch = batch_size, batch_size // world_size
        self.rank, self.num_workers = rank, num_workers
        self.images = dataset.as_tensor()
        n = len(self.images) if self.images is not None else len(dataset)
        if n < batch_size:
            raise GantoolError(f"batch_size: {batch_size} is larger than the dataset ({n} images); lower it")
        self.size, self.steps_per_epoch = n, n // batch_size
        if self.images is not None and device.type == "cuda" and self.images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0]:
            self.images = self.images.to(device)
        elif self.images is not None and device.type == "cuda":
            self.images = self.images.pin_memory()
        self._perm_epoch, self._perm = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, 1, epoch))
            self._perm, self._perm_epoch = torch.randperm(self.size, generator=g), epoch
        return self._perm

    def indices(self, g: int) -> torch.Tensor:
        epoch, i = divmod(g, self.steps_per_epoch)
        start = i * self.global_batch + self.rank * self.local_batch
        return self.permutation(epoch)[start : start + self.local_batch]

    def iterate(self, start: int):
        """Yield float batches in [-1, 1] on the device, from global batch ``start`` on."""
        batches = self._from_memory(start) if self.images is not None else self._from_loader(start)
        for g, x in enumerate(batches, start):
            if self.dataset.hflip:  # this rank's slice of the global batch's coin flips
                coins = torch.rand(self.global_batch, generator=torch.Generator().manual_seed(_mix(self.seed, 2, g)))
                flip = coins[self.rank * self.local_batch :][: len(x)] < 0.5
                x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
            yield x

    def _from_memory(self, start):
        for g in range(start, 1 << 62):
            idx = self.indices(g).to(self.images.device)
            x = self.images.index_select(0, idx).to(self.device, non_blocking=True)
            yield x.float().div_(127.5).sub_(1.0)

    def _from_loader(self, start):
        g = start
        while True:
            epoch = g // self.steps_per_epoch
            batches = [self.indices(i).tolist() for i in range(g, (epoch + 1) * self.steps_per_epoch)]
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=batches, num_workers=self.num_workers, pin_memory=self.device.type == "cuda"
            )
            for x in loader:
                yield x.to(self.device, non_blocking=True)
            g = (epoch + 1) * self.steps_per_epoch


# ----------------------------------------------------------------------------- helpers


class EMA:
    """Exponential moving average of generator weights; buffers (BN statistics) are copied.

    With ``step`` the decay warms up as min(decay, (1 + step) / (10 + step)), so a short
    run is not dominated by the random initial weights (0.999 ** 780 = 46% of them).
    """

    def __init__(self, generator: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: torch.nn.Module, step: int | None = None):
        decay = self.decay if step is None else min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in generator.parameters()], 1.0 - decay)
        for b_ema, b in zip(self.model.buffers(), generator.buffers()):
            b_ema.copy_(b)


def keep_freed_memory():
    """Let glibc reuse freed activation memory instead of returning it to the OS.

    By default every allocation above a (dynamic) threshold is a fresh mmap that the
    kernel zero-fills page by page; a DCGAN-64 step then takes ~25,000 page faults.
    Raising the mmap and trim thresholds keeps the step's working set in the heap, as
    CUDA's caching allocator does on GPUs: measured 4-5% less CPU time per step (see
    docs/performance.md); RSS stays at the step's peak. Linux/glibc only, process-wide,
    a no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):  # not glibc (e.g. musl): keep the defaults
        pass


def autocast_settings(amp: str, device: torch.device) -> tuple[bool, torch.dtype | None]:
    """Mixed precision only where it pays: CUDA (bf16 if supported, else fp16)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return False, None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return True, torch.bfloat16
    return True, torch.float16


def channels_last_setting(option, device: torch.device, amp: str) -> bool:
    """``train.channels_last``; "auto" = NHWC where it pays: CPU convolutions (oneDNN; a
    DCGAN-64 step measured ~15% faster, docs/performance.md) and CUDA under mixed
    precision (tensor cores want NHWC). Off on MPS and for CUDA in fp32."""
    if option != "auto":
        return bool(option)
    if device.type == "cpu":
        return True
    return device.type == "cuda" and autocast_settings(amp, device)[0]


def rng_state(noise: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "noise": noise.get_state()}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(tensors: dict, noise: torch.Generator):
    torch.set_rng_state(tensors["rng.torch"])
    noise.set_state(tensors["rng.noise"])
    for key, value in tensors.items():
        if key.startswith("rng.cuda.") and torch.cuda.is_available():
            index = int(key.rsplit(".", 1)[1])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(value, index)


def default_out_dir(recipe: Recipe) -> Path:
    return Path("runs") / recipe.run.name / datetime.now().strftime("%Y%m%d-%H%M%S")


def latest_run_dir(recipe: Recipe) -> Path:
    runs = sorted(p.parent.parent for p in (Path("runs") / recipe.run.name).glob("*/checkpoints/last.safetensors"))
    if not runs:
        raise GantoolError(f"--resume: no checkpoint under runs/{recipe.run.name}/; pass --out RUN_DIR")
    return runs[-1]


# ----------------------------------------------------------------------------- training


class Trainer:
    def __init__(self, recipe: Recipe, registry, out_dir: Path, *, resume: bool = False, console=None, rank=0, world_size=1):
        self.recipe, self.registry, self.out = recipe, registry, Path(out_dir)
        self.rank, self.world_size, self.is_main = rank, world_size, rank == 0
        self.console = console
        train = recipe.train
        self.device = resolve_device(recipe.run.device, recipe.locate("run", "device"))
        if world_size > 1:
            from gantool import distributed

            self.device = distributed.rank_device(self.device, distributed.from_env())

        if self.device.type == "cpu":
            keep_freed_memory()
        torch.manual_seed(recipe.run.seed)
        c = build_components(recipe, registry)
        self.dataset, self.loss, self.components = c.dataset, c.loss, c.info
        self.G = c.generator.to(self.device)
        self.D = c.discriminator.to(self.device)
        self.channels_last = channels_last_setting(train.channels_last, self.device, train.amp)
        if self.channels_last:
            self.G, self.D = self.G.to(memory_format=torch.channels_last), self.D.to(memory_format=torch.channels_last)
        self.opt_g = self._adam(self.G, recipe.optimizer["generator"])
        self.opt_d = self._adam(self.D, recipe.optimizer["discriminator"])
        self.ema = EMA(self.G, train.ema_decay) if train.ema_decay > 0 else None
        self.noise = torch.Generator(device=self.device).manual_seed(_mix(recipe.run.seed, 3))
        self.fixed_z = self.G.sample_latent(train.sample_grid, generator=torch.Generator().manual_seed(_mix(recipe.run.seed, 4))).to(self.device)

        self.use_amp, self.amp_dtype = autocast_settings(train.amp, self.device)
        fp16 = self.use_amp and self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=fp16)
        # The networks as called in the step; self.G/self.D own the weights.
        g_net, d_net = self.G, self.D
        if world_size > 1:
            # Gradients are averaged across ranks during backward. Buffers (BatchNorm running
            # statistics, used only for sampling) stay per rank; rank 0's are saved.
            import inspect

            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            new_api = "forward_sync_buffers" in inspect.signature(DDP).parameters  # newer torch renamed the flag
            no_sync = {"forward_sync_buffers": False} if new_api else {"broadcast_buffers": False}
            g_net, d_net = DDP(self.G, device_ids=ids, **no_sync), DDP(self.D, device_ids=ids, **no_sync)
        # torch.compile goes outside DDP, so its graph breaks line up with DDP's gradient buckets.
        self.g_step, self.d_step = (torch.compile(g_net), torch.compile(d_net)) if train.compile else (g_net, d_net)
        # G's step runs D without DDP: D's weights are frozen there and get no gradient to average.
        self.d_frozen = self.d_step if world_size == 1 else (torch.compile(self.D) if train.compile else self.D)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick the fastest kernels

        try:
            self.data = BatchStream(self.dataset, train.batch_size, recipe.run.seed, self.device, num_workers=train.num_workers, rank=rank, world_size=world_size)
        except GantoolError as e:
            raise GantoolError(f"{recipe.locate('train', 'batch_size').rsplit(' ', 1)[0]} {e}") from None
        per_epoch = self.data.steps_per_epoch // train.d_steps_per_g
        if per_epoch == 0:
            raise GantoolError(f"{recipe.locate('train', 'batch_size')}: too few batches per epoch for d_steps_per_g = {train.d_steps_per_g}")
        self.total_steps = per_epoch * train.epochs if train.max_steps == 0 else min(train.max_steps, per_epoch * train.epochs)
        self.step, self.batches_seen, self.best, self.last_eval = 0, 0, None, {}
        self.metrics = [(name, registry.build("metric", name, recipe.data.get("eval", {}).get(name, {}), locate=lambda k, n=name: recipe.locate("eval", n, k))) for name in recipe.eval.metrics]
        if train.keep_best and not self.metrics:
            raise GantoolError(f"{recipe.locate('train', 'keep_best')}: no [eval] metrics to produce {train.keep_best!r}; add them, e.g. [eval] metrics = [\"fid\"]")
        self._evaluated_step, self._display = None, None  # no second evaluation of the final step; progress display
        if resume:
            self._resume(self.out / "checkpoints" / "last.safetensors")

    def _adam(self, net, cfg):
        fused = self.device.type == "cuda"  # fused Adam is CUDA-only; foreach is the CPU default
        return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused or None)

    # -- the GAN update ------------------------------------------------------------

    def train_step(self, batches) -> torch.Tensor:
        """One generator step after ``d_steps_per_g`` discriminator steps.

        The fake batch is generated once and used for both the D step (detached) and
        the G step. Returns [loss_d, loss_g, D(x), D(G(z))] as a device tensor: nothing
        here waits for the device.
        """
        G, D, loss = self.g_step, self.d_step, self.loss
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)
        for k in range(self.recipe.train.d_steps_per_g):
            real = next(batches)
            self.batches_seen += 1
            if self.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            z = self._latents()
            last = k == self.recipe.train.d_steps_per_g - 1
            with autocast, torch.set_grad_enabled(last):
                fake = G(z)
            with autocast:
                real_scores, fake_scores = D(real), D(fake.detach())
                loss_d = loss.discriminator_loss(real_scores, fake_scores)
                penalty = loss.penalty(self.D, real, fake.detach())
                if penalty is not None:
                    loss_d = loss_d + penalty
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(loss_d).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()

        self.D.requires_grad_(False)  # G's step needs gradients through D, not for D's weights
        with autocast:
            loss_g = loss.generator_loss(self.d_frozen(fake))
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.D.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(self.G, self.step)
        with torch.no_grad():
            return torch.stack([loss_d.float(), loss_g.float(), torch.sigmoid(real_scores.float()).mean(), torch.sigmoid(fake_scores.float()).mean()])

    def _latents(self) -> torch.Tensor:
        """This rank's rows of the global batch's latents: every rank draws the same global
        batch from the shared noise generator (so its checkpointed state is every rank's)
        and keeps its own slice, as the data stream does with images."""
        n = self.data.local_batch
        z = self.G.sample_latent(self.data.global_batch, device=self.device, generator=self.noise)
        return z[self.rank * n : (self.rank + 1) * n] if self.world_size > 1 else z

    # -- the loop ------------------------------------------------------------------

    def fit(self) -> dict:
        train = self.recipe.train
        if self.is_main:
            self._prepare_out_dir()
        batches = self.data.iterate(self.batches_seen)
        stats, count = torch.zeros(4, device=self.device), 0
        t_start = t_log = time.perf_counter()
        images_at_log, images_start = self.batches_seen, self.batches_seen
        stop = _StopFlag()
        # With several processes all ranks must stop at the same step: they agree on it
        # at log steps (one small all-reduce that also averages the logged statistics).
        stopping = (lambda: stop.requested) if self.world_size == 1 else (lambda: agreed_stop)
        agreed_stop = False
        self.G.train(), self.D.train()
        with stop, self._progress() as progress:
            self._display = progress
            while self.step < self.total_steps and not stopping():
                stats += self.train_step(batches)
                count += 1
                self.step += 1
                if self.step % train.log_every == 0 or self.step == self.total_steps:
                    now = time.perf_counter()
                    if self.world_size > 1:
                        agreed_stop = self._all_reduce_stats(stats, stop.requested)
                    values = (stats / count).tolist()  # the only host sync, every log_every steps
                    rate = (self.batches_seen - images_at_log) * self.data.global_batch / max(now - t_log, 1e-9)
                    record = {"step": self.step, "epoch": self.epoch, "loss_d": values[0], "loss_g": values[1],
                              "d_real": values[2], "d_fake": values[3], "images_per_s": rate, "time_s": now - t_start}
                    self._log(record)
                    progress.update(record)
                    stats.zero_()
                    count, t_log, images_at_log = 0, now, self.batches_seen
                if train.sample_every and self.step % train.sample_every == 0:
                    self.save_samples()
                if self.recipe.eval.every and self.step % self.recipe.eval.every == 0:
                    self.evaluate()
                if train.checkpoint_every and self.step % train.checkpoint_every == 0:
                    self.save("last")
        wall = time.perf_counter() - t_start
        sync = self._rank_checksums() if self.world_size > 1 else None
        if stopping():
            self.save("last")
            self._close_tensorboard()
            raise RunFailed(f"interrupted at step {self.step}; resume with --resume --out {self.out}")
        self.save_samples()
        if self.metrics and self._evaluated_step != self.step:
            self.evaluate()
        self.save("last")
        summary = {
            "name": self.recipe.run.name, "steps": self.step, "epochs": self.epoch, "images_seen": self.batches_seen * self.data.global_batch,
            "wall_time_s": wall, "images_per_s": (self.batches_seen - images_start) * self.data.global_batch / max(wall, 1e-9),
            "device": str(self.device), "components": self.components, "metrics": self.last_eval, "best": self.best,
            "eval_protocol": {name: getattr(m, "protocol", None) for name, m in self.metrics},
            "samples": str(self.out / "samples" / "final.png"), "checkpoint": str(self.out / "checkpoints" / "last.safetensors"),
        }
        if sync is not None:
            summary.update(processes=self.world_size, rank=self.rank, **sync)
        if self.is_main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self._close_tensorboard()
        return summary

    def _all_reduce_stats(self, stats: torch.Tensor, stop_requested: bool) -> bool:
        """Average the accumulated statistics over ranks in place; True if any rank wants to stop."""
        import torch.distributed as dist

        buffer = torch.cat([stats, torch.tensor([float(stop_requested)], device=stats.device)])
        dist.all_reduce(buffer)
        stats.copy_(buffer[:-1] / self.world_size)
        return bool(buffer[-1] > 0)

    def _rank_checksums(self) -> dict:
        """Every rank's parameter checksums: DDP keeps them bitwise equal, summary.json shows it."""
        import torch.distributed as dist

        with torch.no_grad():
            local = torch.stack([torch.stack([p.double().sum() for p in net.parameters()]).sum() for net in (self.G, self.D)])
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        sums = [g.tolist() for g in gathered]
        in_sync = all(s == sums[0] for s in sums)
        if not in_sync and self.is_main:
            print(f"warning: parameters differ across ranks at step {self.step}: {sums}", file=sys.stderr)
        return {"rank_param_checksums": sums, "ranks_in_sync": in_sync}

    @property
    def epoch(self) -> float:
        return self.batches_seen / self.data.steps_per_epoch

    @property
    def sampling_generator(self) -> torch.nn.Module:
        return self.ema.model if self.ema is not None else self.G

    @contextlib.contextmanager
    def _eval_mode(self):
        """Sampling must not disturb training: eval mode (no BN updates), no grad, no RNG use."""
        G = self.sampling_generator
        was_training = G.training
        G.eval()
        try:
            with torch.no_grad():
                yield G
        finally:
            G.train(was_training)

    def save_samples(self):
        if not self.is_main:
            return
        with self._eval_mode() as G:
            images = G(self.fixed_z).float()
        folder = self.out / "samples"
        grid = dict(nrow=max(1, int(math.sqrt(len(images)))), normalize=True, value_range=(-1, 1))
        save_image(images, folder / f"step_{self.step:07d}.png", **grid)
        save_image(images, folder / "final.png", **grid)
        if self.tensorboard is not None:
            from torchvision.utils import make_grid

            self.tensorboard.add_image("samples", make_grid(images, **grid), self.step)

    def evaluate(self):
        if not self.is_main:  # metrics are computed once, by rank 0 (they use no global RNG)
            return
        results = {}
        with self._eval_mode() as G:
            for name, metric in self.metrics:
                results.update({k: float(v) for k, v in metric.compute(G, self.dataset, n=self.recipe.eval.n_samples, device=self.device).items()})
        self.last_eval, self._evaluated_step = results, self.step
        self._log({"step": self.step, "epoch": self.epoch, **results})
        if self._display is not None and self.is_main:
            self._display.evaluation(self.step, results)
        key = self.recipe.train.keep_best
        if key:
            if key not in results:
                raise GantoolError(f"{self.recipe.locate('train', 'keep_best')}: metric key {key!r} not produced by [eval] metrics (got {', '.join(results) or 'none'})")
            goal = next((m.goals.get(key, "min") for _, m in self.metrics if key in getattr(m, "goals", {})), "min")
            value = results[key]
            if self.best is None or (value < self.best["value"] if goal == "min" else value > self.best["value"]):
                self.best = {"key": key, "value": value, "step": self.step}
                self.save("best")

    # -- outputs -------------------------------------------------------------------

    def _prepare_out_dir(self):
        (self.out / "samples").mkdir(parents=True, exist_ok=True)
        (self.out / "recipe.toml").write_text(self.recipe.to_toml())
        self.tensorboard = None
        if self.recipe.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise GantoolError(f"{self.recipe.locate('log', 'tensorboard')}: tensorboard is not installed; pip install 'gantool[tensorboard]'") from None
            self.tensorboard = SummaryWriter(str(self.out / "tensorboard"))

    tensorboard = None

    def _close_tensorboard(self):
        if self.tensorboard is not None:
            self.tensorboard.close()  # flushes the event file
            self.tensorboard = None

    def _log(self, record: dict):
        if not self.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, float):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def _progress(self):
        from gantool.progress import TrainingProgress

        return TrainingProgress(self.total_steps, self.step, console=self.console, enabled=self.is_main)

    def save(self, which: str):
        if not self.is_main:
            return
        modules = {"generator": self.G, "discriminator": self.D}
        if self.ema is not None:
            modules["ema_generator"] = self.ema.model
        metadata = {
            "format": "gantool-checkpoint-1", "gantool_version": gantool.__version__, "torch_version": torch.__version__,
            "step": self.step, "epoch": self.epoch, "batches_seen": self.batches_seen, "best": self.best,
            "recipe": self.recipe.data, "components": self.components,
        }
        save_checkpoint(self.out / "checkpoints" / f"{which}.safetensors", modules=modules,
                        optimizers={"generator": self.opt_g, "discriminator": self.opt_d}, rng=rng_state(self.noise), metadata=metadata)

    def _resume(self, path: Path):
        tensors, meta = load_checkpoint(path)
        for kind, info in meta["components"].items():
            if info["qualified_name"] != self.components[kind]["qualified_name"]:
                raise GantoolError(f"{path}: checkpoint's {kind} is {info['qualified_name']}, the recipe's is {self.components[kind]['qualified_name']}; resume with the run's own recipe ({path.parent.parent / 'recipe.toml'})")
        restore_module(self.G, tensors, "generator")
        restore_module(self.D, tensors, "discriminator")
        if self.ema is not None:
            restore_module(self.ema.model, tensors, "ema_generator" if has_module(tensors, "ema_generator") else "generator")
        restore_optimizer(self.opt_g, tensors, meta, "generator")
        restore_optimizer(self.opt_d, tensors, meta, "discriminator")
        set_rng_state(tensors, self.noise)
        self.step, self.batches_seen, self.best = meta["step"], meta["batches_seen"], meta.get("best")


class _StopFlag:
    """Ctrl-C finishes the current step, then the loop saves a checkpoint and stops."""

    requested = False

    def __enter__(self):
        self._previous = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, *_):
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run(recipe: Recipe, registry, *, out_dir: Path | None = None, resume: bool = False, console=None) -> dict:
    if resume:
        out_dir = Path(out_dir) if out_dir else latest_run_dir(recipe)
        if not (out_dir / "checkpoints" / "last.safetensors").exists():
            raise GantoolError(f"--resume: {out_dir}/checkpoints/last.safetensors not found")
    out_dir = Path(out_dir) if out_dir else default_out_dir(recipe)
    from gantool import distributed

    ctx = distributed.from_env()
    if not ctx.enabled:
        return Trainer(recipe, registry, out_dir, resume=resume, console=console).fit()
    # Launched by torchrun: one process per GPU (or several CPU processes with gloo).
    device = distributed.rank_device(resolve_device(recipe.run.device, recipe.locate("run", "device")), ctx)
    distributed.init(device)
    try:
        out_dir = distributed.broadcast_object(out_dir, ctx)  # rank 0's timestamped folder
        trainer = Trainer(recipe, registry, out_dir, resume=resume, console=console, rank=ctx.rank, world_size=ctx.world_size)
        return trainer.fit()
    finally:
        distributed.shutdown()
