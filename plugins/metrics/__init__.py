"""Built-in metrics: FID, KID, mode coverage and the checkerboard-artifact score.

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
    registry.add("metric", "coverage", "gantool_plugins.metrics.coverage:Coverage",
                 summary="Mode coverage: digit-class histogram of samples (classes, KL to uniform, confidence)")
    registry.add("metric", "checkerboard", "gantool_plugins.metrics.checkerboard:Checkerboard",
                 summary="Checkerboard artifact score: Nyquist-bin power of generated vs real images (dB)")
