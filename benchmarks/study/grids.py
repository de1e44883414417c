"""Proxy grids: for each refresh of an arm that draws them, original | map | what the arm made of
it, scaled to about 96 px, the replaced region outlined (``proxyaug.viz.save_proxy_grid``)."""

from __future__ import annotations

import torch
from torch import nn

import proxyaug as pa

from .arms import Arm


def save_grid(path: str, arm: Arm, rows: torch.Tensor) -> None:
    """Draw ``arm.pictures(rows)`` into ``path`` with the arm's ``grid_titles``."""
    x0, maps, out = arm.pictures(rows)
    h, w = arm.image_size
    scale = max(1, 96 // max(h, w))
    up = lambda t: nn.functional.interpolate(t, scale_factor=scale, mode="nearest")  # noqa: E731
    # maps at the image size, scaled as the images are: the outline is exactly the replaced pixels
    full = up(arm.full_size(maps).unsqueeze(1))[:, 0]
    pa.viz.save_proxy_grid(path, up(x0), full, up(out), outline=arm.spec["threshold"], titles=arm.grid_titles)
