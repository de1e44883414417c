"""Pictures of what Proxy Attention does: original | attention map | proxy image."""

from __future__ import annotations

from typing import Optional

import torch
from torchvision.utils import make_grid, save_image

from ._checks import check_images
from .functional import upsample_maps

__all__ = ["colorize", "proxy_grid", "save_proxy_grid"]

# Anchor colours of a perceptually ordered map (close to matplotlib's "inferno").
_ANCHORS = torch.tensor(
    [[0.0, 0.0, 0.016], [0.258, 0.039, 0.408], [0.576, 0.149, 0.404], [0.867, 0.318, 0.227], [0.988, 0.647, 0.039], [0.988, 1.0, 0.643]]
)


def colorize(maps: torch.Tensor) -> torch.Tensor:
    """Turn maps ``(B, 1, H, W)`` in [0, 1] into RGB images ``(B, 3, H, W)``.

    Examples:
        >>> colorize(torch.tensor([[[[0.0, 1.0]]]])).shape
        torch.Size([1, 3, 1, 2])
    """
    anchors = _ANCHORS.to(maps.device)
    pos = maps.clamp(0, 1)[:, 0] * (len(anchors) - 1)
    lo = pos.floor().long().clamp(max=len(anchors) - 2)
    frac = (pos - lo).unsqueeze(-1)
    rgb = anchors[lo] * (1 - frac) + anchors[lo + 1] * frac
    return rgb.permute(0, 3, 1, 2)


def proxy_grid(images: torch.Tensor, maps: torch.Tensor, proxies: torch.Tensor, threshold: Optional[float] = None) -> torch.Tensor:
    """One row per sample: the original, its map over it (pixels above ``threshold`` outlined
    by the map alone), and the proxy image.

    Args:
        images: originals ``(B, C, H, W)`` in [0, 1], ``C`` 1 or 3.
        maps: low-resolution maps ``(B, h, w)``.
        proxies: the transformed images ``(B, C, H, W)``.
        threshold: if given, the map column shows the map only where it exceeds it.

    Returns:
        An RGB image tensor ``(3, H', W')`` for `torchvision.utils.save_image`.

    Examples:
        >>> x = torch.rand(2, 1, 8, 8)
        >>> proxy_grid(x, torch.rand(2, 2, 2), x).shape
        torch.Size([3, 22, 32])
    """
    check_images("images", images)
    check_images("proxies", proxies)
    rgb = lambda t: t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t[:, :3]  # noqa: E731
    m = upsample_maps(maps.to(images.device), images.shape[-2:])
    heat = colorize(m if threshold is None else m * (m > threshold))
    overlay = 0.5 * rgb(images).clamp(0, 1) + 0.5 * heat
    rows = torch.stack([rgb(images), overlay, rgb(proxies)], dim=1).flatten(0, 1)
    return make_grid(rows.float().clamp(0, 1).cpu(), nrow=3, padding=2, pad_value=1.0)


def save_proxy_grid(path: str, images: torch.Tensor, maps: torch.Tensor, proxies: torch.Tensor, threshold: Optional[float] = None) -> None:
    """Write [`proxy_grid()`][proxyaug.viz.proxy_grid] to ``path`` (PNG).

    Examples:
        >>> import os, tempfile
        >>> x = torch.rand(2, 3, 8, 8)
        >>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
        >>> save_proxy_grid(path, x, torch.rand(2, 2, 2), x)
        >>> os.path.getsize(path) > 0
        True
    """
    save_image(proxy_grid(images, maps, proxies, threshold), path)
