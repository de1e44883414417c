"""Do two sets of maps of the same images agree? Spearman rank correlation and the overlap of their top pixels.

Both take two ``(B, h, w)`` maps per image (a CNN's Grad-CAM and a ViT's attention rollout, two
methods, two seeds) of any resolutions: each is resized bilinearly (``align_corners=False``, as
the other metrics do) to a common grid, by default the finer of the two, before they are compared.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import torch

from .._checks import check_unit_interval
from ._inputs import check_maps, descending_ranks, resize

__all__ = ["map_spearman", "topk_iou"]

Size = Optional[Union[int, Sequence[int]]]


def _check_size(size: Any) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in pair)
    if isinstance(size, bool) or not ok:
        raise ValueError(f"size={size!r} is not valid; expected None (the finer grid of the two), a positive int or a pair (h, w) of positive ints.")
    return int(pair[0]), int(pair[1])


def _on_common_grid(a: Any, b: Any, size: Size, validate_args: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both maps checked, resized to one grid and flattened, ``(B, N)`` in one dtype, and the checked maps."""
    grid = _check_size(size)
    a = check_maps("a", a, validate_args=validate_args)
    b = check_maps("b", b, validate_args=validate_args)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a holds {a.shape[0]} maps but b holds {b.shape[0]}; expected one map of each per image.")
    if a.device != b.device:
        raise ValueError(f"a is on {a.device} but b is on {b.device}; move them with b.to(a.device).")
    if grid is None:
        grid = (max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2]))
    x, y = resize(a, grid).flatten(1), resize(b, grid).flatten(1)
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype), a, b


def _doubled_average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Twice each entry's 1-based rank in its row, ties given their average rank, ``(B, N)`` int64.

    Doubled, the average of tied ranks is an integer, so the sums of ``map_spearman`` are exact.
    """
    b, n = values.shape
    ordered, order = torch.sort(values, dim=1, stable=True)
    pos = torch.arange(n, device=values.device).expand(b, n)
    first = torch.ones_like(ordered, dtype=torch.bool)  # the first entry of a run of equal values
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    last = torch.ones_like(first)
    last[:, :-1] = first[:, 1:]
    start = torch.where(first, pos, 0).cummax(dim=1).values
    end = torch.where(last, pos, n - 1).flip(1).cummin(dim=1).values.flip(1)
    return torch.empty_like(order).scatter_(1, order, start + end + 2)


def map_spearman(a: torch.Tensor, b: torch.Tensor, *, size: Size = None, validate_args: bool = True) -> torch.Tensor:
    r"""Spearman rank correlation of two maps of each image, over the pixels of a common grid.

    ``ρ = cov(R_a, R_b) / (σ(R_a) σ(R_b))``

    where ``R_a`` and ``R_b`` are the ranks of the pixels' values in each map (tied values take
    their average rank), after both maps are resized bilinearly (``align_corners=False``) to
    ``size``. This is ``scipy.stats.spearmanr`` of the two flattened maps, for all images at
    once (the ranks' sums are exact integers; torchmetrics' ``spearman_corrcoef`` loops over the
    images in Python and adds ``1e-6`` to the denominator).

    A map that is constant at its own resolution (an all-zero CAM) has no order to agree with:
    its correlation with anything is 0, as torchmetrics' ``spearman_corrcoef`` gives (scipy
    returns NaN and warns), so a mean over images stays finite.

    Args:
        a: floating tensor ``(B, h, w)`` or ``(B, 1, h, w)``, finite.
        b: floating tensor ``(B, h', w')`` or ``(B, 1, h', w')``, finite, on ``a``'s device.
        size: the common grid ``(h, w)`` (or an int for a square one); ``None``:
            ``(max(h, h'), max(w, w'))``, the finer of the two.
        validate_args: check values (finite maps), which syncs with the host.

    Returns:
        Float tensor ``(B,)`` with values in [-1, 1], float32 (float64 if a map is), on the maps' device.

    Examples:
        >>> a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> b = torch.tensor([[[10.0, 20.0], [30.0, 40.0]], [[4.0, 3.0], [2.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]]])
        >>> map_spearman(a, b)  # the same order; reversed; a constant map
        tensor([ 1., -1.,  0.])
    """
    x, y, a, b = _on_common_grid(a, b, size, validate_args)
    n = x.shape[1]
    dx = _doubled_average_ranks(x) - (n + 1)  # centred: the mean of the doubled ranks is n + 1
    dy = _doubled_average_ranks(y) - (n + 1)
    cov = (dx * dy).sum(dim=1).to(x.dtype)
    spread = (dx * dx).sum(dim=1).to(x.dtype).sqrt() * (dy * dy).sum(dim=1).to(x.dtype).sqrt()
    constant = (a.flatten(1).amax(dim=1) == a.flatten(1).amin(dim=1)) | (b.flatten(1).amax(dim=1) == b.flatten(1).amin(dim=1))
    rho = (cov / spread.clamp_min(1.0)).clamp(-1.0, 1.0)  # spread >= 1 unless a resized map is constant
    return torch.where(constant | (spread == 0), torch.zeros_like(rho), rho)


def topk_iou(a: torch.Tensor, b: torch.Tensor, *, fraction: float = 0.1, size: Size = None, validate_args: bool = True) -> torch.Tensor:
    r"""Intersection over union of the top ``fraction`` of the pixels of two maps of each image.

    ``IoU = |T_a ∩ T_b| / |T_a ∪ T_b|``

    where ``T_a`` holds the ``k = max(1, round(fraction · N))`` highest pixels of map ``a`` (halves
    round up) among the ``N = h w`` pixels of the common grid ``size`` both maps are resized to
    (bilinearly, ``align_corners=False``). Ties are broken by position: of equal values the one
    first in row-major order is taken first (a stable sort, as the deletion curve orders pixels),
    so a constant map's top pixels are its first ``k`` and the result is the same on every device.

    Args:
        a: floating tensor ``(B, h, w)`` or ``(B, 1, h, w)``, finite.
        b: floating tensor ``(B, h', w')`` or ``(B, 1, h', w')``, finite, on ``a``'s device.
        fraction: share of the pixels kept, in (0, 1].
        size: the common grid ``(h, w)`` (or an int for a square one); ``None``:
            ``(max(h, h'), max(w, w'))``, the finer of the two.
        validate_args: check values (finite maps), which syncs with the host.

    Returns:
        Float tensor ``(B,)`` with values in [0, 1], float32, on the maps' device.

    Examples:
        >>> a = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
        >>> b = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]])
        >>> topk_iou(a, b, fraction=0.5)  # tops {0, 1} and {0, 2}: 1 shared of 3
        tensor([0.3333])
        >>> topk_iou(a, a, fraction=0.1)  # k = max(1, round(0.4)) = 1
        tensor([1.])
    """
    fraction = check_unit_interval("fraction", fraction, low_open=True)
    x, y, _, _ = _on_common_grid(a, b, size, validate_args)
    n = x.shape[1]
    k = max(1, math.floor(fraction * n + 0.5))
    top_a, top_b = descending_ranks(x) < k, descending_ranks(y) < k
    inter = (top_a & top_b).sum(dim=1)
    union = (top_a | top_b).sum(dim=1).clamp_min(1)  # >= k >= 1 unless the batch is empty
    return inter.float() / union.float()
