"""``random-erasing``: Kornia's ``RandomErasing`` on the batch, black, with the area and the
probability matched to the proxy masks of the same run (each round runs the same refresh to
measure them: mean masked area, share of training images with a map)."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from .base import register
from .refreshing import RefreshingArm, matched


@register
class RandomErasing(RefreshingArm):
    kind = "random-erasing"
    control = True

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return f"Kornia RandomErasing, black; {matched(settings)}"

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> torch.Tensor:
        if self.p <= 0 or self.area <= 0:
            return x
        import kornia.augmentation as K

        return K.RandomErasing(scale=(self.area, self.area), ratio=(0.3, 3.3), value=0.0, p=self.p)(x)
