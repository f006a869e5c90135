"""Memory bounds, checked before anything large is allocated.

A recipe or a checkpoint's metadata decides how big the networks are (``base_channels``
and the like). One wrong digit would otherwise allocate until the machine runs out of
memory, so each network is first built on PyTorch's "meta" device, where parameters
have shapes but no storage; its parameter memory is summed and compared to a limit
before the real build. The limit is half of the memory available now, or
``GANTOOL_MAX_MODEL_MEMORY`` (e.g. ``8GB``, ``512MiB``, ``off``).
"""

from __future__ import annotations

import os
import re

from gantool.errors import GantoolError

ENV = "GANTOOL_MAX_MODEL_MEMORY"
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int | None:
    """Bytes in ``text`` ("8GB", "512MiB", "1.5g", "1000000"); None for "off"/"none"/"0" (no limit)."""
    value = text.strip().lower().replace(" ", "")
    if value in ("off", "none", "0", "unlimited"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgt]i?)?b?", value)
    if not m:
        raise GantoolError(f"{ENV}={text[:40]!r}: expected a size like 8GB, 512MiB or 2000000000 (bytes), or off")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # other Unixes: free pages (a lower bound of what is available)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def model_memory_limit() -> tuple[int | None, str]:
    """(limit in bytes or None, where it comes from) for one network's parameters."""
    if os.environ.get(ENV, "").strip():
        return parse_size(os.environ[ENV]), ENV
    available = available_memory()
    if available is None:
        return None, "no limit: available memory unknown"
    return available // 2, "half of the memory available now"


def format_bytes(n: int) -> str:
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def module_bytes(module) -> int:
    """Parameter and buffer memory of a built ``torch.nn.Module``."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def estimate_bytes(build, *, load=None) -> int | None:
    """Parameter memory of the module ``build()`` returns, built on the meta device (no storage).

    ``load`` imports the factory first, outside the meta device, so tensors a plugin creates
    when imported stay real. None when either fails, or ``build`` gives no ``nn.Module``:
    such a model gets no estimate, and its real build reports any error.
    """
    import torch

    try:
        if load is not None:
            load()
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the global RNG stays as it was
            module = build()
    except Exception:  # noqa: BLE001 - a factory that cannot run on meta: no estimate, not a crash
        return None
    return module_bytes(module) if isinstance(module, torch.nn.Module) else None


def check_model_memory(nbytes: int | None, what: str, hint: str) -> None:
    """Refuse a network whose parameters (``nbytes``) exceed the limit; one line, with the override."""
    if nbytes is None:
        return
    limit, source = model_memory_limit()
    if limit is not None and nbytes > limit:
        raise GantoolError(f"{what} would need {format_bytes(nbytes)} for its parameters, over the limit of "
                           f"{format_bytes(limit)} ({source}); {hint}, or set {ENV} (e.g. "
                           f"{ENV}={format_bytes(2 * nbytes).replace(' ', '')}, or off)")


def reported(build, what: str):
    """``build`` whose failures are one GantoolError naming ``what``: sizes come from a recipe or a
    checkpoint, and one too large for torch (an overflowing shape) is bad input, not a crash."""

    def run():
        try:
            return build()
        except GantoolError:
            raise
        except Exception as e:  # noqa: BLE001
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise GantoolError(f"{what} could not be built: {type(e).__name__}: {first}") from e

    return run
