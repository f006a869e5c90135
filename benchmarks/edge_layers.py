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

from torch import nn

from layout_ab import arguments, report, time_ab, updater  # the same recipe, A/B timing and report


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
    args = arguments(__doc__.splitlines()[0])
    variants = {"matmul": updater(args.overrides, True), "conv": updater(args.overrides, True)}
    as_convolutions(variants["conv"][0])
    med = report(time_ab(variants, args.rounds, args.steps), args)
    print(f"  conv / matmul step time: {med['conv'] / med['matmul']:.3f} (> 1: the matmul layers are faster)")


if __name__ == "__main__":
    main()
