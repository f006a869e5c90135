"""Datasets read from a folder of image files (``imagefolder``, ``celeba``).

Fast path: every file is decoded and preprocessed once, in a thread pool (Pillow
releases the GIL while decoding and resizing), into one uint8 tensor; the result is
cached on disk as safetensors so the next run loads it in well under a second. The
cache key hashes the file list with sizes and mtimes plus the preprocessing, so any
change to the folder or the parameters is a miss, never stale data.

Sets too large for memory (``in_memory = false``, or ``"auto"`` when the uint8
tensor would exceed a quarter of physical RAM) skip all that: ``as_tensor()`` returns
None and ``__getitem__`` decodes one file, for the engine's DataLoader workers.

Labels (``imagefolder`` with class sub-folders) are one per file. In memory, the rows
of unreadable files are dropped from the labels too, so the cache stores which files
were kept. Per item, ``labels()`` is by file index and a broken file's stand-in is
taken from the same class, so every item still matches its label.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import torch

from gantool import GantoolError
from gantool_plugins.datasets.base import InMemoryImages, apply_limit, check_fits, memory_budget, to_float
from gantool_plugins.datasets.decode import Preprocess, load_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CACHE_FORMAT = 2  # bump when decode.py changes the pixels or the cache file's layout changes: old caches then miss


class ImageFiles(InMemoryImages):
    """Base for file datasets: subclasses pass the sorted file list and the preprocessing,
    and for a labelled set each file's class index (``file_labels``) and the ``class_names``."""

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
        file_labels: list[int] | None = None,
        class_names: list[str] | None = None,
    ):
        super().__init__(image_shape=(pre.channels, *pre.height_width), hflip=hflip, limit=limit)
        self.name, self.root, self.pre, self.cache = name, root, pre, cache
        self.files = files[: apply_limit(len(files), limit)]
        self._file_labels = None if file_labels is None else list(file_labels[: len(self.files)])
        if self._file_labels is not None:
            self._set_classes(class_names)
        self._kept: torch.Tensor | None = None  # bool per file: decoded, so a row of the tensor
        nbytes = len(self.files) * pre.channels * pre.height_width[0] * pre.height_width[1]
        self.in_memory = nbytes <= memory_budget() if in_memory == "auto" else bool(in_memory)
        if self.in_memory:
            check_fits(len(self.files), self.image_shape)
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
        for i in self._stand_ins(index):
            path = self.files[i]
            try:
                return to_float(load_image(path, self.pre))
            except Exception as exc:  # noqa: BLE001 -- any unreadable file is skipped the same way
                if not self._warned:
                    self._warned = True
                    same = " of the same class" if self._file_labels is not None else ""
                    warn(f"{self.name}: cannot read {path} ({exc}); using the next image{same} instead")
        raise GantoolError(f"{self.name}: none of the {len(self.files)} image files under {self.root} could be read")

    def _stand_ins(self, index: int):
        """``index``, then the files after it (wrapping around); in a labelled set those of
        the same class come first, so a broken file's stand-in keeps the label ``labels()`` gives."""
        yield index
        n, labels = len(self.files), self._file_labels
        later = [(index + k) % n for k in range(1, n)]  # built only when ``index`` is unreadable
        if labels is None:
            yield from later
        else:
            yield from (i for i in later if labels[i] == labels[index])
            yield from (i for i in later if labels[i] != labels[index])

    def _load_labels(self) -> torch.Tensor:
        labels = torch.tensor(self._file_labels, dtype=torch.int64)
        if not self.in_memory:
            return labels  # by file index, like __getitem__
        self.as_tensor()  # decoding decides which files have a row
        return labels[self._kept]

    # -- decoding everything once -------------------------------------------------------

    def _load(self) -> torch.Tensor:
        path = cache_path(self._cache_key()) if self.cache else None
        cached = read_cache(path, self.image_shape, len(self.files)) if path else None
        if cached is not None:
            self._kept = cached.kept
            self.skipped = len(self.files) - int(cached.kept.sum())
            self._warn_skipped()
            return cached.tensor
        images = self._decode_all()
        if path:
            write_cache(path, images, kept=self._kept, source=str(self.root))
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
        self._kept = ok
        return out[ok] if self.skipped else out

    def _warn_skipped(self, example: str | None = None):
        if self.skipped:
            more = f"; e.g. {example}" if example else ""
            warn(f"{self.name}: skipped {self.skipped} unreadable image file(s) under {self.root}{more}")

    def _cache_key(self) -> str:
        """Hash of what decides the tensor: the files (path, size, mtime), the preprocessing and the labelling."""
        h = hashlib.sha256()
        header = {"format": CACHE_FORMAT, "dataset": self.name, "root": str(self.root.resolve()),
                  "labels": "none" if self._file_labels is None else "folders", **self.pre.cache_params()}
        h.update(json.dumps(header, sort_keys=True).encode())
        for path in self.files:
            try:
                st = path.stat()
                stamp = f"{st.st_size}\t{st.st_mtime_ns}"
            except OSError:  # vanished since the scan: decoding will report it
                stamp = "missing"
            h.update(f"\n{path.relative_to(self.root).as_posix()}\t{stamp}".encode())
        size = "x".join(map(str, self.pre.height_width)) if isinstance(self.pre.size, tuple) else self.pre.size
        return f"{self.name}-{size}px-{len(self.files)}-{h.hexdigest()[:20]}"


# ----------------------------------------------------------------------------- helpers


def find_images(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted by path; hidden folders/files skipped.

    Only regular files (or links to them): reading a fifo named ``x.png`` would block
    forever, a device would stream without end. Broken links and link loops are skipped too.
    """
    found, odd = [], []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in names:
            if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("."):
                path = Path(folder, n)
                (found if _is_regular(path) else odd).append(path)
    if odd:
        warn(f"skipped {len(odd)} file(s) under {root} named like images that are not regular files "
             f"(a fifo, socket, device or broken link), e.g. {odd[0]}")
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)  # follows links; never opens the file
    except (OSError, ValueError):
        return False


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
    def __init__(self, tensor, kept):
        self.tensor, self.kept = tensor, kept


def read_cache(path: Path, image_shape, n_files: int) -> _Cached | None:
    """The cached tensor and which of the ``n_files`` files it holds (``kept``, bool per file,
    so labels drop the same rows); None on a miss or an unusable file (which is then rebuilt)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            images = f.get_tensor("images")
            kept = f.get_tensor("kept")
    except Exception as exc:  # noqa: BLE001 -- truncated or foreign file: decode again
        warn(f"ignoring unreadable dataset cache {path} ({exc}); decoding again")
        return None
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != tuple(image_shape):
        return None
    if kept.dtype != torch.bool or tuple(kept.shape) != (n_files,) or int(kept.sum()) != len(images):
        return None
    return _Cached(images, kept)


def write_cache(path: Path, images: torch.Tensor, *, kept: torch.Tensor, source: str):
    """Atomic write (temp file + rename): a crash never leaves a half-written cache."""
    from safetensors.torch import save_file

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        os.close(fd)
        skipped = str(len(kept) - int(kept.sum()))
        save_file({"images": images.contiguous(), "kept": kept.contiguous()}, tmp,
                  metadata={"skipped": skipped, "source": source})
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
