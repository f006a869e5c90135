"""NCHW against NHWC (channels_last) for one training step on this CPU, A/B in one process.

Both layouts train the same recipe from the same initial weights; rounds alternate the
order, and the median step time of each is reported with their ratio. The CPU's ISA as
PyTorch sees it (``torch.backends.cpu.get_cpu_capability()``) is printed with it, because
oneDNN picks different convolution kernels on AVX2 and AVX-512 machines.

    OMP_NUM_THREADS=2 python benchmarks/layout_ab.py                 # DCGAN-64, batch 64
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/layout_ab.py           # emulate an AVX2-only CPU
    python benchmarks/layout_ab.py --set dataset.image_size=28 --set dataset.channels=1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from gantool.plan import make_plan
from gantool.plugins import get_registry
from gantool.recipe import recipe_from_dict
from gantool.update import GANUpdate

RECIPE = {
    "run": {"name": "layout_ab", "seed": 0, "device": "cpu"},
    "dataset": {"type": "fake", "image_size": 64, "channels": 3, "size": 512},
    "generator": {"type": "dcgan", "base_channels": 64},
    "discriminator": {"type": "dcgan", "base_channels": 64},
    "loss": {"type": "bce"},
    "train": {"batch_size": 64, "epochs": 1000},
}


def updater(overrides: list[str], channels_last: bool):
    from gantool.recipe import apply_overrides

    data = apply_overrides(copy.deepcopy(RECIPE), {}, [*overrides, f"train.channels_last={str(channels_last).lower()}"])
    plan = make_plan(recipe_from_dict(data), get_registry())
    return GANUpdate(plan), plan.data.iterate(0)


def time_ab(variants: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each (update, batches) variant; rounds alternate the order."""
    times = {name: [] for name in variants}
    for name, (update, batches) in variants.items():  # warm-up: oneDNN primitive caches
        for step in range(2):
            update(batches, step, step)
    for r in range(rounds):
        for name in list(variants) if r % 2 == 0 else list(reversed(variants)):
            update, batches = variants[name]
            for _ in range(steps):
                t = time.perf_counter()
                update(batches, 0, 0)
                times[name].append(time.perf_counter() - t)
    return times


def report(times: dict[str, list[float]], args) -> dict[str, float]:
    """Print the machine, the settings and each variant's median step time; return the medians."""
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.steps} steps, overrides {args.overrides or 'none'}")
    med = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"  {name}: median {med[name] * 1000:.1f} ms/step (min {min(ms):.1f}, max {max(ms):.1f})")
    return med


def arguments(description: str, extra=None):
    """The shared options (rounds, steps, --set); ``extra(parser)`` adds a benchmark's own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    if extra is not None:
        extra(p)
    return p.parse_args()


def main():
    args = arguments(__doc__.splitlines()[0])
    layouts = {"NCHW": updater(args.overrides, False), "NHWC": updater(args.overrides, True)}
    med = report(time_ab(layouts, args.rounds, args.steps), args)
    print(f"  NCHW / NHWC step time: {med['NCHW'] / med['NHWC']:.3f} (> 1: channels_last is faster)")


if __name__ == "__main__":
    main()
