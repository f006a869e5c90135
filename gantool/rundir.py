"""A run folder belongs to one run and one writer: nothing a user made is overwritten.

``prepare`` refuses to start a new run in a folder that already holds one (``--resume``
continues it, ``--overwrite`` moves it aside first, never deletes it). ``RunLock`` keeps
a second process out while a run writes: the lock file names its holder's pid and host,
and a lock whose process is gone (a crash, ``kill -9``) is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from datetime import datetime
from pathlib import Path

from gantool.errors import GantoolError

LOCK_NAME = ".gantool.lock"
#: What a run writes; any of them means the folder holds a run.
RUN_FILES = ("checkpoints/last.safetensors", "metrics.jsonl", "recipe.toml", "summary.json")


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def has_checkpoint(folder: Path) -> bool:
    return (folder / "checkpoints" / "last.safetensors").is_file()


def prepare(folder: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """Check that a run may write ``folder``; with ``overwrite``, move an old run aside.

    Returns where the old run went (``None`` if nothing was moved).
    """
    if resume:
        if not has_checkpoint(folder):
            raise GantoolError(f"--resume: {folder}/checkpoints/last.safetensors not found")
        return None
    if not holds_run(folder):
        return None
    if not overwrite:
        what = "a checkpoint" if has_checkpoint(folder) else "another run's files"
        raise GantoolError(f"--out {folder}: the folder already holds {what}; continue it with --resume, start over "
                           "with --overwrite (the old run is moved aside, not deleted), or pick another --out")
    with RunLock(folder):  # never move a folder a live run is writing
        pass
    aside = folder.with_name(f"{folder.name}.old-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{folder.name}.old-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{n}")
    folder.rename(aside)
    print(f"--overwrite: moved the old run in {folder} to {aside}", file=sys.stderr, flush=True)
    return aside


def remove_orphans(folder: Path) -> list[Path]:
    """Temp files of checkpoint writes that a killed run left behind (the lock holder's to clean)."""
    removed = []
    for tmp in (folder / "checkpoints").glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


class RunLock:
    """``folder/.gantool.lock`` while a run writes; a second writer is refused with the holder's pid and host.

    The lock is an ``flock`` on that file, which the kernel drops when its process dies
    (even by ``kill -9``), so a stale lock is simply free and gets taken over; the pid
    and host written into the file are only there to name the holder.
    """

    def __init__(self, folder: Path):
        self.folder, self.path, self.file = Path(folder), Path(folder) / LOCK_NAME, None

    def __enter__(self) -> RunLock:
        import fcntl  # POSIX; gantool's run folders live on Linux and macOS

        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = _parse(f.read(4096))
            f.close()
            who = f"pid {holder['pid']} on {holder['host']} (since {holder['since']})" if holder else "another process"
            raise GantoolError(f"{self.folder} is in use by {who}; "
                               "wait for that run to end or pick another --out") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": datetime.now().isoformat(timespec="seconds")}) + "\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()  # releases the flock; the file stays (removing it would race a new holder)
            self.file = None


def _parse(text: str) -> dict | None:
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) and {"pid", "host", "since"} <= holder.keys() else None
