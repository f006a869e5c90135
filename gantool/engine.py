"""The training loop: plan, then step, log, evaluate, checkpoint; outputs listen to events.

A run has three parts, one file each: ``plan.py`` builds and checks everything the
recipe names, ``update.py`` is the GAN update itself, and this loop counts steps and
emits events (``on_run_start``, ``on_step_end``, ``on_log``, ``on_eval``,
``on_checkpoint``, ``on_samples``, ``on_run_end``) to callbacks. The run's own outputs
(progress display, metrics.jsonl, sample grids, checkpoints) are callbacks too
(``outputs.py``), built on the same interface a plugin's callback uses.

Everything is deterministic given ``run.seed``: the data order of batch ``g`` depends
only on (seed, g), latents come from a dedicated generator whose state is checkpointed,
and the global RNG states are checkpointed, so a resumed run ends with the same weights
as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import signal
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

import gantool
from gantool import autotune, distributed, finetune, outputs, rundir
from gantool.checkpoint import (
    has_module,
    load_checkpoint,
    read_metadata,
    restore_module,
    restore_optimizer,
    save_checkpoint,
)
from gantool.data import mix_seed
from gantool.errors import GantoolError, RunFailed, first_line
from gantool.plan import make_plan, resolve_device
from gantool.progress import Preparing
from gantool.recipe import Recipe
from gantool.resume import apply_optimizer_settings, check_changes, recipe_changes, show
from gantool.rundir import RunLock
from gantool.update import GANUpdate


class Trainer:
    """One training run. Callbacks receive it as ``run``: the attributes documented in
    docs/plugins.md ("The run a callback sees") are the public surface."""

    def __init__(self, recipe: Recipe, registry, out_dir: Path, *, resume: bool = False, console=None,
                 rank=0, world_size=1, allow_changes: tuple[str, ...] = (), init_from=None):
        self.recipe, self.out_dir = recipe, Path(out_dir)
        self.rank, self.world_size, self.is_main = rank, world_size, rank == 0
        self.plan = make_plan(recipe, registry, rank=rank, world_size=world_size)
        # amp / channels_last "auto": measured on CUDA (cached), kept from the checkpoint on resume.
        last = self.out_dir / "checkpoints" / "last.safetensors"
        stored = read_metadata(last, require_run=True).get("speed") if resume else None
        speed = autotune.resolve(self.plan, registry, resuming=resume, stored=stored, rank=rank, world_size=world_size)
        self.speed = autotune.apply(self.plan, speed).record(self.plan.device)  # saved in checkpoints
        self.update = GANUpdate(self.plan, rank=rank, world_size=world_size)
        self.device, self.total_steps, self.components = self.plan.device, self.plan.total_steps, self.plan.components
        self.step, self.batches_seen, self.best, self.last_eval = 0, 0, None, {}
        self.stop_reason: str | None = None
        self.history: list[dict] = []  # trajectory changes applied on resume (--allow-change)
        self.guard = DivergenceGuard(recipe.train.divergence)
        self._evaluated_step = None  # no second evaluation of the final step
        builtin = outputs.builtin_callbacks(self, console)
        # The progress display also hears of phases that are not steps (the final evaluation).
        displays = [c for c in builtin if isinstance(c, outputs.ProgressDisplay)] if self.is_main else []
        self.display = displays[0] if displays else None
        self.callbacks = [*builtin, *(cb for _, cb in self.plan.callbacks)] if self.is_main else []
        self.resumed = resume
        self.init_from = None  # fine-tuned: {"path", "step", "parts"} of the source (finetune.py), kept on resume
        if resume:
            self._resume(last, list(allow_changes))
        elif init_from is not None:
            self.init_from = finetune.initialize(self, init_from)

    # -- what callbacks see ---------------------------------------------------------

    @property
    def generator(self) -> gantool.Generator:
        return self.plan.generator

    @property
    def discriminator(self) -> gantool.Discriminator:
        return self.plan.discriminator

    @property
    def sampling_generator(self) -> torch.nn.Module:
        """The EMA generator when the recipe keeps one, else the trained generator."""
        return self.update.ema.model if self.update.ema is not None else self.plan.generator

    @property
    def epoch(self) -> float:
        return self.batches_seen / self.plan.data.steps_per_epoch

    def request_stop(self, reason: str):
        """Finish the current step, then end the run normally (final samples, eval, checkpoint)."""
        self.stop_reason = self.stop_reason or reason

    @contextlib.contextmanager
    def sampling(self):
        """The sampling generator in eval mode, without gradients; training mode is restored after."""
        G = self.sampling_generator
        was_training = G.training
        G.eval()
        try:
            with torch.no_grad():
                yield G
        finally:
            G.train(was_training)

    def emit(self, event: str, *args):
        """Call ``event`` on every callback that has it (a callback need not subclass gantool.Callback)."""
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, *args)

    # -- the loop -------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to the end; the main process holds the run folder's lock throughout."""
        with RunLock(self.out_dir) if self.is_main else contextlib.nullcontext(), _disk_errors(self), \
                _compile_errors(self):
            if self.is_main:
                if not self.resumed and rundir.holds_run(self.out_dir):  # another run got here first
                    rundir.prepare(self.out_dir, resume=False, overwrite=False)
                rundir.remove_orphans(self.out_dir)
                (self.out_dir / "samples").mkdir(parents=True, exist_ok=True)
                (self.out_dir / "recipe.toml").write_text(self.recipe.to_toml())
            return self._fit()

    def _fit(self) -> dict:
        summary = {"status": "failed", "steps": self.step}
        interrupt = _StopFlag()
        try:
            with interrupt:
                self.emit("on_run_start")
                wall, images = self._train(interrupt)
            summary = self._finish(interrupt.requested, wall, images)
        finally:
            self._end(summary)
        if summary["status"] == "interrupted":
            raise RunInterrupted(interrupt.signal, self.step, self.out_dir)
        if self.is_main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _train(self, interrupt) -> tuple[float, int]:
        train = self.recipe.train
        batches = self.plan.data.iterate(self.batches_seen)
        sums, counts = {}, {}  # device statistics accumulated between log steps
        t_start = time.perf_counter()
        last_log = [t_start, self.batches_seen]  # time and batch count of the previous log line
        batches_start = self.batches_seen
        budget = train.max_minutes * 60

        def log():
            values = self._read_stats(sums, counts, interrupt)  # the only host sync, every log_every steps
            now = time.perf_counter()  # after it: the time of work the device has finished
            self.guard.check_losses(self, values)
            rate = (self.batches_seen - last_log[1]) * self.plan.data.global_batch / max(now - last_log[0], 1e-9)
            self.emit("on_log", {"step": self.step, "epoch": self.epoch, **values,
                                 "images_per_s": rate, "time_s": now - t_start})
            sums.clear(), counts.clear()
            last_log[:] = [now, self.batches_seen]

        self.generator.train(), self.discriminator.train()
        while self.step < self.total_steps and not self._stopping(interrupt):
            for key, value in self.update(batches, self.step, self.batches_seen).items():
                sums[key] = sums[key] + value if key in sums else value.clone()  # a logged buffer changes later
                counts[key] = counts.get(key, 0) + 1
            self.step += 1
            self.batches_seen += train.d_steps_per_g
            if self.step % train.log_every == 0 or self.step == self.total_steps:
                log()
            if self.recipe.eval.every and self.step % self.recipe.eval.every == 0:
                self.evaluate()
            self.emit("on_step_end")
            if budget and time.perf_counter() - t_start >= budget:  # a clean stop: samples, eval, checkpoint
                self.request_stop(f"train.max_minutes = {train.max_minutes:g} reached")
        if sums:  # stopped between log steps: the statistics since the last line are logged too
            log()
        return time.perf_counter() - t_start, (self.batches_seen - batches_start) * self.plan.data.global_batch

    def _stopping(self, interrupt) -> bool:
        # With several processes all ranks must stop at the same step: they agree on it
        # at log steps (the all-reduce in _read_stats).
        if self.world_size > 1:
            return self._agreed_stop is not None
        return interrupt.requested or self.stop_reason is not None

    _agreed_stop: str | None = None  # under DDP: "interrupted" or "stopped", once all ranks know

    def _read_stats(self, sums: dict, counts: dict, interrupt) -> dict[str, float]:
        """Mean of each statistic since the last log step; under DDP also averaged over ranks."""
        keys = ["loss_d", "loss_g", *(k for k in sums if k not in ("loss_d", "loss_g"))]
        means = torch.stack([sums[k] / counts[k] for k in keys])
        if self.world_size > 1:
            flags = torch.tensor([float(interrupt.requested), float(self.stop_reason is not None)], device=means.device)
            buffer = torch.cat([means, flags])
            distributed.all_reduce_sum(buffer)
            means, (interrupted, stopped) = buffer[:-2] / self.world_size, (buffer[-2:] > 0).tolist()
            if interrupted or stopped:
                self._agreed_stop = "interrupted" if interrupted else "stopped"
                self.stop_reason = self.stop_reason or ("stop requested on another rank" if stopped else None)
        return dict(zip(keys, means.tolist()))

    def evaluate(self) -> dict[str, float]:
        """Compute the recipe's [eval] metrics with the sampling generator (main process only)."""
        if not self.is_main:  # metrics are computed once, by rank 0 (they use no global RNG)
            return {}
        results = {}
        if self.display is not None and self.plan.metrics:
            names = ", ".join(name for name, _ in self.plan.metrics)
            self.display.phase(f"evaluating {names} on {self.recipe.eval.n_samples:,} samples")
        with self.sampling() as G:
            for _, metric in self.plan.metrics:
                values = metric.compute(G, self.plan.dataset, n=self.recipe.eval.n_samples, device=self.device)
                results.update({k: float(v) for k, v in values.items()})
        self.last_eval, self._evaluated_step = results, self.step
        self.emit("on_eval", results)
        return results

    def _finish(self, interrupted: bool, wall: float, images: int) -> dict:
        sync = self._rank_checksums() if self.world_size > 1 else None
        if interrupted if self.world_size == 1 else self._agreed_stop == "interrupted":
            return {"status": "interrupted", "steps": self.step}
        if self.plan.metrics and self._evaluated_step != self.step:
            self.evaluate()
        summary = {
            "status": "stopped" if self.stop_reason else "finished", "stop_reason": self.stop_reason,
            "name": self.recipe.run.name, "steps": self.step, "epochs": self.epoch,
            "images_seen": self.batches_seen * self.plan.data.global_batch,
            "wall_time_s": wall, "images_per_s": images / max(wall, 1e-9),
            "device": str(self.device), "components": self.components, "metrics": self.last_eval, "best": self.best,
            "eval_protocol": {name: getattr(m, "protocol", None) for name, m in self.plan.metrics},
            "samples": str(self.out_dir / "samples" / "final.png"),
            "checkpoint": str(self.out_dir / "checkpoints" / "last.safetensors"),
        }
        if sync is not None:
            summary.update(processes=self.world_size, rank=self.rank, **sync)
        return summary

    def _end(self, summary: dict):
        """on_run_end to every callback; after a failure, one callback's error must not hide the run's."""
        for callback in self.callbacks:
            try:
                if hasattr(callback, "on_run_end"):
                    callback.on_run_end(self, summary)
            except Exception as e:  # noqa: BLE001
                if summary["status"] != "failed":
                    raise
                print(f"warning: {type(callback).__name__}.on_run_end failed: {e}", file=sys.stderr)

    def _rank_checksums(self) -> dict:
        """Every rank's parameter checksums: DDP keeps them bitwise equal, summary.json shows it."""
        with torch.no_grad():
            local = torch.stack([torch.stack([p.double().sum() for p in net.parameters()]).sum()
                                 for net in (self.generator, self.discriminator)])
        sums = [g.tolist() for g in distributed.all_gather(local)]
        in_sync = all(s == sums[0] for s in sums)
        if not in_sync and self.is_main:
            print(f"warning: parameters differ across ranks at step {self.step}: {sums}", file=sys.stderr)
        return {"rank_param_checksums": sums, "ranks_in_sync": in_sync}

    # -- checkpoints ----------------------------------------------------------------

    def _stateful_modules(self) -> dict[str, torch.nn.Module]:
        """Every module whose state a checkpoint keeps, by its name in the file."""
        modules = {"generator": self.generator, "discriminator": self.discriminator}
        if self.update.ema is not None:
            modules["ema_generator"] = self.update.ema.model
        for name, part in (("augment", self.plan.augment), ("loss", self.plan.loss)):
            if isinstance(part, torch.nn.Module) and part.state_dict():
                modules[name] = part
        return modules

    def save_checkpoint(self, which: str = "last") -> Path:
        """Write checkpoints/<which>.safetensors atomically, then emit ``on_checkpoint``."""
        path = self.out_dir / "checkpoints" / f"{which}.safetensors"
        if not self.is_main:
            return path
        if not self.guard.weights_finite(self, path):
            return path
        metadata = {
            "format": "gantool-checkpoint-1", "gantool_version": gantool.__version__,
            "torch_version": torch.__version__,
            "step": self.step, "epoch": self.epoch, "batches_seen": self.batches_seen, "best": self.best,
            "recipe": self.recipe.data, "components": self.components,
            "schedulers": {net: s.state_dict() for net, s in self.plan.schedulers.items()},
            "history": self.history, **({"init_from": self.init_from} if self.init_from else {}),
            "speed": self.speed,  # the resolved amp / channels_last: a resumed "auto" keeps them
        }
        save_checkpoint(path, modules=self._stateful_modules(), optimizers=self.plan.optimizers,
                        rng=rng_state(self.update.noise), metadata=metadata)
        self.emit("on_checkpoint", path, which)
        return path

    def _resume(self, path: Path, allowed: list[str]):
        tensors, meta = load_checkpoint(path, require_run=True)
        for kind, info in meta["components"].items():
            mine = self.components.get(kind, {}).get("qualified_name")
            if info["qualified_name"] != mine and not any(kind == a or kind.startswith(f"{a}.") for a in allowed):
                raise GantoolError(f"{path}: checkpoint's {kind} is {info['qualified_name']}, the recipe's is {mine}; "
                                   f"resume with the run's own recipe ({path.parent.parent / 'recipe.toml'})")
        applied = check_changes(recipe_changes(meta["recipe"], self.recipe.data), allowed, str(self.out_dir))
        fresh = {net: [dict(g) for g in opt.param_groups] for net, opt in self.plan.optimizers.items()}
        for name, module in self._stateful_modules().items():
            source = "generator" if name == "ema_generator" and not has_module(tensors, name) else name
            restore_module(module, tensors, source)
        for net, optimizer in self.plan.optimizers.items():
            if f"optimizer.{net}.type" not in applied:  # a new kind of optimizer starts with fresh state
                restore_optimizer(optimizer, tensors, meta, net)
        for net, scheduler in self.plan.schedulers.items():
            scheduler.load_state_dict(meta.get("schedulers", {}).get(net, scheduler.state_dict()))
        for net, optimizer in self.plan.optimizers.items():  # --allow-change optimizer.<net>.<key>: the new value
            prefix = f"optimizer.{net}."
            keys = [k[len(prefix):] for k in applied if k.startswith(prefix) and k != f"{prefix}type"]
            if keys:
                apply_optimizer_settings(optimizer, fresh[net], keys, self.plan.schedulers.get(net))
        set_rng_state(tensors, self.update.noise, meta["step"])
        self.step, self.batches_seen, self.best = meta["step"], meta["batches_seen"], meta.get("best")
        self.history, self.init_from = list(meta.get("history", [])), meta.get("init_from")
        if applied:
            self.history.append({"step": self.step, "changes": {k: [show(a), show(b)]
                                                                for k, (a, b) in applied.items()}})
            if self.is_main:
                print(f"--allow-change: from step {self.step} on: "
                      + ", ".join(f"{k} {show(a)} -> {show(b)}" for k, (a, b) in applied.items()),
                      file=sys.stderr, flush=True)


def rng_state(noise: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "noise": noise.get_state()}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(tensors: dict, noise: torch.Generator, step: int):
    """Restore the RNGs. The latent generator's state is device-specific (CUDA's is a seed and
    an offset, the CPU's a Mersenne Twister): a run resumed at ``step`` on another device
    type draws its latents from a seed of the generator's own seed and the step, and says so."""
    torch.set_rng_state(tensors["rng.torch"])
    if tensors["rng.noise"].numel() == noise.get_state().numel():
        noise.set_state(tensors["rng.noise"])
    else:
        noise.manual_seed(mix_seed(noise.initial_seed(), step))
        print(f"resuming on {noise.device.type}: the latent generator was saved on another device type, "
              "so latents continue from a new seed (the run is not bit-identical to an uninterrupted one)",
              file=sys.stderr, flush=True)
    for key, value in tensors.items():
        if key.startswith("rng.cuda.") and torch.cuda.is_available():
            index = int(key.rsplit(".", 1)[1])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(value, index)


class _StopFlag:
    """Ctrl-C, SIGTERM and SIGUSR1 finish the current step, then the loop saves a checkpoint
    and stops. Cluster schedulers preempt with SIGTERM; SLURM sends SIGUSR1 before the
    time limit when asked (``--signal=USR1@90``). A second Ctrl-C stops at once."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")
    requested = False
    signal: int = signal.SIGINT

    def __enter__(self):
        self._previous = {}
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is None:  # e.g. no SIGUSR1 on Windows
                continue
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: leave the handlers alone
                break
        return self

    def _handle(self, number, _frame):
        if self.requested and number == signal.SIGINT:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested, self.signal = True, number

    def __exit__(self, *exc):
        for number, previous in self._previous.items():
            signal.signal(number, previous)


class RunInterrupted(RunFailed):
    """Stopped by a signal after saving a checkpoint; exit status 128 + the signal number (130 for Ctrl-C)."""

    def __init__(self, number: int, step: int, out_dir: Path):
        name = signal.Signals(number).name
        super().__init__(f"{name} at step {step}: checkpoint saved; continue with "
                         f"gantool run RECIPE --resume --out {out_dir} (or --resume auto)")
        self.exit_code = 128 + number


class Diverged(RunFailed):
    """Non-finite losses or weights: the run stops and keeps its last finite checkpoint."""


class DivergenceGuard:
    """``[train] divergence``: "stop" ends the run at the first non-finite loss (checked at
    log steps, where the statistics are read anyway) or before saving non-finite weights;
    "warn" only warns; "off" skips the loss checks. In every mode a finite checkpoint is
    never replaced by non-finite weights. Losses that explode get one warning per key,
    unless "off": above 10,000 (GAN losses of every built-in kind stay far below), or
    100x their typical size so far and above 1,000."""

    def __init__(self, mode: str):
        self.mode, self.typical, self.warned = mode, {}, set()

    def check_losses(self, run, values: dict[str, float]):
        if self.mode == "off":
            return
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad and self.mode == "stop":
            self._diverged(run, f"{bad[0]} is {values[bad[0]]}")
        if bad and "non-finite" not in self.warned:
            self.warned.add("non-finite")
            print(f"warning: step {run.step}: {bad[0]} is {values[bad[0]]}; training on ([train] divergence = "
                  "\"warn\"), no checkpoint will hold non-finite weights", file=sys.stderr, flush=True)
        for key in ("loss_d", "loss_g"):
            value, seen = abs(values.get(key, 0.0)), self.typical.setdefault(key, [])
            typical = statistics.median(seen) if len(seen) >= 3 else math.inf
            exploded = value > 1e4 or (value > 1000 and value > 100 * typical)
            if exploded and key not in self.warned and math.isfinite(value):
                self.warned.add(key)
                size = f"over 100x its typical size ({typical:.3g})" if value > 100 * typical else "over 10,000"
                print(f"warning: step {run.step}: {key} = {values[key]:.4g}, {size}; the run may be diverging "
                      "(learning rate too high?)", file=sys.stderr, flush=True)
            seen.append(value)
            del seen[:-50]

    def weights_finite(self, run, path: Path) -> bool:
        """Whether the weights may be saved to ``path``; non-finite ones never replace a checkpoint."""
        tensors = [t for m in run._stateful_modules().values() for t in (*m.parameters(), *m.buffers())
                   if t.is_floating_point()]
        if not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
            return True
        if self.mode == "stop":
            self._diverged(run, "the weights are not finite")
        print(f"warning: step {run.step}: the weights are not finite; {path} not written "
              "(the last finite checkpoint is kept)", file=sys.stderr, flush=True)
        return False

    @staticmethod
    def _diverged(run, what: str):
        last = run.out_dir / "checkpoints" / "last.safetensors"
        kept = f"the last finite checkpoint is {last}" if last.exists() else "no checkpoint had been written"
        raise Diverged(f"step {run.step}: {what}: the run diverged and stopped; {kept}. Lower the learning "
                       "rate, or set [train] divergence = \"warn\" to keep training")


@contextlib.contextmanager
def _disk_errors(run):
    """A full disk or a read-only folder is one line naming the path; earlier checkpoints stay."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise RunFailed(f"{e.filename or run.out_dir}: {e.strerror} at step {run.step}{_kept(run)}") from None


def _kept(run) -> str:
    """The clause of a failure line that names the checkpoint a user can resume from."""
    last = run.out_dir / "checkpoints" / "last.safetensors"
    return f"; the last good checkpoint is {last}" if last.exists() else ""


@contextlib.contextmanager
def _compile_errors(run):
    """A torch.compile failure is one line naming the recipe key that asked for it, not a
    compiler's output: PyTorch's compilers fail on some models, devices and versions (torch
    2.7's CPU code generator writes C++ that does not compile for DCGAN with 8 channels)."""
    try:
        yield
    except RuntimeError as e:  # dynamo's errors are RuntimeErrors; torch._dynamo is only looked up then
        if not run.recipe.train.compile or not isinstance(e, torch._dynamo.exc.TorchDynamoException):
            raise
        asked = run.recipe.origins.get(("train", "compile")) or run.recipe.path
        raise RunFailed(f"step {run.step}: torch.compile failed in PyTorch {torch.__version__} ({_compiler_cause(e)}); "
                        f"train without it: [train] compile = false (set by {asked}), "
                        f"or see the compiler's output with --debug{_kept(run)}") from e


def _compiler_cause(e: Exception) -> str:
    """The compiler's own error, with the first ``error:`` line of its output (a C++ compiler's)."""
    inner = getattr(e, "inner_exception", None) or e
    detail = next((line.split("error:", 1)[1].strip() for line in str(inner).splitlines()[1:] if "error:" in line), "")
    return first_line(inner) + (f": {detail[:200]}" if detail else "")


def default_out_dir(recipe: Recipe) -> Path:
    return Path("runs") / recipe.run.name / datetime.now().strftime("%Y%m%d-%H%M%S")


def latest_run_dir(recipe: Recipe) -> Path:
    runs = sorted(p.parent.parent for p in (Path("runs") / recipe.run.name).glob("*/checkpoints/last.safetensors"))
    if not runs:
        raise GantoolError(f"--resume: no checkpoint under runs/{recipe.run.name}/; pass --out RUN_DIR")
    return runs[-1]


def run(recipe: Recipe, registry, *, out_dir: Path | None = None, resume: bool | str = False,
        overwrite: bool = False, allow_changes: tuple[str, ...] = (), console=None, init_from=None) -> dict:
    """Train ``recipe`` into ``out_dir``. ``resume``: True, False, or "auto" (resume when
    ``out_dir`` has a checkpoint, else start fresh: one job script for every requeue).
    ``init_from`` (finetune.InitFrom): a fresh start takes another run's weights."""
    if resume == "auto":
        if out_dir is None:
            raise GantoolError("--resume auto needs --out RUN_DIR: the folder every restart of the job shares")
        resume = rundir.has_checkpoint(Path(out_dir))
    if allow_changes and not resume:
        raise GantoolError("--allow-change applies to --resume: a new run takes the recipe as it is")
    if resume:
        out_dir = Path(out_dir) if out_dir else latest_run_dir(recipe)
    out_dir = Path(out_dir) if out_dir else default_out_dir(recipe)
    ctx = distributed.from_env()
    if not ctx.enabled or ctx.rank == 0:
        rundir.prepare(out_dir, resume=resume, overwrite=overwrite)
    if not ctx.enabled:
        with Preparing(console, f"{recipe.path.name}: building the dataset and the models"):
            trainer = Trainer(recipe, registry, out_dir, resume=resume, console=console, allow_changes=allow_changes,
                              init_from=init_from)
        return trainer.fit()
    # Launched by torchrun: one process per GPU (or several CPU processes with gloo).
    device = distributed.rank_device(resolve_device(recipe.run.device, recipe.locate("run", "device")), ctx)
    distributed.init(device)
    trainer = None
    try:
        out_dir = distributed.broadcast_object(out_dir, ctx)  # rank 0's timestamped folder
        trainer = Trainer(recipe, registry, out_dir, resume=resume, console=console,
                          rank=ctx.rank, world_size=ctx.world_size, allow_changes=allow_changes, init_from=init_from)
        return trainer.fit()
    finally:
        if trainer is not None:
            trainer.update.unwrap()
        distributed.shutdown()
