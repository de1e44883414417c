"""Sharding a refresh across the ranks of an initialised ``torch.distributed`` process group.

Each rank scans and maps every ``world_size``-th candidate, and the results are summed across
ranks with ``all_reduce``: each rank fills only its own rows and leaves zeros elsewhere, so the sum
is exact and every rank ends with the same wrong-mask, scores and maps, and so the same bank,
as one process would compute. Collectives run on the CPU for gloo and on the current CUDA
device for NCCL (call ``torch.cuda.set_device(local_rank)`` first, as DDP requires anyway).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

__all__ = ["Shard", "shard_context", "backend_device", "gather_on_backend"]


class Shard:
    """This rank's place in the group and the collectives a refresh needs.

    Examples:
        >>> Shard(rank=1, world_size=3, device=torch.device("cpu")).positions(8)
        tensor([1, 4, 7])
    """

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device

    def positions(self, n: int) -> torch.Tensor:
        """Positions ``rank, rank + world, ...`` of ``n`` items: this rank's share."""
        return torch.arange(self.rank, n, self.world_size)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over all ranks, on ``t``'s device."""
        import torch.distributed as dist

        buf = t.to(self.device).clone()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf.to(t.device)

    def max(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s element-wise maximum over all ranks, on ``t``'s device."""
        import torch.distributed as dist

        buf = t.to(self.device).clone()
        dist.all_reduce(buf, op=dist.ReduceOp.MAX)
        return buf.to(t.device)

    def agree(self, error: Optional[BaseException]) -> None:
        """Tell every rank whether any rank failed; each then raises (its own error, or a
        ``RuntimeError`` naming the ranks that failed) instead of waiting in the next collective.

        Call it on every rank at the same point, with the exception this rank caught or ``None``.
        """
        flags = torch.zeros(self.world_size, dtype=torch.int32)
        flags[self.rank] = 1 if error is not None else 0
        failed = self.sum(flags).nonzero().flatten().tolist()
        if error is not None:
            raise error
        if failed:
            raise RuntimeError(
                f"refresh failed on rank(s) {failed} of {self.world_size} (see their errors); every rank stops, "
                "and this rank's bank and model are as they were."
            )

    def gather_rows(self, local: torch.Tensor, n: int, shape: Tuple[int, ...]) -> torch.Tensor:
        """The ``n`` rows of which this rank holds ``positions(n)``, assembled on every rank."""
        full = torch.zeros((n, *shape), dtype=local.dtype, device=local.device)
        if local.numel():
            full[self.positions(n).to(local.device)] = local
        return self.sum(full)


def shard_context(distributed: Optional[bool]) -> Optional[Shard]:
    """A ``Shard`` when a process group of more than one rank is
    initialised (and ``distributed`` is not ``False``), else ``None``.

    Examples:
        >>> shard_context(None) is None  # no process group here
        True
    """
    if distributed is False:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        if distributed:
            raise RuntimeError("distributed=True needs an initialised torch.distributed process group of 2 or more ranks.")
        return None
    return Shard(dist.get_rank(), dist.get_world_size(), backend_device())


def backend_device(group: Any = None) -> torch.device:
    """Where the collectives of ``group``'s backend run: the current CUDA device for NCCL, else the CPU."""
    import torch.distributed as dist

    backend = str(dist.get_backend(group)).lower()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def gather_on_backend(tensor: torch.Tensor, group: Any = None) -> List[torch.Tensor]:
    """torchmetrics' ``gather_all_tensors`` run where the backend can gather, the results back on ``tensor``'s device.

    The ``dist_sync_fn`` of proxyaug's metrics and of the mistake tracker: their states live where
    the batches are, and gloo cannot all-gather CUDA tensors nor NCCL CPU ones.
    """
    from torchmetrics.utilities.distributed import gather_all_tensors

    device = backend_device(group)
    return [t.to(tensor.device) for t in gather_all_tensors(tensor.to(device), group=group)]
