"""What an augmentation adds to one training step, A/B in one process.

The same recipe is trained from the same weights without ``[augment]`` and with each
augmentation named on the command line (default: ``ada``, which recipes/dcgan_pokemon.toml
turns on), alternating the order every round; median step times and their ratios are
printed. ADA applies its ops to every image and keeps or drops each result with
``torch.where``, so its cost does not depend on its current probability p.

    OMP_NUM_THREADS=1 python benchmarks/augment_cost.py --set generator.base_channels=32 \\
        --set discriminator.base_channels=32                       # 64 px, batch 64
    python benchmarks/augment_cost.py --augment ada --augment diffaugment
"""

from __future__ import annotations

from layout_ab import arguments, report, time_ab, updater  # the same recipe, A/B timing and report


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: p.add_argument(
        "--augment", action="append", metavar="NAME", help="an augmentation type (repeatable; default ada)"))
    names = args.augment or ["ada"]
    variants = {"none": updater(args.overrides, True)}
    variants.update({name: updater([*args.overrides, f"augment.type={name}"], True) for name in names})
    med = report(time_ab(variants, args.rounds, args.steps), args)
    for name in names:
        print(f"  {name} / none step time: {med[name] / med['none']:.3f} (> 1: the augmentation costs that much)")


if __name__ == "__main__":
    main()
