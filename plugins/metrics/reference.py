"""Images in, features out: the real reference set (cached) and the generated samples.

Real-data features depend only on (the dataset's images, the feature extractor, which
``n_real`` images were chosen), so they are computed once and cached: in memory for the
process (training evaluates every few hundred steps) and on disk as safetensors under
``$GANTOOL_CACHE_DIR/metrics`` (default ``~/.cache/gantool/metrics``), keyed by a digest of
all of that. A change of data, preprocessing, extractor weights or ``n_real`` is a new key.

Generated samples are drawn with the metric's own seeded ``torch.Generator`` (the global
RNG is never touched, so a resumed run stays bit-exact) and quantised to 8-bit levels, as
they would be when written to PNG, before they reach the extractor.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from pathlib import Path

import torch

from gantool.errors import GantoolError

CACHE_VERSION = "1"
# How real uint8 images become the [-1, 1] floats every extractor sees (gantool datasets' rule).
REAL_PREPROCESSING = "uint8 / 127.5 - 1"

_MEMORY: dict[str, dict[str, torch.Tensor]] = {}
_FINGERPRINTS: "weakref.WeakKeyDictionary[object, str]" = weakref.WeakKeyDictionary()
_warned_disk = False


def cache_dir() -> Path:
    root = os.environ.get("GANTOOL_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "metrics"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "gantool" / "metrics"


def clear_memory_cache() -> None:
    _MEMORY.clear()


# --- Which real images ------------------------------------------------------------------------


def dataset_fingerprint(dataset) -> str:
    """A digest naming the dataset's images as the metric sees them.

    In-memory datasets (``as_tensor()``) are identified by their pixels. Others may define
    ``fingerprint`` (a string or a method returning one); failing that, their class, length,
    image shape and simple public attributes (root, image_size, ...) stand in for the pixels.
    """
    try:
        if dataset in _FINGERPRINTS:
            return _FINGERPRINTS[dataset]
    except TypeError:  # unhashable / not weak-referenceable: compute every time
        pass
    own = getattr(dataset, "fingerprint", None)
    if callable(own):
        own = own()
    h = hashlib.blake2b(digest_size=16)
    if isinstance(own, str) and own:
        h.update(b"own:" + own.encode())
    else:
        data = dataset.as_tensor() if hasattr(dataset, "as_tensor") else None
        if data is not None:
            data = data.detach().cpu().contiguous()
            h.update(f"pixels:{data.dtype}:{tuple(data.shape)}:".encode())
            h.update(memoryview(data.view(torch.uint8).reshape(-1).numpy()))
        else:
            cls = type(dataset)
            attrs = {
                k: v for k, v in sorted(vars(dataset).items())
                if not k.startswith("_") and isinstance(v, str | int | float | bool | tuple | type(None))
            }
            desc = [f"{cls.__module__}.{cls.__qualname__}", len(dataset), list(getattr(dataset, "image_shape", ())), repr(attrs)]
            h.update(("attrs:" + json.dumps(desc, default=str)).encode())
    fp = h.hexdigest()
    try:
        _FINGERPRINTS[dataset] = fp
    except TypeError:
        pass
    return fp


def reference_indices(n_total: int, n_real: int, seed: int) -> tuple[torch.Tensor, str]:
    """The real images used: all of them, or a seeded random subset; and a description."""
    if n_real >= n_total:
        return torch.arange(n_total), f"all {n_total} dataset images"
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return perm[:n_real].sort().values, f"random {n_real} of {n_total} dataset images (seed {seed})"


def real_batches(dataset, indices: torch.Tensor, batch_size: int):
    """Yield the chosen real images as float [-1, 1] CPU batches."""
    data = dataset.as_tensor() if hasattr(dataset, "as_tensor") else None
    for i in range(0, len(indices), batch_size):
        idx = indices[i : i + batch_size]
        if data is not None:
            x = data[idx]
            yield x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
        else:
            yield torch.stack([torch.as_tensor(dataset[int(j)]) for j in idx]).float()


# --- Cache ------------------------------------------------------------------------------------


def _key(**parts) -> tuple[str, str]:
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32], text


def _load_disk(digest: str, text: str) -> dict[str, torch.Tensor] | None:
    path = cache_dir() / f"{digest}.safetensors"
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != text:
                return None
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed and rewritten
        return None


def _save_disk(digest: str, text: str, tensors: dict[str, torch.Tensor]) -> None:
    global _warned_disk
    from safetensors.torch import save_file

    path = cache_dir() / f"{digest}.safetensors"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"key": text})
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if not _warned_disk:
            warnings.warn(f"gantool metrics: cannot write cache {path} ({e}); set GANTOOL_CACHE_DIR", stacklevel=2)
            _warned_disk = True


def _cached(parts: dict, compute) -> dict[str, torch.Tensor]:
    digest, text = _key(**parts)
    if digest in _MEMORY:
        return _MEMORY[digest]
    value = _load_disk(digest, text)
    if value is None:
        value = compute()
        _save_disk(digest, text, value)
    _MEMORY[digest] = value
    return value


# --- Features ---------------------------------------------------------------------------------


def real_features(dataset, extractor, *, n_real: int, seed: int) -> tuple[torch.Tensor, dict]:
    """Features (N, D) float32 of the reference images, cached; and the protocol fields."""
    if len(dataset) < 2:
        raise GantoolError(f"metrics need at least 2 real images; the dataset has {len(dataset)}")
    indices, reference = reference_indices(len(dataset), n_real, seed)
    parts = dict(kind="features", dataset=dataset_fingerprint(dataset), preprocessing=REAL_PREPROCESSING,
                 features=extractor.id, n_real=len(indices), seed=seed)

    def compute():
        feats = [extractor.features(x).cpu() for x in real_batches(dataset, indices, extractor.batch_size)]
        return {"features": torch.cat(feats)}

    info = {"n_real": len(indices), "reference": reference, "reference_digest": parts["dataset"]}
    return _cached(parts, compute)["features"], info


def real_stats(dataset, extractor, *, n_real: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Mean and covariance (float64) of the reference features, cached like the features."""
    indices, reference = reference_indices(len(dataset), n_real, seed)
    parts = dict(kind="stats", dataset=dataset_fingerprint(dataset), preprocessing=REAL_PREPROCESSING,
                 features=extractor.id, n_real=len(indices), seed=seed)

    def compute():
        feats, _ = real_features(dataset, extractor, n_real=n_real, seed=seed)
        mu, sigma = mean_cov(feats)
        return {"mu": mu, "sigma": sigma}

    stats = _cached(parts, compute)
    return stats["mu"], stats["sigma"], {"n_real": len(indices), "reference": reference, "reference_digest": parts["dataset"]}


def mean_cov(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance in float64 (the precision FID needs)."""
    f = features.to(torch.float64)
    if len(f) < 2:
        raise GantoolError(f"a covariance needs at least 2 samples, got {len(f)}")
    return f.mean(0), torch.cov(f.T)


def fake_labels(generator, n: int) -> torch.Tensor | None:
    """Labels of ``n`` generated samples: sample i gets class i % K for a conditional generator.

    Deterministic and balanced (every class n // K or n // K + 1 times), so a score covers all
    classes alike and does not depend on a label RNG; ``None`` for an unconditional generator.
    """
    k = int(getattr(generator, "num_classes", 0) or 0)
    return torch.arange(n) % k if k > 0 else None


def fake_labels_protocol(generator) -> dict:
    """``{"fake_labels": ...}`` for a conditional generator's protocol; empty (protocol unchanged) otherwise."""
    k = int(getattr(generator, "num_classes", 0) or 0)
    return {"fake_labels": f"balanced over {k} classes"} if k > 0 else {}


def fake_batches(generator, n: int, *, seed: int, batch_size: int, device, with_labels: bool = False):
    """Yield ``n`` generated images in [-1, 1], quantised to 8-bit levels, on ``device``.

    Latents come from a CPU ``torch.Generator`` seeded with ``seed``, so every evaluation
    (and every device) uses the same latents and the global RNG is left alone. A conditional
    generator is called ``G(z, labels)`` with ``fake_labels`` (balanced); ``with_labels=True``
    yields ``(images, labels)``, labels int64 on the CPU (``None`` when unconditional).
    """
    g = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    labels = fake_labels(generator, n)
    for i in range(0, n, batch_size):
        z = generator.sample_latent(min(batch_size, n - i), generator=g)
        z = z.to(device, non_blocking=True)
        y = None if labels is None else labels[i : i + len(z)]
        x = (generator(z) if y is None else generator(z, y.to(device))).float()  # half-precision outputs too
        x = ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1.0
        yield (x, y) if with_labels else x


@torch.no_grad()
def fake_features(generator, extractor, n: int, *, seed: int, batch_size: int, device) -> torch.Tensor:
    return torch.cat([extractor.features(x).cpu() for x in fake_batches(
        generator, n, seed=seed, batch_size=batch_size, device=device)])
