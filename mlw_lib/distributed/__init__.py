"""Data-parallel training over processes started by `torchrun`.

Every rank holds the whole hierarchy and sees the same global minibatches (the same seeded
permutation); each rank trains on its own contiguous shard of every global minibatch. The
gradients of every level's steps are averaged by DistributedDataParallel, those of tau's
gradient passes by one all-reduce, so the weights stay identical on every rank. The operators
of every transition are rank 0's (broadcast), and BatchNorm running statistics are averaged
over ranks before each evaluation, held-out measurement and recalibration. Without a process
group of two or more ranks every function here leaves its input as it is.

The command-line entry point is `torchrun --nproc-per-node N -m mlw_lib.distributed ...`
(`mlw_lib/distributed/__main__.py`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("gloo", "nccl")


class LaunchError(RuntimeError):
    """A process was started without the launcher's environment."""


def active() -> bool:
    """True inside a process group of two or more ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the group (1 outside one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the one process that logs, writes checkpoints and prints."""
    return rank() == 0


def start(backend: str, device: str) -> torch.device:
    """Join the process group torchrun describes in the environment; this rank's device
    (`cuda:LOCAL_RANK` when `device` is "cuda"). Raises with the fix when the launcher's
    environment is missing or the backend cannot run here."""
    missing = [name for name in LAUNCHER_ENV if name not in os.environ]
    if missing:
        raise LaunchError(
            f"this process was started without torchrun's environment (no {', '.join(missing)}); "
            "start it with `torchrun --nproc-per-node N -m mlw_lib.distributed ...` "
            "(N = 1 for one process)"
        )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kind = torch.device(device).type
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError(
            "backend 'nccl' needs CUDA GPUs, and this machine has none; use backend 'gloo' "
            "(with device 'cpu')"
        )
    if backend == "nccl" and kind != "cuda":
        raise ValueError(f"backend 'nccl' trains on GPUs; set device 'cuda', not {device!r}")
    if kind == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node (--nproc-per-node)"
            )
        torch.cuda.set_device(local)
        placed = torch.device("cuda", local)
    else:
        placed = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=placed if kind == "cuda" else None)
    return placed


def progress_options() -> dict[str, bool]:
    """tqdm keyword arguments: progress bars on rank 0 only."""
    return {} if is_main() else {"disable": True}


def stop() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch_size(batch_size: int) -> None:
    """Every rank needs an equal, non-empty shard of each global minibatch."""
    world = world_size()
    if batch_size < world:
        raise ValueError(
            f"batch_size {batch_size} is too small for {world} processes (each needs at least "
            f"one example); start at most {batch_size} processes or raise batch_size"
        )
    if batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} does not split evenly over {world} processes; use a "
            f"batch_size that is a multiple of {world} (e.g. {batch_size - batch_size % world}) "
            "or another process count"
        )


def shard(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous share of a global minibatch (x (B, ...), y (B,))."""
    if not active():
        return batch
    return tuple(part.tensor_split(world_size())[rank()] for part in batch)


def replicate(model: nn.Module) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (its backward averages the gradients over
    ranks); the model itself outside a process group. Buffers are not broadcast: they are
    averaged by `average_buffers` where they are read."""
    if not active():
        return model
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def average_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor (in place) by its mean over ranks, in one all-reduce."""
    if not active() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        tensor.copy_(part.view_as(tensor))


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over ranks: each
    rank updated them from its own shards; their mean is the running mean of the global
    minibatches' means."""
    if active():
        average_([b for b in model.buffers() if b.is_floating_point()])


def total(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Each value summed over ranks."""
    if not active():
        return list(values)
    summed = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return summed.tolist()


def from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (a small picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a small picklable object)."""
    if not active():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def run_entry_point(job: Callable[[], None], program: str) -> int:
    """Run `job()` (a torchrun entry point's work) and leave the process group: 0, or 2 after
    a user error, printed as one line per rank to stderr (one write, so the ranks' lines do
    not interleave), named by rank (or `program` outside a process group)."""
    try:
        job()
    except (ValueError, OSError, LaunchError) as error:
        where = f"rank {rank()}" if active() else program
        sys.stderr.write(f"{where}: error: {' '.join(str(error).split())}\n")
        sys.stderr.flush()
        return 2
    finally:
        stop()
    return 0


def __getattr__(name: str) -> Any:
    """`mlw_lib.distributed.launch` on first access (it needs experiments, MLflow, ...)."""
    if name == "launch":
        return importlib.import_module(".launch", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
