"""Staged captures: concatenated, gathered from every rank, deduplicated."""

from __future__ import annotations

from typing import List, Tuple

import torch

from .._distributed import Shard

__all__ = ["concat", "gather", "last_of_each"]


def concat(staged: List[Tuple[torch.Tensor, ...]]) -> Tuple[torch.Tensor, ...]:
    """The staged batches' ``(rows, maps, wrong, score, ok)``, each concatenated (empty ones when none).

    Examples:
        >>> concat([])[0].shape
        torch.Size([0])
    """
    if not staged:
        e = torch.empty(0)
        return e.long(), torch.empty(0, 0, 0), e.bool(), e, e.bool()
    return tuple(torch.cat([b[k] for b in staged]) for k in range(5))


def gather(shard: Shard, *local: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Every rank's staged samples on every rank (padded to the longest rank's, padding dropped)."""
    rows, maps, wrong, score, ok = local
    m = int(shard.max(torch.tensor([rows.numel()]))[0])
    h, w = shard.max(torch.tensor(tuple(maps.shape[-2:]) if rows.numel() else (0, 0))).tolist()
    n, k = m * shard.world_size, rows.numel()

    def pad(t: torch.Tensor, fill: float, shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        out = torch.full((m, *shape), fill, dtype=dtype)
        out[:k] = t.cpu().to(dtype).reshape(k, *shape)
        return shard.gather_rows(out, n, shape)

    rows = pad(rows, -1, (), torch.long)
    full_ok = pad(ok, 0, (), torch.uint8).bool() & (rows >= 0)
    return (rows.clamp_min(0), pad(maps, 0, (h, w), torch.float32), pad(wrong, 0, (), torch.uint8).bool(),
            pad(score, 0, (), torch.float32), full_ok)


def last_of_each(samples: torch.Tensor) -> torch.Tensor:
    """Positions of each sample's last occurrence in ``samples``, in sample order.

    Examples:
        >>> last_of_each(torch.tensor([5, 2, 5, 0]))
        tensor([3, 1, 2])
    """
    uniq, inverse = torch.unique(samples, return_inverse=True)
    last = torch.full((uniq.numel(),), -1, dtype=torch.long)
    return last.scatter_reduce(0, inverse, torch.arange(samples.numel()), reduce="amax")
