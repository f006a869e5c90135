"""Evaluate a checkpoint after training: ``gantool eval``.

The generator (EMA when the checkpoint has one) and the real dataset are both rebuilt
from the checkpoint's stored recipe, so a score can be recomputed from the checkpoint
file alone. Metric parameters come from the recipe's ``[eval.<metric>]`` tables (the
protocol used during training) unless overridden with ``--set eval.<metric>.key=value``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import gantool
from gantool.errors import GantoolError
from gantool.recipe import parse_override


def apply_overrides(recipe: dict, overrides: list[str], source: Path) -> dict:
    """A copy of a stored recipe with ``dataset.key=value`` / ``eval.<metric>.key=value`` applied."""
    recipe = json.loads(json.dumps(recipe))  # deep copy of plain JSON data
    for item in overrides:
        keys, value = parse_override(item)
        if keys[0] == "dataset" and len(keys) == 2 and keys[1] != "type":
            recipe["dataset"][keys[1]] = value
        elif keys[0] == "eval" and len(keys) == 3:
            recipe.setdefault("eval", {}).setdefault(keys[1], {})[keys[2]] = value
        else:
            raise GantoolError(f"--set {item}: gantool eval overrides dataset.<key> (e.g. dataset.root=data/mnist) or eval.<metric>.<key> (e.g. eval.fid.features=digits)")
    return recipe


def dataset_from_recipe(recipe: dict, registry, source: Path):
    """The real dataset exactly as the run's recipe built it (``[dataset]`` table)."""
    params = dict(recipe["dataset"])
    name = params.pop("type")
    return registry.build("dataset", name, params, locate=lambda key: f"{source} (stored recipe): [dataset] {key}")


def evaluate_checkpoint(path: Path, registry, metrics: list[str], *, n: int | None, device: torch.device,
                        ema: bool | None = None, overrides: list[str] = ()) -> dict:
    """Compute each metric for the checkpoint's generator; a JSON-ready result."""
    from gantool.sampling import load_generator

    generator, meta, source = load_generator(path, registry, device, ema=ema)
    recipe = apply_overrides(meta["recipe"], list(overrides), path)
    eval_table = recipe.get("eval", {})
    names = list(metrics) or list(eval_table.get("metrics", []))
    if not names:
        raise GantoolError(f"{path}: no metric to compute; name one with --metric (see `gantool list metric`)")
    n = n or int(eval_table.get("n_samples", 1000))
    built = []  # validate every metric's parameters before the (slow) dataset and computation
    for name in names:
        try:
            component = registry.get("metric", name)
        except GantoolError as e:
            raise GantoolError(f"--metric {name}: {e}") from None
        params = eval_table.get(name, {}) if isinstance(eval_table.get(name), dict) else {}
        metric = registry.build("metric", component.qualified_name, params, locate=lambda k, m=name: f"{path} (stored recipe) / --set: [eval.{m}] {k}")
        built.append((name, component, params, metric))

    dataset = dataset_from_recipe(recipe, registry, path)
    expected = tuple(meta["components"]["dataset"]["image_shape"])
    if tuple(dataset.image_shape) != expected:
        raise GantoolError(f"{path}: the dataset now gives images of shape {tuple(dataset.image_shape)}, the generator was trained on {expected}; check the [dataset] settings")

    results, values = [], {}
    generator.eval()
    for name, component, params, metric in built:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = {k: float(v) for k, v in metric.compute(generator, dataset, n=n, device=device).items()}
        protocol = dict(getattr(metric, "protocol", None) or {})
        protocol.setdefault("n_fake", n)
        results.append({
            "metric": name, "qualified_name": component.qualified_name, "plugin": component.plugin, "version": component.version,
            "params": params, "values": out, "goals": {k: getattr(metric, "goals", {}).get(k, "min") for k in out},
            "protocol": protocol, "seconds": time.perf_counter() - t0,
        })
        values.update(out)
    return {
        "checkpoint": str(path), "step": meta.get("step"), "epoch": meta.get("epoch"), "generator": source,
        "components": meta.get("components"), "n": n, "device": str(device), "dataset": recipe["dataset"],
        "gantool_version": gantool.__version__, "values": values, "metrics": results,
    }


def default_json_path(path: Path, run_dir: Path | None) -> Path:
    """RUN/eval.json (RUN/eval_best.json for best.safetensors), else <checkpoint>.eval.json beside it."""
    if run_dir is not None and path.parent == run_dir / "checkpoints" and path.stem in ("last", "best"):
        return run_dir / ("eval_best.json" if path.stem == "best" else "eval.json")
    return path.with_name(f"{path.stem}.eval.json")


def write_json(result: dict, out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
