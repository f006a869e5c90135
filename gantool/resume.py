"""What a resumed run may change, and how an allowed change is really applied.

A checkpoint stores the recipe it was trained with. On ``--resume`` the new recipe is
compared with it key by key. Budget and cadence keys (how long, how often to log,
sample, evaluate, checkpoint; where and how fast to run) may change freely. Keys that
change the training trajectory (models, loss, optimizers, schedules, data, batch, seed)
are refused unless named with ``--allow-change KEY``; then they are applied for real
(a new learning rate goes into the restored optimizer) and recorded in the run's
history, so ``recipe.toml`` and the checkpoint always say what was used.
"""

from __future__ import annotations

import math
import warnings

from gantool.errors import GantoolError

#: Keys (or tables, as "section.") a resume may change without asking.
FREE = (
    "train.epochs", "train.max_steps", "train.max_minutes", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.sample_grid", "train.keep_best", "train.num_workers", "train.amp",
    "train.compile", "train.channels_last", "train.cuda_graphs", "train.divergence", "run.device", "run.name", "eval.", "log.", "callbacks.",
)
#: Trajectory keys that cannot be applied to a run in progress, even when allowed.
FIXED = {"train.batch_size": "the data position is counted in batches of the old size; start a new run instead"}
_UNSET = object()


def flatten(table: dict, prefix: str = "") -> dict[str, object]:
    """{"a.b": value} for every leaf of a nested recipe dict (lists are leaves; an empty table has none)."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def recipe_changes(saved: dict, new: dict) -> dict[str, tuple]:
    """{key: (saved value, new value)} for every recipe key that differs (``_UNSET`` when absent)."""
    old, now = flatten(saved), flatten(new)
    return {k: (old.get(k, _UNSET), now.get(k, _UNSET)) for k in sorted(old.keys() | now.keys())
            if not _same(old.get(k, _UNSET), now.get(k, _UNSET))}


def is_free(key: str) -> bool:
    return any(key == f or (f.endswith(".") and key.startswith(f)) for f in FREE)


def show(value) -> str:
    return "unset" if value is _UNSET else repr(value)


def check_changes(diff: dict[str, tuple], allowed: list[str], where: str) -> dict[str, tuple]:
    """The trajectory changes to apply; refuses those not in ``allowed`` (a key or a table prefix)."""
    trajectory = {k: v for k, v in diff.items() if not is_free(k)}
    refused = {k: v for k, v in trajectory.items() if not any(k == a or k.startswith(f"{a}.") for a in allowed)}
    if refused:
        listed = ", ".join(f"{k} ({show(a)} -> {show(b)})" for k, (a, b) in list(refused.items())[:8])
        more = f" and {len(refused) - 8} more" if len(refused) > 8 else ""
        raise GantoolError(f"--resume: the recipe changes what {where} was trained with: {listed}{more}; "
                           f"resume with the run's own recipe ({where}/recipe.toml), or apply a change for real "
                           f"with --allow-change KEY")
    for key in trajectory:
        if key in FIXED:
            raise GantoolError(f"--allow-change {key}: cannot change on resume: {FIXED[key]}")
    unused = [a for a in allowed if not any(k == a or k.startswith(f"{a}.") for k in trajectory)]
    if unused:
        raise GantoolError(f"--allow-change {unused[0]}: the recipe does not change it (changed: "
                           f"{', '.join(trajectory) or 'nothing that needs --allow-change'})")
    return trajectory


def apply_optimizer_settings(optimizer, fresh_groups: list[dict], keys: list[str], scheduler=None):
    """Put the new recipe's values of ``keys`` (e.g. "lr", "betas") into a restored optimizer.

    The restored state (moments, step counts) stays; only the hyperparameters change. With a
    schedule, ``lr`` becomes the schedule's base and the current lr is recomputed from it.
    """
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        for key in keys:
            if key == "lr":  # the recipe's lr (a schedule may have scaled the fresh group's already)
                group["lr"] = group["initial_lr"] = fresh.get("initial_lr", fresh["lr"])
            elif key in fresh:
                group[key] = fresh[key]
    if scheduler is not None and "lr" in keys and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [group["lr"] for group in optimizer.param_groups]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # get_lr() outside step(): we want exactly that value
            lrs = scheduler.get_lr()
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
        scheduler._last_lr = list(lrs)
