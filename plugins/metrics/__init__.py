"""Built-in metrics: FID, KID, digit-class coverage, nearest-neighbour diversity and memorisation, the
checkerboard-artifact score and two conditional ones.

Registration only (lazy factory strings, so ``gantool list`` imports no torch). The
feature extractors live in ``features.py``, the cached real-data side in ``reference.py``;
docs/metrics.md describes each metric's protocol.
"""

import gantool


@gantool.hookimpl
def gantool_register_components(registry):
    registry.add("metric", "fid", "gantool_plugins.metrics.distances:FID",
                 summary="Fréchet distance of real vs generated features (digits classifier or Inception)")
    registry.add("metric", "kid", "gantool_plugins.metrics.distances:KID",
                 summary="Kernel Inception Distance: unbiased polynomial-kernel MMD² over subsets")
    registry.add("metric", "class_coverage", "gantool_plugins.metrics.coverage:ClassCoverage",
                 summary="Mode coverage of digits: class histogram of samples (classes, KL to uniform, confidence)")
    registry.add("metric", "coverage", "gantool_plugins.metrics.coverage:Coverage",
                 summary="Deprecated: renamed class_coverage (coverage will mean Naeem et al.'s, see prdc)")
    registry.add("metric", "prdc", "gantool_plugins.metrics.diversity:PRDC",
                 summary="Precision, recall, density, coverage: k-NN balls of real vs generated features, any data")
    registry.add("metric", "duplicates", "gantool_plugins.metrics.diversity:Duplicates",
                 summary="Birthday-paradox test: near-duplicate rate of samples vs real images, support size")
    registry.add("metric", "memorisation", "gantool_plugins.metrics.diversity:Memorisation",
                 summary="Copies of training images: nearest-training-image distance vs real-vs-real distances")
    registry.add("metric", "checkerboard", "gantool_plugins.metrics.checkerboard:Checkerboard",
                 summary="Checkerboard artifact score: Nyquist-bin power of generated vs real images (dB)")
    registry.add("metric", "conditional_accuracy", "gantool_plugins.metrics.conditional:ConditionalAccuracy",
                 summary="Conditional digits: share of samples the digit classifier reads as the requested class")
    registry.add("metric", "intra_fid", "gantool_plugins.metrics.conditional:IntraFID",
                 summary="Intra-class FID: FID per class of samples vs that class's real images (mean, worst)")
