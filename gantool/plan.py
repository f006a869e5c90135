"""The plan of a run: everything a recipe asks for, resolved, built and checked.

``make_plan`` is shared by ``gantool check`` and ``gantool run``, so ``check`` catches
every error ``run`` would: unknown names, bad parameters, a batch larger than the
dataset, ``keep_best`` without a metric, and components that break the contract on the
real shapes (``smoke_test`` calls G, D, the augmentation and the loss once and names
the component whose output is wrong).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys

import torch

import gantool
from gantool import autotune, limits
from gantool.data import BatchStream
from gantool.interfaces import split_scores
from gantool.errors import GantoolError, ParamError
from gantool.recipe import OPTIMIZED, Recipe


@dataclasses.dataclass
class Plan:
    recipe: Recipe
    device: torch.device
    dataset: gantool.Dataset
    generator: gantool.Generator
    discriminator: gantool.Discriminator
    loss: gantool.Loss
    augment: gantool.Augmentation | None
    optimizers: dict  # "generator" / "discriminator" -> torch.optim.Optimizer
    schedulers: dict  # the same keys -> LRScheduler, for networks that have one
    metrics: list  # [(name, Metric)]
    callbacks: list  # [(name, Callback)] from [callbacks.*] and [log]
    data: BatchStream
    total_steps: int
    channels_last: bool
    amp_dtype: torch.dtype | None  # None: full precision
    num_classes: int  # > 0: a class-conditional run (labels go to G, D and the loss)
    components: dict  # kind -> {"type", "qualified_name", "plugin", "version"}: stored in checkpoints


def make_plan(recipe: Recipe, registry, *, rank: int = 0, world_size: int = 1) -> Plan:
    """Build every component of ``recipe`` on its device and check they fit together."""
    train = recipe.train
    device = resolve_device(recipe.run.device, recipe.locate("run", "device"))
    if world_size > 1:
        from gantool import distributed

        device = distributed.rank_device(device, distributed.from_env())
    if device.type == "cpu":
        keep_freed_memory()
    elif device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # "cuda:1": streams, CUDA graphs and syncs without an index follow it
    info = {}

    def build(path, kind, *, bounded=False, **injected):
        entry = recipe.component(*path)
        if entry is None:
            return None
        name, _ = entry

        def make():
            return build_component(recipe, registry, path, kind, **injected)

        if bounded:  # a network's size is checked on the meta device before it is allocated
            estimate = limits.estimate_bytes(make, load=lambda: registry.get(kind, name).load())
            limits.check_model_memory(estimate, f"{recipe.locate(*path, 'type')}: {kind} {name}",
                                      f"make it smaller (e.g. a lower [{path[0]}] base_channels)")
            make = limits.reported(make, f"{recipe.locate(*path, 'type')}: {kind} {name}")
        try:
            built = make()
        except GantoolError as e:  # a network that cannot take the dataset's image shape: the fix is image_size
            cause = e.__cause__
            if "image_shape" not in injected or not (isinstance(cause, ParamError) and cause.param == "image_shape"):
                raise
            raise GantoolError(f"{recipe.locate('dataset', 'image_size')}: {kind} {name}: {cause.message}") from None
        component = registry.get(kind, name)
        info[".".join(path)] = {"type": name, "qualified_name": component.qualified_name,
                                "plugin": component.plugin, "version": component.version}
        return built

    # Model initialisation draws from the global RNG seeded here, in this order.
    torch.manual_seed(recipe.run.seed)
    dataset = build(("dataset",), "dataset")
    shape = tuple(int(s) for s in dataset.image_shape)
    info["dataset"]["image_shape"] = list(shape)
    labels = conditioning(recipe, registry, dataset)
    num_classes = int(dataset.num_classes) if labels is not None else 0
    if labels is not None:
        info["dataset"].update(num_classes=num_classes, class_names=class_names(dataset))
    generator = build(("generator",), "generator", bounded=True, image_shape=shape, num_classes=num_classes).to(device)
    discriminator = build(("discriminator",), "discriminator", bounded=True, image_shape=shape,
                          num_classes=num_classes).to(device)
    loss = build(("loss",), "loss")
    if isinstance(loss, torch.nn.Module):  # a loss with buffers (a margin, a running mean) trains where D does
        loss = loss.to(device)
    amp_dtype = autocast_dtype(train.amp, device)
    channels_last = channels_last_setting(train.channels_last, device, train.amp)
    if channels_last:
        generator = generator.to(memory_format=torch.channels_last)
        discriminator = discriminator.to(memory_format=torch.channels_last)
    try:
        data = BatchStream(dataset, train.batch_size, recipe.run.seed, device,
                           num_workers=train.num_workers, rank=rank, world_size=world_size, labels=labels)
    except GantoolError as e:
        raise GantoolError(f"{recipe.locate('train', 'batch_size')}: {e}") from None
    per_epoch = data.steps_per_epoch // train.d_steps_per_g
    if per_epoch == 0:
        raise GantoolError(f"{recipe.locate('train', 'batch_size')}: too few batches per epoch "
                           f"for d_steps_per_g = {train.d_steps_per_g}")
    total_steps = per_epoch * train.epochs if train.max_steps == 0 else min(train.max_steps, per_epoch * train.epochs)

    # Nothing below may move the global RNG: training must draw exactly what it drew before.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        augment = build(("augment",), "augmentation")
        if augment is not None:
            augment = augment.to(device)
        nets = {"generator": generator, "discriminator": discriminator}
        optimizers = {net: build(("optimizer", net), "optimizer", params=list(nets[net].parameters()))
                      for net in OPTIMIZED}
        schedulers = {net: build(("scheduler", net), "scheduler", optimizer=optimizers[net], total_steps=total_steps)
                      for net in OPTIMIZED}
        schedulers = {net: s for net, s in schedulers.items() if s is not None}
        for net, scheduler in schedulers.items():
            _check_scheduler(scheduler, recipe.locate("scheduler", net, "type"))
        metrics = [(name, build_metric(registry, recipe.data, name, lambda key, n=name: recipe.locate("eval", n, key)))
                   for name in recipe.eval.metrics]
        if train.keep_best and not metrics:
            raise GantoolError(f"{recipe.locate('train', 'keep_best')}: no [eval] metrics to produce "
                               f"{train.keep_best!r}; add them, e.g. [eval] metrics = [\"fid\"]")
        callbacks = [(name, build(("callbacks", name), "callback")) for name in recipe.callbacks()]
        if recipe.log.tensorboard and "tensorboard" not in recipe.callbacks():
            where = recipe.locate("log", "tensorboard")
            tensorboard = registry.build("callback", "gantool:tensorboard", {}, locate=lambda key: where)
            callbacks.append(("tensorboard", tensorboard))
        plan = Plan(recipe, device, dataset, generator, discriminator, loss, augment, optimizers, schedulers, metrics,
                    callbacks, data, total_steps, channels_last, amp_dtype, num_classes, info)
        smoke_test(plan)
    return plan


def build_component(recipe: Recipe, registry, path: tuple, kind: str, **injected):
    """The component of the recipe table at ``path`` (None for an absent optional table),
    errors naming the table's keys. make_plan builds with it, and so does the autotuner's
    trial update (its fresh optimizers and schedules are built exactly as the run's)."""
    entry = recipe.component(*path)
    if entry is None:
        return None
    name, params = entry
    return registry.build(kind, name, params, locate=lambda key: recipe.locate(*path, key), **injected)


def conditioning(recipe: Recipe, registry, dataset) -> torch.Tensor | None:
    """The dataset's labels when the run is class-conditional, else None.

    A run is conditional when ``[train] conditional = true`` or the generator, the
    discriminator or the loss declares ``conditioning = "required"``; then the dataset
    must have labels and G and D must be able to take them (not ``"none"``).
    """
    declared = {}
    for kind in ("generator", "discriminator", "loss"):
        try:
            component = registry.get(kind, recipe.component(kind)[0])
            factory = component.load()
        except GantoolError:  # an unknown name: building it reports the error with its location
            continue
        declared[kind] = (getattr(factory, "conditioning", "none"), component.name)
    required = [kind for kind, (mode, _) in declared.items() if mode == "required"]
    if not recipe.train.conditional and not required:
        return None
    if recipe.train.conditional:
        why = f"{recipe.locate('train', 'conditional')} = true"
        off = "or set [train] conditional = false"
    else:
        why = f"{required[0]} {declared[required[0]][1]} requires class labels"
        off = f"or use an unconditional {required[0]}"
    for kind in ("generator", "discriminator"):
        mode, name = declared.get(kind, ("optional", ""))
        if mode == "none":
            raise GantoolError(f"{recipe.locate(kind, 'type')}: {kind} {name} cannot take class labels, but {why}; "
                               f"use a conditional {kind} (see `gantool list {kind}`: dcgan, "
                               f"{'upsample_conv' if kind == 'generator' else 'projection'}) {off}")
    labels = dataset.labels() if int(getattr(dataset, "num_classes", 0) or 0) > 0 else None
    where, name = recipe.locate("dataset", "type"), recipe.component("dataset")[0]
    if labels is None:
        raise GantoolError(f"{where}: dataset {name} has no class labels, but {why}; use a labelled dataset "
                           f"(mnist5k, mnist, fashion_mnist, cifar10, imagefolder with one sub-folder per class) {off}")
    k = int(dataset.num_classes)
    bad = labels.dtype.is_floating_point or labels.dim() != 1
    if not bad and len(labels):
        bad = not 0 <= int(labels.min()) <= int(labels.max()) < k
    if bad:
        raise GantoolError(f"{where}: dataset {name}'s labels() must be integers in [0, {k}) of shape (N,); "
                           f"got {labels.dtype} {tuple(labels.shape)}")
    return labels


def class_names(dataset) -> list[str]:
    names = getattr(dataset, "class_names", None)
    k = int(dataset.num_classes)
    return [str(n) for n in names] if names is not None and len(names) == k else [str(i) for i in range(k)]


def build_metric(registry, recipe_data: dict, name: str, locate):
    """A metric with its parameters from the recipe's ``[eval.<name>]`` table."""
    params = recipe_data.get("eval", {}).get(name, {})
    return registry.build("metric", name, params if isinstance(params, dict) else {}, locate=locate)


def smoke_test(plan: Plan):
    """Run G, D, the augmentation and the loss once on two real images, in eval mode.

    Catches at ``check`` time what would otherwise fail mid-run with a bare PyTorch
    error: wrong output shapes, a loss that returns a vector, a loss written for an
    older contract. Weights, BN statistics and optimizer state are left untouched.
    """
    recipe, G, D = plan.recipe, plan.generator, plan.discriminator
    names = {kind: plan.components[kind]["qualified_name"] for kind in ("generator", "discriminator", "loss")}
    locate = {kind: recipe.locate(kind, "type") for kind in names}
    modes = [(m, m.training) for m in (G, D, plan.augment) if m is not None]
    for module, _ in modes:
        module.eval()
    try:
        real, real_labels = next(plan.data.iterate(0))
        real = real[:2]
        real_labels = real_labels[:2] if real_labels is not None else None  # the stream has labels when conditional
        fake_labels = torch.arange(2, device=plan.device) % plan.num_classes if plan.num_classes else None
        with torch.no_grad():
            z = G.sample_latent(2, device=plan.device)
            fake = _call(G, (z, *labelled(fake_labels)), locate["generator"], names["generator"], "forward")
        expected = (2, *plan.data.dataset.image_shape)
        if tuple(fake.shape) != expected or not fake.is_floating_point():
            raise GantoolError(f"{locate['generator']}: generator {names['generator']} makes {tuple(fake.shape)} "
                               f"{fake.dtype} from sample_latent(2); expected {expected} float")
        if plan.augment is not None:
            where = recipe.locate("augment", "type")
            augmented = _call(plan.augment, (real,), where, plan.components["augment"]["qualified_name"], "forward")
            if augmented.shape != real.shape:
                raise GantoolError(f"{where}: augmentation changes the shape {tuple(real.shape)} "
                                   f"to {tuple(augmented.shape)}; it must keep it")
            real, fake = augmented, plan.augment(fake)
        real_scores, real_extras = split_scores(
            _call(D, (real, *labelled(real_labels)), locate["discriminator"], names["discriminator"], "forward"))
        if tuple(real_scores.shape) != (2,):
            raise GantoolError(f"{locate['discriminator']}: discriminator {names['discriminator']} returns scores "
                               f"of shape {tuple(real_scores.shape)} for 2 images; expected (2,) (one logit per image)")
        ctx = gantool.StepContext(step=0, batch=0, generator=G, discriminator=D, real=real, fake=fake,
                                  real_labels=real_labels, fake_labels=fake_labels, real_extras=real_extras)
        fake_scores, ctx.fake_extras = split_scores(D(fake, *labelled(fake_labels)))
        loss, where = plan.loss, (locate["loss"], names["loss"])
        loss_d = _call(loss.discriminator_loss, (real_scores, fake_scores, ctx), *where, "discriminator_loss")
        _check_scalar(loss_d, *where, "discriminator_loss")
        penalty = _call(loss.penalty, (ctx,), *where, "penalty") if hasattr(loss, "penalty") else None
        if penalty is not None:
            _check_scalar(penalty, *where, "penalty")
        g_real = real_scores if getattr(loss, "generator_needs_real_scores", False) else None
        loss_g = _call(loss.generator_loss, (g_real, ctx.scores(fake, fake_labels), ctx), *where, "generator_loss")
        _check_scalar(loss_g, *where, "generator_loss")
    finally:
        for module, training in modes:
            module.train(training)
        for net in (G, D):
            net.zero_grad(set_to_none=True)


def labelled(labels: torch.Tensor | None) -> tuple:
    """The label argument of a G or D call: none in an unconditional run (``G(z)``, ``D(x)``)."""
    return () if labels is None else (labels,)


def _check_scheduler(scheduler, where: str):
    """Checkpoints store a schedule's state as JSON: a schedule that cannot be saved fails here, not mid-run."""
    if not callable(getattr(scheduler, "step", None)) or not callable(getattr(scheduler, "state_dict", None)):
        raise GantoolError(f"{where}: the factory returned {type(scheduler).__name__}, which lacks step() or state_dict()")
    try:
        json.dumps(scheduler.state_dict())
    except (TypeError, ValueError) as e:
        raise GantoolError(f"{where}: its state_dict() cannot be stored as JSON in a checkpoint ({e})") from None


def _call(fn, args, where: str, name: str, method: str):
    try:
        return fn(*args)
    except GantoolError:
        raise
    except Exception as e:  # noqa: BLE001 - a plugin's bug, reported against its recipe table
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise GantoolError(f"{where}: {name}.{method} failed on a real batch: {type(e).__name__}: {first}") from e


def _check_scalar(value, where: str, name: str, method: str):
    if not torch.is_tensor(value) or value.dim() != 0:
        shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        raise GantoolError(f"{where}: loss {name}.{method} returned {shape}; "
                           "it must return a scalar tensor (e.g. .mean())")
    if not value.requires_grad:
        raise GantoolError(f"{where}: loss {name}.{method} returned a tensor without gradient; "
                           "build it from the scores, not from .item() or detached values")


# ----------------------------------------------------------------------------- device settings


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
            raise GantoolError(f"{where}: {spec!r} requested but CUDA is not available here; "
                               "use device = \"auto\" or \"cpu\"")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GantoolError(f"{where}: {spec!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise GantoolError(f"{where}: 'mps' requested but not available here; use device = \"auto\" or \"cpu\"")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise GantoolError(f"{where}: unsupported device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """``train.amp`` as an autocast dtype (None = fp32); "auto" is the device's rule
    (``autotune.rule``: fp32 on CPU and MPS). On CUDA the Trainer measures instead
    (``autotune.resolve``); this value is what ``gantool check`` sees."""
    return autotune.rule(device, amp).dtype


def channels_last_setting(option, device: torch.device, amp: str) -> bool:
    """``train.channels_last``; "auto" is the device's rule (``autotune.rule``): NHWC on
    CPU (measured faster on AVX-512 and AVX2), NCHW on MPS; on CUDA the Trainer measures."""
    if option != "auto":
        return bool(option)
    return autotune.rule(device, amp).channels_last


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
    with contextlib.suppress(OSError, AttributeError):  # not glibc (e.g. musl): keep the defaults
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
