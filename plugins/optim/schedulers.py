"""Learning-rate schedule factories: ``factory(optimizer=..., total_steps=..., **recipe_table)``.

The engine calls ``step()`` once after every generator step and stores ``state_dict()``
as JSON in the checkpoint. Every schedule is a ``LambdaLR`` over a closed-form function
of the step: its state is plain numbers (LambdaLR stores ``None`` for a function), and
the lr after a resume depends only on ``base_lrs`` and ``last_epoch``, never on the
order in which the engine restores optimizer and scheduler, nor on rounding accumulated
by a chained (multiplicative) schedule.
"""

from __future__ import annotations

import math
from typing import Annotated

from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from gantool import ParamError, Range


def constant(optimizer, total_steps: int) -> LRScheduler:
    """Keep the optimizer's learning rate for the whole run (what a recipe without a schedule does)."""
    return LambdaLR(optimizer, lambda step: 1.0)


def linear(optimizer, total_steps: int, *, start_step: Annotated[int, Range(ge=0)] = 0) -> LRScheduler:
    """Keep lr, then decay it linearly to 0 at ``total_steps`` (pix2pix, Isola et al. 2017; BigGAN, Brock et al. 2019).

    Args:
        start_step: Generator step where the decay begins (0 = decay over the whole run);
            at or past the end of the run the lr stays constant.
    """
    span = max(total_steps - start_step, 1)
    return LambdaLR(optimizer, lambda step: min(1.0, max(0.0, (total_steps - step) / span)))


def cosine(optimizer, total_steps: int, *, min_lr: Annotated[float, Range(ge=0)] = 0.0) -> LRScheduler:
    """Cosine decay from lr to ``min_lr`` over the run (SGDR without restarts, Loshchilov & Hutter 2017).

    Args:
        min_lr: Learning rate reached at the last step (absolute, not a factor); at most the optimizer's lr.
    """
    bases = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    if not math.isfinite(min_lr) or any(min_lr > base for base in bases):
        raise ParamError("min_lr", f"must be at most the optimizer's lr ({min(bases):g}), got {min_lr!r}")
    span = max(total_steps, 1)

    def schedule(base):
        floor = min_lr / base if base else 1.0
        return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, span) / span))

    return LambdaLR(optimizer, [schedule(base) for base in bases])


def warmup(
    optimizer,
    total_steps: int,
    *,
    warmup_steps: Annotated[int, Range(ge=1)] = 1000,
    start_factor: Annotated[float, Range(ge=0, le=1)] = 0.01,
) -> LRScheduler:
    """Linear warm-up to lr, then constant: steadies Adam's early moment estimates (Goyal et al. 2017).

    Args:
        warmup_steps: Generator steps to reach the full lr (may exceed the run: then lr never gets there).
        start_factor: Fraction of lr at the first step.
    """
    return LambdaLR(
        optimizer, lambda step: 1.0 if step >= warmup_steps else start_factor + (1 - start_factor) * step / warmup_steps
    )
