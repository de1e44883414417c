"""Pure batched kernels of the map-guided augmentations: boxes, cells, pastes and label weights.

[`SalientMix`][proxyaug.SalientMix] and [`KeepCutout`][proxyaug.KeepCutout] look maps up in a bank and call these; they
are usable alone on any maps ``(B, H, W)`` at the images' size (upsample low-resolution maps with
[`upsample_maps()`][proxyaug.functional.upsample_maps] first). Every kernel is batched on the maps'
device, reads no value on the host and compiles into its caller's graph. Boxes are
``(B, 4)`` int64 ``(y1, x1, y2, x2)``, half-open, in pixels; masks are bool ``(B, H, W)``.

The rules, from their papers and reference code:

- **Box around a map's peak** (SaliencyMix, Uddin et al. 2021; Attentive-CutMix's box variant):
  the CutMix box size ``(floor(H sqrt(1 - lam)), floor(W sqrt(1 - lam)))`` centred on the
  source image's most salient pixel, clipped to the image: [`peak_centres()`][proxyaug.mixing.peak_centres] and
  [`boxes_at()`][proxyaug.mixing.boxes_at].
- **Top-k cells** (Attentive CutMix, Walawalkar et al. 2020): the ``k`` cells of the map's own
  grid with the highest values: [`topk_cells()`][proxyaug.mixing.topk_cells].
- **Labels by area** (CutMix, SaliencyMix): the pasted share of the pixels goes to the source's
  label, the rest to the image's own; the weights sum to one: [`area_weights()`][proxyaug.mixing.area_weights].
- **Labels by map mass** (SnapMix, Huang et al. 2021): the image keeps the share of its own map's
  mass outside the pasted region, the source gives the share of its map's mass inside it; these
  need not sum to one (SnapMix's point: a paste of background gives little label):
  [`mass_weights()`][proxyaug.mixing.mass_weights].
- **Keep-salient Cutout** (KeepAugment's selective cut, Gong et al. 2021): of ``T`` candidate
  boxes per image, the first whose share of the map's mass is below ``tau``, else the least
  salient one: [`keep_boxes()`][proxyaug.mixing.keep_boxes].
"""

from __future__ import annotations

from typing import Any, Tuple

import torch

__all__ = ["cut_size", "boxes_at", "box_masks", "peak_centres", "topk_cells", "mass_in", "area_weights", "mass_weights",
           "keep_boxes", "soft_labels"]


def cut_size(lam: torch.Tensor, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The CutMix box's ``(h, w)`` for a mixing weight ``lam`` (a tensor): ``floor(side * sqrt(1 - lam))``, int64 tensors.

    Examples:
        >>> cut_size(torch.tensor(0.75), 32, 32)  # a quarter of the area
        (tensor(16), tensor(16))
    """
    r = (1.0 - lam.double()).clamp(0.0, 1.0).sqrt()
    return (height * r).floor().long(), (width * r).floor().long()


def boxes_at(centres: torch.Tensor, size: Tuple[Any, Any], image_size: Tuple[int, int]) -> torch.Tensor:
    """Boxes of ``size`` (ints or int tensors) centred on ``centres`` ``(B, 2)`` ``(cy, cx)``, clipped to the
    image (as CutMix's ``rand_bbox``).

    Examples:
        >>> boxes_at(torch.tensor([[0, 5]]), (4, 4), (8, 8))  # clipped at the top edge
        tensor([[0, 3, 2, 7]])
    """
    (h, w), (H, W) = size, image_size
    cy, cx = centres[:, 0], centres[:, 1]
    return torch.stack([(cy - h // 2).clamp(0, H), (cx - w // 2).clamp(0, W), (cy + h // 2).clamp(0, H), (cx + w // 2).clamp(0, W)], dim=1)


def box_masks(boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
    """Bool masks ``(B, H, W)`` of half-open boxes ``(B, 4)`` ``(y1, x1, y2, x2)``.

    Examples:
        >>> box_masks(torch.tensor([[0, 1, 1, 3]]), (2, 3)).int()
        tensor([[[0, 1, 1],
                 [0, 0, 0]]], dtype=torch.int32)
    """
    H, W = image_size
    rows = torch.arange(H, device=boxes.device).view(1, H, 1)
    cols = torch.arange(W, device=boxes.device).view(1, 1, W)
    b = boxes.view(-1, 4, 1, 1)
    return (rows >= b[:, 0]) & (rows < b[:, 2]) & (cols >= b[:, 1]) & (cols < b[:, 3])


def peak_centres(maps: torch.Tensor) -> torch.Tensor:
    """Each map's most salient pixel ``(B, 2)`` ``(cy, cx)``; ties: the first in row-major order.

    Examples:
        >>> m = torch.zeros(1, 4, 5); m[0, 2, 3] = 1.0
        >>> peak_centres(m)
        tensor([[2, 3]])
    """
    b, _, w = maps.shape
    flat = maps.reshape(b, -1).argmax(dim=1)
    return torch.stack([flat // w, flat % w], dim=1)


def topk_cells(maps: torch.Tensor, k: Any, image_size: Tuple[int, int]) -> torch.Tensor:
    """The ``k`` (an int or an int tensor) highest cells of each map's own ``(h, w)`` grid, as a mask at ``image_size``.

    Cells are mapped to pixels by nearest-neighbour resizing (cell ``i`` of ``h`` covers the rows
    whose centre falls in it); ties go to the cell first in row-major order.

    Examples:
        >>> m = torch.tensor([[[0.1, 0.9], [0.5, 0.2]]])
        >>> topk_cells(m, 2, (4, 4)).int()[0]
        tensor([[0, 0, 1, 1],
                [0, 0, 1, 1],
                [1, 1, 0, 0],
                [1, 1, 0, 0]], dtype=torch.int32)
    """
    b, h, w = maps.shape
    flat = maps.reshape(b, -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    places = torch.arange(h * w, device=maps.device).expand(b, h * w)
    ranks = torch.empty_like(order).scatter_(1, order, places)
    cells = (ranks < k).view(b, 1, h, w).float()
    return torch.nn.functional.interpolate(cells, size=image_size, mode="nearest")[:, 0] > 0.5


def mass_in(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each map's share of its mass inside its mask ``(B,)``; a map with no mass counts as uniform (the mask's area).

    Examples:
        >>> m = torch.tensor([[[3.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> mass_in(m, torch.tensor([[[True, False], [False, False]]] * 2))
        tensor([0.7500, 0.2500])
    """
    m = maps.float().clamp_min(0).flatten(1)
    k = masks.flatten(1).float()
    total = m.sum(dim=1)
    return torch.where(total > 0, (m * k).sum(dim=1) / total.clamp_min(torch.finfo(m.dtype).tiny), k.mean(dim=1))


def area_weights(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(own, source)`` label weights ``(B,)`` by area: the pasted share goes to the source; they sum to one.

    Examples:
        >>> area_weights(torch.tensor([[[True, False], [False, False]]]))
        (tensor([0.7500]), tensor([0.2500]))
    """
    src = masks.flatten(1).float().mean(dim=1)
    return 1.0 - src, src


def mass_weights(own_maps: torch.Tensor, source_maps: torch.Tensor, masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(own, source)`` label weights ``(B,)`` by map mass (SnapMix): the mass of the image's own
    map outside the pasted region, and of the source's map inside it. A map with no mass counts as
    uniform (the weights by area). They need not sum to one.

    Examples:
        >>> own = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # the image's evidence in the top-left pixel
        >>> src = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])  # the source's in the bottom-right one
        >>> mass_weights(own, src, torch.tensor([[[True, False], [False, False]]]))  # its evidence covered, none pasted
        (tensor([0.]), tensor([0.]))
    """
    return 1.0 - mass_in(own_maps, masks), mass_in(source_maps, masks)


def keep_boxes(maps: torch.Tensor, candidates: torch.Tensor, tau: float) -> torch.Tensor:
    """KeepAugment's selective cut: per image, the first candidate box ``(B, T, 4)`` whose share of
    the map's mass is below ``tau``, else the candidate with the least mass. ``(B, 4)``.

    Shares come from a summed-area table of the maps (one pass, any number of candidates).

    Examples:
        >>> m = torch.zeros(1, 4, 4); m[0, :, :2] = 1.0  # the left half holds the evidence
        >>> c = torch.tensor([[[0, 0, 2, 2], [0, 2, 2, 4]]])  # a salient box, then a background one
        >>> keep_boxes(m, c, tau=0.1)
        tensor([[0, 2, 2, 4]])
    """
    b, t, _ = candidates.shape
    m = maps.float().clamp_min(0)
    sat = torch.nn.functional.pad(m.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (B, H + 1, W + 1)
    flat = sat.flatten(1)
    stride = sat.shape[-1]
    y1, x1, y2, x2 = candidates.unbind(-1)

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return flat.gather(1, y * stride + x)

    inside = at(y2, x2) - at(y1, x2) - at(y2, x1) + at(y1, x1)
    total = flat[:, -1:]
    area = ((y2 - y1) * (x2 - x1)).float() / float(m.shape[-2] * m.shape[-1])
    share = torch.where(total > 0, inside / total.clamp_min(torch.finfo(m.dtype).tiny), area)
    ok = share < tau
    first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), share.argmin(dim=1))
    return candidates[torch.arange(b, device=candidates.device), first]


def soft_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels as float ``(B, num_classes)``: class indices one-hot, soft labels as they are.

    Examples:
        >>> soft_labels(torch.tensor([2, 0]), 3)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    if y.ndim == 1:
        return torch.nn.functional.one_hot(y.long(), num_classes).float()
    return y.float()
