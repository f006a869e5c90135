"""Training curves: ``gantool plot RUN_DIR`` renders metrics.jsonl to one PNG.

Panels: the two losses; the statistics the loss logs in pairs (D(x) and D(G(z)), the
discriminator's mean probability on real and generated batches, for BCE losses; mean
raw scores for hinge, WGAN and relativistic losses); one panel per other logged
statistic (gp, r1, an augmentation's p); then one per evaluation key (fid, ...). Needs matplotlib (``pip install 'gantool[plot]'``); drawn with the
object-oriented API (``matplotlib.figure.Figure``), so no GUI backend or pyplot state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gantool.errors import GantoolError

BOOKKEEPING = ("step", "epoch", "images_per_s", "time_s")
PAIRS = {"discriminator outputs": ("d_real", "d_fake"), "discriminator scores": ("score_real", "score_fake")}
LABELS = {"loss_d": "loss_D", "loss_g": "loss_G", "d_real": "D(x)", "d_fake": "D(G(z))"}


def read_metrics(path: Path) -> tuple[list[dict], dict[str, list[tuple[int, float]]], int]:
    """(training records by step, {eval key: [(step, value)]}, number of unreadable lines).

    A resumed run may log a step twice (it restarts from its last checkpoint); the later
    line wins. A line cut short by a crash is skipped and counted.
    """
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise GantoolError(f"{path}: not found; is {path.parent} a gantool run directory (gantool run ... --out DIR)?") from None
    training: dict[int, dict] = {}
    evals: dict[str, dict[int, float]] = {}
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if "loss_d" in record:  # a training record; evaluations are the other lines
            training[step] = record
            continue
        for key, value in record.items():
            if key not in BOOKKEEPING and isinstance(value, (int, float)) and not isinstance(value, bool):
                evals.setdefault(key, {})[step] = float(value)
    ordered = [training[s] for s in sorted(training)]
    return ordered, {k: sorted(v.items()) for k, v in evals.items()}, bad


def best_record(run_dir: Path) -> dict | None:
    """``{"key", "value", "step"}`` of checkpoints/best.safetensors, read from its header only."""
    path = run_dir / "checkpoints" / "best.safetensors"
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return json.loads(header["__metadata__"]["gantool"]).get("best")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plot_run(run_dir: Path, out: Path | None = None) -> tuple[Path, list[str], int]:
    """Write the curves of ``run_dir``; returns (png path, panel titles, unreadable lines)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise GantoolError("gantool plot needs matplotlib, which is not installed; pip install 'gantool[plot]'") from None

    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise GantoolError(f"{run_dir}: gantool plot takes a run directory (the folder holding metrics.jsonl)")
    training, evals, bad = read_metrics(run_dir / "metrics.jsonl")
    if not training and not evals:
        raise GantoolError(f"{run_dir / 'metrics.jsonl'}: no records to plot yet")

    panels = []
    if training:
        keys = [k for k in dict.fromkeys(k for r in training for k in r) if k not in BOOKKEEPING]
        groups = {"losses": ("loss_d", "loss_g"), **{t: pair for t, pair in PAIRS.items() if set(pair) <= set(keys)}}
        grouped = {k for pair in groups.values() for k in pair}
        groups.update({k: (k,) for k in keys if k not in grouped})
        for title, members in groups.items():
            series = []
            for key in members:
                points = [(r["step"], r[key]) for r in training if isinstance(r.get(key), (int, float))]
                series.append((LABELS.get(key, key), [s for s, _ in points], [v for _, v in points]))
            panels.append((title, series))
    for key, points in evals.items():
        panels.append((key, [(key, [s for s, _ in points], [v for _, v in points])]))

    best = best_record(run_dir)
    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(6 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, series) in zip(axes, panels):
        for label, xs, ys in series:
            ax.plot(xs, ys, label=label, marker="o" if len(xs) <= 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
        if title == "discriminator outputs":
            ax.set_ylim(-0.02, 1.02)
        if best and title == best.get("key"):
            ax.plot([best["step"]], [best["value"]], marker="*", markersize=14, color="tab:red", linestyle="none", label="best.safetensors")
            ax.legend()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(run_dir.name)
    out = Path(out) if out else run_dir / "metrics.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out, [title for title, _ in panels], bad
