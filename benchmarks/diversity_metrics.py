#!/usr/bin/env python
"""prdc / duplicates / memorisation: the figures in docs/metrics.md, and prdc against its reference package.

1. If the ``prdc`` package (Naeem et al.'s reference code, ``pip install prdc``; not a gantool
   dependency) is importable, ``diversity.prdc`` is compared with ``prdc.compute_prdc`` on the same
   features: Gaussians, digit features of mnist5k, random features of colour shapes.
2. Healthy vs collapsed, on colour 32 px shapes (the test's generator, random features) and on
   mnist5k (digit features, and random features): the first N images are the training set, the
   "generators" replay held-out real images, 4 training images repeated, half held-out and half
   4 repeated images, or the training images themselves. n = N generated images, n_real = N.

    OMP_NUM_THREADS=2 python benchmarks/diversity_metrics.py [--n 2500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_diversity_metrics import Images, Replay, as_float, shapes  # one data recipe for tests and figures

from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics.diversity import PRDC, Duplicates, Memorisation, prdc

KEYS = ["precision", "recall", "density", "coverage", "duplicates", "duplicates_real", "support_size",
        "support_size_real", "memorisation_copies", "memorisation_median", "memorisation_copies_real",
        "memorisation_median_real"]


def fmt(values) -> str:
    return ", ".join(f"{float(values[key]):.4f}" for key in ("precision", "recall", "density", "coverage"))


def crosscheck(digits, colour, n):
    try:
        from prdc import compute_prdc
    except ImportError:
        print("prdc package not installed: cross-check skipped (pip install prdc)")
        return
    g = torch.Generator().manual_seed(0)
    digit_ext, random_ext = feats.get_extractor("digits"), feats.get_extractor("random")
    cases = {
        "gaussians 1000 vs 1000, d = 64": (torch.randn(1000, 64, generator=g),
                                           torch.randn(1000, 64, generator=g) * 1.2 + 0.1),
        f"mnist5k digit features {n} vs {n}": (digit_ext.features(as_float(digits[:n])),
                                               digit_ext.features(as_float(digits[n : 2 * n]))),
        f"shapes random features {n} vs {n}": (random_ext.features(as_float(colour[:n])),
                                               random_ext.features(as_float(colour[n : 2 * n]))),
    }
    print("| case | k | gantool (precision, recall, density, coverage) | prdc package | max abs diff |")
    print("|---|---|---|---|---|")
    for name, (real, fake) in cases.items():
        for k in (1, 5):
            ours = prdc(real, fake, k)
            ref = compute_prdc(real_features=real.double().numpy(), fake_features=fake.double().numpy(), nearest_k=k)
            diff = max(abs(ours[key] - float(ref[key])) for key in ours)
            print(f"| {name} | {k} | {fmt(ours)} | {fmt(ref)} | {diff:.1e} |")


def figures(name, images, n, features):
    train, held = images[:n], images[n : 2 * n]
    half = torch.cat([held[: n // 2], train[:4].repeat((n - n // 2 + 3) // 4, 1, 1, 1)[: n - n // 2]])
    half = half[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    generators = {"held-out real images": held, "4 training images repeated": train[:4],
                  "half held-out, half 4 repeated": half, "the training images (copies)": train}
    print(f"\n{name}, features = {features!r}, n = n_real = {n}")
    print("| generator | " + " | ".join(KEYS) + " | wall seconds |")
    print("|---" * (len(KEYS) + 2) + "|")
    for label, gen_images in generators.items():
        row, seconds = {}, {}
        for metric in (PRDC(features=features, n_real=n), Duplicates(features=features, n_real=n),
                       Memorisation(features=features, n_real=n)):
            t = time.perf_counter()
            row.update(metric.compute(Replay(as_float(gen_images)), Images(train), n=n, device="cpu"))
            seconds[metric.name] = time.perf_counter() - t
            space = metric.protocol["features"]
        cells = " | ".join(f"{row[k]:.0f}" if k.startswith("support") else f"{row[k]:.3f}" for k in KEYS)
        times = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
        print(f"| {label} | {cells} | {times} |  ({space})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2500)
    args = parser.parse_args()
    from gantool_plugins.datasets.mnist5k import MNIST5k

    digits = MNIST5k().as_tensor()
    colour = shapes(2 * args.n)
    crosscheck(digits, colour, min(args.n, 2500))
    figures("colour shapes 32 px", colour, args.n, "auto")
    figures("mnist5k", digits, args.n, "auto")
    figures("mnist5k", digits, args.n, "random")


if __name__ == "__main__":
    main()
