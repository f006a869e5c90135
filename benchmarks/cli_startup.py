"""Wall time of the CLI commands that must stay fast, and whether they import torch.

For each of ``gantool --help``, ``gantool list`` and ``gantool plugins`` this runs the
installed console script (the one next to this interpreter) as a fresh subprocess
``--repeats`` times and reports the median and best wall time. ``python -c "import
torch"`` is timed the same way for scale. Then each command runs once more under
``python -X importtime -m gantool ...``; the report says whether ``torch`` (or
torchvision, numpy) appeared among the imported modules and the three slowest
top-level imports.

    python benchmarks/cli_startup.py --repeats 7
    python benchmarks/cli_startup.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [["--help"], ["list"], ["plugins"]]
HEAVY = ("torch", "torchvision", "numpy", "safetensors", "PIL")


def gantool_cmd() -> list[str]:
    script = Path(sys.executable).parent / "gantool"
    if script.exists():
        return [str(script)]
    found = shutil.which("gantool")
    return [found] if found else [sys.executable, "-m", "gantool"]


def time_cmd(cmd: list[str], repeats: int, env) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.decode()}")
    return times


def import_profile(args: list[str], env) -> dict:
    """Parse ``-X importtime`` output: which heavy packages load, slowest top-level imports."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "gantool", *args],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    loaded: set[str] = set()
    top: list[tuple[int, str]] = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        cumulative = int(parts[1])
        raw = parts[2]
        name = raw.strip()
        loaded.add(name.split(".")[0])
        depth = (len(raw) - len(raw.lstrip()) - 1) // 2  # each nesting level adds 2 spaces
        if depth <= 1:
            top.append((cumulative, name))
    top.sort(reverse=True)
    return {
        "heavy_imported": sorted(h for h in HEAVY if h in loaded),
        "torch_imported": "torch" in loaded,
        "slowest_top_level_ms": [(n, round(us / 1000, 1)) for us, n in top[:3]],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    env = dict(os.environ, NO_COLOR="1")

    rows = []
    base = gantool_cmd()
    for args in COMMANDS:
        times = time_cmd(base + args, a.repeats, env)
        prof = import_profile(args, env)
        rows.append({"command": "gantool " + " ".join(args), "median_s": statistics.median(times),
                     "best_s": min(times), **prof})
    torch_times = time_cmd([sys.executable, "-c", "import torch"], a.repeats, env)
    py_times = time_cmd([sys.executable, "-c", "pass"], a.repeats, env)
    result = {"rows": rows, "import_torch_median_s": statistics.median(torch_times),
              "python_bare_median_s": statistics.median(py_times), "repeats": a.repeats,
              "load_average": os.getloadavg()}
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'command':<18} {'median s':>9} {'best s':>8}  torch?  slowest top-level imports (ms)")
    for r in rows:
        slow = ", ".join(f"{n} {ms}" for n, ms in r["slowest_top_level_ms"])
        print(f"{r['command']:<18} {r['median_s']:>9.3f} {r['best_s']:>8.3f}  "
              f"{'YES' if r['torch_imported'] else 'no':<6}  {slow}")
    print(f"{'python -c pass':<18} {result['python_bare_median_s']:>9.3f}")
    print(f"{'import torch':<18} {result['import_torch_median_s']:>9.3f}")
    print(f"(median of {a.repeats} fresh subprocesses each; load average "
          f"{' '.join(f'{x:.2f}' for x in result['load_average'])})")
    if any(r["torch_imported"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
