"""``cutout``: albumentations ``CoarseDropout`` (one square hole, black) on each training image as
it is loaded (in ``__getitem__``, in the DataLoader workers: the CPU path), with the area and the
probability matched to the proxy masks of the same run."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch.utils.data import Dataset

import proxyaug as pa

from .base import register
from .refreshing import RefreshingArm, matched


class TransformedItems(Dataset):
    """The items ``(x, y, idx)`` of ``dataset`` with ``transform`` (when set) applied to ``x``.

    It sits above the ``ProxyDataset``, so a refresh still maps the canonical images.

    Examples:
        >>> items = TransformedItems([(torch.ones(1, 2, 2), 0, 0)])
        >>> items.transform = lambda x: x * 0
        >>> float(items[0][0].sum()), len(items)
        (0.0, 1)
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.transform: Optional[Callable[[torch.Tensor], Any]] = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tuple[Any, Any, Any]:
        x, y, idx = self.dataset[i]
        return (x if self.transform is None else self.transform(x)), y, idx


@register
class Cutout(RefreshingArm):
    kind = "cutout"
    control = True

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return f"albumentations CoarseDropout, black; {matched(settings)}"

    def attach(self, ds: pa.ProxyDataset) -> None:
        super().attach(ds)
        self.holes = TransformedItems(ds)

    def items(self) -> Dataset:
        return self.holes

    def refreshed(self) -> None:
        """A hole of the matched area, drawn with the matched probability, from now on."""
        if self.p <= 0 or self.area <= 0:
            self.holes.transform = None
            return
        import albumentations as A

        from proxyaug.integrations.albumentations import Albumentations

        h, w = self.image_size
        side = max(1, min(round(math.sqrt(self.area * h * w)), h, w))
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))
        hole = A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(side, side), hole_width_range=(side, side), fill=0, p=self.p)
        self.holes.transform = Albumentations(A.Compose([hole], seed=seed))

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.refreshed()
