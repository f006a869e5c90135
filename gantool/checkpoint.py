"""Checkpoints: one safetensors file per save, written atomically. Never pickle.

Layout: ``<module>.<state_dict key>`` tensors for each network, ``optimizer.<net>.<param
index>.<key>`` for optimizer state, ``rng.<name>`` for RNG states, and one JSON metadata
entry ``gantool`` holding the resolved recipe, step, versions and optimizer settings.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from gantool.errors import GantoolError, first_line


def save_checkpoint(path: Path, *, modules: dict, optimizers: dict, rng: dict, metadata: dict):
    tensors, optim_meta = {}, {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = _cpu_copy(value)
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        scalars = {}
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{name}.{index}.{key}"] = _cpu_copy(value)
                else:
                    scalars[f"{index}.{key}"] = value
        optim_meta[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    for name, value in rng.items():
        tensors[f"rng.{name}"] = _cpu_copy(value)
    blob = save_bytes(tensors, metadata={"gantool": json.dumps({**metadata, "optimizers": optim_meta})})
    _atomic_write(Path(path), blob)


def load_checkpoint(path: Path, *, require_run: bool = False) -> tuple[dict, dict]:
    """(tensors, metadata) of a gantool checkpoint; one clear error naming ``path`` for anything else.

    The file must be a regular file whose safetensors header fits in it and under
    MAX_HEADER_BYTES, checked before anything is allocated; the metadata must match the
    schema ``Trainer.save_checkpoint`` writes (``validate_metadata``). ``require_run``:
    the file must be a run's checkpoint; without it a bare state file (written with
    empty metadata, as gantool.testing's round trips do) is accepted too.
    """
    path = Path(path)
    with _open_regular(path) as f:
        header, size = _read_header(f, path)
        metadata = _parse_metadata(header, path)
        validate_metadata(metadata, path, require_run=require_run)
        f.seek(0)
        blob = f.read(size + 1)
    if len(blob) != size:
        raise GantoolError(f"{path}: the file changed while it was read; try again")
    try:
        tensors = load_bytes(blob)
    except (SafetensorError, ValueError, OverflowError) as e:
        raise GantoolError(f"{path}: {NOT_OURS} ({first_line(e)})") from None
    return tensors, metadata


def read_metadata(path: Path, *, require_run: bool = False) -> dict:
    """A checkpoint's validated metadata, from its header alone (bounded, like ``load_checkpoint``)."""
    path = Path(path)
    with _open_regular(path) as f:
        header, _ = _read_header(f, path)
    metadata = _parse_metadata(header, path)
    validate_metadata(metadata, path, require_run=require_run)
    return metadata


def tensor_names(path: Path) -> list[str]:
    """The tensor names of a checkpoint, from its header alone (bounded, like ``load_checkpoint``)."""
    with _open_regular(Path(path)) as f:
        header, _ = _read_header(f, Path(path))
    return [k for k in header if k != "__metadata__"]


def require_finite(tensors: dict, path: Path, prefixes=("generator.", "ema_generator.")):
    """Refuse a checkpoint whose weights under ``prefixes`` hold NaN or inf: a diverged run
    samples black or noise images and scores garbage, so say so instead."""
    for name, tensor in tensors.items():
        if name.startswith(tuple(prefixes)) and (tensor.is_floating_point() or tensor.is_complex()):
            if not bool(torch.isfinite(tensor).all()):
                raise GantoolError(f"{path}: tensor {name} holds NaN or inf: the run had diverged when this "
                                   "checkpoint was saved; use an earlier checkpoint (e.g. --best) or retrain "
                                   "with a lower learning rate")


# ----------------------------------------------------------------------------- reading, bounded

MAX_HEADER_BYTES = 100 * 10**6  # the JSON header (tensor names, shapes, metadata); real ones are kilobytes
MAX_DEPTH = 64  # nesting of the metadata JSON; gantool writes about 6 levels
MAX_INT = 2**63 - 1
MAX_SIDE = 65536  # each of image_shape's (channels, height, width)
MAX_EVAL_SAMPLES = 10**7  # as [eval] n_samples in a recipe
FORMAT = "gantool-checkpoint-1"
NOT_OURS = "not a gantool safetensors checkpoint"
RUN_KEYS = ("format", "recipe", "components", "step", "epoch", "batches_seen")
REQUIRED_COMPONENTS = ("dataset", "generator", "discriminator", "loss")


def _open_regular(path: Path):
    """The file opened for reading; a fifo, device or folder is refused before it can block or stream."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GantoolError(f"{path}: checkpoint not found") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise GantoolError(f"{path}: cannot read the checkpoint ({first_line(e)})") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a fifo, socket or device)"
        raise GantoolError(f"{path}: {what}; pass a .safetensors checkpoint file or a run directory")
    try:
        return open(path, "rb")
    except OSError as e:
        raise GantoolError(f"{path}: cannot read the checkpoint ({first_line(e)})") from None


def _read_header(f, path: Path) -> tuple[dict, int]:
    """(header dict, file size): the 8-byte length is checked against the file and the cap first."""
    size = os.fstat(f.fileno()).st_size
    first = f.read(9)
    # A safetensors header (JSON) starts with "{" at byte 8. Only without it can the first
    # bytes be a pickle's or a zip's signature: as a length, 0x80 0x02 is a 640-byte header.
    pickled = first[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or first[:4] == b"PK\x03\x04"
    if pickled and first[8:9] != b"{":
        raise GantoolError(f"{path}: {NOT_OURS}: a pickle or torch.save file, which gantool never "
                           "unpickles (it can run code); use a checkpoint written by gantool run")
    if len(first) < 8:
        raise GantoolError(f"{path}: {NOT_OURS}: {size} bytes, too short (empty or truncated)")
    n = int.from_bytes(first[:8], "little")
    f.seek(8)
    if n > size - 8:
        raise GantoolError(f"{path}: {NOT_OURS}: its header claims {n} bytes but the file has {size} "
                           "(truncated, or another format)")
    if n > MAX_HEADER_BYTES:
        raise GantoolError(f"{path}: {NOT_OURS}: a header of {n} bytes, over the "
                           f"{MAX_HEADER_BYTES // 10**6} MB limit for a checkpoint header")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise GantoolError(f"{path}: {NOT_OURS}: unreadable header ({first_line(e)})") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise GantoolError(f"{path}: {NOT_OURS}: malformed header (expected a JSON object)")
    return header, size


def _parse_metadata(header: dict, path: Path) -> dict:
    text = header.get("__metadata__", {}).get("gantool")
    if not isinstance(text, str):
        raise GantoolError(f"{path}: {NOT_OURS}: a safetensors file without gantool metadata")
    try:
        metadata = json.loads(text)
    except RecursionError:
        raise GantoolError(f"{path}: checkpoint metadata: nested too deeply to be gantool's") from None
    except ValueError as e:
        raise GantoolError(f"{path}: checkpoint metadata: not valid JSON ({first_line(e)})") from None
    return metadata


# ----------------------------------------------------------------------------- the metadata schema


class _Bad(Exception):
    """One schema violation: the key path and what is wrong with it."""


def validate_metadata(meta, path: Path, *, require_run: bool = True):
    """Check a checkpoint's metadata against what ``Trainer.save_checkpoint`` writes.

    Types, ranges and the format version; unknown keys are allowed (newer writers add
    some). A metadata dict that names none of RUN_KEYS is a bare state file, accepted
    unless ``require_run``. Raises GantoolError "PATH: checkpoint metadata: KEY: problem".
    """
    try:
        _check_depth(meta)
        _obj(meta, "(top level)")
        if require_run or any(k in meta for k in RUN_KEYS):
            _check_run(meta)
        if "optimizers" in meta or require_run:
            _check_optimizers(_get(meta, "optimizers", dict))
        if "init_from" in meta:  # a fine-tuned run: where its first weights came from (gantool/finetune.py)
            init = _get(meta, "init_from", dict)
            _get(init, "path", str, "init_from."), _int(init, "step", "init_from.")
            parts = _str_list(_get(init, "parts", list, "init_from."), "init_from.parts")
            if not parts or not set(parts) <= {"generator", "discriminator"}:
                raise _Bad(f'init_from.parts: expected "generator" and/or "discriminator", got {_short(parts)}')
        if "speed" in meta:  # the resolved [train] amp / channels_last, kept on resume (gantool/autotune.py)
            speed = _get(meta, "speed", dict)
            if _get(speed, "amp", str, "speed.") not in ("off", "bf16", "fp16"):
                raise _Bad(f'speed.amp: expected "off", "bf16" or "fp16", got {_short(speed["amp"])}')
            _get(speed, "channels_last", bool, "speed."), _get(speed, "device", str, "speed.")
    except _Bad as e:
        raise GantoolError(f"{path}: checkpoint metadata: {e}") from None


def _check_run(meta: dict):
    fmt = _get(meta, "format", str)
    if fmt != FORMAT:
        raise _Bad(f"format: {fmt[:60]!r} is not {FORMAT!r} (written by another tool or a newer gantool)")
    for key in ("gantool_version", "torch_version"):
        if key in meta:
            _get(meta, key, str)
    _int(meta, "step"), _int(meta, "batches_seen")
    epoch = _get(meta, "epoch", (int, float))
    if not 0 <= epoch < float(MAX_INT):  # also refuses NaN and inf
        raise _Bad(f"epoch: must be a finite number >= 0, got {epoch!r}")
    best = meta.get("best")
    if best is not None:
        _obj(best, "best")
        _get(best, "key", str, "best."), _get(best, "value", (int, float), "best."), _int(best, "step", "best.")
    recipe = _get(meta, "recipe", dict)
    for section in REQUIRED_COMPONENTS:
        _get(_get(recipe, section, dict, "recipe."), "type", str, f"recipe.{section}.")
    if "eval" in recipe:
        table = _get(recipe, "eval", dict, "recipe.")
        if "metrics" in table:
            _str_list(_get(table, "metrics", list, "recipe.eval."), "recipe.eval.metrics")
        if "n_samples" in table:
            _int(table, "n_samples", "recipe.eval.", low=1, high=MAX_EVAL_SAMPLES)
    components = _get(meta, "components", dict)
    for kind in REQUIRED_COMPONENTS:
        _get(components, kind, dict, "components.")
    for kind, info in components.items():
        _obj(info, f"components.{kind}")
        for key in ("type", "qualified_name", "plugin", "version"):
            _get(info, key, str, f"components.{kind}.")
    dataset = components["dataset"]
    shape = _get(dataset, "image_shape", list, "components.dataset.")
    if len(shape) != 3 or not all(type(s) is int and 1 <= s <= MAX_SIDE for s in shape):
        raise _Bad(f"components.dataset.image_shape: expected 3 integers in 1..{MAX_SIDE} "
                   f"(channels, height, width), got {_short(shape)}")
    classes = _int(dataset, "num_classes", "components.dataset.") if "num_classes" in dataset else 0
    if "class_names" in dataset:
        names = _str_list(_get(dataset, "class_names", list, "components.dataset."), "components.dataset.class_names")
        if len(names) != classes:
            raise _Bad(f"components.dataset.class_names: {len(names)} names for num_classes = {classes}")
    if "schedulers" in meta:
        for net, state in _get(meta, "schedulers", dict).items():
            _obj(state, f"schedulers.{net}")
    if "history" in meta:
        for i, entry in enumerate(_get(meta, "history", list)):
            _obj(entry, f"history[{i}]")


def _check_optimizers(optimizers: dict):
    for net, state in optimizers.items():
        where = f"optimizers.{net}."
        _obj(state, where[:-1])
        for i, group in enumerate(_get(state, "param_groups", list, where)):
            _obj(group, f"{where}param_groups[{i}]")
            params = _get(group, "params", list, f"{where}param_groups[{i}].")
            if not all(type(p) is int and 0 <= p <= MAX_INT for p in params):
                raise _Bad(f"{where}param_groups[{i}].params: expected parameter indices (integers >= 0)")
        for key in _get(state, "scalars", dict, where):
            index, dot, field = key.partition(".")
            if not (index.isdigit() and dot and field):
                raise _Bad(f"{where}scalars: key {key[:60]!r} is not '<parameter index>.<name>'")


def _get(table: dict, key: str, types, prefix: str = ""):
    if key not in table:
        raise _Bad(f"{prefix}{key}: missing")
    value = table[key]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types):
        raise _Bad(f"{prefix}{key}: expected {_names(types)}, got {_json_type(value)} {_short(value)}")
    return value


def _int(table: dict, key: str, prefix: str = "", low: int = 0, high: int = MAX_INT) -> int:
    value = _get(table, key, int, prefix)
    if not low <= value <= high:
        shown = "2**63-1" if high == MAX_INT else f"{high:_}"
        raise _Bad(f"{prefix}{key}: must be an integer in {low}..{shown}, got {_short(value)}")
    return value


def _obj(value, where: str):
    if not isinstance(value, dict):
        raise _Bad(f"{where}: expected an object, got {_json_type(value)} {_short(value)}")


def _str_list(values: list, where: str) -> list:
    if not all(isinstance(v, str) for v in values):
        raise _Bad(f"{where}: expected a list of strings, got {_short(values)}")
    return values


def _check_depth(value, limit: int = MAX_DEPTH):
    """Iteratively, so a deep document cannot exhaust the stack of whatever reads it next."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise _Bad(f"nested deeper than {limit} levels; gantool writes a few")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _names(types) -> str:
    words = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}
    return " or ".join(words.get(t, t.__name__) for t in _tuple(types) if not (t is int and float in _tuple(types)))


def _json_type(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def has_module(keys, name: str) -> bool:
    """Whether a checkpoint's tensor names include module ``name`` (e.g. "ema_generator")."""
    return any(k.startswith(f"{name}.") for k in keys)


def restore_module(module: torch.nn.Module, tensors: dict, name: str):
    prefix = f"{name}."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise GantoolError(f"checkpoint's {name} does not match the recipe's model: {' '.join(first)}") from None


#: Optimizer settings that depend on the device and on CUDA graphs, not on the training
#: trajectory: a run saved with capturable (graphed) or fused (CUDA) steps resumes anywhere.
RUNTIME_FLAGS = ("capturable", "fused", "foreach")


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, metadata: dict, name: str):
    meta = metadata["optimizers"][name]
    state: dict[int, dict] = {}
    prefix = f"optimizer.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, _, field = key[len(prefix) :].partition(".")
            state.setdefault(int(index), {})[field] = value
    for key, value in meta["scalars"].items():
        index, _, field = key.partition(".")
        state.setdefault(int(index), {})[field] = value
    groups = meta["param_groups"]
    if len(groups) == len(optimizer.param_groups):  # how this process runs the step is its own, not the file's
        groups = [{**saved, **{k: live[k] for k in RUNTIME_FLAGS if k in live}}
                  for saved, live in zip(groups, optimizer.param_groups)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    _match_param_layouts(optimizer)


def _match_param_layouts(optimizer: torch.optim.Optimizer):
    """Give each restored state tensor its parameter's strides (checkpoints store them contiguous).

    With channels_last parameters, CUDA's fused Adam refuses state of another layout ("must
    have same dtype, device, and layout"), and torch's fused CPU kernel silently computes
    wrong updates.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # A private contiguous copy: safetensors refuses shared or strided storage.
    return t.detach().to("cpu", copy=True).contiguous()


def _atomic_write(path: Path, blob: bytes):
    """Write to a temp file in the same folder, fsync, rename over the target, fsync the folder.

    A crash at any point leaves the previous checkpoint or the new one, never a mix; the
    folder's fsync makes the rename itself survive a power cut. A failed write (a full
    disk) removes its temp file and keeps the previous checkpoint.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders: the rename is all it gets
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)
