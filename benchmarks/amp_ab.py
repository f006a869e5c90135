"""bf16 autocast against fp32 for one training step on this CPU, in both layouts, A/B in one process.

What `amp = "auto"` measures at start-up on a CPU with bf16 instructions (autotune.py),
here with more steps and rounds: the same recipe and initial weights in the four
combinations of amp (off, bf16) and layout (NHWC, NCHW), the order alternating each
round, median step times and their ratios to fp32 NHWC (the rule's choice). Without
AVX512-BF16 or AMX, oneDNN emulates bf16, which shows as a ratio well below 1.

    OMP_NUM_THREADS=2 python benchmarks/amp_ab.py                        # DCGAN-64, batch 64
    python benchmarks/amp_ab.py --set dataset.image_size=28 --set dataset.channels=1 --set train.batch_size=128
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/amp_ab.py --rounds 2       # bf16 without its instructions
"""

from __future__ import annotations

# The same recipe, A/B timing and report as layout_ab.py.
from layout_ab import arguments, report, time_ab, updater

from gantool import autotune


def main():
    args = arguments(__doc__.splitlines()[0])
    variants = {f"{amp}/{name}": updater([*args.overrides, f"train.amp={amp}"], nhwc)
                for amp in ("off", "bf16") for name, nhwc in (("NHWC", True), ("NCHW", False))}
    print(f"oneDNN bf16 instructions here (autotune.cpu_bf16): {autotune.cpu_bf16()}")
    med = report(time_ab(variants, args.rounds, args.steps), args)
    for name, seconds in med.items():
        print(f"  {name}: {med['off/NHWC'] / seconds:.2f}x the speed of off/NHWC")


if __name__ == "__main__":
    main()
