"""Write a folder of N random-ish 64×64 JPEGs (ImageFolder layout) for the benchmarks.

    python benchmarks/make_jpeg_folder.py /tmp/gantool-bench/jpeg64 --n 2048
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_jpeg_folder  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("root")
p.add_argument("--n", type=int, default=2048)
p.add_argument("--size", type=int, default=64)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
print(make_jpeg_folder(a.root, a.n, size=a.size, seed=a.seed))
