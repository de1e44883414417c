"""Does the map point at a known region? The energy-based pointing game and the pointing game.

Both take maps ``(B, h, w)`` and bool region masks ``(B, H, W)`` (an object's box or segment, the
location of a spurious cue); maps smaller than the regions are resized to the regions' size
bilinearly (``align_corners=False``) first, so a low-resolution CAM can be scored against an
image-size mask.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from ._inputs import check_maps, check_range, check_regions, resize

__all__ = ["energy_in_region", "pointing_game"]


def energy_in_region(maps: torch.Tensor, regions: torch.Tensor, *, validate_args: bool = True) -> torch.Tensor:
    r"""Share of each map's mass inside its region: the energy-based pointing game.

    ``E = Σ_{p ∈ R} M[p] / Σ_p M[p]``

    for a non-negative map ``M`` (resized to the region's size) and region ``R``, as in Score-CAM
    (Wang et al., 2020, "Score-CAM: Score-weighted visual explanations for CNNs", section 5.2).
    A map with no mass at all counts as uniform: its energy is the region's share of the pixels.

    Args:
        maps: non-negative floating tensor ``(B, h, w)`` or ``(B, 1, h, w)``, finite.
        regions: bool tensor ``(B, H, W)`` or ``(B, 1, H, W)`` with ``H >= h``, ``W >= w``; none empty.
        validate_args: check values (finite, non-negative maps; non-empty regions), which syncs with the host.

    Returns:
        Float tensor ``(B,)`` with values in [0, 1], on the maps' device.

    Examples:
        >>> maps = torch.tensor([[[3.0, 1.0], [0.0, 0.0]]])
        >>> regions = torch.tensor([[[True, False], [False, False]]])
        >>> energy_in_region(maps, regions)
        tensor([0.7500])
    """
    maps = check_maps("maps", maps, validate_args=validate_args)
    regions = check_regions(regions, maps, validate_args=validate_args)
    if validate_args and maps.numel():
        check_range("maps", maps)
    m = resize(maps, regions.shape[-2:]).flatten(1)
    r = regions.flatten(1)
    total = m.sum(dim=1)
    inside = (m * r).sum(dim=1)
    uniform = r.float().mean(dim=1).to(m.dtype)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(m.dtype).tiny), uniform)


def _dilate(regions: torch.Tensor, radius: int) -> torch.Tensor:
    """Regions grown by every pixel within Euclidean distance ``radius`` (a disk)."""
    if radius == 0:
        return regions
    d = torch.arange(-radius, radius + 1, device=regions.device, dtype=torch.float32)
    disk = ((d.view(-1, 1) ** 2 + d.view(1, -1) ** 2) <= radius**2).float().view(1, 1, 2 * radius + 1, 2 * radius + 1)
    return F.conv2d(regions.float().unsqueeze(1), disk, padding=radius).squeeze(1) > 0.5


def pointing_game(maps: torch.Tensor, regions: torch.Tensor, *, tolerance: int = 0, validate_args: bool = True) -> torch.Tensor:
    r"""Whether each map's maximum lies in its region, grown by ``tolerance`` pixels.

    ``hit = [argmax_p M[p] ∈ dilate(R, t)]``

    where ``dilate(R, t)`` is the region grown by a disk of radius ``t = tolerance`` (every
    pixel within Euclidean distance ``t`` of the region), as in Zhang et al. (2018), "Top-down neural
    attention by excitation backprop", and TorchRay's ``PointingGame`` (which uses 15 pixels at
    224 x 224). The maximum is taken on the map resized to the region's size; of tied maxima the
    first in row-major order counts (``torch.argmax``), so a constant map points at pixel (0, 0).

    Args:
        maps: floating tensor ``(B, h, w)`` or ``(B, 1, h, w)``, finite.
        regions: bool tensor ``(B, H, W)`` or ``(B, 1, H, W)`` with ``H >= h``, ``W >= w``; none empty.
        tolerance: radius in pixels (of the regions' resolution), a non-negative integer.
        validate_args: check values (finite maps, non-empty regions), which syncs with the host.

    Returns:
        Bool tensor ``(B,)``: a hit per image.

    Examples:
        >>> maps = torch.zeros(2, 4, 4); maps[:, 0, 0] = 1.0
        >>> regions = torch.zeros(2, 4, 4, dtype=torch.bool); regions[0, 0, 0] = True; regions[1, 2, 2] = True
        >>> pointing_game(maps, regions)
        tensor([ True, False])
        >>> pointing_game(maps, regions, tolerance=3)  # (0, 0) is within 3 pixels of (2, 2)
        tensor([True, True])
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Integral) or tolerance < 0:
        raise ValueError(f"tolerance={tolerance!r} is not valid; expected a non-negative integer number of pixels.")
    maps = check_maps("maps", maps, validate_args=validate_args)
    regions = check_regions(regions, maps, validate_args=validate_args)
    peak = resize(maps, regions.shape[-2:]).flatten(1).argmax(dim=1, keepdim=True)
    return _dilate(regions, int(tolerance)).flatten(1).gather(1, peak).squeeze(1)

