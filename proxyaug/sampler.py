"""ProxySampler: each epoch, the items of a ProxyDataset that can be drawn, on one process or sharded over ranks."""

from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Tuple

import torch
from torch.utils.data import Sampler

from ._checks import check_positive_int

__all__ = ["ProxySampler"]


class ProxySampler(Sampler[int]):
    """Draw the live items of a [`ProxyDataset`][proxyaug.ProxyDataset], as ``DistributedSampler`` draws a dataset.

    With ``proxies="append"`` a dataset keeps ``len(ds) == 2 * n`` (``n`` originals, ``n`` extra
    slots) and an extra slot can be drawn only while its sample has a map; this sampler reads
    [`live_items()`][proxyaug.ProxyDataset.live_items] when each epoch starts, so the epoch follows
    every refresh. With ``proxies="replace"`` every item is live, and it is a plain (distributed)
    sampler.

    Its rules are ``DistributedSampler``'s, applied to the live items: ``set_epoch(e)`` seeds the
    shuffle with ``seed + e`` (call it before each epoch; Lightning does), the items are padded by
    repeating the first ones (or the tail dropped with ``drop_last``) to a multiple of the ranks,
    and rank ``r`` takes every ``num_replicas``-th item from position ``r``. ``num_replicas`` and
    ``rank`` default to those of the initialised ``torch.distributed`` process group, read when the
    epoch starts (one process without one). Every rank draws the same number of items, since every
    rank holds the same bank after a refresh.

    Args:
        ds: the dataset to draw from (a [`ProxyDataset`][proxyaug.ProxyDataset], or anything with
            ``live_items()``).
        shuffle: draw in a random order (else ascending).
        seed: the shuffle's seed; the same on every rank.
        num_replicas: the ranks the items are split over; ``None``: the process group's size.
        rank: this process' share; ``None``: its rank in the process group.
        drop_last: drop the tail that does not split evenly instead of padding.

    Examples:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> import proxyaug as pa
        >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)), resolution=(2, 2), proxies="append")
        >>> sampler = ProxySampler(ds, shuffle=False)
        >>> list(sampler), len(ds)
        ([0, 1, 2, 3], 8)
        >>> ds.commit(torch.tensor([1, 3]), torch.rand(2, 2, 2), reset=False, report=None)  # maps for samples 1 and 3, as a refresh writes them
        >>> sampler.set_epoch(1); list(sampler)  # their proxies join the next epoch
        [0, 1, 2, 3, 5, 7]
        >>> list(ProxySampler(ds, shuffle=False, num_replicas=4, rank=1))  # padded to 8, every 4th from position 1
        [1, 7]
        >>> [int(i) for i in next(iter(DataLoader(ds, batch_size=6, sampler=sampler)))[2]]
        [0, 1, 2, 3, 5, 7]
    """

    def __init__(
        self,
        ds: Any,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        drop_last: bool = False,
    ) -> None:
        if not callable(getattr(ds, "live_items", None)):
            raise TypeError(f"ds must be a proxyaug.ProxyDataset (anything with live_items()); got {type(ds).__name__}.")
        if num_replicas is not None:
            check_positive_int("num_replicas", num_replicas)
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
            raise ValueError(f"rank={rank!r} is not valid; expected an integer >= 0 (this process' rank).")
        self.ds, self.shuffle, self.seed, self.drop_last = ds, bool(shuffle), int(seed), bool(drop_last)
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Seed the next epoch's shuffle with ``seed + epoch``, on every rank alike (as ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def _place(self) -> Tuple[int, int]:
        """``(num_replicas, rank)``: as given, else the process group's, read now."""
        world, rank = self.num_replicas, self.rank
        if world is None or rank is None:
            import torch.distributed as dist

            grouped = dist.is_available() and dist.is_initialized()
            world = world if world is not None else (dist.get_world_size() if grouped else 1)
            rank = rank if rank is not None else (dist.get_rank() if grouped else 0)
        if rank >= world:
            raise ValueError(f"rank={rank} is not valid for num_replicas={world}; expected 0 <= rank < {world}.")
        return world, rank

    def _share(self, live: int, world: int) -> int:
        """Items per rank this epoch (``DistributedSampler``'s ``num_samples``)."""
        if self.drop_last and live % world:
            return math.ceil((live - world) / world)
        return math.ceil(live / world)

    def __iter__(self) -> Iterator[int]:
        items = self.ds.live_items()
        world, rank = self._place()
        live = items.numel()
        if self.shuffle:
            order = torch.randperm(live, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(live)
        total = self._share(live, world) * world
        if total > live:  # pad with the first positions, repeated as often as needed
            order = order.repeat(math.ceil(total / live))
        return iter(items[order[:total][rank:total:world]].tolist())

    def __len__(self) -> int:
        return self._share(self.ds.live_items().numel(), self._place()[0])
