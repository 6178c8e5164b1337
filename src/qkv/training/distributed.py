"""Data parallelism through ``torchrun``: process-group set-up, data sharding, model wrapping.

Under ``torchrun --nproc_per_node N`` every process reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
from its environment; :func:`init_distributed` joins the group (NCCL on GPUs, gloo on CPU).
Each rank trains on its own shard of the batches (:class:`Sharded`); DDP averages the gradients;
only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and saves."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def default_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when a GPU is visible, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables (if any).

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) this is a no-op that returns a single-process
    :class:`DistInfo`.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when the device is a GPU, else gloo.
        device: force a device; default :func:`default_device`.

    Returns:
        This process's :class:`DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = torch.device(device) if device is not None else default_device(local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (identity in a single process); returns it."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class Sharded:
    """Every ``world_size``-th item of an iterable of batches, starting at ``rank``.

    The tail that does not fill a whole round is dropped, so every rank sees the same number of
    batches (a rank with one batch more would hang in the gradient all-reduce). ``set_epoch`` is
    forwarded to the wrapped iterable, so seeded shuffles stay the same on every rank.

    Args:
        data: the batches (the same sequence on every rank).
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, data: Iterable[Any], rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank ({rank}) must be in [0, world_size) with world_size {world_size}")
        self.data, self.rank, self.world_size = data, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped data (if it reshuffles per epoch)."""
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.data) // self.world_size  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        round_: list[Any] = []
        for item in self.data:
            round_.append(item)
            if len(round_) == self.world_size:
                yield round_[self.rank]
                round_ = []


def wrap_model(module: nn.Module, info: DistInfo, strategy: str = "ddp") -> nn.Module:
    """Wrap a module for data-parallel training.

    Args:
        module: the module to wrap (its forward is what every step calls).
        info: from :func:`init_distributed`.
        strategy: ``"ddp"`` (replicated weights) or ``"fsdp"`` (sharded weights, gradients and
            optimiser state, ``torch.distributed.fsdp.fully_shard``; create the optimiser after wrapping).

    Returns:
        The wrapped module (the module itself in a single process).
    """
    if not info.enabled:
        return module
    if strategy == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        return fully_shard(module)
    raise ValueError(f"unknown strategy {strategy!r}; expected 'ddp' or 'fsdp'")


def gather_full_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """An FSDP-sharded module's full weights and optimiser state (keyed by parameter name) on rank 0's CPU.

    A collective: call on all ranks. The other ranks get empty dicts.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(module: nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optimizer_state: dict) -> None:
    """Shard full weights and optimiser state, as :func:`gather_full_state` saved them, back into FSDP on
    every rank (each rank passes the full dicts)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(module, optimizer, model_state_dict=weights, optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True))
