"""The processes of a ``torchrun`` job, or the one process of a plain run.

:class:`ProcessGroup` reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (set
by ``torchrun``), initialises ``torch.distributed`` (NCCL for CUDA devices,
Gloo otherwise) when there is more than one process, picks each rank's
device, and offers the few collectives the toolkit uses. In a single process
every collective is the identity, so callers never branch on it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .runtime import resolve_device

__all__ = ["ProcessGroup"]


class ProcessGroup:
    """Rank, world size and device of this process.

    Args:
        device_name: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; under torchrun a
            bare ``cuda`` becomes ``cuda:LOCAL_RANK``.

    Attributes:
        world_size, rank, local_rank: from the torchrun environment (1, 0, 0 otherwise).
        device: this rank's torch device.
    """

    def __init__(self, device_name: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_name)
        self._owns_group = False
        if self.distributed:
            if device.type == "cuda" and device.index is None:
                device = torch.device("cuda", self.local_rank)
            if device.type == "cuda":
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
                self._owns_group = True
        self.device = device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (a picklable payload between our own processes)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over the ranks (on the CPU)."""
        if not self.distributed:
            return values
        values = values.to(self.device)
        dist.all_reduce(values)
        return values.cpu()

    def close(self) -> None:
        """End the process group if this object started it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
