"""Multi-process training on PyTorch's own engine: start a run with ``torchrun``, there is no launcher of ours.

``torchrun --nproc_per_node N -m pixelwise train ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each process; :func:`setup` reads them, joins the process group (NCCL on
CUDA, gloo on the CPU) and picks the process's device. A plain ``python -m pixelwise train`` never needs a process
group: every helper here is then a no-op on a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from pixelwise.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` in ``0..size-1``; ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when :func:`setup` created the process group (and :func:`teardown` ends it)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the logs and checkpoints and shows the progress bar."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Args:
        device: the device the config asked for. Under CUDA each process takes ``cuda:LOCAL_RANK``.

    Returns:
        ``(world, device)``. Without ``WORLD_SIZE > 1`` in the environment: a world of one, the device unchanged,
        no process group.
    """
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): start torchrun with "
                f"--nproc_per_node {torch.cuda.device_count()} or fewer"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size)
        owns = True
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, owns_group=owns), device


def teardown(world: World) -> None:
    """End the process group if :func:`setup` started it."""
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``value`` (a tensor of the same shape on every rank) over all ranks; ``value`` itself on a world
    of one. A collective: every rank must call it."""
    if not world.distributed:
        return value
    out = value.detach().clone()
    if dist.get_backend() == "nccl" and out.device.type != "cuda":
        out = out.cuda()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(value.device)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


class ShardSampler(Sampler):
    """Rank ``r`` of ``n`` gets indices ``r, r + n, r + 2n, ...`` of ``range(num_samples)``, without padding.

    For evaluation: unlike ``DistributedSampler`` nothing is repeated to even out the shards, so a confusion matrix
    summed over ranks counts every image exactly once.
    """

    def __init__(self, num_samples: int, world: World) -> None:
        self.num_samples, self.world = num_samples, world

    def __iter__(self):
        return iter(range(self.world.rank, self.num_samples, self.world.size))

    def __len__(self) -> int:
        return len(range(self.world.rank, self.num_samples, self.world.size))
