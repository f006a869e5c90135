"""Do two gantool installations train the same weights? Bit for bit, on CPU.

Trains the tiny test recipe (mnist5k at 16 px, 8 steps) with each ``gantool`` executable
for a few loss/optimizer settings and compares the final checkpoints tensor by tensor.
Used to show an engine change keeps results: e.g. the previous commit installed in its
own venv (``pip install --no-deps .`` from a worktree) against this checkout.

    python benchmarks/same_weights.py --a /tmp/oldvenv/bin/gantool --b .venv/bin/gantool
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import TINY_RECIPE  # noqa: E402

SETTINGS = {
    "bce": [],
    "wgan_gp, 2 critic steps, layer norm": ["loss.type=wgan_gp", "train.d_steps_per_g=2", "discriminator.norm=layer"],
    "hinge + R1, EMA, dropout": ["loss.type=hinge", "loss.r1_gamma=1.0", "train.ema_decay=0.99", "discriminator.dropout=0.3"],
}


def train(exe: str, recipe: Path, out: Path, overrides: list[str]) -> Path:
    cmd = [exe, "run", str(recipe), "--out", str(out)] + [a for o in overrides for a in ("--set", o)]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    return out / "checkpoints" / "last.safetensors"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="a gantool executable")
    p.add_argument("--b", required=True, help="another gantool executable")
    a = p.parse_args(argv)
    import torch
    from safetensors.torch import load_file

    work = Path(tempfile.mkdtemp(prefix="gantool-same-"))
    recipe = work / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    failed = False
    for name, overrides in SETTINGS.items():
        ta = load_file(train(a.a, recipe, work / f"{len(name)}a", overrides))
        tb = load_file(train(a.b, recipe, work / f"{len(name)}b", overrides))
        differ = sorted(set(ta) ^ set(tb)) + [k for k in ta if k in tb and not torch.equal(ta[k], tb[k])]
        failed |= bool(differ)
        print(f"{name:<40} {len(ta)} tensors: {'identical' if not differ else 'DIFFER: ' + ', '.join(differ[:5])}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
