#!/usr/bin/env python
"""Quality baseline: train a recipe with ``gantool run``, then score the final generator.

For each variant (the recipe plus ``--set`` overrides; ``--variant`` may be repeated), the
recipe is trained in a fresh ``gantool run`` process (its wall time and CPU time are
measured, imports, data loading, sample grids and checkpoints included; CPU time is the
steadier number on a shared machine), then the final checkpoint
(``last.safetensors``; its EMA generator when the recipe keeps one) is scored with

- ``fid``  (digits features, all 5,000 mnist5k digits as reference, n generated),
- ``kid``  (digits features, 100 subsets of 1,000),
- ``class_coverage`` (classes >= 1 %, KL to uniform, mean max-softmax).

A real-vs-real line gives the floor: the same metrics between two disjoint halves of
mnist5k (2,500 digits each), i.e. what a perfect generator would score at that sample size.

    OMP_NUM_THREADS=2 python benchmarks/quality.py
    python benchmarks/quality.py --variant "ema=train.ema_decay=0.999" --variant "base="
    python benchmarks/quality.py --recipe recipes/hinge_mnist5k.toml --threads 2 --json q.jsonl

A variant is ``LABEL=KEY=VALUE[,KEY=VALUE...]`` (``LABEL=`` for the recipe as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["fid", "kid", "class_coverage"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, _, sets = text.partition("=")
    return label or "recipe", [s for s in sets.split(",") if s]


def train(recipe: Path, sets: list[str], out: Path, threads: int) -> tuple[float, float]:
    """Run ``gantool run``; returns (wall seconds, CPU seconds of the process: user + system)."""
    cmd = [sys.executable, "-m", "gantool", "run", str(recipe), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"gantool run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, cpu


def score(checkpoint: Path, n: int) -> dict:
    import torch

    from gantool.evaluation import evaluate_checkpoint
    from gantool.plugins import get_registry

    t0 = time.perf_counter()
    result = evaluate_checkpoint(checkpoint, get_registry(), METRICS, n=n, device=torch.device("cpu"))
    return {**result["values"], "eval_s": time.perf_counter() - t0, "generator": result["generator"],
            "protocol": {m["metric"]: m["protocol"] for m in result["metrics"]}}


def real_floor(n_half: int = 2500) -> dict:
    """The metrics between two disjoint halves of mnist5k: a perfect generator's score."""
    import torch

    import gantool
    from gantool_plugins.datasets.mnist5k import MNIST5k
    from gantool_plugins.metrics.coverage import ClassCoverage
    from gantool_plugins.metrics.distances import FID, KID

    digits = MNIST5k().as_tensor()

    class Replay(gantool.Generator):
        def __init__(self, images):
            super().__init__()
            self.images, self.latent_dim, self.pos = images.float() / 127.5 - 1, 1, 0

        def forward(self, z):
            out = self.images[self.pos : self.pos + len(z)]
            self.pos += len(z)
            return out

    class Half(gantool.Dataset):
        def __init__(self, u8):
            self.u8, self.image_shape = u8, tuple(u8.shape[1:])

        def as_tensor(self):
            return self.u8

        def __len__(self):
            return len(self.u8)

    a, b = digits[:n_half], digits[n_half : 2 * n_half]
    out = {}
    for metric in (FID(), KID(), ClassCoverage()):
        out.update(metric.compute(Replay(b), Half(a), n=n_half, device=torch.device("cpu")))
    return out


def row(label, r, wall=None, cpu=None, steps=None):
    kid = f"{r['kid'] * 1e3:.2f} ± {r['kid_std'] * 1e3:.2f}"
    times = f"{wall:.0f} | {cpu:.0f}" if wall else "- | -"
    return (f"| {label} | {steps if steps is not None else '-'} | {times} | {r['fid']:.2f} | {kid} | "
            f"{r['class_coverage_classes']:.0f} | {r['class_coverage_kl']:.3f} | "
            f"{r['class_coverage_confidence']:.3f} |")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "dcgan_mnist5k.toml")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=KEY=VALUE,...",
                    help="recipe overrides to compare (repeatable; default: the recipe as it is)")
    ap.add_argument("--n", type=int, default=5000, help="generated images per metric")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--runs", type=Path, help="keep run directories here (default: a temporary directory)")
    ap.add_argument("--json", type=Path, help="append one JSON line per variant")
    ap.add_argument("--no-floor", action="store_true", help="skip the real-vs-real line")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    variants = [parse_variant(v) for v in args.variant] or [("recipe", [])]
    header = ("| variant | steps | train wall s | train CPU s | FID (digits) | KID ×10³ | classes | KL to uniform | confidence |\n"
              "|---|---|---|---|---|---|---|---|---|")
    lines = []
    commit = git_commit()
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or Path(tmp)
        for label, sets in variants:
            out = runs / label
            print(f"[{label}] gantool run {args.recipe.name} {' '.join('--set ' + s for s in sets)}", flush=True)
            wall, cpu = train(args.recipe, sets, out, args.threads)
            summary = json.loads((out / "summary.json").read_text())
            r = score(out / "checkpoints" / "last.safetensors", args.n)
            lines.append(row(label, r, wall, cpu, summary["steps"]))
            print(lines[-1], f"(scored in {r['eval_s']:.0f}s, weights: {r['generator']})", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"variant": label, "recipe": str(args.recipe), "set": sets, "train_wall_s": wall, "train_cpu_s": cpu,
                                        "steps": summary["steps"], "threads": args.threads, "n": args.n, "commit": commit, **r}) + "\n")
    if not args.no_floor:
        floor = real_floor()
        lines.append(row("real vs real (2,500 / 2,500)", floor))
    print()
    print(f"{args.recipe.name}, {args.threads} threads, n = {args.n} generated images, torch {torch.__version__}, "
          f"gantool commit {commit}")
    print(header)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
