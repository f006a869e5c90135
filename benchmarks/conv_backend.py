"""Is oneDNN the fastest convolution backend on this CPU? Each layer against im2col + MKL sgemm.

With ``torch.backends.mkldnn`` disabled, ATen runs a CPU convolution as im2col (or its
transpose) and an MKL matrix product. This times every convolution of DCGAN-64 alone on its
real input shape, forward then backward, three ways in one process with the order
alternating each round: oneDNN in NCHW, oneDNN in NHWC, and the sgemm path in NCHW.
Written for issue 12's AVX2 lead, which needs faster convolutions than oneDNN's.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=2 python benchmarks/conv_backend.py
"""

from __future__ import annotations

import torch
from layer_layout import NHWC, alternating_medians, conv_inputs, layer_runner, start

BACKENDS = {"oneDNN NCHW": (torch.contiguous_format, True), "oneDNN NHWC": (NHWC, True),
            "sgemm NCHW": (torch.contiguous_format, False)}


def backend_runner(layer, shape, layout, onednn: bool, input_grad: bool):
    run, _ = layer_runner(layer, shape, layout, input_grad)

    def in_backend():
        with torch.backends.mkldnn.flags(enabled=onednn):
            run()
    in_backend()  # warm up: oneDNN's primitive cache, MKL's buffers
    return in_backend


def main():
    args = start(__doc__.splitlines()[0])
    print(f"{'layer':<14} {'input':>14} " + " ".join(f"{name:>12}" for name in BACKENDS) + "  (median ms)")
    totals = dict.fromkeys(BACKENDS, 0.0)
    for index, (name, layer, shape) in enumerate(conv_inputs([*args.overrides, "train.channels_last=false"])):
        runners = {label: backend_runner(layer, shape, layout, onednn, input_grad=index > 0)
                   for label, (layout, onednn) in BACKENDS.items()}
        ms = alternating_medians(runners, args.rounds, args.steps)
        for label in totals:
            totals[label] += ms[label]
        print(f"{name:<14} {tuple(shape[1:])!s:>14} " + " ".join(f"{ms[label]:12.1f}" for label in BACKENDS))
    print(f"{'all layers':<14} {'':>14} " + " ".join(f"{totals[label]:12.1f}" for label in BACKENDS))


if __name__ == "__main__":
    main()
