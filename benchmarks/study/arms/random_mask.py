"""``random-mask``: the control for the map's *location*.

The same refresh, the same samples and the same mask shape and area (the upsampled map,
thresholded), moved to a random place: a random circular shift per sample and round.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

import proxyaug as pa

from .base import register
from .refreshing import RefreshingArm, selection_text


def roll_maps(maps: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circularly shift each map ``(B, H, W)`` by its own ``shifts[b] = (dy, dx)``.

    Examples:
        >>> maps = torch.zeros(1, 3, 3); maps[0, 0, 0] = 1.0
        >>> roll_maps(maps, torch.tensor([[1, 2]]))[0].nonzero().tolist()
        [[1, 2]]
    """
    b, h, w = maps.shape
    rows = (torch.arange(h, device=maps.device).view(1, h) - shifts[:, :1]) % h
    cols = (torch.arange(w, device=maps.device).view(1, w) - shifts[:, 1:]) % w
    return maps[torch.arange(b, device=maps.device).view(b, 1, 1), rows.view(b, h, 1), cols.view(b, 1, w)]


@register
class RandomMask(RefreshingArm):
    kind = "random-mask"
    control = True
    grid_titles = ("original", "moved map", "random mask")

    def __init__(self, spec: Dict[str, Any], context: Any) -> None:
        super().__init__(spec, context)
        self.shifts: Optional[torch.Tensor] = None  # (rows, 2), drawn at each refresh

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return f"the proxy masks ({settings.get('mode')}; {selection_text(settings)}) moved to random places"

    def replace(self, x: torch.Tensor, maps: torch.Tensor, present: Optional[torch.Tensor] = None) -> torch.Tensor:
        s = self.spec
        return pa.functional.replace(x, maps, mode=s["mode"], threshold=s["threshold"], weight=s["weight"], present=present)

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> torch.Tensor:
        if self.shifts is None or self.ds.bank.resolution is None:  # no refresh yet, or none wrote a map
            return x
        idx = idx.to(x.device)
        maps, present = self.ds.bank.get(idx)
        return self.replace(x, roll_maps(self.full_size(maps), self.shifts[idx]), present)

    def refreshed(self) -> None:
        h, w = self.image_size
        n = len(self.ds.bank)
        self.shifts = torch.stack([torch.randint(0, h, (n,), generator=self.gen), torch.randint(0, w, (n,), generator=self.gen)], 1).to(self.ds.bank.device)

    def pictures(self, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = self.ds.bank.device
        x = self.originals(rows)[0].to(device)
        maps, _ = self.ds.bank.get(rows)
        maps = roll_maps(self.full_size(maps), self.shifts[rows.to(device)])
        return x.cpu(), maps.float().cpu(), self.replace(x, maps).cpu()

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "shifts": self.shifts}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.shifts = state["shifts"]
        if self.shifts is not None:  # checkpoints are read onto the CPU
            self.shifts = self.shifts.to(self.ds.bank.device)
        super().load_state_dict(state)
