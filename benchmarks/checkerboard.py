"""Checkerboard benchmark: DCGAN (transposed convs) vs upsample+conv, same budget, mnist5k.

For each recipe (by default ``recipes/dcgan_mnist5k.toml`` and
``recipes/upsample_conv_mnist5k.toml``, which extends it and only swaps the generator,
so data, widths, optimiser, seed and number of steps are identical):

1. build the generator exactly as the run will (same seed) and score it at
   initialisation;
2. train it with gantool's engine (``gantool.engine.run``), timing the wall clock; the
   engine also scores the generator every ``--eval-every`` steps (1,000 images), which
   gives the curve over training;
3. rebuild the generator from the run's ``checkpoints/last.safetensors`` alone and score
   the samples it produces (independent of the training process);
4. score the same number of real mnist5k digits.

All scores are the ``checkerboard`` metric (plugins/metrics/checkerboard.py): mean power
of the Nyquist and period-4 spectrum bins over their neighbourhood, in dB; ~0 dB for
real digits, higher = more periodic up-sampling artifacts. Prints Markdown tables.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/checkerboard.py            # demo budget
    .venv/bin/python benchmarks/checkerboard.py --set train.epochs=1 --n 500  # quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPES = [ROOT / "recipes" / "dcgan_mnist5k.toml", ROOT / "recipes" / "upsample_conv_mnist5k.toml"]


def score(generator, dataset, *, n: int, seed: int) -> dict[str, float]:
    from gantool_plugins.metrics.checkerboard import Checkerboard

    generator.eval()
    with torch.no_grad():
        return Checkerboard(seed=seed).compute(generator, dataset, n=n, device="cpu")


def bench(recipe_path: Path, overrides: list[str], *, n: int, seed: int, out: Path, eval_every: int) -> dict:
    from gantool.engine import run
    from gantool.plan import make_plan
    from gantool.plugins import get_registry
    from gantool.recipe import load_recipe
    from gantool.sampling import generator_from_checkpoint

    registry = get_registry()
    # The same in-training evaluation for both (it is included in the wall time).
    curve = ['eval.metrics=["checkerboard"]', f"eval.every={eval_every}", "eval.n_samples=1000"]
    recipe = load_recipe(recipe_path, [*curve, *overrides] if eval_every else ["eval.metrics=[]", *overrides])

    components = make_plan(recipe, registry)  # the run's own initial weights (same seed)
    at_init = score(components.generator.cpu(), components.dataset, n=n, seed=seed)

    run_dir = out / recipe_path.stem
    start = time.perf_counter()
    summary = run(recipe, registry, out_dir=run_dir)
    wall = time.perf_counter() - start

    trained, _ = generator_from_checkpoint(run_dir / "checkpoints" / "last.safetensors", registry)
    after = score(trained, components.dataset, n=n, seed=seed)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    during = {r["step"]: r["checkerboard_fake_db"] for r in lines if "checkerboard_fake_db" in r}
    return {
        "curve": during,
        "recipe": recipe_path.name,
        "generator": recipe.component("generator")[0],
        "steps": summary["steps"],
        "epochs": summary["epochs"],
        "init_db": at_init["checkerboard_fake_db"],
        "trained_db": after["checkerboard_fake_db"],
        "real_db": after["checkerboard_real_db"],
        "wall_s": wall,
        "samples": str(run_dir / "samples" / "final.png"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", type=Path, default=DEFAULT_RECIPES)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override applied to every recipe, e.g. train.epochs=2")
    parser.add_argument("--n", type=int, default=2000, help="images per score (generated and real)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the metric's latents and real-image choice")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--eval-every", type=int, default=78,
                        help="steps between in-training scores (78 = one mnist5k epoch at batch 64; 0 = none)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        rows = [bench(path, args.overrides, n=args.n, seed=args.seed, out=out, eval_every=args.eval_every)
                for path in args.recipes]

    print(f"\ncheckerboard score, dB (n = {args.n} images each; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()})\n")
    print("| generator | steps | at init | after training | real data | wall time |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['generator']}` ({r['recipe']}) | {r['steps']} | {r['init_db']:+.1f} | {r['trained_db']:+.1f} "
              f"| {r['real_db']:+.1f} | {r['wall_s']:.0f} s |")
    steps = sorted({step for r in rows for step in r["curve"]})
    if steps:
        print("\nduring training (engine evaluation, 1,000 images, dB):\n")
        print("| step | " + " | ".join(f"`{r['generator']}`" for r in rows) + " |")
        print("|---:|" + "---:|" * len(rows))
        for step in steps:
            print(f"| {step} | " + " | ".join(f"{r['curve'][step]:+.1f}" if step in r["curve"] else "" for r in rows) + " |")
    if args.out:
        print("\nsample grids: " + ", ".join(r["samples"] for r in rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
