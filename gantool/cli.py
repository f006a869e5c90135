"""The ``gantool`` command line.

User errors (bad recipe, unknown name, missing data) print one line and exit 2; a run
that fails exits 1. ``--debug`` shows the traceback. ``--help``, ``list`` and
``plugins`` never import torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import gantool
from gantool.errors import GantoolError, RunFailed


class _Group(click.Group):
    """Turns GantoolError into one line + exit 2, other failures into exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except GantoolError as e:
            if _debug(ctx):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except RunFailed as e:
            if _debug(ctx):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - anything else is a failed run, not a traceback
            if _debug(ctx):
                raise
            click.echo(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", err=True)
            sys.exit(1)


def _debug(ctx) -> bool:
    return bool(ctx.find_root().params.get("debug"))


def _registry():
    from gantool.plugins import get_registry

    return get_registry()


def _console():
    from rich.console import Console

    return Console()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(gantool.__version__, prog_name="gantool")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug):
    """Train GANs from TOML recipes. Every component comes from a plugin."""


KIND_CHOICE = click.Choice(["generator", "discriminator", "loss", "dataset", "metric"])


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
        table.add_row(c.kind, c.name, c.plugin, c.version, c.summary)
    _console().print(table)


@cli.command()
@click.argument("kind", type=KIND_CHOICE)
@click.argument("name")
def info(kind, name):
    """Parameters (type, default, doc) and source of one component."""
    import inspect

    from rich.table import Table

    from gantool.params import describe_type

    component, params = _registry().parameters(kind, name)
    factory = component.load()
    console = _console()
    console.print(f"[bold]{component.kind} {component.qualified_name}[/]  ({component.plugin} {component.version})")
    if component.summary:
        console.print(component.summary)
    try:
        console.print(f"source: {inspect.getsourcefile(factory)}", highlight=False)
    except TypeError:
        pass
    table = Table("parameter", "type", "default", "doc", box=None, header_style="bold")
    for p in params:
        default = "(required)" if p.required else repr(p.default)
        table.add_row(p.name, describe_type(p.annotation), default, p.doc)
    console.print(table)
    if kind in ("generator", "discriminator"):
        console.print("image_shape is injected by the engine from the dataset.")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """Plugin distributions, versions and load status."""
    from gantool.plugins import plugin_statuses

    statuses = plugin_statuses()
    if as_json:
        click.echo(json.dumps([dict(name=s.name, version=s.version, entry_point=s.entry_point, status=s.status, error=s.error) for s in statuses], indent=2))
        return
    from rich.table import Table

    table = Table("plugin", "version", "entry point", "status", "error", box=None, header_style="bold")
    for s in statuses:
        table.add_row(s.name, s.version, s.entry_point, s.status, s.error or "")
    _console().print(table)


def _load(recipe_path, overrides):
    from gantool.recipe import load_recipe

    return load_recipe(recipe_path, list(overrides))


SET_OPTION = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key, e.g. --set train.epochs=3 (repeatable).")


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@SET_OPTION
def check(recipe, overrides):
    """Resolve, validate and build a recipe; print shapes. No training."""
    import torch

    from gantool.engine import build_components, resolve_device

    r = _load(recipe, overrides)
    resolve_device(r.run.device, r.locate("run", "device"))
    registry = _registry()
    torch.manual_seed(r.run.seed)
    c = build_components(r, registry)
    G, D = c.generator.eval(), c.discriminator.eval()
    with torch.no_grad():
        z = G.sample_latent(2)
        fake = G(z)
        scores = D(fake)
    expected = (2, *c.dataset.image_shape)
    if tuple(fake.shape) != expected or tuple(scores.shape) != (2,):
        raise GantoolError(f"{recipe}: generator makes {tuple(fake.shape)} (expected {expected}), discriminator {tuple(scores.shape)} (expected (2,))")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    console = _console()
    console.print(f"[bold]{recipe}[/] OK", highlight=False)
    console.print(f"  dataset        {c.info['dataset']['qualified_name']}: {len(c.dataset)} images of shape {tuple(c.dataset.image_shape)}", highlight=False)
    console.print(f"  generator      {c.info['generator']['qualified_name']}: z {tuple(z.shape)} -> {tuple(fake.shape)}, {count(G):,} parameters", highlight=False)
    console.print(f"  discriminator  {c.info['discriminator']['qualified_name']}: {tuple(fake.shape)} -> {tuple(scores.shape)}, {count(D):,} parameters", highlight=False)
    console.print(f"  loss           {c.info['loss']['qualified_name']}", highlight=False)
    console.print(f"  train          batch {r.train.batch_size}, {r.train.epochs} epochs, device {r.run.device}", highlight=False)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@SET_OPTION
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<name>/<timestamp>).")
@click.option("--resume", is_flag=True, help="Continue from the run's checkpoints/last.safetensors.")
def run(recipe, overrides, out, resume):
    """Train a recipe; writes samples, metrics and checkpoints."""
    from gantool import engine

    r = _load(recipe, overrides)
    summary = engine.run(r, _registry(), out_dir=out, resume=resume)
    click.echo(f"done: {summary['steps']} steps, {summary['images_per_s']:.1f} images/s; samples {summary['samples']}; checkpoint {summary['checkpoint']}")


def main():
    cli(prog_name="gantool")


if __name__ == "__main__":
    main()
