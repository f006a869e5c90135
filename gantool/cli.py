"""The ``gantool`` command line.

User errors (bad recipe, unknown name, missing data) print one line and exit 2; a run
that fails exits 1. ``--debug`` shows the traceback. ``--help``, ``list``,
``plugins`` and ``info SECTION`` never import torch.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import click

import gantool
from gantool.errors import GantoolError, RunFailed
from gantool.registry import KINDS


class _Group(click.Group):
    """Turns GantoolError into one line + exit 2, other failures into exit 1.

    The line is capped in length and its control characters are escaped (``one_line``):
    a message may quote a path or a value that came from a hostile file.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as e:  # click prints it; a bad argument is shown escaped too
            from gantool.errors import one_line

            e.message = one_line(e.message)
            raise
        except GantoolError as e:
            if _debug(ctx):
                raise
            _error(str(e))
            sys.exit(2)
        except RunFailed as e:  # exit 1; a run stopped by a signal exits 128 + its number
            if _debug(ctx):
                raise
            _error(str(e))
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - anything else is a failed run, not a traceback
            if _debug(ctx):
                raise
            _error(f"{type(e).__name__}: {e}", " (run with --debug for the traceback)")
            sys.exit(1)


def _error(message: str, suffix: str = ""):
    from gantool.errors import one_line

    click.echo(f"error: {one_line(message)}{suffix}", err=True)


def _debug(ctx) -> bool:
    return bool(ctx.find_root().params.get("debug"))


def _registry():
    from gantool.plugins import get_registry

    return get_registry()


def _console():
    from rich.console import Console

    return Console()


def escape(text: str) -> str:
    """Plugin-supplied text is shown literally: '[r, g, b]' is not rich markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(str(text))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(gantool.__version__, prog_name="gantool")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug):
    """Train GANs from TOML recipes. Every component comes from a plugin."""


KIND_CHOICE = click.Choice(KINDS)


@cli.command("list")
@click.argument("kind", required=False, type=KIND_CHOICE)
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(kind, pattern, as_json):
    """List components: kind, name, plugin, version, summary."""
    components = _registry().list(kind, pattern)
    if as_json:
        rows = [dict(kind=c.kind, name=c.name, qualified_name=c.qualified_name, plugin=c.plugin, version=c.version, summary=c.summary) for c in components]
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("kind", "name", "plugin", "version", "summary", box=None, header_style="bold")
    for c in components:
        table.add_row(*map(escape, (c.kind, c.name, c.plugin, c.version, c.summary)))
    _console().print(table)


def _info_choice():
    from gantool.reference import SECTIONS

    return click.Choice([*KINDS, *(s for s in SECTIONS if s not in KINDS)])


@cli.command()
@click.argument("kind", metavar="KIND_OR_SECTION", type=_info_choice())
@click.argument("name", required=False)
def info(kind, name):
    """Parameters (type, default, doc) and source of one component; or, without NAME, the keys of a recipe section.

    `gantool info generator dcgan`; `gantool info train` (sections: run, train, eval, log, augment, optimizer,
    scheduler, callbacks). docs/recipes.md has every section.
    """
    from gantool.recipe import ENGINE_SECTIONS, TABLE_KINDS
    from gantool.reference import SECTIONS

    if name is None:
        if kind not in SECTIONS:
            raise GantoolError(f"gantool info {kind}: which {kind}? e.g. `gantool info {kind} NAME` "
                               f"(see `gantool list {kind}`); without a name, info takes a recipe section: "
                               f"{', '.join(SECTIONS)}")
        _info_section(kind)
        return
    if kind in ENGINE_SECTIONS and kind not in TABLE_KINDS:
        raise GantoolError(f"gantool info {kind} {name}: [{kind}] is a recipe section, not a component kind; "
                           f"use `gantool info {kind}`")
    kind = TABLE_KINDS.get(kind, kind)  # `info callbacks csv` = `info callback csv`, `info eval fid` = metric fid
    import inspect

    from rich.table import Table

    from gantool.params import describe_type

    component, params = _registry().parameters(kind, name)
    factory = component.load()
    console = _console()
    console.print(f"[bold]{component.kind} {escape(component.qualified_name)}[/]  ({escape(component.plugin)} {component.version})")
    if component.summary:
        console.print(escape(component.summary))
    try:
        console.print(f"source: {inspect.getsourcefile(factory)}", highlight=False)
    except TypeError:
        pass
    if not params:
        console.print("No parameters.")  # as docs/recipes.md says it
    else:
        table = Table("parameter", "type", "default", "doc", box=None, header_style="bold")
        for p in params:
            default = "(required)" if p.required else repr(p.default)
            table.add_row(*map(escape, (p.name, describe_type(p.annotation), default, p.doc)))
        console.print(table)
    from gantool.registry import INJECTED

    if INJECTED.get(kind):
        console.print(f"Passed by the engine, never set in a recipe: {', '.join(INJECTED[kind])}.")


def _info_section(name: str):
    """`gantool info train`: the same reference as docs/recipes.md, without importing torch."""
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    from gantool.reference import info_sections

    console = _console()
    for i, s in enumerate(info_sections(name)):
        console.print(("\n" if i else "") + f"[bold]{escape(s.header)}[/]  {escape(s.summary)}", highlight=False)
        for note in s.notes:  # indented, wrapped lines included
            console.print(Padding(Text(note), (0, 0, 0, 2)))
        if s.keys:
            table = Table("key", "type", "default", "doc", box=None, header_style="bold")
            for k in s.keys:
                table.add_row(*map(escape, (k.name, k.type, k.default, k.doc)))
            console.print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """Plugin distributions, versions, load status and load time (import + registration).

    Warns about a plugin whose loading imported torch: that slows every `gantool list`.
    """
    import dataclasses

    from gantool.plugins import plugin_statuses

    statuses = plugin_statuses()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(s) for s in statuses], indent=2))
        return
    from rich.table import Table

    table = Table("plugin", "version", "entry point", "status", "load ms", "error", box=None, header_style="bold")
    for s in statuses:
        load = "" if s.status == "disabled" else f"{s.load_ms:.1f}" + (" (imports torch)" if s.imports_torch else "")
        table.add_row(*map(escape, (s.name, s.version, s.entry_point, s.status, load, s.error or "")))
    _console().print(table)
    for s in statuses:
        if s.imports_torch:
            click.echo(f"warning: plugin {s.name} ({s.entry_point}) imports torch while loading ({s.load_ms:.0f} ms), "
                       "which slows every `gantool list`; register lazy \"module:attr\" factory strings", err=True)


@cli.group()
def plugin():
    """Write a plugin of your own."""


@plugin.command("new")
@click.argument("name")
@click.option("--kind", type=KIND_CHOICE, default="generator", show_default=True, help="The component to start with.")
@click.option("--out", type=click.Path(path_type=Path), default=Path(),
              help="Folder to write gantool-NAME/ in (default: the current folder).")
def plugin_new(name, kind, out):
    """Write gantool-NAME/: a plugin distribution with one KIND component, tests and a recipe.

    The tests use gantool.testing (contract checks and an exact-resume run); see its README.
    """
    from gantool.template import write_plugin

    folder, qualified = write_plugin(name, kind, out)
    click.echo(f"wrote {folder}/: the {kind} {qualified}, its tests, a recipe and a README")
    click.echo(f"next: pip install -e {folder}  &&  pytest {folder}  &&  gantool list {kind}")

def _load(recipe_path, overrides):
    from gantool.recipe import load_recipe

    return load_recipe(recipe_path, list(overrides))


SET_OPTION = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key, e.g. --set train.epochs=3 (repeatable).")


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@SET_OPTION
def check(recipe, overrides):
    """Resolve, validate and build a recipe, call every component once on real shapes; no training.

    Runs the same plan as `gantool run`, so it catches every error `run` would.
    """
    from gantool.plan import make_plan

    plan = make_plan(_load(recipe, overrides), _registry())
    G, D, info = plan.generator, plan.discriminator, plan.components
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    from gantool.limits import format_bytes, module_bytes
    shape = (2, *plan.dataset.image_shape)  # the smoke test's batch
    rows = [
        ("dataset", f"{info['dataset']['qualified_name']}: {plan.data.size} images of shape {tuple(plan.dataset.image_shape)}"),
        ("generator", f"{info['generator']['qualified_name']}: z {tuple(G.sample_latent(2).shape)} -> {shape}, "
                      f"{count(G):,} parameters ({format_bytes(module_bytes(G))})"),
        ("discriminator", f"{info['discriminator']['qualified_name']}: {shape} -> (2,), {count(D):,} parameters "
                          f"({format_bytes(module_bytes(D))})"),
        ("loss", info["loss"]["qualified_name"]),
    ]
    rows += [(key, value["qualified_name"]) for key, value in info.items() if key.startswith(("augment", "optimizer", "scheduler"))]
    rows += [("metrics", ", ".join(name for name, _ in plan.metrics))] if plan.metrics else []
    rows += [("callbacks", ", ".join(name for name, _ in plan.callbacks))] if plan.callbacks else []
    if plan.num_classes:
        names = info["dataset"]["class_names"]
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        rows.append(("conditional", f"{plan.num_classes} classes: {shown}"))
    r = plan.recipe.train
    rows.append(("train", f"batch {r.batch_size}, {plan.total_steps} steps ({r.epochs} epochs), device {plan.device}"))
    console = _console()
    console.print(f"[bold]{recipe}[/] OK", highlight=False)
    for key, value in rows:
        console.print(f"  {key:<24} {escape(value)}", highlight=False)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@SET_OPTION
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<name>/<timestamp>).")
@click.option("--resume", "resume", is_flag=False, flag_value="yes", default=None, type=click.Choice(["yes", "auto"]),
              metavar="[auto]", help="Continue from the run's checkpoints/last.safetensors; --resume auto continues "
                                     "when --out holds a checkpoint, else starts fresh (one job script for every requeue).")
@click.option("--overwrite", is_flag=True, help="Start over in an --out that holds a run: the old run is moved aside, not deleted.")
@click.option("--allow-change", "allow_changes", multiple=True, metavar="KEY",
              help="With --resume: apply a recipe change to the run (e.g. optimizer.generator.lr); recorded in its history.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel processes on this machine (one per GPU; gloo on CPU). Runs torchrun; see docs/scaling.md.")
@click.option("--init-from", "init_from", type=click.Path(path_type=Path), metavar="RUN_OR_CHECKPOINT",
              help="Fine-tune: start a new run from another run's weights (fresh optimizers, step 0, "
                   "this recipe's data).")
@click.option("--init", "init_parts", metavar="PARTS",
              help="With --init-from: generator,discriminator (default), generator or discriminator.")
@click.pass_context
def run(ctx, recipe, overrides, out, resume, overwrite, allow_changes, nproc, init_from, init_parts):
    """Train a recipe; writes samples, metrics and checkpoints.

    A folder that holds a run is never overwritten: --resume continues it, --overwrite
    moves it aside. Ctrl-C, SIGTERM and SIGUSR1 save a checkpoint and stop.
    Multi-GPU / multi-node: torchrun --nproc-per-node N -m gantool run RECIPE
    """
    r = _load(recipe, overrides)  # a bad recipe fails here, before any process starts
    resume = {None: False, "yes": True, "auto": "auto"}[resume]
    init = None
    if init_parts is not None and init_from is None:
        raise GantoolError(f"--init {init_parts} needs --init-from RUN_OR_CHECKPOINT (it picks which of that run's "
                           "networks to load)")
    if init_from is not None:
        if resume is True:
            raise GantoolError("--init-from starts a new run from another run's weights and --resume continues this "
                               "one from its own; drop one (--resume auto goes with it: fine-tune first, resume after)")
        from gantool import finetune

        init = finetune.source(init_from, init_parts)
    if nproc > 1:
        from gantool import distributed

        argv = (["--debug"] if _debug(ctx) else []) + ["run", str(recipe)]
        argv += [arg for o in overrides for arg in ("--set", o)]
        argv += (["--out", str(out)] if out else []) + {False: [], True: ["--resume"], "auto": ["--resume", "auto"]}[resume]
        argv += (["--overwrite"] if overwrite else []) + [arg for k in allow_changes for arg in ("--allow-change", k)]
        argv += ["--init-from", str(init.path), "--init", ",".join(init.parts)] if init else []
        distributed.launch(nproc, argv)
    from gantool.progress import Preparing  # rich only: on screen before torch starts loading

    with Preparing(what=f"{recipe.name}: loading torch") if os.environ.get("RANK", "0") == "0" else nullcontext():
        from gantool import engine
    summary = engine.run(r, _registry(), out_dir=out, resume=resume, overwrite=overwrite,
                         allow_changes=tuple(allow_changes), init_from=init)
    if summary.get("rank", 0) == 0:
        stopped = f" (stopped early: {summary['stop_reason']})" if summary.get("status") == "stopped" else ""
        click.echo(f"done: {summary['steps']} steps{stopped}, {summary['images_per_s']:.1f} images/s; samples {summary['samples']}; checkpoint {summary['checkpoint']}")


@cli.group()
def data():
    """Look at datasets."""


@data.command()
@click.argument("source", metavar="RECIPE_OR_DATASET")
@click.option("--n", "n", type=click.IntRange(min=1), default=20, show_default=True, help="Number of images.")
@click.option("--out", type=click.Path(path_type=Path), help="PNG to write (default <name>_preview.png).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key: dataset.image_size=32 for a recipe, image_size=32 (or dataset.image_size=32) for a dataset name.")
def preview(source, n, out, overrides):
    """Write a grid of the first N images after preprocessing: what the model will see.

    RECIPE_OR_DATASET is a recipe file (its [dataset] table is used) or a dataset name
    with its defaults, e.g. `gantool data preview imagefolder --set root=data/pokemon`.
    """
    from gantool.recipe import parse_override

    registry = _registry()
    if source.endswith(".toml") or Path(source).is_file():
        r = _load(Path(source), overrides)
        name, params = r.component("dataset")
        locate = lambda key: r.locate("dataset", key)  # noqa: E731
        try:
            name = registry.get("dataset", name).qualified_name
        except GantoolError as e:
            raise GantoolError(f"{locate('type')}: {e}") from None
        stem = Path(source).stem
    else:
        name, params, origin = registry.get("dataset", source).qualified_name, {}, {}
        for item in overrides:
            keys, value = parse_override(item)
            keys = keys[1:] if keys[0] == "dataset" and len(keys) > 1 else keys
            if len(keys) != 1:
                raise GantoolError(f"--set {item}: a dataset parameter has no dots; e.g. --set image_size=32")
            params[keys[0]] = value
            origin[keys[0]] = f"--set {item}"
        locate = lambda key: f"{origin[key]}: [dataset] {key}" if key in origin else f"[dataset] {key}"  # noqa: E731
        stem = source.replace(":", "_")
    dataset = registry.build("dataset", name, params, locate=locate)

    import math

    import torch
    from torchvision.utils import save_image

    images = dataset.as_tensor()
    count = len(images) if images is not None else len(dataset)
    k = min(n, count)
    if images is not None:
        grid = images[:k].float().div(255)
    else:
        grid = torch.stack([dataset[i] for i in range(k)]).add(1).div(2)
    out = out or Path(f"{stem}_preview.png")
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out, nrow=math.ceil(math.sqrt(k)), padding=2, pad_value=0.5)
    flip = " (hflip is applied during training, not here)" if dataset.hflip else ""
    click.echo(f"wrote {out}: the first {k} of {count} images, each {tuple(dataset.image_shape)}{flip}")


EMA_OPTION = click.option("--ema/--no-ema", "ema", default=None,
                          help="Use the EMA generator (default: when the checkpoint has one) or the raw one.")
BEST_OPTION = click.option("--best", is_flag=True, help="Use the run's checkpoints/best.safetensors instead of last.safetensors.")
DEVICE_OPTION = click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps")


@cli.command()
@click.argument("target", metavar="RUN_OR_CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent vectors.")
@click.option("--out", type=click.Path(path_type=Path), help="Grid PNG (default RUN/samples/sample_seed<S>.png, or ./ for a bare checkpoint).")
@click.option("--individual", type=click.Path(path_type=Path), metavar="DIR", help="Also (or, without --out, only) write each image as DIR/sample_NNNN.png.")
@click.option("--class", "class_", metavar="CLASS",
              help="Class-conditional runs: only this class (an index, or a class name for folder datasets). "
                   "Without it the grid has one row per class.")
@click.option("--interpolate", is_flag=True, help="Latent-space walks: each row slerps between two random latents.")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True, help="Images per walk (--interpolate).")
@click.option("--rows", type=click.IntRange(min=1), default=8, show_default=True, help="Number of walks (--interpolate).")
@click.option("--truncation", type=float, metavar="PSI",
              help="Truncation trick (BigGAN): latent components with |z| > PSI are redrawn until inside; "
                   "smaller PSI, more typical and less varied images.")
@click.option("--seeds", "seeds_text", metavar="LIST",
              help="One image per seed, e.g. 1-16 or 3,5,9-12: seed s gives the image --seed s --n 1 gives "
                   "(instead of --n and --seed).")
@EMA_OPTION
@BEST_OPTION
@DEVICE_OPTION
def sample(target, n, seed, out, individual, class_, interpolate, steps, rows, truncation, seeds_text, ema, best,
           device):
    """Generate images from a checkpoint (the recipe file need not exist).

    RUN_OR_CHECKPOINT is a run directory (its checkpoints/last.safetensors, or
    best.safetensors with --best) or a .safetensors checkpoint file. For a
    class-conditional run, --class picks the class; walks (--interpolate) stay within one.
    """
    import torch

    from gantool import sampling
    from gantool.plan import resolve_device

    seeds = None
    if seeds_text is not None:  # checked before the checkpoint is read
        from click.core import ParameterSource

        ctx = click.get_current_context()
        given = [f"--{p}" for p in ("n", "seed") if ctx.get_parameter_source(p) is not ParameterSource.DEFAULT]
        if given:
            raise GantoolError(f"--seeds picks the images itself, one per seed; drop {' and '.join(given)}")
        if interpolate:
            raise GantoolError("--seeds does not apply to --interpolate (its walks come from --seed); drop one of them")
        seeds = sampling.parse_seeds(seeds_text)
    if truncation is not None:
        sampling.check_truncation(truncation)
    path, run_dir = sampling.resolve_checkpoint(target, best=best)
    dev = resolve_device(device, "--device")
    G, meta, source = sampling.load_generator(path, _registry(), dev, ema=ema)
    names = sampling.class_names(meta)
    chosen = sampling.resolve_class(class_, names, path) if class_ is not None else None
    tag = "_best" if best else ""
    labels, for_class = None, f"_class{chosen}" if chosen is not None else ""
    drawn = f"seeds{sampling.seeds_label(seeds)}" if seeds else f"seed{seed}"
    drawn += f"_trunc{truncation:g}" if truncation is not None else ""
    file_names = None  # --individual names (sample_NNNN.png unless --seeds)
    if interpolate:
        z, _, _ = sampling.interpolation_latents(G, rows, steps, seed, truncation)
        nrow, what = steps, f"{rows} walks x {steps} steps"
        name = f"interpolate{tag}{for_class}_{drawn}.png"
        if names:  # each walk within one class: the chosen one, else row r shows class r
            walk_classes = torch.full((rows,), chosen) if chosen is not None else torch.arange(rows) % len(names)
            labels = walk_classes.repeat_interleave(steps)
    elif names and chosen is None:  # one row per class, the same latent down each column
        if seeds and len(seeds) * len(names) > sampling.MAX_SEEDS:
            raise GantoolError(f"--seeds: {len(seeds)} seeds x {len(names)} classes is over {sampling.MAX_SEEDS:,} "
                               "images; ask for fewer seeds, or one class with --class")
        columns = len(seeds) if seeds else max(1, n // len(names))
        z = sampling.picked_latents(G, columns, seed, seeds, truncation)
        z, labels = sampling.class_rows(z, len(names))
        nrow, what = columns, f"{len(names)} classes x {columns} {'seeds' if seeds else 'samples'}"
        name = f"sample{tag}_classes_{drawn}.png"
        file_names = sampling.seed_file_names(seeds, len(names)) if seeds else None
    else:
        z = sampling.picked_latents(G, n, seed, seeds, truncation)
        count = len(z)
        nrow, what = sampling.grid_columns(count), f"{count} samples"
        name = f"sample{tag}{for_class}_{drawn}.png"
        file_names = sampling.seed_file_names(seeds) if seeds else None
        if chosen is not None:
            labels, what = torch.full((count,), chosen), f"{count} samples of class {names[chosen]!r}"
    images = sampling.generate(G, z, dev, labels)
    drawn_from = f"seeds {sampling.seeds_label(seeds, sep=',')}" if seeds else f"seed {seed}"
    drawn_from += f", truncation {truncation:g}" if truncation is not None else ""
    where = f"{path} (step {meta.get('step')}, {source}, {drawn_from})"
    if individual is not None:
        paths = sampling.save_individual(images, individual, file_names)
        click.echo(f"wrote {len(paths)} PNGs to {individual}/: {what} from {where}")
    if out is not None or individual is None:
        out = out or sampling.default_output(run_dir, name)
        sampling.save_grid(images, out, nrow=nrow)
        click.echo(f"wrote {out}: {what} from {where}")


@cli.command("eval")
@click.argument("target", metavar="RUN_OR_CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--metric", "metrics", multiple=True, metavar="NAME", help="Metric to compute (repeatable; default: the recipe's [eval] metrics).")
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Generated images per metric (default: the recipe's eval.n_samples).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Result file (default RUN/eval.json, or <checkpoint>.eval.json).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override dataset.<key> or eval.<metric>.<key> of the stored recipe (repeatable).")
@EMA_OPTION
@BEST_OPTION
@DEVICE_OPTION
def eval_cmd(target, metrics, n, json_out, overrides, ema, best, device):
    """Score a checkpoint with metrics; prints a table and writes JSON.

    The generator (EMA when present) and the real dataset are rebuilt from the
    checkpoint's stored recipe; metric parameters come from its [eval.<metric>] tables.
    """
    from rich.table import Table

    from gantool import evaluation, sampling
    from gantool.plan import resolve_device

    path, run_dir = sampling.resolve_checkpoint(target, best=best)
    result = evaluation.evaluate_checkpoint(path, _registry(), list(metrics), n=n, device=resolve_device(device, "--device"), ema=ema, overrides=list(overrides))
    json_out = json_out or evaluation.default_json_path(path, run_dir)
    console = _console()  # the results first: a folder that cannot be written must not lose them
    console.print(f"[bold]{path}[/]  step {result['step']}, {result['generator']}, n = {result['n']}", highlight=False)
    table = Table("metric", "key", "value", "goal", box=None, header_style="bold")
    for m in result["metrics"]:
        for key, value in m["values"].items():
            table.add_row(m["metric"], key, f"{value:.6g}", m["goals"][key])
    console.print(table)
    for m in result["metrics"]:
        protocol = ", ".join(f"{k}={v}" for k, v in m["protocol"].items() if not isinstance(v, (dict, list)))
        console.print(f"protocol {m['metric']}: {protocol}", highlight=False, soft_wrap=True)
    try:
        evaluation.write_json(result, json_out)
    except OSError as e:
        raise GantoolError(f"{json_out}: cannot write the results ({e.strerror}); they are printed above; "
                           "pass --json FILE to write them elsewhere") from None
    console.print(f"wrote {json_out}", highlight=False)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="PNG to write (default RUN_DIR/metrics.png).")
def plot(run_dir, out):
    """Plot a run's metrics.jsonl: losses, D(x)/D(G(z)), each eval metric over steps."""
    from gantool.plotting import plot_run

    path, panels, bad = plot_run(run_dir, out)
    if bad:
        click.echo(f"warning: skipped {bad} unreadable line(s) of {run_dir / 'metrics.jsonl'}", err=True)
    click.echo(f"wrote {path}: {', '.join(panels)}")


@cli.command()
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path),
              help="HTML file to write (default RUN/report.html for one run, ./report.html for several).")
def report(runs, out):
    """One self-contained HTML page: sample grids over time, curves, metrics, recipe; several runs compared."""
    from gantool.report import write_report

    path, notes = write_report(list(runs), out)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("target", metavar="RUN_OR_CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True,
              help="onnx (needs pip install 'gantool[export]') or torchscript.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Model file (default RUN/export/generator.onnx or .pt, or beside a bare checkpoint); "
                   "the sidecar is FILE.json.")
@EMA_OPTION
@BEST_OPTION
def export(target, fmt, out, ema, best):
    """Export the generator with a dynamic batch dimension, then check it against PyTorch.

    The exported file is run (onnxruntime, or torch.jit.load) on seeded latents at two batch
    sizes; above the tolerance nothing is written and the exit status is 1.
    """
    from gantool.export import export_checkpoint

    info = export_checkpoint(target, _registry(), fmt, out, ema=ema, best=best)
    check, source = info["check"], info["source"]
    takes = "(z, labels int64)" if info["conditional"] else "(z)"
    click.echo(f"wrote {info['out']} and {info['sidecar']}: {source['weights']} of {source['checkpoint']} "
               f"(step {source['step']}), takes {takes}, returns images {tuple(info['image_shape'])} in [-1, 1]")
    click.echo(f"checked with {check['runtime']} at batch sizes {', '.join(map(str, check['batch_sizes']))}: "
               f"max |diff| vs PyTorch {check['max_abs_diff']:.2g} (tolerance {check['tolerance']:.0e})")


def main():
    # Waiting OpenMP threads sleep instead of spinning (libgomp spins by default). When
    # other processes share the cores (DataLoader workers, other jobs, several ranks),
    # spinning threads take the CPU from the ones doing the work: measured 3-4x faster
    # training on a busy 2-core machine (docs/performance.md). Set before torch loads;
    # an OMP_WAIT_POLICY of your own wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cli(prog_name="gantool")


if __name__ == "__main__":
    main()
