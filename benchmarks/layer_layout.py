"""Which convolution layers run faster in NCHW and which in NHWC on this CPU, one by one.

`layout_ab.py` compares whole steps. This times every convolution of G and D alone, on
its real input shape, forward then backward (weight gradients, and input gradients
where the step needs them: everywhere but G's first layer), in both layouts, A/B in one
process with the order alternating each round. A layer that runs faster in NCHW would
only pay off in a mixed layout if its gain beat the cost of converting its input and
output, so that cost (two `contiguous` copies, forward and backward) is timed too.

    OMP_NUM_THREADS=2 python benchmarks/layer_layout.py                 # DCGAN-64, batch 64
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/layer_layout.py           # emulate an AVX2-only CPU
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from _common import conv_calls
from layout_ab import RECIPE, arguments
from torch import nn

from gantool.plan import make_plan
from gantool.plugins import get_registry
from gantool.recipe import apply_overrides, recipe_from_dict

NHWC = torch.channels_last


def conv_inputs(overrides: list[str]) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, layer, input shape) of every convolution of G and D, in the order they run."""
    plan = make_plan(recipe_from_dict(apply_overrides(copy.deepcopy(RECIPE), {}, overrides)), get_registry())
    generator, batch = plan.generator, plan.data.local_batch
    examples = {"G": (generator, generator.sample_latent(batch)),
                "D": (plan.discriminator, torch.zeros(batch, *generator.image_shape))}
    return [(f"{tag} {name}", layer, in_shape)
            for tag, (model, example) in examples.items()
            for name, layer, in_shape, _ in conv_calls(model, example)]


def timed(run, repeats: int) -> float:
    """Median seconds of ``run()``."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def alternating_medians(runners: dict, rounds: int, calls: int) -> dict[str, float]:
    """Median ms of each runner over ``rounds`` rounds of ``calls``, the order reversed every other round."""
    times = {label: [] for label in runners}
    for r in range(rounds):
        for label in list(runners) if r % 2 == 0 else list(reversed(runners)):
            times[label].append(timed(runners[label], calls))
    return {label: statistics.median(values) * 1000 for label, values in times.items()}


def layer_runner(layer: nn.Module, shape, layout, input_grad: bool):
    layer = copy.deepcopy(layer).to(memory_format=layout)
    x = torch.randn(shape).contiguous(memory_format=layout).requires_grad_(input_grad)
    with torch.no_grad():
        grad = torch.randn_like(layer(x))

    def run():
        layer(x).backward(grad)
        layer.zero_grad(set_to_none=True)
        x.grad = None
    return run, grad.shape


def conversion_runner(in_shape, out_shape):
    """NHWC -> NCHW of the input and NCHW -> NHWC of the output, and both back for the gradients."""
    x = torch.randn(in_shape).contiguous(memory_format=NHWC)
    y = torch.randn(out_shape)

    def run():
        x.contiguous().contiguous(memory_format=NHWC)
        y.contiguous(memory_format=NHWC).contiguous()
    return run


def start(description: str):
    """Parse the shared options, seed, and say which CPU path and settings the figures are for."""
    args = arguments(description)
    torch.manual_seed(0)
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.steps} calls, overrides {args.overrides or 'none'}")
    return args


def main():
    args = start(__doc__.splitlines()[0])
    print(f"{'layer':<34} {'input':>18} {'NCHW ms':>8} {'NHWC ms':>8} {'NCHW/NHWC':>9} {'convert ms':>10}")
    totals = {"NCHW": 0.0, "NHWC": 0.0}
    for index, (name, layer, shape) in enumerate(conv_inputs([*args.overrides, "train.channels_last=false"])):
        input_grad = index > 0  # G's first layer takes the latent, which needs no gradient
        runners = {}
        for label, layout in (("NCHW", torch.contiguous_format), ("NHWC", NHWC)):
            runners[label], out_shape = layer_runner(layer, shape, layout, input_grad)
            runners[label]()  # warm up oneDNN's primitive cache
        ms = alternating_medians(runners, args.rounds, args.steps)
        convert = timed(conversion_runner(shape, out_shape), args.rounds * args.steps) * 1000
        for label in totals:
            totals[label] += ms[label]
        print(f"{name:<34} {tuple(shape[1:])!s:>18} {ms['NCHW']:8.1f} {ms['NHWC']:8.1f} "
              f"{ms['NCHW'] / ms['NHWC']:9.2f} {convert:10.1f}")
    print(f"{'all layers':<34} {'':>18} {totals['NCHW']:8.1f} {totals['NHWC']:8.1f} "
          f"{totals['NCHW'] / totals['NHWC']:9.2f}")


if __name__ == "__main__":
    main()
