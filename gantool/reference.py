"""The recipe reference, generated from the code so it cannot drift from it.

``python -m gantool.reference > docs/recipes.md`` writes docs/recipes.md (a test checks the
committed file is current); ``gantool info SECTION`` prints one section in the terminal.
Keys, types, defaults and docs of the engine's sections come from the dataclasses in
recipe.py; default types, registry kinds and injected parameters from recipe.py and
registry.py. Only the one-line summaries of component tables are written here. Importing
this module does not import torch; only ``builtin_components`` (docs only) loads plugins.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from gantool.params import describe_type, parameters
from gantool.recipe import (
    COMPONENT_SECTIONS,
    ENGINE_SECTIONS,
    OPTIMIZED,
    OPTIONAL_COMPONENTS,
    TABLE_KINDS,
    TOP_LEVEL,
)
from gantool.registry import INJECTED, KINDS

COMMAND = "python -m gantool.reference > docs/recipes.md"

# What each component table is for; everything else about it is derived from the code.
TABLE_SUMMARIES = {
    "dataset": "The real images to train on.",
    "generator": "The generator network: latent vector -> image.",
    "discriminator": "The discriminator network: image -> one score (logit) per image.",
    "loss": "The GAN objective: the discriminator's and the generator's losses, and any penalty.",
    "augment": "Differentiable augmentation of every image the discriminator sees, real and generated. "
               "Without the table: no augmentation.",
    "optimizer": "The optimizer of one network.",
    "scheduler": "The learning-rate schedule of one network, stepped once per generator step. "
                 "Without the table: the optimizer's learning rate throughout.",
    "callbacks": "A callback: receives the run's events (log lines, evaluations, samples, checkpoints), "
                 "e.g. to log to another tracker. One table per callback; they run in recipe order.",
    "eval.<metric>": "Parameters of one metric: its evaluation protocol, used for the metrics `[eval] metrics` "
                     "names during training and again by `gantool eval` (the recipe is stored in checkpoints).",
}
# Where the engine takes the parameters it injects (registry.INJECTED) from.
INJECTED_FROM = {
    "image_shape": "(C, H, W) of the dataset's images",
    "params": "the network's parameters",
    "optimizer": "the network's optimizer",
    "total_steps": "the run's number of generator steps",
}
ENGINE_ORDER = tuple(ENGINE_SECTIONS)
TABLE_ORDER = (*COMPONENT_SECTIONS, "augment", "optimizer", "scheduler", "callbacks", "eval.<metric>")
# The names `gantool info SECTION` accepts without a component name (`eval` shows [eval.<metric>] too).
SECTIONS = (*ENGINE_ORDER, "augment", "optimizer", "scheduler", "callbacks")


@dataclasses.dataclass
class Key:
    name: str
    type: str
    default: str
    doc: str


@dataclasses.dataclass
class Section:
    header: str  # "[train]", "[optimizer.<net>]"
    summary: str
    keys: list[Key]  # an engine section's settings; empty for a component table
    notes: list[str]  # markdown lines: what `type` selects, defaults, injected parameters


def toml_value(value) -> str:
    """A default as a recipe would spell it: true, "auto", [0.5, 0.999]."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def engine_keys(cls) -> list[Key]:
    """The keys of an engine section, from its dataclass (defaults include default_factory)."""
    params, _ = parameters(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    keys = []
    for p in params:
        f = fields[p.name]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        keys.append(Key(p.name, describe_type(p.annotation), toml_value(default), p.doc))
    return keys


def kind_of(table: str) -> str:
    """The registry kind a component table names: 'augment' -> 'augmentation', 'eval.<metric>' -> 'metric'."""
    return TABLE_KINDS[table.split(".")[0]]


def info_sections(name: str) -> list[Section]:
    """What `gantool info NAME` prints for a name in SECTIONS."""
    return [section(name), section("eval.<metric>")] if name == "eval" else [section(name)]


def section(name: str) -> Section:
    """The reference of `extends`, an engine section or a component table (a name in TABLE_ORDER)."""
    if name == "extends":
        return Section("extends", "A file-level key: the path of a base recipe, relative to this file. The base is "
                       "loaded first (following its own `extends`; a cycle is an error) and this file is merged "
                       "over it (see Merge rules).", [], ['`extends = "base.toml"`, above the first table'])
    if name in ENGINE_SECTIONS:
        cls = ENGINE_SECTIONS[name]
        summary = (cls.__doc__ or "").strip().split("\n\n")[0].strip()
        notes = [f"Checked when the recipe is loaded; override with `--set {name}.KEY=VALUE`."]
        if name == "eval":
            notes.append("Metric parameters go in `[eval.<metric>]` tables (below).")
        return Section(f"[{name}]", summary, engine_keys(cls), notes)
    if name not in TABLE_ORDER:
        raise KeyError(name)
    return Section(_table_header(name), TABLE_SUMMARIES[name], [], _table_notes(name))


def _table_header(name: str) -> str:
    if name == "callbacks":
        return "[callbacks.<name>]"
    if name == "eval.<metric>":
        return "[eval.<metric>]"
    if (name, OPTIMIZED[0]) in OPTIONAL_COMPONENTS:
        return f"[{name}.<net>]"
    return f"[{name}]"


def _table_notes(name: str) -> list[str]:
    kind = kind_of(name)
    article = "an" if kind[0] in "aeiou" else "a"
    choices = f"{article} {kind} name (`gantool list {kind}`; parameters: `gantool info {kind} NAME`)"
    notes = []
    if name == "eval.<metric>":
        notes.append(f"`<metric>`: {choices}; the table has no `type` key.")
    elif name in COMPONENT_SECTIONS:
        notes.append(f"Required. `type` (required): {choices}.")
    elif name == "callbacks":
        notes.append(f"`type`: {choices}; defaults to the table name, so `[callbacks.csv]` is the `csv` callback.")
    else:
        default = OPTIONAL_COMPONENTS.get((name,), OPTIONAL_COMPONENTS.get((name, OPTIMIZED[0])))
        nets = " or ".join(f"`{n}`" for n in OPTIMIZED)
        if default is None:
            notes.append(f"Optional. `type` (required in the table): {choices}.")
        else:
            notes.append(f"Optional. `type`: {choices}; default `{toml_value(default)}`, also without the table.")
        if _table_header(name).endswith(".<net>]"):
            notes.append(f"`<net>`: {nets}; one table per network.")
    notes.append("Other keys: the parameters of the chosen component, checked against its signature when the "
                 "run is planned (`gantool check` does it without training).")
    injected = INJECTED.get(kind, ())
    if injected:
        items = ", ".join(f"`{p}` ({INJECTED_FROM.get(p, 'set by the engine')})" for p in injected)
        notes.append(f"Passed by the engine, never set in a recipe: {items}.")
    if name != "eval.<metric>":
        notes.append("A different `type` (in a recipe that extends this one, or with `--set`) replaces the whole "
                     "table: the old component's parameters are dropped. `--set` type changes are applied "
                     "before the other `--set` keys, so those are kept whatever their order.")
    return notes


def component_tables() -> list[str]:
    """The tables where a changed `type` replaces the table (recipe._is_component_table)."""
    return [_table_header(name) for name in TABLE_ORDER if name != "eval.<metric>"]


# ----------------------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def _code(text: str) -> str:
    return "`" + str(text).replace("|", "\\|") + "`"


def section_markdown(name: str) -> str:
    s = section(name)
    lines = [f"### `{s.header}`", "", s.summary, ""]
    lines += [f"- {note}" for note in s.notes] + [""]
    if s.keys:
        lines += ["| key | type | default | doc |", "|---|---|---|---|"]
        lines += [f"| {_code(k.name)} | {_code(k.type)} | {_code(k.default)} | {_cell(k.doc)} |" for k in s.keys]
        lines.append("")
    return "\n".join(lines)


def merge_rules_markdown() -> str:
    tables = ", ".join(f"`{t}`" for t in component_tables())
    return "\n".join([
        "## Merge rules", "",
        "1. A recipe is built from its `extends` chain, base first, then the file itself, then every "
        "`--set` in command-line order.",
        "2. Tables merge key by key, at any depth; any other value (numbers, strings, arrays) replaces the "
        "earlier one.",
        f"3. Component tables ({tables}) are the exception: when a later layer names a different `type`, the "
        "table is replaced, not merged, so the old component's parameters do not reach the new one.",
        "4. `--set KEY.PATH=VALUE` sets one key: `--set train.epochs=3`, "
        "`--set optimizer.generator.betas=[0.0, 0.9]`. "
        "VALUE is read as TOML, and taken as a string when it is not valid TOML (`--set dataset.root=data/x`). "
        "`--set generator.type=upsample_conv` starts a fresh `[generator]` table (rule 3).",
        "5. Every key is remembered with the file (or `--set`) it came from, so errors name it: "
        "`recipes/x.toml: [generator] base_chanels: unknown parameter; did you mean 'base_channels'?`.",
        "",
        "Where keys are checked: top-level section names and the engine sections, when the recipe is loaded "
        "(`gantool/recipe.py`); component tables, against the component's signature when the run is planned "
        "(`registry.build`); settings that depend on each other (a batch larger than the dataset, `keep_best` "
        "without metrics, components that do not fit together), by the plan (`gantool/plan.py`). "
        "`gantool check RECIPE` runs all three without training.",
        "",
    ])


def builtin_components(registry=None) -> list:
    """(component, its recipe parameters) for every component of the `gantool` distribution, by kind and name."""
    if registry is None:
        from gantool.plugins import get_registry

        registry = get_registry()
    return [registry.parameters(c.kind, c.qualified_name) for c in registry.list() if c.plugin == "gantool"]


def builtin_markdown(registry=None) -> str:
    lines = ["## Built-in components", "",
             "The components the `gantool` distribution itself registers, with the parameters their recipe table "
             "takes. `gantool list KIND` and `gantool info KIND NAME` show the same for every installed plugin.", ""]
    kind = None
    for component, params in builtin_components(registry):
        if component.kind != kind:
            kind = component.kind
            tables = ", ".join(f"`{_table_header(t)}`" for t in TABLE_ORDER if kind_of(t) == kind)
            lines += [f"### {kind}", "", f"Used in {tables}.", ""]
        lines += [f"#### {kind} `{component.name}`", "", _cell(component.summary), ""]
        if params:
            lines += ["| parameter | type | default | doc |", "|---|---|---|---|"]
            for p in params:
                default = "(required)" if p.required else _code(toml_value(p.default))
                ptype = _code(describe_type(p.annotation))
                lines.append(f"| {_code(p.name)} | {ptype} | {default} | {_cell(p.doc)} |")
        else:
            lines.append("No parameters.")
        lines.append("")
    return "\n".join(lines)


def markdown(registry=None) -> str:
    """The whole of docs/recipes.md."""
    documented = {"extends", *ENGINE_ORDER, *TABLE_ORDER}
    missing = [key for key in TOP_LEVEL if key not in documented]
    if missing:  # a new top-level section needs its place here
        raise KeyError(f"recipe sections without a reference: {missing}")
    parts = [
        "# Recipe reference", "",
        f"*Generated from the code by `{COMMAND}`; do not edit by hand. `gantool info SECTION` prints one "
        "section in the terminal.*", "",
        "A recipe is a TOML file. Its top-level keys: " + ", ".join(f"`{k}`" for k in TOP_LEVEL) + ". Any other "
        "is an error. The engine's own sections hold settings; component tables name a component by its `type` "
        "(from any installed plugin) and pass it parameters.", "",
        "## The file", "", section_markdown("extends"),
        "## Engine sections", "", *(section_markdown(s) for s in ENGINE_ORDER),
        "## Component tables", "",
        f"Component kinds: {', '.join(f'`{k}`' for k in KINDS)}. A `type` is a bare name while only one plugin "
        "registers it, else qualified by its distribution (`gantool:dcgan`).", "",
        *(section_markdown(s) for s in TABLE_ORDER),
        merge_rules_markdown(),
        builtin_markdown(registry),
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


def main():
    """Print docs/recipes.md to stdout (UTF-8 whatever the locale, so the file is the same everywhere)."""
    sys.stdout.buffer.write(markdown().encode("utf-8"))


if __name__ == "__main__":
    main()
