"""How concentrated is a map? Sparsity (max over mean) and entropy of the map as a distribution.

Both read the map at its own resolution, so compare maps of one resolution only.
"""

from __future__ import annotations

import torch

from ._inputs import check_maps, check_range

__all__ = ["sparsity", "entropy"]


def _distribution(maps: torch.Tensor, validate_args: bool) -> torch.Tensor:
    """``(B, h*w)`` maps normalised to sum to 1; a map with no mass becomes uniform."""
    maps = check_maps("maps", maps, validate_args=validate_args)
    if validate_args and maps.numel():
        check_range("maps", maps)
    m = maps.flatten(1) if maps.dtype in (torch.float32, torch.float64) else maps.flatten(1).float()
    total = m.sum(dim=1, keepdim=True)
    uniform = torch.full_like(m, 1.0 / max(m.shape[1], 1))
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), uniform)


def sparsity(maps: torch.Tensor, *, validate_args: bool = True) -> torch.Tensor:
    r"""Peak over mean of each map: high when the map's mass sits on few pixels.

    ``S = max_p M[p] / ((1/N) Σ_p M[p])``

    over the ``N = h w`` pixels of a non-negative map, the definition of Gomez et al. (2022),
    "Metrics for saliency map evaluation of deep learning explanation methods" (ICPR). It is 1 for
    a uniform map and ``N`` for a map on one pixel; it is scale-invariant, and a map with no mass
    counts as uniform (1).

    Args:
        maps: non-negative floating tensor ``(B, h, w)`` or ``(B, 1, h, w)``, finite.
        validate_args: check values (finite, non-negative), which syncs with the host.

    Returns:
        Float tensor ``(B,)`` with values in [1, N].

    Examples:
        >>> maps = torch.zeros(2, 2, 2); maps[0, 0, 0] = 1.0; maps[1] = 0.5
        >>> sparsity(maps)
        tensor([4., 1.])
    """
    p = _distribution(maps, validate_args)
    return p.amax(dim=1) * p.shape[1]


def entropy(maps: torch.Tensor, *, validate_args: bool = True) -> torch.Tensor:
    r"""Shannon entropy (nats) of each map normalised to a distribution over its pixels.

    ``H = -Σ_p P[p] log P[p]``, with ``P[p] = M[p] / Σ_q M[q]``

    and ``0 log 0 = 0``. It is 0 for a map on one pixel and ``log N`` for a uniform map (also for a
    map with no mass, which counts as uniform); lower means more concentrated.

    Args:
        maps: non-negative floating tensor ``(B, h, w)`` or ``(B, 1, h, w)``, finite.
        validate_args: check values (finite, non-negative), which syncs with the host.

    Returns:
        Float tensor ``(B,)`` with values in [0, log N].

    Examples:
        >>> maps = torch.zeros(2, 2, 2); maps[0, 0, 0] = 1.0; maps[1] = 0.5
        >>> entropy(maps)  # 0 and log 4
        tensor([0.0000, 1.3863])
    """
    p = _distribution(maps, validate_args)
    return 0.0 - torch.special.xlogy(p, p).sum(dim=1)  # 0.0 - s: +0, never -0, for a one-pixel map
