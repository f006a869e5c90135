"""Images out of a checkpoint: sample grids, individual PNGs and latent-space walks.

Everything here needs only the checkpoint file: the generator is rebuilt from the
metadata the engine stores in it (``generator_from_checkpoint``), so a run folder
whose recipe was deleted or moved still samples. Latents are drawn on the CPU from a
seeded ``torch.Generator``, so ``--seed S`` gives the same images on any device.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import torch
from torchvision.utils import save_image

from gantool.errors import GantoolError

BATCH = 256  # images per forward pass
MAX_SEEDS = 10_000  # images of one --seeds request (also seeds x classes in a per-class grid)
MAX_SEED = 2**64 - 1  # what torch.Generator.manual_seed accepts
MAX_REDRAWS = 20_000  # --truncation: redraw rounds before a tiny PSI is refused


def resolve_checkpoint(target: Path, *, best: bool = False) -> tuple[Path, Path | None]:
    """(checkpoint file, run directory or None) for ``RUN_OR_CHECKPOINT``.

    A run directory means its ``checkpoints/last.safetensors`` (``best.safetensors`` with
    ``best``); a file is used as is, and belongs to a run when it sits in ``RUN/checkpoints/``.
    """
    target = Path(target)
    try:
        is_dir, exists = target.is_dir(), target.exists()
    except OSError as e:  # a name too long for the file system, a permission problem
        raise GantoolError(f"{target}: {e.strerror}; pass a run directory or a .safetensors checkpoint") from None
    if is_dir:
        which = "best" if best else "last"
        path = target / "checkpoints" / f"{which}.safetensors"
        if not path.is_file():
            if best:
                raise GantoolError(f"{path}: not found; best.safetensors is written only when the recipe sets train.keep_best (drop --best to use last.safetensors)")
            raise GantoolError(f"{path}: not found; is {target} a gantool run directory? (pass a run directory or a .safetensors checkpoint)")
        return path, target
    if not exists:
        raise GantoolError(f"{target}: no such run directory or checkpoint file")
    if best:
        raise GantoolError(f"--best picks checkpoints/best.safetensors of a run directory; {target} is a file, pass the run directory instead")
    run_dir = target.parent.parent if target.parent.name == "checkpoints" else None
    return target, run_dir


def has_ema(path: Path) -> bool:
    """Whether a checkpoint holds an EMA generator (reads only the safetensors header)."""
    from gantool.checkpoint import has_module, tensor_names

    return has_module(tensor_names(path), "ema_generator")  # a bounded read: a bad file is one clear error


def load_generator(path: Path, registry, device: torch.device, *, ema: bool | None = None):
    """(generator in eval mode, checkpoint metadata, "ema_generator" | "generator").

    ``ema=None`` uses the EMA generator when the checkpoint has one; ``True`` requires it.
    """
    available = has_ema(path)
    if ema and not available:
        raise GantoolError(f"{path}: --ema asked for the EMA generator but this checkpoint has none (train with train.ema_decay, e.g. 0.999); use --no-ema")
    use_ema = available if ema is None else ema
    generator, meta = generator_from_checkpoint(path, registry, device, ema=use_ema)
    return generator, meta, "ema_generator" if use_ema else "generator"


def generator_from_checkpoint(path: Path, registry, device="cpu", *, ema: bool = True):
    """(generator, metadata) rebuilt from a checkpoint's metadata alone: no recipe file needed.

    The metadata is schema-checked and the weights must be finite. Before the real build
    the generator is built on the meta device: it must fit the memory limit and be about
    the size of the weights the file holds, so a small file whose metadata claims a huge
    model is refused instead of allocated (gantool/limits.py).
    """
    from gantool import limits
    from gantool.checkpoint import has_module, load_checkpoint, require_finite, restore_module

    tensors, meta = load_checkpoint(path, require_run=True)
    params = dict(meta["recipe"]["generator"])
    params.pop("type")
    component = meta["components"]["generator"]
    name = component["qualified_name"]
    shape = tuple(meta["components"]["dataset"]["image_shape"])
    num_classes = meta["components"]["dataset"].get("num_classes", 0)  # > 0: a class-conditional run
    try:
        factory = registry.get("generator", name)
    except GantoolError:
        raise GantoolError(f"{path}: generator {name!r} is not installed; "
                           f"install the plugin {component['plugin']!r}") from None
    source = "ema_generator" if ema and has_module(tensors, "ema_generator") else "generator"
    require_finite(tensors, path, (f"{source}.",))

    def build():
        return registry.build("generator", name, params, locate=lambda k: f"{path}: [generator] {k}",
                              image_shape=shape, num_classes=num_classes)

    estimate = limits.estimate_bytes(build, load=factory.load)
    stored = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith(f"{source}."))
    if estimate is not None and estimate > 2 * stored + (1 << 20):
        raise GantoolError(f"{path}: its metadata describes a generator of {limits.format_bytes(estimate)}, but the "
                           f"file holds {limits.format_bytes(stored)} of {source} weights; the metadata does not "
                           "match the weights (a damaged or edited checkpoint)")
    limits.check_model_memory(estimate, f"{path}: generator {name}", "use a machine with more memory")
    generator = limits.reported(build, f"{path}: generator {name} (from the checkpoint's metadata)")()
    try:
        restore_module(generator, tensors, source)
    except GantoolError as e:
        raise GantoolError(f"{path}: {e}") from None
    return generator.to(device).eval(), meta


def seeded_latents(generator, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """``n`` latents from the generator's own ``sample_latent``, drawn on the CPU from ``seed``.

    With ``truncation`` (psi) every component outside [-psi, psi] is redrawn from the same
    seeded stream until inside (``truncate``), so the result is still a function of the seed.
    """
    rng = torch.Generator().manual_seed(seed)
    z = _latents(generator, n, rng)
    return z if truncation is None else truncate(generator, z, truncation, rng)


def _latents(generator, n: int, rng: torch.Generator) -> torch.Tensor:
    z = generator.sample_latent(n, device="cpu", generator=rng)
    if not torch.is_tensor(z):
        raise GantoolError(f"{type(generator).__name__}.sample_latent returned {type(z).__name__}; "
                           "gantool sample needs a tensor latent")
    return z


def check_truncation(psi: float) -> float:
    """``--truncation`` must be a finite number > 0 (nan, inf, 0 and negatives are refused)."""
    if not (math.isfinite(psi) and psi > 0):
        raise GantoolError(f"--truncation {psi:g}: must be a finite number > 0, e.g. 0.5 (BigGAN used 0.04 to 2; "
                           "smaller trades variety for typical, cleaner images)")
    return psi


def truncate(generator, z: torch.Tensor, psi: float, rng: torch.Generator) -> torch.Tensor:
    """The truncation trick of BigGAN (Brock et al. 2019): every component of ``z`` with
    |value| > psi is replaced by a fresh draw from the generator's own prior, again until inside.

    Each round redraws only the latents that still have a component outside, from ``rng``,
    so the result depends only on the seed and ``n``. For a N(0, I) prior the kept values
    follow N(0, 1) truncated to [-psi, psi], the distribution BigGAN samples from.
    """
    z = z.clone()
    outside = z.abs() > psi
    for _ in range(MAX_REDRAWS):
        rows = outside.flatten(1).any(1).nonzero().flatten()
        if len(rows) == 0:
            return z
        fresh = _latents(generator, len(rows), rng)
        take = outside[rows] & (fresh.abs() <= psi)
        z[rows] = torch.where(take, fresh, z[rows])
        outside[rows] &= ~take
    raise GantoolError(f"--truncation {psi:g}: after {MAX_REDRAWS:,} redraws some latent components are still "
                       f"outside [-{psi:g}, {psi:g}]; this generator's prior rarely falls that close to 0, "
                       "use a larger value (e.g. 0.1)")


def parse_seeds(text: str) -> list[int]:
    """The seeds of ``--seeds`` ("1-16", "3,5,9-12"): ascending, each once, at most ``MAX_SEEDS``."""
    seeds: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part)
        if match is None:
            raise GantoolError(f"--seeds {text}: {part.strip()!r} is not a seed or a range of seeds; "
                               "write e.g. --seeds 1-16 or --seeds 3,5,9-12 (integers >= 0)")
        if max(len(match[1]), len(match[2] or "")) > 20:  # before int(): Python refuses > 4,300 digits
            raise GantoolError(f"--seeds {text}: a seed is over the largest one, 2**64-1 = {MAX_SEED}")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if high < low:
            raise GantoolError(f"--seeds {text}: the range {low}-{high} runs backwards; write {high}-{low}")
        if high > MAX_SEED:
            raise GantoolError(f"--seeds {text}: {high} is over the largest seed, 2**64-1 = {MAX_SEED}")
        if high - low + 1 > MAX_SEEDS:  # checked before the range is made
            raise GantoolError(f"--seeds {text}: more than {MAX_SEEDS:,} seeds; ask for fewer at a time")
        seeds.update(range(low, high + 1))
        if len(seeds) > MAX_SEEDS:
            raise GantoolError(f"--seeds {text}: more than {MAX_SEEDS:,} seeds; ask for fewer at a time")
    return sorted(seeds)


def seeds_label(seeds: list[int], sep: str = "_") -> str:
    """Seeds written short, for a file name or a message: "1-16", "3_5_9-12", or "3to9000_n57" when long."""
    runs = []
    for _, group in itertools.groupby(enumerate(seeds), key=lambda pair: pair[1] - pair[0]):  # consecutive runs
        block = [seed for _, seed in group]
        runs.append(str(block[0]) if len(block) == 1 else f"{block[0]}-{block[-1]}")
    label = sep.join(runs)
    return label if len(label) <= 40 else f"{seeds[0]}to{seeds[-1]}_n{len(seeds)}"


def per_seed_latents(generator, seeds: list[int], truncation: float | None = None) -> torch.Tensor:
    """One latent per seed, each drawn from its seed alone: the image for seed s is the one
    ``--seed s --n 1`` gives, whatever other seeds are asked with it."""
    return torch.cat([seeded_latents(generator, 1, seed, truncation) for seed in seeds])


def picked_latents(generator, n: int, seed: int, seeds: list[int] | None, truncation: float | None) -> torch.Tensor:
    """``gantool sample``'s latents: one per seed of ``seeds`` (--seeds), else ``n`` drawn from ``seed``."""
    if seeds:
        return per_seed_latents(generator, seeds, truncation)
    return seeded_latents(generator, n, seed, truncation)


@torch.no_grad()
def generate(generator, z: torch.Tensor, device: torch.device, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Images in [-1, 1] (float32, CPU) for latents ``z`` (and class ``labels``), in batches of ``BATCH``."""
    parts = []
    for i in range(0, len(z), BATCH):
        args = [z[i : i + BATCH].to(device, non_blocking=True)]
        if labels is not None:
            args.append(labels[i : i + BATCH].to(device, non_blocking=True))
        parts.append(generator(*args).float().cpu())
    return torch.cat(parts)


def class_names(meta: dict) -> list[str]:
    """The class names a checkpoint's generator was trained on; [] for an unconditional one."""
    dataset = meta["components"]["dataset"]
    k = int(dataset.get("num_classes", 0))
    names = dataset.get("class_names") or [str(i) for i in range(k)]
    return [str(n) for n in names][:k]


def resolve_class(value: str, names: list[str], path: Path) -> int:
    """A class index from ``--class``: a class name (folder datasets) or an index."""
    if not names:
        raise GantoolError(f"--class {value}: {path} holds an unconditional generator "
                           "(train with [train] conditional = true to sample by class)")
    if value in names:
        return names.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(names):
        return int(value)
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    raise GantoolError(f"--class {value}: not a class of {path}; use an index 0-{len(names) - 1} or a name: {shown}")


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents, over each latent flattened to a vector.

    ``z0``, ``z1``: (R, ...) endpoint pairs of any latent shape; ``t``: (T,) in [0, 1].
    Returns (R, T, ...). Follows White (2016), "Sampling Generative Networks": with
    omega the angle between z0 and z1, ``z(t) = sin((1-t) omega)/sin(omega) z0 +
    sin(t omega)/sin(omega) z1``: the path follows the great circle, so when |z0| = |z1|
    every point keeps that norm, where a straight line would pass through the
    low-density centre of a Gaussian. Computed in float64; z(0) = z0 and z(1) = z1
    exactly. (Almost) parallel endpoints fall back to linear interpolation.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"slerp endpoints differ in shape: {tuple(z0.shape)} vs {tuple(z1.shape)}")
    shape, rows = z0.shape[1:], z0.shape[0]
    a, b = z0.reshape(rows, -1).double(), z1.reshape(rows, -1).double()
    t = t.double().view(1, -1, 1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
    omega = cos.clamp(-1.0, 1.0).acos().view(-1, 1, 1)
    sin = omega.sin()
    spherical = sin.abs() > 1e-6
    safe = torch.where(spherical, sin, torch.ones_like(sin))
    w0 = torch.where(spherical, ((1.0 - t) * omega).sin() / safe, 1.0 - t)
    w1 = torch.where(spherical, (t * omega).sin() / safe, t)
    out = w0 * a.unsqueeze(1) + w1 * b.unsqueeze(1)  # (R, T, D)
    return out.to(z0.dtype).reshape(rows, t.shape[1], *shape)


def interpolation_latents(generator, rows: int, steps: int, seed: int,
                          truncation: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents (rows*steps, ...), start latents (rows, ...), end latents (rows, ...)).

    Row ``r`` walks from ``start[r]`` to ``end[r]`` in ``steps`` points, both ends included.
    With ``truncation`` the ends are truncated latents (the points between follow the slerp).
    """
    if steps < 2:
        raise GantoolError(f"--steps {steps}: an interpolation needs at least 2 steps (its two ends)")
    z = seeded_latents(generator, 2 * rows, seed, truncation)
    start, end = z[:rows], z[rows:]
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    t[0], t[-1] = 0.0, 1.0
    walk = slerp(start, end, t)
    return walk.reshape(rows * steps, *z.shape[1:]), start, end


def class_grid(generator, num_classes: int, n: int, seed: torch.Generator):
    """(latents, labels, columns) of a grid with one row per class and about ``n`` images.

    Each class gets ``max(1, n // num_classes)`` columns, and every row uses the same
    latents, so a column shows one latent across all classes (the style stays, the class changes).
    """
    columns = max(1, n // num_classes)
    latents, labels = class_rows(generator.sample_latent(columns, generator=seed), num_classes)
    return latents, labels, columns


def class_rows(z: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, labels) for a grid with one row per class and one column per latent of ``z``."""
    labels = torch.arange(num_classes).repeat_interleave(len(z))
    return z.repeat(num_classes, *[1] * (z.dim() - 1)), labels


def default_output(run_dir: Path | None, name: str) -> Path:
    return (run_dir / "samples" / name) if run_dir is not None else Path(name)


def save_grid(images: torch.Tensor, path: Path, *, nrow: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, normalize=True, value_range=(-1, 1))


def save_individual(images: torch.Tensor, folder: Path, names: list[str] | None = None) -> list[Path]:
    """Each image as ``folder/sample_NNNN.png``, or under ``names`` (e.g. seed0007.png) when given."""
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(4, len(str(len(images) - 1)))
    paths = []
    for i, image in enumerate(images):
        path = folder / (names[i] if names is not None else f"sample_{i:0{digits}d}.png")
        save_image(image, path, normalize=True, value_range=(-1, 1))
        paths.append(path)
    return paths


def grid_columns(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def seed_file_names(seeds: list[int], classes: int = 0) -> list[str]:
    """``--individual`` names for ``--seeds``: seed0007.png, or seed0007_class3.png in a per-class grid
    (rows are classes, so class c, seed s is image c * len(seeds) + s's index)."""
    digits = max(4, len(str(seeds[-1])))
    if not classes:
        return [f"seed{s:0{digits}d}.png" for s in seeds]
    return [f"seed{s:0{digits}d}_class{c}.png" for c in range(classes) for s in seeds]
