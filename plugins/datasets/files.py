"""Datasets read from a folder of image files (``imagefolder``, ``celeba``).

Fast path: every file is decoded and preprocessed once, in a thread pool (Pillow
releases the GIL while decoding and resizing), into one uint8 tensor; the result is
cached on disk as safetensors so the next run loads it in well under a second. The
cache key hashes the file list with sizes and mtimes plus the preprocessing, so any
change to the folder or the parameters is a miss, never stale data.

Sets too large for memory (``in_memory = false``, or ``"auto"`` when the uint8
tensor would exceed a quarter of physical RAM) skip all that: ``as_tensor()`` returns
None and ``__getitem__`` decodes one file, for the engine's DataLoader workers.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from gantool import GantoolError
from gantool_plugins.datasets.base import InMemoryImages, apply_limit, to_float
from gantool_plugins.datasets.decode import Preprocess, load_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CACHE_FORMAT = 1  # bump when decode.py changes the pixels it produces: old caches then miss


class ImageFiles(InMemoryImages):
    """Base for file datasets: subclasses pass the sorted file list and the preprocessing."""

    def __init__(
        self,
        *,
        name: str,
        root: Path,
        files: list[Path],
        pre: Preprocess,
        hflip: bool,
        limit: int,
        cache: bool,
        in_memory: bool | str,
    ):
        super().__init__(image_shape=(pre.channels, pre.size, pre.size), hflip=hflip, limit=limit)
        self.name, self.root, self.pre, self.cache = name, root, pre, cache
        self.files = files[: apply_limit(len(files), limit)]
        nbytes = len(self.files) * pre.channels * pre.size * pre.size
        self.in_memory = nbytes <= memory_budget() if in_memory == "auto" else bool(in_memory)
        self.skipped = 0  # unreadable files left out of the in-memory tensor
        self._warned = False
        self._check_one_readable()

    def _check_one_readable(self):
        """Fail at build time (``gantool check``), not in a DataLoader worker, if nothing decodes."""
        first_error = None
        for path in self.files:
            try:
                load_image(path, self.pre)
                return
            except Exception as exc:  # noqa: BLE001 -- see _decode_all
                first_error = first_error or f"{path}: {exc}"
        raise GantoolError(
            f"none of the {len(self.files)} image files under {self.root} could be read (first error: {first_error})"
        )

    # -- the Dataset interface ----------------------------------------------------------

    def as_tensor(self) -> torch.Tensor | None:
        return super().as_tensor() if self.in_memory else None

    def __len__(self) -> int:
        # Before decoding, the file count (so `gantool check` does not decode everything);
        # after it, the tensor's length, which leaves out unreadable files.
        return len(self._images) if self._images is not None else len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.in_memory:
            return super().__getitem__(index)
        # Per-item path (DataLoader workers). A broken file cannot be dropped here without
        # changing len(); the next readable file stands in for it, with one warning.
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            try:
                return to_float(load_image(path, self.pre))
            except Exception as exc:  # noqa: BLE001 -- any unreadable file is skipped the same way
                if not self._warned:
                    self._warned = True
                    warn(f"{self.name}: cannot read {path} ({exc}); using the next image instead")
        raise GantoolError(f"{self.name}: none of the {len(self.files)} image files under {self.root} could be read")

    # -- decoding everything once -------------------------------------------------------

    def _load(self) -> torch.Tensor:
        path = cache_path(self._cache_key()) if self.cache else None
        images = read_cache(path, self.image_shape) if path else None
        if images is not None:
            self.skipped = images.skipped
            self._warn_skipped()
            return images.tensor
        images = self._decode_all()
        if path:
            write_cache(path, images, skipped=self.skipped, source=str(self.root))
        return images

    def _decode_all(self) -> torch.Tensor:
        n = len(self.files)
        out = torch.empty((n, *self.image_shape), dtype=torch.uint8)
        ok = torch.zeros(n, dtype=torch.bool)
        errors: list[str] = []

        def decode(i: int):
            try:
                out[i] = load_image(self.files[i], self.pre)
                ok[i] = True
            except Exception as exc:  # noqa: BLE001 -- corrupt, truncated, not an image, unreadable
                errors.append(f"{self.files[i]}: {exc}")

        workers = decode_threads()
        label = f"{self.name}: decoding {n} images from {self.root} ({workers} threads)"
        with DecodeProgress(n, label) as bar:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                for start in range(0, n, 512):  # bounded batches of futures, in order
                    chunk = range(start, min(n, start + 512))
                    list(pool.map(decode, chunk))
                    bar.advance(len(chunk))
            self.skipped = n - int(ok.sum())
            if self.skipped == n:  # files changed since the build-time check
                raise GantoolError(
                    f"{self.name}: none of the {n} image files under {self.root} could be read (first error: {errors[0]})"
                )
            bar.done = f"{self.name}: decoded {n - self.skipped} of {n} images"
        self._warn_skipped(example=errors[0] if errors else None)
        return out[ok] if self.skipped else out

    def _warn_skipped(self, example: str | None = None):
        if self.skipped:
            more = f"; e.g. {example}" if example else ""
            warn(f"{self.name}: skipped {self.skipped} unreadable image file(s) under {self.root}{more}")

    def _cache_key(self) -> str:
        """Hash of what decides the tensor: the files (path, size, mtime) and the preprocessing."""
        h = hashlib.sha256()
        header = {"format": CACHE_FORMAT, "dataset": self.name, "root": str(self.root.resolve()), **self.pre.cache_params()}
        h.update(json.dumps(header, sort_keys=True).encode())
        for path in self.files:
            try:
                st = path.stat()
                stamp = f"{st.st_size}\t{st.st_mtime_ns}"
            except OSError:  # vanished since the scan: decoding will report it
                stamp = "missing"
            h.update(f"\n{path.relative_to(self.root).as_posix()}\t{stamp}".encode())
        return f"{self.name}-{self.pre.size}px-{len(self.files)}-{h.hexdigest()[:20]}"


# ----------------------------------------------------------------------------- helpers


def find_images(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted by path; hidden folders/files skipped."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(folder, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def memory_budget() -> int:
    """Bytes a dataset may take in memory under ``in_memory = "auto"``: 1/4 of physical RAM."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return 4 << 30


def decode_threads() -> int:
    """One decoding thread per usable core (at most 8); ``GANTOOL_DECODE_THREADS`` overrides."""
    if os.environ.get("GANTOOL_DECODE_THREADS", "").isdigit():
        return max(1, int(os.environ["GANTOOL_DECODE_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def warn(message: str):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """``$GANTOOL_CACHE_DIR/datasets``, else ``$XDG_CACHE_HOME/gantool/datasets`` (~/.cache/...)."""
    if os.environ.get("GANTOOL_CACHE_DIR"):
        return Path(os.environ["GANTOOL_CACHE_DIR"]).expanduser() / "datasets"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "gantool" / "datasets"


def cache_path(key: str) -> Path:
    return cache_dir() / f"{key}.safetensors"


class _Cached:
    def __init__(self, tensor, skipped):
        self.tensor, self.skipped = tensor, skipped


def read_cache(path: Path, image_shape) -> _Cached | None:
    """The cached tensor, or None on a miss or an unusable file (which is then rebuilt)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            images = f.get_tensor("images")
    except Exception as exc:  # noqa: BLE001 -- truncated or foreign file: decode again
        warn(f"ignoring unreadable dataset cache {path} ({exc}); decoding again")
        return None
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != tuple(image_shape):
        return None
    return _Cached(images, int(meta.get("skipped", 0)))


def write_cache(path: Path, images: torch.Tensor, *, skipped: int, source: str):
    """Atomic write (temp file + rename): a crash never leaves a half-written cache."""
    from safetensors.torch import save_file

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        os.close(fd)
        save_file({"images": images.contiguous()}, tmp, metadata={"skipped": str(skipped), "source": source})
        os.replace(tmp, path)
    except OSError as exc:
        warn(f"could not write the dataset cache {path} ({exc}); the next run decodes again")
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


class DecodeProgress:
    """A rich progress bar on a terminal (stderr); two plain lines otherwise."""

    def __init__(self, total: int, label: str):
        from rich.console import Console

        self.total, self.label = total, label
        self.done = f"{label}: done"  # the caller may set a better closing line
        self.console = Console(stderr=True)
        self._bar = None

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=self.console, transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        else:
            print(f"{self.label} ...", file=sys.stderr, flush=True)
        return self

    def advance(self, n: int):
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        if exc[0] is None:
            seconds = time.perf_counter() - self._t0
            rate = self.total / max(seconds, 1e-9)
            print(f"{self.done} in {seconds:.1f}s ({rate:.0f} images/s)", file=sys.stderr, flush=True)
