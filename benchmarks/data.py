"""Data loading speed: gantool's decode-once fast path vs the usual torchvision pipeline.

    .venv/bin/python benchmarks/data.py [--n 5000] [--src-size 64] [--image-size 64]

Generates a folder of N JPEGs (smooth random colour fields plus noise, so they
compress like photos, not like flat colour), then measures images/s of:

* gantool ``imagefolder``, cold cache: decode + resize every file in a thread pool
  into one uint8 tensor, write the safetensors cache (what the first run pays);
* gantool ``imagefolder``, warm cache: load that tensor (every later run);
* gantool in-memory epoch: what the engine does per batch afterwards (shuffled index,
  uint8 -> float [-1, 1]);
* torchvision ``ImageFolder`` + ``DataLoader`` the pytorch/examples way (Resize,
  CenterCrop, ToTensor, Normalize; 2 workers; batch 128, shuffled), one epoch; it pays
  this every epoch.

Results depend on the machine and its load: the script prints the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_folder(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``root/class0/00000.jpg`` ... (torchvision's ImageFolder needs one class folder)."""
    folder = root / "class0"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def epoch_in_memory(images: torch.Tensor, batch: int) -> float:
    """Seconds for one shuffled epoch of float batches, as the engine draws them."""
    t0 = time.perf_counter()
    perm = torch.randperm(len(images))
    for start in range(0, len(images) - batch + 1, batch):
        x = images.index_select(0, perm[start : start + batch]).float().div_(127.5).sub_(1.0)
    del x
    return time.perf_counter() - t0


def epoch_torchvision(root: Path, image_size: int, batch: int, workers: int) -> tuple[float, int]:
    import torchvision
    from torchvision import transforms

    dataset = torchvision.datasets.ImageFolder(
        str(root),
        transform=transforms.Compose([
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]),
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    t0 = time.perf_counter()
    n = sum(len(x) for x, _ in loader)  # includes starting the worker processes, as every epoch does
    return time.perf_counter() - t0, n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="number of JPEGs")
    parser.add_argument("--src-size", type=int, default=64, help="side of the generated JPEGs")
    parser.add_argument("--image-size", type=int, default=64, help="side the pipelines produce")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision pipeline")
    parser.add_argument("--repeat", type=int, default=3, help="take the best of this many runs of each")
    args = parser.parse_args()

    from gantool_plugins.datasets.folders import ImageFolder

    work = Path(tempfile.mkdtemp(prefix="gantool-bench-"))
    os.environ["GANTOOL_CACHE_DIR"] = str(work / "cache")
    try:
        t0 = time.perf_counter()
        root = make_folder(work / "images", args.n, args.src_size)
        print(f"generated {args.n} JPEGs of {args.src_size}x{args.src_size} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        load_before = os.getloadavg()
        rows = []

        def best(fn):
            return min(fn() for _ in range(args.repeat))

        def cold():
            shutil.rmtree(work / "cache", ignore_errors=True)
            t = time.perf_counter()
            ImageFolder(root=str(root), image_size=args.image_size).as_tensor()
            return time.perf_counter() - t

        def warm():
            t = time.perf_counter()
            ImageFolder(root=str(root), image_size=args.image_size).as_tensor()
            return time.perf_counter() - t

        for threads in ("1", None):
            if threads:
                os.environ["GANTOOL_DECODE_THREADS"] = threads
            else:
                os.environ.pop("GANTOOL_DECODE_THREADS", None)
            from gantool_plugins.datasets.files import decode_threads

            rows.append((f"gantool imagefolder, cold cache ({decode_threads()} decode threads)", best(cold), args.n))
        if args.src_size >= 2 * args.image_size:  # show what JPEG draft decoding (decode.py) buys
            from PIL import JpegImagePlugin

            draft = JpegImagePlugin.JpegImageFile.draft
            JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None
            try:
                rows.append((f"gantool imagefolder, cold cache, JPEG draft off ({decode_threads()} threads)", best(cold), args.n))
            finally:
                JpegImagePlugin.JpegImageFile.draft = draft
        rows.append(("gantool imagefolder, warm cache (safetensors)", best(warm), args.n))
        images = ImageFolder(root=str(root), image_size=args.image_size).as_tensor()
        steps = args.n // args.batch
        rows.append((f"gantool in-memory epoch (batch {args.batch}, to float)", best(lambda: epoch_in_memory(images, args.batch)), steps * args.batch))
        tv = [epoch_torchvision(root, args.image_size, args.batch, args.workers) for _ in range(args.repeat)]
        rows.append((f"torchvision ImageFolder + DataLoader ({args.workers} workers), one epoch", min(t for t, _ in tv), tv[0][1]))
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.n} JPEGs {args.src_size}x{args.src_size} -> {args.image_size}x{args.image_size}, best of {args.repeat}; "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / {load_after[0]:.2f} after\n")
    print(f"| {'pipeline':<62} | {'seconds':>8} | {'images/s':>9} |")
    print(f"|{'-' * 64}|{'-' * 9}:|{'-' * 10}:|")
    for name, seconds, n in rows:
        print(f"| {name:<62} | {seconds:8.2f} | {n / seconds:9.0f} |")


if __name__ == "__main__":
    main()
