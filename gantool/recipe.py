"""Recipes: TOML files naming the components and training settings of a run.

Loading resolves ``extends`` (base <- file <- ``--set`` overrides), remembers where every
key came from, and checks the engine's own sections against the dataclasses below.
Component tables (``[generator]`` etc.) are checked by the registry against the
component's signature when the engine builds it. Recipes are data: never executed.
"""

import dataclasses
import os
import stat
import tomllib
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from gantool.errors import GantoolError, ParamError
from gantool.params import Range, suggest, validate

COMPONENT_SECTIONS = ("dataset", "generator", "discriminator", "loss")  # required, each with a `type`
OPTIMIZED = ("generator", "discriminator")
# Optional component tables and the type each defaults to (None: the table needs a type).
OPTIONAL_COMPONENTS = {
    ("augment",): None,
    **{("optimizer", net): "gantool:adam" for net in OPTIMIZED},
    **{("scheduler", net): None for net in OPTIMIZED},
}
# The registry kind whose names each component table's `type` takes (`gantool list KIND`);
# an [eval.<metric>] table's name is the metric.
TABLE_KINDS = {
    **{s: s for s in COMPONENT_SECTIONS},
    "augment": "augmentation", "optimizer": "optimizer", "scheduler": "scheduler",
    "callbacks": "callback", "eval": "metric",
}


# Upper bounds of the engine's own integer keys: far above any real run, low enough that a
# stray digit is caught by `check` instead of overflowing or allocating in `run`.
MAX_STEPS = 10**12  # steps, epochs and cadences


@dataclasses.dataclass
class RunConfig:
    """What the run is called, how it is seeded, where it runs.

    Args:
        name: run name; outputs go to runs/<name>/<timestamp>/ (default: the recipe's file name)
        seed: seeds model init, latents and data order
        device: auto | cpu | cuda | cuda:N | mps
    """

    name: str = ""
    seed: Annotated[int, Range(ge=0, le=2**63 - 1)] = 0
    device: str = "auto"


@dataclasses.dataclass
class TrainConfig:
    """How long to train, how often to log, sample and checkpoint, and how fast.

    Args:
        batch_size: images per step (global, across all processes)
        epochs: passes over the dataset
        max_steps: stop after this many generator steps (0 = no limit)
        max_minutes: stop cleanly after this many minutes of training in this process (0 = no limit);
            the final samples, evaluation and checkpoint follow, and --resume continues the run
        d_steps_per_g: discriminator steps per generator step (WGAN-GP: 5)
        log_every: steps between metric log lines (device values are read only then)
        sample_every: steps between sample grids (0 = only at the end)
        checkpoint_every: steps between checkpoints (0 = only at the end)
        sample_grid: number of images in the sample grid
        ema_decay: exponential moving average of generator weights (0 = off, e.g. 0.999)
        keep_best: metric key whose best value selects best.safetensors (e.g. "fid")
        amp: mixed precision: auto = on CUDA, and on CPUs with bf16 instructions, the faster of bf16
            (fp16 on GPUs without bf16) and off, measured at start-up and cached (kept on resume); off on
            other CPUs and MPS; bf16, fp16 or off force it
        compile: torch.compile the networks: true (= "default"), "reduce-overhead" (inductor's own CUDA
            graphs; turns cuda_graphs off), "max-autotune-no-cudagraphs", or false (off, the default)
        cuda_graphs: capture the whole GAN step (D and G updates with their optimizers) as CUDA graphs and
            replay them; auto = on for CUDA when every component can be captured (one warning line, else eager)
        channels_last: channels-last (NHWC) memory format for the convolutions; auto = on for CPU (oneDNN),
            off on MPS, measured with amp on CUDA (the fastest combination; see docs/performance.md)
        num_workers: DataLoader workers for datasets too large for memory
        conditional: class-conditional training: G and D get the dataset's labels (it must have them);
            on by itself when a component requires labels
        divergence: non-finite losses or weights: "stop" the run (keeping the last finite checkpoint),
            only "warn", or "off"; exploding losses warn unless "off"
    """

    batch_size: Annotated[int, Range(ge=1, le=2**20)] = 128
    epochs: Annotated[int, Range(ge=0, le=MAX_STEPS)] = 5
    max_steps: Annotated[int, Range(ge=0, le=MAX_STEPS)] = 0
    max_minutes: Annotated[float, Range(ge=0, le=10**7)] = 0.0
    d_steps_per_g: Annotated[int, Range(ge=1, le=100)] = 1
    log_every: Annotated[int, Range(ge=1, le=MAX_STEPS)] = 50
    sample_every: Annotated[int, Range(ge=0, le=MAX_STEPS)] = 500
    checkpoint_every: Annotated[int, Range(ge=0, le=MAX_STEPS)] = 1000
    sample_grid: Annotated[int, Range(ge=1, le=1024)] = 64
    ema_decay: Annotated[float, Range(ge=0, lt=1)] = 0.0
    keep_best: str = ""
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    compile: bool | Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = False
    channels_last: bool | Literal["auto"] = "auto"
    cuda_graphs: bool | Literal["auto"] = "auto"
    num_workers: Annotated[int, Range(ge=0, le=256)] = 2
    conditional: bool = False
    divergence: Literal["stop", "warn", "off"] = "stop"


@dataclasses.dataclass
class EvalConfig:
    """Which metrics score the generator during training, and how often.

    Args:
        metrics: metric names to compute during training and at the end, e.g. ["fid", "prdc"]
        every: steps between evaluations (0 = only at the end)
        n_samples: generated images per evaluation
    """

    metrics: list[str] = dataclasses.field(default_factory=list)
    every: Annotated[int, Range(ge=0, le=MAX_STEPS)] = 0
    n_samples: Annotated[int, Range(ge=1, le=10**7)] = 1000


@dataclasses.dataclass
class LogConfig:
    """Extra logging beyond metrics.jsonl and the progress display.

    Args:
        tensorboard: also write TensorBoard scalars and sample grids (needs `tensorboard`)
    """

    tensorboard: bool = False


ENGINE_SECTIONS = {"run": RunConfig, "train": TrainConfig, "eval": EvalConfig, "log": LogConfig}
TOP_LEVEL = ("extends", *COMPONENT_SECTIONS, "augment", "optimizer", "scheduler", "callbacks", *ENGINE_SECTIONS)


@dataclasses.dataclass
class Recipe:
    data: dict  # the resolved recipe, without `extends`
    path: Path
    origins: dict  # key path tuple -> "file.toml" or "--set"

    run: RunConfig = None
    train: TrainConfig = None
    eval: EvalConfig = None
    log: LogConfig = None

    def locate(self, *path: str) -> str:
        """'recipes/x.toml: [generator] base_channels' -- the origin of a key."""
        origin = self.origins.get(tuple(path)) or self.origins.get(tuple(path[:-1])) or str(self.path)
        if len(path) == 1:
            return f"{origin}: [{path[0]}]"
        return f"{origin}: [{'.'.join(path[:-1])}] {path[-1]}"

    def component(self, *path: str) -> tuple[str, dict] | None:
        """(type name, parameters) of a component table; None for an absent optional one.

        ``component("loss")``, ``component("optimizer", "generator")``; a callback's
        type defaults to its table name (``[callbacks.csv]``).
        """
        table = self.data
        for key in path:
            table = table.get(key)
            if table is None:
                break
        if table is None and OPTIONAL_COMPONENTS.get(path) is None:
            return None
        table = dict(table or {})
        default = path[-1] if path[0] == "callbacks" else OPTIONAL_COMPONENTS.get(path)
        return table.pop("type", default), table

    def callbacks(self) -> list[str]:
        """The names of the ``[callbacks.<name>]`` tables, in recipe order."""
        return list(self.data.get("callbacks", {}))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.data)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    data, origins = _load_with_extends(path, ())
    apply_overrides(data, origins, overrides)
    return _check(Recipe(data, path, origins))


def apply_overrides(data: dict, origins: dict, overrides) -> dict:
    """Apply ``--set`` items to recipe ``data`` in place (``origins`` records where each key came from).

    A new type replaces its table, so type changes go first: `--set generator.base_channels=32
    --set generator.type=upsample_conv` keeps base_channels whatever the order on the command line.
    """
    for item in sorted(overrides, key=lambda item: not _sets_a_type(item)):
        _apply_override(data, origins, item)
    return data


def recipe_from_dict(data: dict, path: str | Path = "<checkpoint>") -> Recipe:
    """Rebuild a recipe stored in a checkpoint or run directory."""
    return _check(Recipe(data, Path(path), {}))


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.epochs=3' -> (['train', 'epochs'], 3); values are TOML, else strings."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise GantoolError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set train.epochs=3")
    keys = [k.strip() for k in key.strip().split(".")]
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    except (RecursionError, ValueError):  # deeply nested, or an integer of thousands of digits
        value = None
    if value is None or len(keys) > MAX_NESTING or _too_deep(value):
        raise GantoolError(f"--set {item[:80]!r}: the key or the value is nested more than {MAX_NESTING} levels "
                           "deep, or the number is too large; no recipe needs that")
    return keys, value


# Bounds on what a recipe file may make gantool read (docs/cli.md, "Environment variables and limits").
MAX_RECIPE_BYTES = 1_000_000  # real recipes are a few kB
MAX_EXTENDS = 32  # files in one `extends` chain
MAX_NESTING = 32  # levels of tables and arrays; recipes use 3
MAX_RUN_NAME = 100  # characters of [run] name


def _read_toml(path: Path, referrer: str | None) -> dict:
    """A regular file under MAX_RECIPE_BYTES, parsed; checked with stat before a byte is read,
    so a fifo, /dev/zero or a huge file is one clear error, not a hang or an exhausted memory."""
    where = f" (extended by {referrer})" if referrer else ""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GantoolError(f"{path}: recipe file not found{where}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise GantoolError(f"{path}: cannot read the recipe ({getattr(e, 'strerror', None) or e}){where}") from None
    if stat.S_ISDIR(st.st_mode):
        raise GantoolError(f"{path}: is a directory, expected a .toml recipe file{where}")
    if not stat.S_ISREG(st.st_mode):
        raise GantoolError(f"{path}: not a regular file (a fifo, socket or device); a recipe is a .toml file{where}")
    too_big = f"{path}: over the {MAX_RECIPE_BYTES // 1000} kB limit for a recipe file{where}; is it a recipe?"
    if st.st_size > MAX_RECIPE_BYTES:
        raise GantoolError(too_big)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise GantoolError(f"{path}: cannot read the recipe ({e.strerror or e}){where}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise GantoolError(too_big)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise GantoolError(f"{path}: not a text TOML file (invalid UTF-8 at byte {e.start}){where}") from None
    except tomllib.TOMLDecodeError as e:
        raise GantoolError(f"{path}: TOML syntax error: {e}{where}") from None
    except (RecursionError, ValueError) as e:  # ValueError: an integer of thousands of digits
        what = "arrays or tables nested too deeply" if isinstance(e, RecursionError) else str(e).split(":")[0]
        raise GantoolError(f"{path}: not a usable TOML file ({what}){where}") from None
    if _too_deep(data):
        raise GantoolError(f"{path}: tables or arrays nested more than {MAX_NESTING} levels deep{where}; "
                           "no recipe needs that")
    return data


def _too_deep(value, limit: int = MAX_NESTING) -> bool:
    """Whether tables/arrays nest deeper than ``limit``; iterative, so it cannot overflow the stack."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _load_with_extends(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict]:
    if len(chain) >= MAX_EXTENDS:
        raise GantoolError(f"{path}: `extends` chain longer than {MAX_EXTENDS} files (from {chain[0]}); "
                           "merge some of the files")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte
        where = f" (extended by {chain[-1]})" if chain else ""
        raise GantoolError(f"{path}: cannot resolve the recipe path ({e}){where}") from None
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise GantoolError(f"{path}: extends cycle: {cycle}; remove one of the `extends` keys")
    data = _read_toml(path, str(chain[-1]) if chain else None)
    extends = data.pop("extends", None)
    if extends is None:
        base, origins = {}, {}
    elif not isinstance(extends, str):
        raise GantoolError(f"{path}: extends: expected a path string relative to this file, got {extends!r}")
    else:
        base, origins = _load_with_extends(Path(os.path.normpath(path.parent / extends)), (*chain, resolved))
    _merge(base, origins, data, str(path), ())
    return base, origins


def _merge(base: dict, origins: dict, override: dict, source: str, prefix: tuple):
    """Deep-merge tables, replace arrays; a new component `type` replaces its whole table."""
    for key, value in override.items():
        path = (*prefix, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            if _is_component_table(path) and value.get("type", base[key].get("type")) != base[key].get("type"):
                base[key] = {}
            _merge(base[key], origins, value, source, path)
        else:
            base[key] = _copy(value)
            if isinstance(value, dict):
                _merge(base[key], origins, {}, source, path)
        origins[path] = source
        for sub in _leaf_paths(value, path):
            origins[sub] = source


def merge_tables(base: dict, override: dict) -> dict:
    """Merge ``override`` into ``base`` in place, as ``extends`` merges files; returns ``base``."""
    _merge(base, {}, override, "<merge>", ())
    return base


def _is_component_table(path: tuple) -> bool:
    """Whether ``path`` names a table with a ``type``: a new type there replaces the whole table."""
    callback = len(path) == 2 and path[0] == "callbacks"
    return (len(path) == 1 and path[0] in COMPONENT_SECTIONS) or path in OPTIONAL_COMPONENTS or callback


def _leaf_paths(value, path):
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, k)
            yield from _leaf_paths(v, (*path, k))


def _copy(value):
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else value


def _apply_override(data: dict, origins: dict, item: str):
    keys, value = parse_override(item)
    if keys[0] not in TOP_LEVEL or keys[0] == "extends":
        raise GantoolError(f"--set {item}: unknown section {keys[0]!r}{suggest(keys[0], TOP_LEVEL[1:])}")
    _merge(data, origins, _nest(keys, value), f"--set {item}", ())


def _sets_a_type(item: str) -> bool:
    """Whether the override ``item`` gives a component table its ``type`` (alone or in a whole table)."""
    keys, value = parse_override(item)
    if keys[-1] == "type" and _is_component_table(tuple(keys[:-1])):
        return True
    return isinstance(value, dict) and "type" in value and _is_component_table(tuple(keys))


def _nest(keys, value):
    return {keys[0]: _nest(keys[1:], value)} if len(keys) > 1 else {keys[0]: value}


def _check(recipe: Recipe) -> Recipe:
    data, path = recipe.data, recipe.path
    for key in data:
        if key not in TOP_LEVEL:
            origin = recipe.origins.get((key,), str(path))
            raise GantoolError(f"{origin}: unknown section [{key}]{suggest(key, TOP_LEVEL[1:])}")
    for section in COMPONENT_SECTIONS:
        if section not in data:
            raise GantoolError(f"{path}: missing section [{section}]; add it with a `type = \"...\"` key (see `gantool list {section}`)")
        _check_component_table(recipe, (section,), section, type_required=True)
    for section, cls in ENGINE_SECTIONS.items():
        setattr(recipe, section, _section(recipe, cls, (section,)))
    if recipe.run.name == "":
        recipe.run.name = path.stem
    _check_run_name(recipe)
    if "augment" in data:
        _check_component_table(recipe, ("augment",), TABLE_KINDS["augment"], type_required=True)
    for section, kind in ((s, TABLE_KINDS[s]) for s in ("optimizer", "scheduler", "callbacks")):
        tables = data.get(section, {})
        example = "[callbacks.csv]" if section == "callbacks" else f"[{section}.generator]"
        if not isinstance(tables, dict):
            raise GantoolError(f"{recipe.locate(section)}: expected tables like {example}")
        for key in tables:
            if section != "callbacks" and key not in OPTIMIZED:
                raise GantoolError(f"{recipe.locate(section, key)}: unknown network{suggest(key, OPTIMIZED)}")
            _check_component_table(recipe, (section, key), kind, type_required=section == "scheduler")
    return recipe


def _check_run_name(recipe: Recipe):
    """Outputs go to runs/<name>/<timestamp>/: the name must be one plain folder name, never a path."""
    name = recipe.run.name
    if len(name) > MAX_RUN_NAME:
        problem = f"longer than {MAX_RUN_NAME} characters"
    elif name.strip() in ("", ".", ".."):
        problem = f"{name!r} is not a folder name"
    elif "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        problem = f"{name!r} contains a path separator"
    elif any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        problem = f"{name!r} contains control characters"
    else:
        return
    origin = "" if recipe.data.get("run", {}).get("name") else " (from the recipe's file name)"
    raise GantoolError(f"{recipe.locate('run', 'name')}{origin}: {problem}; a run name is one plain folder name "
                       f"under runs/ (letters, digits, -_.), e.g. name = \"dcgan_mnist\"")


def _check_component_table(recipe: Recipe, path: tuple, kind: str, *, type_required: bool):
    table = recipe.data[path[0]] if len(path) == 1 else recipe.data[path[0]][path[1]]
    name = ".".join(path)
    if not isinstance(table, dict):
        raise GantoolError(f"{recipe.locate(*path)}: expected a table, e.g. [{name}] with type = \"...\"")
    if type_required and "type" not in table:
        where = recipe.origins.get(path, recipe.path)
        raise GantoolError(f"{where}: [{name}] type: missing; name a {kind}, e.g. type = \"...\" (see `gantool list {kind}`)")
    if "type" in table and not isinstance(table["type"], str):
        raise GantoolError(f"{recipe.locate(*path, 'type')}: expected a string name, got {table['type']!r}")


def _section(recipe: Recipe, cls, path: tuple):
    table = recipe.data
    for key in path:
        table = table.get(key, {})
    if not isinstance(table, dict):
        raise GantoolError(f"{recipe.locate(*path)}: expected a table of settings, got {table!r}")
    if cls is EvalConfig:  # [eval.<metric>] tables hold metric parameters
        table = {k: v for k, v in table.items() if not isinstance(v, dict)}
    try:
        return cls(**validate(cls, table))
    except ParamError as e:
        raise GantoolError(f"{recipe.locate(*path, e.param)}: {e.message}") from None
