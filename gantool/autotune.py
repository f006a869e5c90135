"""What ``[train] amp = "auto"`` and ``channels_last = "auto"`` become on the device at hand.

No fixed rule is right on GPUs: on an H200, DCGAN-64 at batch 64 trains faster in fp32 and
NCHW (7,618 images/s) than in bf16 and NHWC (6,471), while at batch 256 bf16 and NHWC win.
CPUs disagree too: bf16 autocast trains DCGAN-64 1.57x faster than fp32 on a Zen 4 with
AVX512-BF16, and is emulated (slow) without it. So on CUDA, and for ``amp`` on CPUs whose
oneDNN has bf16 instructions (``cpu_bf16``), the Trainer times a few steps of the real
update once per configuration and keeps the fastest; the choice is cached per device,
model and batch (``cache_dir()``), and stored in the run's checkpoints so that a resumed
run keeps it. Everything else follows ``rule``, from the measurements in docs/performance.md.
An explicit recipe value is never changed. ``gantool check`` shares ``make_plan``, which
only applies ``rule``: measuring is the Trainer's (engine.py).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import itertools
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
WARMUP = 5  # calls before timing: the update captures its CUDA graph on the 4th and replays it from then on
STEPS = 10  # timed calls: ~0.1 s per candidate for a DCGAN-64 step on a fast GPU
CPU_WARMUP, CPU_STEPS = 2, 3  # a CPU step takes ~0.5-0.8 s at DCGAN-64; bf16 and fp32 differ by ~1.5x
MAX_CACHE_BYTES = 1 << 20  # a cache file is a few hundred bytes; anything larger is not ours


@dataclasses.dataclass(frozen=True)
class Speed:
    """One configuration: the autocast dtype ("off" = fp32) and the memory format."""

    amp: str  # "off" | "bf16" | "fp16"
    channels_last: bool

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.amp]

    @property
    def label(self) -> str:
        return f"{self.amp}/{'NHWC' if self.channels_last else 'NCHW'}"

    def record(self, device: torch.device) -> dict:
        """What a checkpoint keeps ("speed" in its metadata); the device type says where it applies."""
        return {"amp": self.amp, "channels_last": self.channels_last, "device": device.type}


# ----------------------------------------------------------------------------- the rule (CPU, MPS, and `check`)

# NHWC per CPU kind (torch.backends.cpu.get_cpu_capability()), with the evidence. The rule's
# amp is fp32 on every CPU; where oneDNN has bf16 instructions the Trainer measures bf16 too.
CPU_LAYOUT = {
    "AVX512": (True, "measured: DCGAN-64 step -13 % (docs/performance.md, 'What the engine does')"),
    "AVX2": (True, "measured: 1.13x DCGAN-64, 1.18x the 28 px model (benchmarks/layout_ab.py)"),
}
UNMEASURED_CPU = (True, "not measured: NHWC is what oneDNN's convolutions prefer")


def cpu_kind() -> str:
    """The CPU's vector kind as PyTorch dispatches on it: "AVX512", "AVX2", "DEFAULT", "SVE256", ..."""
    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return get() if get is not None else "DEFAULT"


def cpu_bf16() -> bool:
    """Whether oneDNN runs bf16 in hardware here: AVX512-BF16 or AMX, and no
    ``ONEDNN_MAX_CPU_ISA`` cap below it (oneDNN's own check honours the cap). Elsewhere
    bf16 is emulated and slower, so it is not worth measuring."""
    cpu = getattr(torch, "cpu", None)
    flags = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return (any(getattr(cpu, flag, lambda: False)() for flag in flags)
                and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    except (AttributeError, RuntimeError):  # an older torch, or a build without oneDNN
        return False


def measures(device: torch.device, amp, channels_last) -> bool:
    """Whether the Trainer times candidates for these recipe values: on CUDA for either
    "auto"; on a CPU only ``amp = "auto"``, and only with bf16 instructions (``cpu_bf16``)."""
    if device.type == "cuda":
        return "auto" in (amp, channels_last)
    return device.type == "cpu" and amp == "auto" and cpu_bf16()


def rule(device: torch.device, amp: str = "auto") -> Speed:
    """The settings without measuring; ``amp`` is the recipe's (an explicit one is kept).

    CPU: fp32 and NHWC (per ``CPU_LAYOUT``). MPS: fp32 and NCHW (never measured; as
    before). CUDA: bf16 (fp16 without bf16 support) with NHWC, or NCHW when amp is
    "off". Where ``measures`` says so (CUDA, and amp on CPUs with bf16 instructions)
    this is only what ``gantool check`` shows and the fallback: the Trainer measures
    instead (``resolve``).
    """
    if device.type == "cuda":
        if amp == "auto":
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Speed(amp, amp != "off")
    amp = "off" if amp == "auto" else amp
    if device.type == "cpu":
        return Speed(amp, CPU_LAYOUT.get(cpu_kind(), UNMEASURED_CPU)[0])
    return Speed(amp, False)


# ----------------------------------------------------------------------------- choosing for a run


def resolve(plan, registry, *, resuming: bool = False, stored: dict | None = None, rank: int = 0,
            world_size: int = 1) -> Speed:
    """The run's settings: the recipe's explicit values, and for its "auto" ones

    - on resume, the checkpoint's (``stored``, its "speed" record) when it was written on
      the same device type, so the resumed run computes exactly what it would have; a
      checkpoint without the record predates measuring and used the rule, so the rule;
      but not bf16 measured on a CPU with bf16 instructions when this CPU lacks them:
      oneDNN would emulate it, ~28x slower (docs/performance.md);
    - else where ``measures`` says so (CUDA; amp on a CPU with bf16) a measurement
      (``tune``, cached);
    - else the rule ``make_plan`` already applied.

    Under torchrun rank 0 decides and the others take its choice (ranks must agree: DDP
    averages gradients of the same computation, and checkpoints are rank 0's).
    """
    train, device = plan.recipe.train, plan.device
    current = Speed(next(k for k, v in DTYPES.items() if v == plan.amp_dtype), plan.channels_last)
    auto_amp, auto_layout = train.amp == "auto", train.channels_last == "auto"
    if not (auto_amp or auto_layout):
        return current
    if resuming and (stored is None or stored.get("device") == device.type):
        speed, note = current, "the rule, as when the run started: its checkpoint predates measured settings"
        emulated = False
        if stored is not None:
            speed = Speed(stored["amp"] if auto_amp else current.amp,
                          stored["channels_last"] if auto_layout else current.channels_last)
            note = "kept from the checkpoint"
            emulated = device.type == "cpu" and auto_amp and speed.amp != "off" and not cpu_bf16()
            if emulated:
                speed = Speed("off", speed.channels_last)
                note = (f"not the checkpoint's {stored['amp']}: this CPU has no bf16 instructions and would emulate "
                        "them ~28x slower; the run goes on in fp32, close to but not bit-identical with the original")
        if (measures(device, train.amp, train.channels_last) or emulated) and rank == 0:
            _log(describe(device_identity(device)[0], plan.data.local_batch, speed, note))
        return speed
    if not measures(device, train.amp, train.channels_last):
        return current
    if world_size == 1:
        return tune(plan, registry)
    from gantool import distributed

    # Rank 0 times the step each rank runs, at its batch, without DDP's all-reduce (that
    # needs every rank) and eager, as whole-step CUDA graphs are off under DDP (graphs.py).
    train = dataclasses.replace(train, cuda_graphs=False)
    alone = dataclasses.replace(plan, recipe=dataclasses.replace(plan.recipe, train=train))
    return distributed.broadcast_object(tune(alone, registry) if rank == 0 else None, distributed.from_env())


def apply(plan, speed: Speed) -> Speed:
    """Set ``plan``'s settings to ``speed``, converting G and D to its memory format
    (in place: the optimizers keep the same parameters). Call before the update is built."""
    if speed.channels_last != plan.channels_last:
        layout = torch.channels_last if speed.channels_last else torch.contiguous_format
        plan.generator.to(memory_format=layout)
        plan.discriminator.to(memory_format=layout)
    plan.channels_last, plan.amp_dtype = speed.channels_last, speed.dtype
    return speed


def candidates(amp, channels_last, *, bf16: bool) -> list[Speed]:
    """Every combination of the "auto" dimensions; explicit values are fixed. The rule's
    guess (mixed precision, NHWC) comes first, so it wins ties."""
    amps = [("bf16" if bf16 else "fp16"), "off"] if amp == "auto" else [amp]
    layouts = [True, False] if channels_last == "auto" else [bool(channels_last)]
    return [Speed(a, c) for a, c in itertools.product(amps, layouts)]


def tune(plan, registry, *, clock: Callable[[], float] | None = None, warmup: int | None = None,
         steps: int | None = None) -> Speed:
    """The fastest candidate for this plan: from the cache, else measured (and cached).
    Logs one line on stderr. ``clock`` (seconds) is injectable; by default it waits for
    the device before reading the time. A CPU step is slower: fewer steps suffice there."""
    device, train = plan.device, plan.recipe.train
    cuda = device.type == "cuda"
    options = candidates(train.amp, train.channels_last, bf16=torch.cuda.is_bf16_supported() if cuda else True)
    warmup = warmup if warmup is not None else WARMUP if cuda else CPU_WARMUP
    steps = steps if steps is not None else STEPS if cuda else CPU_STEPS
    name, capability = device_identity(device)
    key = cache_key(plan, options, name, capability)
    path = cache_path(key)
    cached = read_cache(path, key)
    if cached is not None:
        speed, times = cached
        note = f"cached in {path}; measured per step: {_times(times)}"
    else:
        times = measure(plan, registry, options, clock=clock or synchronized_clock(device),
                        warmup=warmup, steps=steps)
        done = {s: t for s, t in times.items() if t is not None}
        if not done:  # every candidate ran out of memory: the rule, and let the run say so
            speed = rule(device, train.amp)
            _log(describe(name, plan.data.local_batch, speed, "every candidate ran out of memory; the rule's choice"))
            return speed
        speed = min(done, key=done.get)  # the first of equals: the rule's guess
        note = f"measured per step: {_times(times)}; {write_cache(path, key, speed, times)}"
    _log(describe(name, plan.data.local_batch, speed, note))
    return speed


def measure(plan, registry, options: list[Speed], *, clock: Callable[[], float], warmup: int = WARMUP,
            steps: int = STEPS) -> dict[Speed, float | None]:
    """Seconds per step of each candidate (None: out of memory) on one real batch, repeated.

    Each candidate trains deep copies of G, D, the loss and the augmentation with fresh
    optimizers and schedules built from the recipe, through the real ``GANUpdate``
    (graphs, compile and EMA as the run will use them), inside ``fork_rng``: the run's
    weights, optimizer state and RNG streams are untouched. ``clock`` is read right
    before the first and after the last timed call.
    """
    cuda = plan.device.type == "cuda"
    times = {}
    with torch.random.fork_rng(devices=[plan.device] if cuda else []):
        real = next(plan.data.iterate(0))  # inside: a DataLoader draws its workers' seed from the global RNG
        for speed in options:
            try:
                times[speed] = _time_steps(_trial_update(plan, registry, speed), real, plan.recipe.train.d_steps_per_g,
                                           clock, warmup, steps)
            except torch.cuda.OutOfMemoryError:
                times[speed] = None
            finally:
                if plan.recipe.train.compile:  # each copy's compilations count against dynamo's recompile
                    torch._dynamo.reset()  # limit, which the run's own networks must not find used up
                gc.collect()  # a trial's update and its CUDA graph refer to each other: free their copies,
                if cuda:  # optimizer state and graph memory now, not beside the run's own
                    torch.cuda.empty_cache()
    return times


def _trial_update(plan, registry, speed: Speed):
    """A ``GANUpdate`` like the run's, in ``speed``'s settings, on copies of the plan's parts."""
    # Imported here: update.py imports plan.py, which takes its rule from this module.
    from gantool.plan import build_component
    from gantool.recipe import OPTIMIZED
    from gantool.update import GANUpdate

    layout = torch.channels_last if speed.channels_last else torch.contiguous_format
    nets = {net: copy.deepcopy(getattr(plan, net)).to(memory_format=layout) for net in OPTIMIZED}
    optimizers = {net: build_component(plan.recipe, registry, ("optimizer", net), "optimizer",
                                       params=list(nets[net].parameters())) for net in OPTIMIZED}
    schedulers = {net: build_component(plan.recipe, registry, ("scheduler", net), "scheduler",
                                       optimizer=optimizers[net], total_steps=plan.total_steps) for net in OPTIMIZED}
    schedulers = {net: s for net, s in schedulers.items() if s is not None}
    trial = dataclasses.replace(plan, **nets, loss=copy.deepcopy(plan.loss), augment=copy.deepcopy(plan.augment),
                                optimizers=optimizers, schedulers=schedulers, metrics=[], callbacks=[],
                                channels_last=speed.channels_last, amp_dtype=speed.dtype)
    return GANUpdate(trial, quiet=True)  # the run's own update says why graphs are off, once


def _time_steps(update, real, d_steps: int, clock, warmup: int, steps: int) -> float:
    batches = itertools.repeat(real)
    for step in range(warmup):
        update(batches, step, step * d_steps)
    start = clock()
    for step in range(warmup, warmup + steps):
        update(batches, step, step * d_steps)
    return (clock() - start) / steps


def synchronized_clock(device: torch.device) -> Callable[[], float]:
    """perf_counter after the device has finished its queued work (CUDA runs asynchronously)."""
    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()
    return now


def device_identity(device: torch.device) -> tuple[str, str]:
    """(name, capability) of a device, for the log line and the cache key: a CUDA GPU's
    compute capability; for a CPU its kind, bf16 support, threads and any oneDNN ISA cap."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return torch.cuda.get_device_name(device), f"{major}.{minor}"
    if device.type != "cpu":
        return device.type.upper(), ""
    name = f"CPU {cpu_kind()}" + (" with bf16" if cpu_bf16() else "")
    return name, f"{torch.get_num_threads()} threads, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '')}"


def describe(device_name: str, batch: int, speed: Speed, note: str) -> str:
    """The one log line: ``auto settings for NVIDIA H200, batch 64: amp off, channels_last off (...)``."""
    return (f"auto settings for {device_name}, batch {batch}: amp {speed.amp}, "
            f"channels_last {'on' if speed.channels_last else 'off'} ({note})")


def _times(times: dict[Speed, float | None]) -> str:
    return ", ".join(f"{s.label} {'out of memory' if t is None else f'{t * 1000:.1f} ms'}" for s, t in times.items())


def _log(line: str):
    print(line, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """``$GANTOOL_CACHE_DIR/autotune``, else ``$XDG_CACHE_HOME/gantool/autotune`` (~/.cache/...),
    as the dataset and Inception weight caches."""
    if os.environ.get("GANTOOL_CACHE_DIR"):
        return Path(os.environ["GANTOOL_CACHE_DIR"]).expanduser() / "autotune"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "gantool" / "autotune"


def cache_key(plan, options: list[Speed], device_name: str, capability: str) -> dict:
    """Everything the fastest choice depends on. The file name is a digest of it; the file
    keeps the whole key, and a file whose key differs is not used."""
    recipe, train = plan.recipe, plan.recipe.train
    key = {
        "device": device_name, "capability": capability, "torch": torch.__version__,
        **{kind: recipe.data.get(kind) for kind in ("generator", "discriminator", "loss", "augment")},
        "image_shape": [int(s) for s in plan.data.dataset.image_shape], "num_classes": plan.num_classes,
        "batch": plan.data.local_batch, "d_steps_per_g": train.d_steps_per_g,
        "compile": train.compile, "cuda_graphs": train.cuda_graphs, "ema": train.ema_decay > 0,
        "candidates": [s.label for s in options],
    }
    return json.loads(json.dumps(key, default=str))  # as it reads back from the file (TOML dates as text)


def cache_path(key: dict) -> Path:
    """One small JSON file per key, named by its digest: runs of other models never race for it."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{digest}.json"


def read_cache(path: Path, key: dict) -> tuple[Speed, dict[Speed, float | None]] | None:
    """(choice, times) from ``path`` when it holds ``key``; None for a missing, foreign,
    oversized or corrupt file (it is measured again and replaced, without a traceback)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a fifo must not block the run
    except (OSError, ValueError):
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            blob = f.read(MAX_CACHE_BYTES + 1)
        entry = json.loads(blob) if len(blob) <= MAX_CACHE_BYTES else None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        choice = _speed(entry["choice"])
        times = {_speed(s): (None if t is None else float(t)) for s, t in entry["times"]}
        return choice, times
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None


def write_cache(path: Path, key: dict, speed: Speed, times: dict[Speed, float | None]) -> str:
    """Write atomically (a temp file in the same folder, then ``os.replace``); returns what
    the log line says: "cached in PATH", or "not cached: why" (a read-only cache is no error)."""
    entry = {"key": key, "choice": dataclasses.asdict(speed),
             "times": [[dataclasses.asdict(s), t] for s, t in times.items()]}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f, indent=1)
        os.replace(tmp, path)
        return f"cached in {path}"
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return f"not cached: {e.strerror or e} ({path.parent}; set GANTOOL_CACHE_DIR)"


def _speed(record: dict) -> Speed:
    """A Speed from its JSON form; TypeError, KeyError or ValueError for anything else."""
    speed = Speed(record["amp"], record["channels_last"])
    if speed.amp not in DTYPES or type(speed.channels_last) is not bool:
        raise ValueError(f"not a setting: {record!r:.60}")
    return speed
