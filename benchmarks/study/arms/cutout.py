"""``cutout``: albumentations ``CoarseDropout`` (one square hole, black) in ``__getitem__``, the
CPU path, with the area and the probability matched to the proxy masks of the same run."""

from __future__ import annotations

import math
from typing import Any, Dict

import torch

from .base import register
from .refreshing import RefreshingArm, matched


@register
class Cutout(RefreshingArm):
    kind = "cutout"
    control = True

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return f"albumentations CoarseDropout, black; {matched(settings)}"

    def refreshed(self) -> None:
        """Give the dataset a hole of the matched area, drawn with the matched probability."""
        if self.p <= 0 or self.area <= 0:
            self.ds.transform = None
            return
        import albumentations as A

        from proxyaug.integrations.albumentations import Albumentations

        h, w = self.image_size
        side = max(1, min(round(math.sqrt(self.area * h * w)), h, w))
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen))
        hole = A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(side, side), hole_width_range=(side, side), fill=0, p=self.p)
        self.ds.transform = Albumentations(A.Compose([hole], seed=seed))

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.refreshed()
