"""The standard FID Inception weights, fetched once and kept as safetensors.

Published FIDs use the Inception-v3 graph of TensorFlow's 2015-12-05 release. pytorch-fid and
torch-fidelity ship the same PyTorch port (``pt_inception-2015-12-05-6726825d.pth``); its keys
are torchvision's Inception3 with 1008 classes and no AuxLogits, which ``features.build_inception``
runs with the FID pooling blocks.

``ensure_weights()`` returns the cached safetensors copy, making it on first use: from a ``.pth``
the user placed in the cache folder, else from a download. Neither library pins a full SHA-256
(torch.hub checks only the 8 hex digits the name carries); the full one below is the value that
several independent evaluation setups record for this 95,628,359-byte file, and it starts with
those 8 digits. The pickle is read only with ``torch.load(weights_only=True)``, and later runs
read only the safetensors copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import tempfile
from pathlib import Path

import torch

from gantool.errors import GantoolError

FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
SAFETENSORS_NAME = "pt_inception-2015-12-05-6726825d.safetensors"
URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FILE_NAME}"
# torch-fidelity's copy of the same port (torch_fidelity/feature_extractor_inceptionv3.py): tried second.
MIRROR = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"  # its name carries the first 8 digits
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download counts as failed


def weights_dir() -> Path:
    """``$GANTOOL_CACHE_DIR/weights``, else ``$XDG_CACHE_HOME/gantool/weights`` (~/.cache/...)."""
    if os.environ.get("GANTOOL_CACHE_DIR"):
        return Path(os.environ["GANTOOL_CACHE_DIR"]).expanduser() / "weights"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "gantool" / "weights"


def pth_path() -> Path:
    """Where a user may put pytorch-fid's ``.pth`` by hand (it is converted, and kept)."""
    return weights_dir() / FILE_NAME


def safetensors_path() -> Path:
    """The converted copy every run loads (a user may also put a converted file here)."""
    return weights_dir() / SAFETENSORS_NAME


def available() -> bool:
    """True when the weights are on disk (converted copy or a hand-placed .pth); nothing is downloaded."""
    return safetensors_path().is_file() or pth_path().is_file()


def ensure_weights() -> Path:
    """The safetensors copy of the FID Inception weights, converted or downloaded on first use."""
    target = safetensors_path()
    if target.is_file():
        return target
    _make_dir(target.parent)
    if pth_path().is_file():  # placed by hand: verify and convert, never delete it
        _convert(pth_path(), target, _checked_digest(pth_path(), downloaded=False))
        return target
    tmp, digest = _download_verified(target.parent)
    try:
        _convert(tmp, target, digest)
    finally:
        tmp.unlink(missing_ok=True)  # our own download: the safetensors copy replaces it
    return target


def offline_help(reason: str) -> str:
    return (f"FID Inception weights: cannot download them; save {URL} as {pth_path()} "
            f"(or set inception_weights to a local safetensors file) [{reason}]")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GantoolError(f"FID Inception weights: cannot create {folder} ({e.strerror or e}); "
                           "set GANTOOL_CACHE_DIR to a writable folder") from None


def _checked_digest(path: Path, *, downloaded: bool) -> str:
    digest = file_sha256(path)
    if digest == SHA256:
        return digest
    if downloaded:
        path.unlink(missing_ok=True)
        raise GantoolError(f"FID Inception weights: the download's SHA-256 is {digest[:16]}..., not "
                           f"{SHA256[:16]}...; refused and removed it (a broken or altered file): try again later")
    raise GantoolError(f"{path}: SHA-256 is {digest[:16]}..., not {SHA256[:16]}..., so it is not pytorch-fid's "
                       f"{FILE_NAME}; replace it with the file from {URL}")


def _download_verified(folder: Path) -> tuple[Path, str]:
    """Download to a temp file in ``folder`` (pytorch-fid's URL, then torch-fidelity's); verify its hash."""
    reasons = []
    for url in (URL, MIRROR):
        fd, name = tempfile.mkstemp(prefix=".pt_inception-", suffix=".download", dir=folder)
        os.close(fd)
        tmp = Path(name)
        try:
            print(f"gantool: downloading the FID Inception weights (about 95 MB) from {url} ...",
                  file=sys.stderr, flush=True)
            _download(url, tmp)
        except Exception as e:  # noqa: BLE001 -- URLError, HTTPError, timeouts, disk full
            tmp.unlink(missing_ok=True)
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            reasons.append(lines[-1] if lines else type(e).__name__)
            continue
        except BaseException:  # Ctrl-C: leave no partial file behind
            tmp.unlink(missing_ok=True)
            raise
        return tmp, _checked_digest(tmp, downloaded=True)
    raise GantoolError(offline_help(reasons[0]))


def _download(url: str, dst: Path) -> None:
    """torch.hub's downloader (its progress bar on a terminal), with a timeout instead of a hang."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        torch.hub.download_url_to_file(url, str(dst), progress=sys.stderr.isatty())
    finally:
        socket.setdefaulttimeout(previous)


def _convert(source: Path, target: Path, digest: str) -> None:
    """Weights-only load of ``source``, checked against the FID network, saved atomically as safetensors."""
    from safetensors.torch import save_file

    from gantool_plugins.metrics import features

    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- UnpicklingError for non-tensor objects, or a damaged file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GantoolError(f"{source}: refused by weights-only loading, gantool never unpickles objects "
                           f"({first}); replace it with the file from {URL}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GantoolError(f"{source}: not a state dict of tensors; replace it with the file from {URL}")
    state = {str(k).removeprefix("module."): v for k, v in state.items() if not str(k).startswith("AuxLogits.")}
    try:
        with features._own_rng():
            _, variant = features.build_inception(dict(state), source)  # same keys and shapes as the FID network
    except GantoolError as e:
        raise GantoolError(f"{str(e).removeprefix('inception_weights: ')}; replace it with the file from {URL}") from None
    if variant != "fid":
        raise GantoolError(f"{source}: a {state['fc.weight'].shape[0]}-class Inception-v3, not the FID network "
                           f"(1008 classes); replace it with the file from {URL}")
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(tensors, name, metadata={"source": FILE_NAME, "source_sha256": digest})
        os.replace(name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


if __name__ == "__main__":  # fetch ahead of a run: python -m gantool_plugins.metrics.inception
    try:
        print(ensure_weights())
    except GantoolError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
