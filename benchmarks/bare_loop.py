"""The shortest loop that trains a gantool recipe: gantool's components and data path,
none of the engine's bookkeeping. ``train_speed.py`` compares ``gantool run`` with it
to measure the engine's own overhead.

It builds the recipe's dataset, networks and loss with gantool's registry, draws
batches from the engine's ``BatchStream`` (the in-memory path), and runs the same
update as ``gantool.update.GANUpdate`` with ``d_steps_per_g = 1``: fake generated once,
``zero_grad(set_to_none=True)``, D frozen during the G step, Adam with the engine's
settings. No statistics, logging, progress, EMA, autocast, samples or checkpoints.

    python benchmarks/bare_loop.py RECIPE --steps 40 --warmup 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the gantool CLI does (see gantool/cli.py main)

import torch  # noqa: E402

from gantool import StepContext  # noqa: E402
from gantool.plan import make_plan  # noqa: E402
from gantool.plugins import get_registry  # noqa: E402
from gantool.recipe import load_recipe  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    a = p.parse_args(argv)

    # The engine's plan: the same components, device, memory format, optimizers and data
    # stream (and malloc settings), so only the loop around the update differs.
    plan = make_plan(load_recipe(a.recipe, a.overrides), get_registry())
    G, D, loss, device, cl, data = plan.generator, plan.discriminator, plan.loss, plan.device, plan.channels_last, plan.data
    opt_g, opt_d = plan.optimizers["generator"], plan.optimizers["discriminator"]
    batches = data.iterate(0)
    noise = torch.Generator(device=device).manual_seed(1)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    G.train(), D.train()
    t0 = time.perf_counter()
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            sync()
            t0 = time.perf_counter()
        real, _labels = next(batches)
        if cl:
            real = real.contiguous(memory_format=torch.channels_last)
        fake = G(G.sample_latent(len(real), device=device, generator=noise))
        ctx = StepContext(step, step, G, D, real, fake.detach())
        loss_d = loss.discriminator_loss(D(real), D(fake.detach()), ctx)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        loss_g = loss.generator_loss(None, D(fake), ctx)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
    last = float(loss_g)  # waits for the device
    wall = time.perf_counter() - t0
    print(json.dumps({
        "impl": "bare", "images_per_s": a.steps * data.global_batch / wall, "wall_s": wall,
        "steps": a.steps, "loss_g": last, "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
