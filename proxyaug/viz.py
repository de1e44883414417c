"""Pictures of what Proxy Attention does: original | attention map | proxy image."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from ._checks import check_images, check_unit_interval
from .functional import upsample_maps

__all__ = ["colorize", "mask_area", "proxy_grid", "save_proxy_grid"]

TITLES = ("original", "map", "proxy")
"""The column titles [`save_proxy_grid()`][proxyaug.viz.save_proxy_grid] draws by default."""

# Anchor colours of a perceptually ordered map (close to matplotlib's "inferno").
_ANCHORS = torch.tensor(
    [[0.0, 0.0, 0.016], [0.258, 0.039, 0.408], [0.576, 0.149, 0.404], [0.867, 0.318, 0.227], [0.988, 0.647, 0.039], [0.988, 1.0, 0.643]]
)
_OUTLINE = (0.0, 1.0, 1.0)  # cyan: apart from the map's colours and from grey or natural images
_PAD = 2  # make_grid's padding


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


def mask_area(maps: torch.Tensor, size: Sequence[int], threshold: float) -> torch.Tensor:
    """Share of each image's pixels whose upsampled map exceeds ``threshold``: the area a proxy replaces.

    Args:
        maps: low-resolution maps ``(B, h, w)``.
        size: the image size ``(H, W)``.
        threshold: map values strictly above it count, in [0, 1].

    Returns:
        ``(B,)`` float32 shares in [0, 1].

    Examples:
        >>> m = torch.zeros(1, 2, 2); m[0, 0, 0] = 1.0
        >>> mask_area(m, (4, 4), 0.5)  # 4 of 16 pixels
        tensor([0.2500])
    """
    threshold = check_unit_interval("threshold", threshold)
    return (upsample_maps(maps, size) > threshold).flatten(1).float().mean(1)


def _edge(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels of ``mask`` ``(B, 1, H, W)`` within ``width`` of a pixel outside it (the border counts as outside)."""
    outside = F.pad((~mask).float(), (width,) * 4, value=1.0)
    return mask & (F.max_pool2d(outside, 2 * width + 1, stride=1) > 0)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed bitmap font
        return ImageFont.load_default()


def _text(text: str, size: int, box: Tuple[int, int], centre: bool) -> torch.Tensor:
    """Coverage ``(h, w)`` in [0, 1] of ``text`` drawn in a ``box = (h, w)`` (centred, or at its top-left)."""
    from PIL import Image, ImageDraw

    h, w = box
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    x = (w - (right - left)) / 2 - left if centre else 2 - left
    y = (h - (bottom - top)) / 2 - top if centre else 1 - top
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((x, y), text, fill=255, font=font)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w).float() / 255


def _text_size(text: str, size: int) -> Tuple[int, int]:
    left, top, right, bottom = _font(size).getbbox(text)
    return bottom - top, right - left


def proxy_grid(
    images: torch.Tensor,
    maps: torch.Tensor,
    proxies: torch.Tensor,
    threshold: Optional[float] = None,
    *,
    outline: Optional[float] = None,
    titles: Optional[Sequence[str]] = None,
) -> torch.Tensor:
    """One row per sample: the original, its map over it, and the proxy image.

    A blend with the thesis' weight (0.1) barely changes an image; pass ``outline`` (the
    transform's threshold) to outline the replaced region on the proxy image, and ``titles`` to
    name the columns (the area each outline holds is then written on the proxy image too).

    Args:
        images: originals ``(B, C, H, W)`` in [0, 1], ``C`` 1 or 3.
        maps: low-resolution maps ``(B, h, w)``.
        proxies: the transformed images ``(B, C, H, W)``.
        threshold: if given, the map column shows the map only where it exceeds it.
        outline: if given, the edge of the region where the upsampled map exceeds it is drawn in
            cyan on the proxy image (one pixel wide per 64 pixels of image side, at least one).
        titles: three column titles, drawn in a white band above the grid (needs Pillow).

    Returns:
        An RGB image tensor ``(3, H', W')`` for `torchvision.utils.save_image`.

    Examples:
        >>> x = torch.rand(2, 1, 8, 8)
        >>> proxy_grid(x, torch.rand(2, 2, 2), x).shape
        torch.Size([3, 22, 32])
        >>> proxy_grid(x, torch.rand(2, 2, 2), x, outline=0.85).shape
        torch.Size([3, 22, 32])
    """
    check_images("images", images)
    check_images("proxies", proxies)
    if outline is not None:
        outline = check_unit_interval("outline", outline)
    if titles is not None and (isinstance(titles, str) or len(titles) != 3 or not all(isinstance(t, str) for t in titles)):
        raise ValueError(f"titles must be three strings (original, map, proxy); got {list(titles) if not isinstance(titles, str) else titles!r}.")
    rgb = lambda t: t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t[:, :3]  # noqa: E731
    h, w = images.shape[-2:]
    m = upsample_maps(maps.to(images.device), (h, w))
    heat = colorize(m if threshold is None else m * (m > threshold))
    overlay = 0.5 * rgb(images).clamp(0, 1) + 0.5 * heat
    proxied = rgb(proxies).float().clamp(0, 1)
    if outline is not None:
        edge = _edge(m > outline, max(1, round(min(h, w) / 64)))
        colour = torch.tensor(_OUTLINE, device=proxied.device).view(1, 3, 1, 1)
        proxied = torch.where(edge, colour, proxied)
    rows = torch.stack([rgb(images).float(), overlay, proxied], dim=1).flatten(0, 1)
    grid = make_grid(rows.float().clamp(0, 1).cpu(), nrow=3, padding=_PAD, pad_value=1.0)
    if titles is None:
        return grid
    if outline is not None:  # the area of each outline, at the proxy's top-left corner
        size = max(8, min(14, w // 7))
        for r, area in enumerate((m > outline).flatten(1).float().mean(1).tolist()):
            text = f"{100 * area:.0f} %"
            th, tw = _text_size(text, size)
            bh, bw = min(h, th + 3), min(w, tw + 4)
            y, x = _PAD + r * (h + _PAD), _PAD + 2 * (w + _PAD)
            cover = _text(text, size, (bh, bw), centre=False)
            patch = grid[:, y : y + bh, x : x + bw]
            grid[:, y : y + bh, x : x + bw] = patch * 0.35 * (1 - cover) + cover  # white on a darkened box
    size = max(8, min(16, w // 6))
    while size > 8 and max(_text_size(t, size)[1] for t in titles) > w - 4:  # fit the widest title
        size -= 1
    band_h = _text_size("Ag", size)[0] + 6
    band = torch.ones(3, band_h, grid.shape[2])
    for c, title in enumerate(titles):
        x = _PAD + c * (w + _PAD)
        band[:, :, x : x + w] = 1 - 0.9 * _text(title, size, (band_h, w), centre=True)
    return torch.cat([band, grid], dim=1)


def save_proxy_grid(
    path: str,
    images: torch.Tensor,
    maps: torch.Tensor,
    proxies: torch.Tensor,
    threshold: Optional[float] = None,
    *,
    outline: Optional[float] = None,
    titles: Optional[Sequence[str]] = TITLES,
) -> None:
    """Write [`proxy_grid()`][proxyaug.viz.proxy_grid] to ``path`` (PNG), with column titles by default.

    Examples:
        >>> import os, tempfile
        >>> x = torch.rand(2, 3, 8, 8)
        >>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
        >>> save_proxy_grid(path, x, torch.rand(2, 2, 2), x, outline=0.85)
        >>> os.path.getsize(path) > 0
        True
    """
    save_image(proxy_grid(images, maps, proxies, threshold, outline=outline, titles=titles), path)
