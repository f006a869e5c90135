"""G's first and D's last layer as matrix products against oneDNN's convolutions, A/B in one process.

``LatentProjection`` (1x1 latent -> start map) and ``ScoreHead`` (a kernel as large as its
input) compute the same functions as the transposed convolution and the convolution they
subclass. This trains the same recipe twice from the same weights, once with the matmul
layers and once with their classes set back to the plain convolutions, alternating the
order every round, and compares median step times.

    OMP_NUM_THREADS=2 python benchmarks/edge_layers.py                # DCGAN-64, batch 64
    python benchmarks/edge_layers.py --set dataset.image_size=28 --set dataset.channels=1 \\
        --set train.batch_size=32 --set generator.base_channels=32 --set discriminator.base_channels=32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from layout_ab import updater  # the same recipe and GANUpdate construction


def as_convolutions(update):
    """Turn the matmul layers of ``update``'s networks back into the convolutions they subclass."""
    from gantool_plugins.dcgan.models import LatentProjection, ScoreHead

    changed = 0
    for net in (update.G.module, update.D.module):
        for module in net.modules():
            if isinstance(module, LatentProjection):
                module.__class__, changed = nn.ConvTranspose2d, changed + 1
            elif isinstance(module, ScoreHead):
                module.__class__, changed = nn.Conv2d, changed + 1
    assert changed >= 2, "no matmul layers found"
    return update


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    variants = {"matmul": updater(args.overrides, True), "conv": updater(args.overrides, True)}
    as_convolutions(variants["conv"][0])
    times = {name: [] for name in variants}
    for name, (update, batches) in variants.items():  # warm-up: oneDNN primitive caches
        for step in range(2):
            update(batches, step, step)
    for r in range(args.rounds):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            update, batches = variants[name]
            for _ in range(args.steps):
                t = time.perf_counter()
                update(batches, 0, 0)
                times[name].append(time.perf_counter() - t)
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.steps} steps, overrides {args.overrides or 'none'}")
    med = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"  {name}: median {med[name] * 1000:.1f} ms/step (min {min(ms):.1f}, max {max(ms):.1f})")
    print(f"  conv / matmul step time: {med['conv'] / med['matmul']:.3f} (> 1: the matmul layers are faster)")


if __name__ == "__main__":
    main()
