"""Fine-tuning: a new run that starts from another run's weights (``gantool run --init-from``).

Only weights travel. The new run has fresh optimizers, starts at step 0 and uses its own
recipe: dataset, seed, schedule. Tensor names and shapes are checked before training, so
a recipe whose networks differ from the source's fails in one line naming the tensors,
not halfway through a load. Where the weights came from is kept in the run's checkpoints
as ``init_from``; a resumed run restores its own weights and never reads the source again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from gantool.errors import GantoolError

PARTS = ("generator", "discriminator")


@dataclass(frozen=True)
class InitFrom:
    """The checkpoint to start from and which networks to take from it."""

    path: Path
    parts: tuple[str, ...] = PARTS


def source(target: Path, parts: str | None = None) -> InitFrom:
    """``--init-from RUN_OR_CHECKPOINT [--init PARTS]`` checked before any process starts."""
    from gantool.sampling import resolve_checkpoint

    try:
        path, _ = resolve_checkpoint(Path(target))
    except GantoolError as e:
        raise GantoolError(f"--init-from {e}") from None
    return InitFrom(path, parse_parts(parts))


def parse_parts(text: str | None) -> tuple[str, ...]:
    """``--init``: "generator,discriminator" (the default), "generator" or "discriminator"."""
    if text is None:
        return PARTS
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in PARTS:
            raise GantoolError(f"--init {text}: {name!r} is not a network to load; use generator, discriminator "
                               "or generator,discriminator (the default)")
    return tuple(part for part in PARTS if part in names)


def initialize(run, init: InitFrom) -> dict:
    """Load ``init``'s weights into a freshly built run; returns the record its checkpoints keep.

    The EMA generator (when the recipe keeps one and the generator is loaded) starts from the
    source's EMA weights when it has them, else from its generator.
    """
    from gantool.checkpoint import has_module, load_checkpoint, require_finite, restore_module

    try:
        tensors, meta = load_checkpoint(init.path, require_run=True)
    except GantoolError as e:
        raise GantoolError(f"--init-from {e}") from None
    loads = [(getattr(run, part), part) for part in init.parts]  # (module here, its name in the checkpoint)
    ema_source = None
    if run.update.ema is not None and "generator" in init.parts:
        ema_source = "ema_generator" if has_module(tensors, "ema_generator") else "generator"
        loads.append((run.update.ema.model, ema_source))
    problems = [problem for module, name in loads for problem in mismatches(module, tensors, name)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise GantoolError(f"--init-from {init.path}: {problems[0]}{more}{hint(run, meta, init.parts)}")
    try:
        require_finite(tensors, init.path, tuple(f"{name}." for _, name in loads))
    except GantoolError as e:
        raise GantoolError(f"--init-from {e}") from None
    for module, name in loads:
        restore_module(module, tensors, name)
    record = {"path": str(init.path), "step": meta["step"], "parts": list(init.parts)}
    if run.is_main:
        ema_note = f"; the EMA starts from its {ema_source}" if ema_source else ""
        print(f"--init-from: {' and '.join(init.parts)} from {init.path} (step {meta['step']}){ema_note}; "
              "fresh optimizers, step 0", file=sys.stderr, flush=True)
    return record


def mismatches(module, tensors: dict, name: str) -> list[str]:
    """What keeps checkpoint tensors ``name.*`` from loading into ``module``: shapes first, then names."""
    prefix = f"{name}."
    there = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
    if not there:
        return [f"it holds no {name} weights"]
    here = module.state_dict()
    shapes = [f"{prefix}{k} is {tuple(there[k].shape)} there but {tuple(t.shape)} in this recipe"
              for k, t in here.items() if k in there and there[k].shape != t.shape]
    missing = [f"{prefix}{k} is in this recipe but not there" for k in here if k not in there]
    extra = [f"{prefix}{k} is there but not in this recipe" for k in there if k not in here]
    return shapes + missing + extra


def hint(run, meta: dict, parts: tuple[str, ...]) -> str:
    """Why the networks differ, when the metadata says: conditioning, image shape, component."""
    theirs, mine = meta["components"], run.components
    classes, own = int(theirs["dataset"].get("num_classes", 0)), run.plan.num_classes
    if classes != own:
        if not classes:
            return (f"; hint: the source run is unconditional and this recipe is class-conditional ({own} classes); "
                    "set [train] conditional = false to fine-tune it unconditionally")
        if not own:
            return (f"; hint: the source run is class-conditional ({classes} classes) and this recipe is not; "
                    "set [train] conditional = true (its dataset needs labels)")
        return (f"; hint: the source run has {classes} classes and this recipe's dataset {own}: the label "
                "embeddings cannot carry over")
    if theirs["dataset"]["image_shape"] != mine["dataset"]["image_shape"]:
        return (f"; hint: the source trained on images of shape {tuple(theirs['dataset']['image_shape'])}, this "
                f"recipe's dataset gives {tuple(mine['dataset']['image_shape'])}")
    for part in parts:
        name, own_name = theirs[part]["qualified_name"], mine[part]["qualified_name"]
        if name != own_name:
            return f"; hint: the source's {part} is {name}, this recipe's is {own_name}"
    return ""
