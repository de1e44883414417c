"""Refreshable: what [`refresh()`][proxyaug.refresh] needs of the dataset it refreshes.

[`ProxyDataset`][proxyaug.ProxyDataset] implements it; so can a dataset type of your own (a
streaming shard index, a dataset with its own caching) that wants to take part in refreshes: it
builds its ``mistakes`` as ``MistakeTracker(num_samples)``, exported here.
The words it uses: a *sample* is an item of the wrapped data, numbered ``0 .. num_samples - 1``;
a *bank row* is where a sample's map lives in ``bank`` (``rows()`` maps one to the other).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Tuple, runtime_checkable

import torch

from .bank import MaskBank
from ._mistakes import MistakeTracker
from ._report import RefreshReport

__all__ = ["Refreshable", "MistakeTracker", "check_refreshable"]


@runtime_checkable
class Refreshable(Protocol):
    """The protocol between [`refresh()`][proxyaug.refresh] and what it refreshes.

    Attributes:
        bank: the [`MaskBank`][proxyaug.MaskBank] the maps go into.
        mistakes: the [`MistakeTracker`][proxyaug.protocol.MistakeTracker] (a ``torchmetrics.Metric``)
            whose records decide what a refresh scans (``compute``, the union over ranks; ``local``
            with ``distributed=False``); ``commit`` uses them up (``forget`` the scanned samples, or
            ``reset``).
        refreshes: refreshes committed so far (the default selection seed).

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> import proxyaug as pa
        >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)))
        >>> isinstance(ds, Refreshable), ds.num_samples, ds.canonical(2)[0].shape
        (True, 4, torch.Size([1, 4, 4]))
    """

    bank: MaskBank
    mistakes: MistakeTracker
    refreshes: int

    @property
    def num_samples(self) -> int:
        """The samples a refresh may scan; raises if the data changed since the bank was made."""
        ...

    def canonical(self, sample: int) -> Tuple[torch.Tensor, Any]:
        """Sample ``sample``'s image ``(C, H, W)`` in the canonical frame (what maps are computed on), and its label."""
        ...

    def rows(self, samples: Any) -> torch.Tensor:
        """The bank rows of ``samples``."""
        ...

    def commit(
        self,
        samples: Optional[torch.Tensor],
        maps: Optional[torch.Tensor],
        *,
        reset: bool,
        report: RefreshReport,
        scanned: Optional[torch.Tensor] = None,
    ) -> None:
        """Write ``maps`` ``(K, h, w)`` for ``samples`` ``(K,)`` in one step (``None``: no map this
        round; ``reset`` drops every other map), use up the mistakes of ``scanned`` (``None``: all;
        ``mistakes.forget(scanned)`` else ``mistakes.reset()``), and count the refresh. Called once,
        after every map exists."""
        ...


def check_refreshable(ds: Any) -> None:
    """Refuse, with a message, what does not implement [`Refreshable`][proxyaug.protocol.Refreshable].

    Examples:
        >>> check_refreshable([1, 2])
        Traceback (most recent call last):
        ...
        TypeError: ds must be a proxyaug.ProxyDataset (or implement proxyaug.protocol.Refreshable: bank, mistakes, refreshes, num_samples, canonical, rows, commit); got list.
    """
    if not isinstance(ds, Refreshable):
        raise TypeError(
            "ds must be a proxyaug.ProxyDataset (or implement proxyaug.protocol.Refreshable: bank, mistakes, "
            f"refreshes, num_samples, canonical, rows, commit); got {type(ds).__name__}."
        )
