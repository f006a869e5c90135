"""Data-parallel training across processes and machines, through PyTorch's own launcher.

``torchrun --nproc-per-node N -m gantool run RECIPE`` starts N copies of ``gantool run``;
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address, and
``init`` below joins the process group: NCCL on CUDA (one GPU per process,
``cuda:LOCAL_RANK``), gloo on CPU. ``gantool run --nproc N`` is a shortcut that execs
torchrun on this machine. The engine then wraps both networks in
DistributedDataParallel, gives every rank its slice of each global batch (and of
its latents), and lets only rank 0 write logs, samples and checkpoints.
See docs/scaling.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys

from gantool.errors import GantoolError


@dataclasses.dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Context:
    """The process's place in the job, from the variables torchrun sets (1 process if none)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise GantoolError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (they are set by torchrun)") from None
    return Context(rank, world, local)


def rank_device(device, ctx: Context):
    """Under data parallelism each process drives one GPU: ``cuda:LOCAL_RANK``."""
    import torch

    if ctx.enabled and device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise GantoolError(
                f"process with LOCAL_RANK {ctx.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                f"start at most {torch.cuda.device_count()} processes per node (--nproc-per-node)"
            )
        return torch.device("cuda", ctx.local_rank)
    if ctx.enabled and device.type not in ("cpu", "cuda"):
        raise GantoolError(f"[run] device: multi-process training supports cuda (NCCL) and cpu (gloo), not {device.type!r}")
    return device


def init(device) -> Context:
    """Join the process group torchrun prepared; a no-op for a single process."""
    ctx = from_env()
    if not ctx.enabled:
        return ctx
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return ctx
    # Rank 0 alone computes [eval] metrics and writes checkpoints while the others wait
    # in their next collective: allow that an hour rather than the 10 minute default.
    timeout = datetime.timedelta(minutes=60)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return ctx


# The latest collective's tensors, per collective. A gloo worker thread lets go of them
# just after the collective ends. Were its reference the last, freeing a tensor that Python
# made would need the GIL, and torch 2.4 destroys the process group (joining those threads)
# with the GIL held: the run hung at exit, after its checkpoint, in 5 of 8 runs of the DDP
# tests (tests/test_distributed.py), and in none of 20 with them held. See also ``shutdown``.
_HELD: dict[str, tuple] = {}


def all_reduce_sum(tensor):
    """Sum ``tensor`` over the ranks, in place; it is held in ``_HELD``."""
    import torch.distributed as dist

    dist.all_reduce(tensor)
    _HELD["all_reduce"] = (tensor,)


def all_gather(tensor) -> list:
    """Every rank's ``tensor``, in rank order; the tensors are held (``_HELD``)."""
    import torch
    import torch.distributed as dist

    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    _HELD["all_gather"] = (tensor, *gathered)
    return gathered


def shutdown():
    """Destroy the process group, once nothing but torch's own registry holds it.

    The DDP wrappers must be gone first (``GANUpdate.unwrap``): a reducer that outlives
    the group destroys it when freed, and that destructor joins gloo's worker threads with
    the GIL held. A worker still letting go of a collective's tensors needs the GIL, so the
    process hung at exit, after its checkpoint: in 5 of 10 runs of the DDP tests
    on torch 2.11 (none of 10 on 2.14), and none of 10 with this order. The Python side
    releases the GIL when it destroys the group (pytorch#154976); on torch 2.4, which does
    not, holding the collectives' tensors (``_HELD``) is what helps.
    """
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()  # wrappers in reference cycles, too
        dist.destroy_process_group()


def broadcast_object(obj, ctx: Context):
    """Rank 0's value of ``obj`` on every rank (e.g. the run directory it chose)."""
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(nproc: int, argv: list[str]):
    """``gantool run --nproc N ...``: replace this process with torchrun on this machine."""
    if "WORLD_SIZE" in os.environ:
        raise GantoolError("--nproc: already running under torchrun (WORLD_SIZE is set); drop --nproc")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "gantool", *argv]
    sys.stdout.flush(), sys.stderr.flush()
    if os.name == "posix":
        os.execv(sys.executable, cmd)
    import subprocess

    sys.exit(subprocess.call(cmd))
