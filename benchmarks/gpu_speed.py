"""GPU training speed: reference loops against ``gantool run``, one table (issue 12).

DCGAN-64 (ngf = ndf = 64) on a folder of 64 px JPEGs that the script writes. Contenders:

  examples-2w / -8w   pytorch/examples-style loop (``reference_dcgan.py``): DataLoader with
                      2 or 8 workers, fp32, ``.item()`` every step
  plain-bf16-cl       a hand-tuned loop written here: the data as one uint8 tensor on the
                      GPU, bf16 autocast, channels_last, fused Adam, no host sync
  plain-fp32          the same loop in fp32, NCHW
  plain-fp32-compile  the same with G and D under ``torch.compile`` (default mode)
  gantool             ``gantool run`` with the recipe's defaults: amp and channels_last "auto"
                      (measured at start-up), cuda_graphs "auto" (the whole step as a CUDA graph)
  gantool-eager       the defaults with ``--set train.cuda_graphs=false``
  gantool-amp-off     ``--set train.amp=off``
  gantool-compile     ``--set train.compile=true``

at batch 64, then plain-bf16-cl and gantool again at batch 256 (``--big-batch``), then the
two compiled rows (``--no-compile`` leaves them out). These are the rows of issue 12's
table. Each row: steady-state images/s (after the warm-up steps), the share of the GPU's
peak that the convolution FLOPs the loop computes reach (``--peak-tflops``; bf16 rows
against the bf16 peak, fp32 rows against the fp32 peak), and the peak GPU memory. The
plain and gantool rows run in this process, so their peak memory is read the same way;
the examples loops and the compiled rows run in their own processes and read it there.

The whole table keeps to ``--budget`` seconds (280 by default, so the command ends within
the issue's 5 minutes): a compiled row, which can take minutes to compile, runs in a
process that is stopped when the budget is spent, and rows left after that say so. The
other rows take seconds each on a GPU and are not stopped: one started just before the
budget ends can overrun it by its own length. A row
that fails says why in the table, and the other rows still run.

    python benchmarks/gpu_speed.py                     # on a CUDA machine, under 5 minutes
    python benchmarks/gpu_speed.py --peak-tflops 989,67
    python benchmarks/gpu_speed.py --device cpu --steps 1 --warmup 1 --images 32 --width 8 --batch 16 \
        --big-batch 0 --no-compile   # smoke test

tests/test_gpu_speed.py runs the smoke test above and the budget's stop on CPU. On an
NVIDIA H200 (2026-11-29) the whole table took 183 s; docs/performance.md, "GPU speed".
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import conv_layer_flops, gan_step_flops, make_jpeg_folder  # noqa: E402


def plain_loop(data_u8, device, *, batch: int, width: int, steps: int, warmup: int, bf16: bool,
               channels_last: bool, compiled: bool = False):
    """The fastest loop a careful user writes by hand: no DataLoader, no sync, fused Adam."""
    import torch
    from torch import nn

    from reference_dcgan import build

    class Opt:
        image_size, nz, ngf, ndf = 64, 100, width, width

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True  # as gantool sets it: fixed shapes, so let cuDNN pick its kernels
    G, D, _ = build(Opt)
    D.main = D.main[:-1]  # logits: BCE-with-logits under autocast
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G, D = G.to(device, memory_format=fmt), D.to(device, memory_format=fmt)
    if compiled:  # the "torch.compile default mode" row: compiled in the warm-up steps
        G, D = torch.compile(G), torch.compile(D)
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    data = data_u8.to(device)

    def step(i):
        idx = torch.randint(len(data), (batch,), device=device)
        real = (data[idx].float() / 127.5 - 1).contiguous(memory_format=fmt)
        z = torch.randn(batch, 100, 1, 1, device=device)
        with autocast:
            fake = G(z)
            loss_d = bce(D(real).float(), ones) + bce(D(fake.detach()).float(), zeros)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with autocast:
            loss_g = bce(D(fake).float(), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    for i in range(warmup):
        step(i)
    sync(device)
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return steps * batch / (time.perf_counter() - t)


def gantool_run(folder: Path, out: Path, device, *, batch: int, width: int, steps: int, warmup: int,
                overrides=()):
    """``gantool run`` in this process; images/s from metrics.jsonl between warm-up and the end."""
    from gantool import engine
    from gantool.plugins import get_registry
    from gantool.recipe import recipe_from_dict

    data = {
        "run": {"name": "gpu_speed", "seed": 0, "device": str(device)},
        "dataset": {"type": "imagefolder", "root": str(folder), "image_size": 64, "channels": 3,
                    "cache": False},
        "generator": {"type": "dcgan", "base_channels": width},
        "discriminator": {"type": "dcgan", "base_channels": width},
        "loss": {"type": "bce"},
        "train": {"batch_size": batch, "epochs": 10**6, "max_steps": warmup + steps, "log_every": warmup,
                  "sample_every": 0, "checkpoint_every": 0, "num_workers": 0},
    }
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        data[section][name] = json.loads(value) if value[:1] in "0123456789[{tf" else value
    engine.run(recipe_from_dict(data), get_registry(), out_dir=out, overwrite=True)
    times = {r["step"]: r["time_s"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "time_s" in r}
    return steps * batch / (times[warmup + steps] - times[warmup])


def chosen(out: Path) -> str:
    """What the run trained with: its checkpoint's resolved amp / channels_last (autotune.py)."""
    from gantool.checkpoint import read_metadata

    speed = read_metadata(out / "checkpoints" / "last.safetensors").get("speed", {})
    return f"{speed.get('amp', '?')}/{'NHWC' if speed.get('channels_last') else 'NCHW'}"


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


GANTOOL_ROWS = {"gantool": [], "gantool-eager": ["train.cuda_graphs=false"],
                "gantool-amp-off": ["train.amp=off"], "gantool-compile": ["train.compile=true"],
                # Not in the table (each compiles for a minute); run alone with --row NAME:BATCH.
                "gantool-compile-eager": ["train.compile=true", "train.cuda_graphs=false"],
                "gantool-reduce-overhead": ["train.compile=reduce-overhead"]}


def planned_rows(args) -> list[tuple[str, int]]:
    """The issue's table, in order; the compiled rows last, as they take longest to start."""
    b = args.batch
    rows = [(f"examples-{w}w", b) for w in (2, 8)]
    rows += [("plain-bf16-cl", b), ("plain-fp32", b), ("gantool", b), ("gantool-eager", b), ("gantool-amp-off", b)]
    rows += [(name, args.big_batch) for name in ("plain-bf16-cl", "gantool") if args.big_batch]
    rows += [("plain-fp32-compile", b), ("gantool-compile", b)] if args.compile else []
    return rows


class OverBudget(Exception):
    """A row that the time budget stopped or never started."""


def measure(name: str, batch: int, args, device, folder: Path, data_u8, timeout: float):
    """One row (the examples loops in a child): (images/s, precision, peak GPU MiB or None on a CPU)."""
    plain = {"batch": batch, "width": args.width, "steps": args.steps, "warmup": args.warmup}
    if name.startswith("examples-"):
        cmd = [sys.executable, str(HERE / "reference_dcgan.py"), "--dataroot", str(folder),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--workers", name[9:-1],
               "--batch-size", str(batch), "--ngf", str(args.width), "--ndf", str(args.width),
               "--device", args.device, "--quiet"]
        result = json.loads(in_child(cmd, timeout))
        return result["images_per_s"], "fp32", result.get("peak_gpu_mb")  # measured in its own process
    if name.startswith("plain-"):
        bf16 = name == "plain-bf16-cl"
        rate = plain_loop(data_u8(), device, **plain, bf16=bf16, channels_last=bf16, compiled=name.endswith("compile"))
        return rate, "bf16" if bf16 else "fp32", peak_mib(device)
    out = args.work / f"{name}-{batch}"
    rate = gantool_run(folder, out, device, **plain, overrides=GANTOOL_ROWS[name])
    return rate, chosen(out), peak_mib(device)


def peak_mib(device):
    """This process's peak GPU memory since the last reset (None on a CPU)."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def in_child(cmd: list[str], timeout: float) -> str:
    """Run a row in its own process, stopped when the budget is spent; its last stdout line."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        raise OverBudget(f"not finished in the {timeout:.0f} s left of --budget") from None
    if proc.returncode:
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    return proc.stdout.strip().splitlines()[-1]


def main():
    started = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--images", type=int, default=5000, help="JPEGs in the generated folder")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--big-batch", type=int, default=256, help="plain-bf16-cl and gantool again; 0: not")
    p.add_argument("--width", type=int, default=64, help="ngf = ndf; smaller only to smoke-test the script")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="the two torch.compile rows (each in its own process, stopped at the budget)")
    p.add_argument("--budget", type=float, default=280, metavar="SECONDS",
                   help="wall time for the whole table: rows left when it is spent say so")
    p.add_argument("--peak-tflops", default="", metavar="BF16,FP32",
                   help="the GPU's dense peaks, e.g. 989,67 for an H100 SXM; default: no share column")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gantool-gpu-speed")
    p.add_argument("--row", metavar="NAME:BATCH",
                   help="only this row (also those not in the table: gantool-compile-eager, "
                        "gantool-reduce-overhead); prints one JSON line")
    args = p.parse_args()
    import numpy as np
    import torch
    from PIL import Image

    from reference_dcgan import build

    device = torch.device(args.device)
    folder = make_jpeg_folder(args.work / "jpegs", args.images, size=64)  # folder/images/*.jpg
    data_u8 = functools.cache(lambda: torch.stack([  # decoded once, by the rows that need it
        torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
        for f in sorted((folder / "images").glob("*.jpg"))]))
    if args.row:
        name, batch = args.row.rsplit(":", 1)
        rate, precision, peak = measure(name, int(batch), args, device, folder, data_u8, args.budget)
        print(json.dumps({"images_per_s": rate, "precision": precision, "peak_gpu_mb": peak}))
        return

    class Opt:
        image_size, nz, ngf, ndf = 64, 100, args.width, args.width

    G, D, _ = build(Opt)
    g_layers, d_layers = conv_layer_flops(G, (100, 1, 1)), conv_layer_flops(D, (3, 64, 64))
    # The FLOPs each loop computes: the reference and plain loops also take D's weight
    # gradients in the G step and discard them; gantool freezes D there (docs/performance.md).
    flops = {"reference": gan_step_flops(g_layers, d_layers),
             "gantool": gan_step_flops(g_layers, d_layers, d_weight_grads_in_g_step=False)}
    peaks = [float(x) * 1e12 for x in args.peak_tflops.split(",")] if args.peak_tflops else None
    rows = []
    for name, batch in planned_rows(args):
        left = args.budget - (time.perf_counter() - started)
        gc.collect()  # a previous row's models, optimizer state and graph pool: not this row's memory
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            if left <= 0:
                raise OverBudget(f"not run: the {args.budget:.0f} s of --budget were spent")
            if name.endswith("-compile"):  # compiling can take minutes: a process the budget can stop
                child = [sys.executable, __file__, "--row", f"{name}:{batch}", "--budget", str(left),
                         *(f"--{k}={getattr(args, k)}" for k in ("device", "steps", "warmup", "images", "width")),
                         f"--work={args.work}"]
                result = json.loads(in_child(child, left))
                rate, precision, peak = result["images_per_s"], result["precision"], result["peak_gpu_mb"]
            else:
                rate, precision, peak = measure(name, batch, args, device, folder, data_u8, left)
        except Exception as e:  # noqa: BLE001 - reported in the table, the other rows still run
            reason = (str(e).strip().splitlines() or [""])[-1][:120]
            why = reason if isinstance(e, OverBudget) else f"failed: {type(e).__name__}: {reason}"
            rows.append((name, batch, why, None, None))
            print(f"  {name:<18} batch {batch:<4} {why}", file=sys.stderr)
            continue
        rows.append((name, batch, precision, rate, peak))
        print(f"  {name:<18} batch {batch:<4} {rate:10.0f} images/s", file=sys.stderr)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(f"\n{name}, torch {torch.__version__}, DCGAN-64 width {args.width}, {args.steps} timed steps after "
          f"{args.warmup}, {time.perf_counter() - started:.0f} s in all. "
          f"Conv GFLOP per image per step: {flops['reference'] / 1e9:.3f} in the reference and plain loops, "
          f"{flops['gantool'] / 1e9:.3f} in gantool (no D weight gradients in the G step)")
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        print("fp32 and `off` rows: cuDNN runs their convolutions in TF32 (torch's default), "
              "so their share of the fp32 peak can exceed 100 % on larger batches.\n")
    print("| loop | batch | precision | images/s | share of peak | peak GPU MiB |")
    print("|---|---:|---|---:|---:|---:|")
    for loop, batch, precision, rate, peak in rows:
        if rate is None:
            print(f"| {loop} | {batch} | {precision} | – | – | – |")
            continue
        share = "–"
        if peaks:
            work = flops["gantool" if loop.startswith("gantool") else "reference"]
            share = f"{rate * work / (peaks[1] if precision.startswith(('fp32', 'off')) else peaks[0]):.1%}"
        memory = f"{peak:,.0f}" if peak is not None else "–"
        print(f"| {loop} | {batch} | {precision} | {rate:,.0f} | {share} | {memory} |")


if __name__ == "__main__":
    main()
