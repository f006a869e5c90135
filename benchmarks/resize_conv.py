"""upsample_conv's resize + convolution as one transposed convolution, against running them in turn, A/B in one process.

``resize_conv`` computes ``conv(nearest_x2(x))`` as one stride-2 transposed convolution with
a kernel made from the convolution's weights (plugins/upsample_conv/models.py). This trains
the same recipe twice from the same weights, once as shipped and once with G's layers run
one after the other (nn.Upsample, then the convolution over the enlarged map), alternating
the order every round, and compares median step times (D is the same in both). The same
recipe with the ``dcgan`` generator, at the same widths, is timed alongside for scale.

    OMP_NUM_THREADS=2 python benchmarks/resize_conv.py               # 64 px, width 64, batch 64
    python benchmarks/resize_conv.py --set dataset.image_size=32 \\
        --set generator.base_channels=32 --set discriminator.base_channels=32
    python benchmarks/resize_conv.py --kernel-size 5    # upsample_conv's 5x5 kernels (dcgan unchanged)
"""

from __future__ import annotations

from layout_ab import arguments, report, time_ab, updater  # the same recipe, A/B timing and report


def one_layer_at_a_time(update):
    """Make ``update``'s generator run its resize and convolution layers separately again."""
    from gantool_plugins.upsample_conv.models import ConditionalBatchNorm2d, LabelledSequential

    class OneByOne(LabelledSequential):
        def forward(self, x, labels=None):
            for layer in self:
                x = layer(x, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
            return x

    net = update.G.module.net
    assert isinstance(net, LabelledSequential), "not an upsample_conv generator"
    net.__class__ = OneByOne
    return update


def main():
    args = arguments(__doc__.splitlines()[0], extra=lambda p: p.add_argument(
        "--kernel-size", type=int, default=3, help="upsample_conv's kernel_size (default 3)"))
    overrides = ["generator.type=upsample_conv", f"generator.kernel_size={args.kernel_size}", *args.overrides]
    variants = {"fused": updater(overrides, True), "separate": updater(overrides, True),
                "dcgan": updater([*args.overrides, "generator.type=dcgan"], True)}
    one_layer_at_a_time(variants["separate"][0])
    args.overrides = overrides
    med = report(time_ab(variants, args.rounds, args.steps), args)
    print(f"  separate / fused step time: {med['separate'] / med['fused']:.3f} (> 1: the fused layers are faster)")
    print(f"  fused / dcgan step time: {med['fused'] / med['dcgan']:.3f}, separate / dcgan: "
          f"{med['separate'] / med['dcgan']:.3f} (upsample_conv's cost against dcgan's at the same widths)")


if __name__ == "__main__":
    main()
