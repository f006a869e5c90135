"""benchmarks/gpu_speed.py, the command issue 12 is checked with, runs every row end to end.

On a CPU with a tiny model: what this catches is a row that fails (a changed engine
argument, a missing import), not a speed. The figures themselves are measured on a GPU.
"""

import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_speed

ROWS = ["examples-2w", "examples-8w", "plain-bf16-cl", "plain-fp32", "gantool", "gantool-eager", "gantool-amp-off"]


def test_every_row_of_the_gpu_benchmark_runs_and_reports(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_speed.py"), "--device", "cpu", "--steps", "1",
           "--warmup", "1", "--images", "32", "--width", "8", "--batch", "16", "--big-batch", "0", "--no-compile",
           "--peak-tflops", "1,1",
           "--work", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
             for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| loop")}
    assert list(table) == ROWS, proc.stdout
    for loop, (batch, precision, rate, share, _memory) in table.items():
        assert batch == "16" and not precision.startswith("failed"), (loop, precision)
        assert float(rate.replace(",", "")) > 0 and share.endswith("%"), (loop, rate, share)
    # What the gantool rows trained with comes from their checkpoints: amp/layout, resolved.
    assert re.fullmatch(r"(bf16|fp16|off)/(NHWC|NCHW)", table["gantool"][1]), table["gantool"]
    assert table["gantool-amp-off"][1].startswith("off/")
    assert "DCGAN-64 width 8" in proc.stdout


def test_the_benchmark_plans_the_issues_rows_with_the_compiled_ones_last():
    args = SimpleNamespace(batch=64, big_batch=256, compile=True)
    assert gpu_speed.planned_rows(args) == [(name, 64) for name in ROWS] + [
        ("plain-bf16-cl", 256), ("gantool", 256), ("plain-fp32-compile", 64), ("gantool-compile", 64)]
    args = SimpleNamespace(batch=16, big_batch=0, compile=False)
    assert gpu_speed.planned_rows(args) == [(name, 16) for name in ROWS]


def test_a_row_in_a_child_is_stopped_when_the_budget_is_spent():
    started = time.perf_counter()
    with pytest.raises(gpu_speed.OverBudget, match="not finished in the 1 s left of --budget"):
        gpu_speed.in_child([sys.executable, "-c", "import time; time.sleep(30)"], 1)
    assert time.perf_counter() - started < 20
    with pytest.raises(RuntimeError, match="ValueError: no"):
        gpu_speed.in_child([sys.executable, "-c", "raise ValueError('no')"], 30)
    assert gpu_speed.in_child([sys.executable, "-c", "print('log'); print('{}')"], 30) == "{}"
