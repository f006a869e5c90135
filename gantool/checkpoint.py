"""Checkpoints: one safetensors file per save, written atomically. Never pickle.

Layout: ``<module>.<state_dict key>`` tensors for each network, ``optimizer.<net>.<param
index>.<key>`` for optimizer state, ``rng.<name>`` for RNG states, and one JSON metadata
entry ``gantool`` holding the resolved recipe, step, versions and optimizer settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from gantool.errors import GantoolError


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


def load_checkpoint(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a gantool checkpoint; a clear error for anything else."""
    path = Path(path)
    try:
        blob = path.read_bytes()
        tensors = load_bytes(blob)
        header_len = int.from_bytes(blob[:8], "little")
        metadata = json.loads(blob[8 : 8 + header_len]).get("__metadata__", {})
        return tensors, json.loads(metadata["gantool"])
    except FileNotFoundError:
        raise GantoolError(f"{path}: checkpoint not found") from None
    except (SafetensorError, ValueError, KeyError, OSError) as e:
        raise GantoolError(f"{path}: not a gantool safetensors checkpoint ({type(e).__name__}: {e})") from None


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
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # A private contiguous copy: safetensors refuses shared or strided storage.
    return t.detach().to("cpu", copy=True).contiguous()


def _atomic_write(path: Path, blob: bytes):
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
