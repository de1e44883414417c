"""What every metric checks and shares: maps, regions, images, targets and right / wrong flags
where they enter, the bilinear resize of maps, the order of a map's pixels, and the class
probabilities of a model's forward.

The checks that read values (non-finite maps, empty regions, target range) sync with the host
once per call; pass ``validate_args=False`` to a metric to skip them in a tight loop.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .._checks import check_labels, describe
from .._warn import COARSE, warn_at_caller, why_coarse
from ..attention import extract_logits

Preprocess = Optional[Callable[[torch.Tensor], torch.Tensor]]


def check_maps(name: str, maps: Any, *, validate_args: bool = True) -> torch.Tensor:
    """``maps`` as a floating ``(B, h, w)`` tensor (``(B, 1, h, w)`` is squeezed), finite when validated."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape (B, h, w); got {describe(maps)}.")
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps.squeeze(1)
    if maps.ndim != 3:
        raise ValueError(f"{name} must have shape (B, h, w) or (B, 1, h, w); got shape {tuple(maps.shape)}.")
    if not maps.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {maps.dtype}. Convert it with {name}.float().")
    h, w = maps.shape[-2:]
    if maps.shape[0] and h * w <= COARSE:
        warn_at_caller(
            f"{name}: {h}x{w} maps are too coarse for a metric to say where the evidence is ({why_coarse(h, w)}"
            f"{', so a pointing game scores quadrants at best' if h * w > 1 else ''}). Compute them at a finer layer "
            "(MapSpec(layer=...); the how-to 'Measure what your model looks at' says what each metric can mean at a resolution)."
        )
    if validate_args and maps.numel():
        bad = (~torch.isfinite(maps)).flatten(1).any(dim=1)
        if bool(bad.any()):
            raise ValueError(f"{name} contain NaN or inf in image(s) {bad.nonzero().flatten().tolist()}; expected finite values.")
    return maps


def check_range(name: str, maps: torch.Tensor, *, high: Optional[float] = None) -> None:
    """The values of ``maps`` must be non-negative (and at most ``high`` when given): read on the host."""
    lo, hi = float(maps.min()), float(maps.max())
    if lo < 0 or (high is not None and hi > high):
        expected = f"[0, {high:g}]" if high is not None else "non-negative values (apply .clamp_min(0), as CAM methods do)"
        raise ValueError(f"{name} hold values in [{lo:.4g}, {hi:.4g}]; expected {expected}.")


def check_regions(regions: Any, maps: torch.Tensor, *, validate_args: bool = True) -> torch.Tensor:
    """``regions`` as a bool ``(B, H, W)`` mask matching ``maps`` in batch and at least as large; none empty."""
    if not isinstance(regions, torch.Tensor):
        raise TypeError(f"regions must be a bool tensor of shape (B, H, W); got {describe(regions)}.")
    if regions.ndim == 4 and regions.shape[1] == 1:
        regions = regions.squeeze(1)
    if regions.ndim != 3:
        raise ValueError(f"regions must have shape (B, H, W) or (B, 1, H, W); got shape {tuple(regions.shape)}.")
    if regions.dtype != torch.bool:
        raise TypeError(f"regions must be a bool mask; got dtype {regions.dtype}. Make one with e.g. regions > 0.5.")
    b, h, w = maps.shape
    if regions.shape[0] != b or regions.shape[1] < h or regions.shape[2] < w:
        raise ValueError(
            f"maps of shape {tuple(maps.shape)} and regions of shape {tuple(regions.shape)} do not match; expected "
            f"regions (B={b}, H, W) with H >= {h} and W >= {w} (maps are resized up to the regions' size)."
        )
    if regions.device != maps.device:
        raise ValueError(f"regions are on {regions.device} but maps are on {maps.device}; move them with regions.to(maps.device).")
    if validate_args and b:
        empty = ~regions.flatten(1).any(dim=1)
        if bool(empty.any()):
            raise ValueError(f"regions of image(s) {empty.nonzero().flatten().tolist()} are empty; expected at least one pixel in each region.")
    return regions


def check_pair(x: torch.Tensor, maps: torch.Tensor) -> None:
    """Images and maps must share their batch size and device."""
    if maps.shape[0] != x.shape[0]:
        raise ValueError(f"maps hold {maps.shape[0]} maps but x holds {x.shape[0]} images; expected one map per image.")
    if maps.device != x.device:
        raise ValueError(f"maps are on {maps.device} but x is on {x.device}; move them with maps.to(x.device).")


def check_correct(name: str, correct: Any) -> torch.Tensor:
    """``correct`` as a bool ``(N,)`` tensor of right / wrong flags."""
    if not isinstance(correct, torch.Tensor):
        raise TypeError(f"{name} must be a bool tensor (N,) of right / wrong flags (e.g. preds == labels); got {describe(correct)}.")
    if correct.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor of right / wrong flags; got dtype {correct.dtype}. Make one with e.g. preds == labels.")
    if correct.ndim != 1:
        raise ValueError(f"{name} must have shape (N,): one flag per trial; got shape {tuple(correct.shape)}. "
                         "Pass one column of a (B, F) curve at a time, e.g. curve[:, k].")
    return correct


def check_preprocess(preprocess: Any) -> Preprocess:
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable or None; got {describe(preprocess)}.")
    return preprocess


def resize(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(B, h, w)`` maps resized to ``size`` bilinearly (``align_corners=False``, as torchcam and
    ``cv2.resize`` do), in float32 at least; no normalisation, so the order of the values is the map's own."""
    m = maps if maps.dtype in (torch.float32, torch.float64) else maps.float()
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m.unsqueeze(1), size=tuple(int(s) for s in size), mode="bilinear", align_corners=False).squeeze(1)


def descending_ranks(values: torch.Tensor) -> torch.Tensor:
    """Each entry's place in its row's order, ``(B, N)`` int64: 0 for the highest value, ties by position
    (a stable sort), so equal values never share a place and the order is the same on every device."""
    b, n = values.shape
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return torch.empty_like(order).scatter_(1, order, torch.arange(n, device=values.device).expand(b, n))


def probabilities(model: torch.nn.Module, x: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Softmax over the classes of the model's logits on ``preprocess(x)``, float32 ``(B, num_classes)``."""
    return extract_logits(model(preprocess(x) if preprocess is not None else x)).float().softmax(dim=1)


def resolve_target(target: Any, probs: torch.Tensor, *, validate_args: bool = True) -> torch.Tensor:
    """The class per image: the predicted one for ``None``, else ``target`` (an int or ``(B,)`` indices)."""
    b, c = probs.shape
    if target is None:
        return probs.argmax(dim=1)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        t = torch.full((b,), int(target), dtype=torch.long, device=probs.device)
    else:
        t = check_labels("target", target, b).to(probs.device)
    if validate_args and b and (int(t.min()) < 0 or int(t.max()) >= c):
        raise ValueError(f"target holds classes in [{int(t.min())}, {int(t.max())}] but the model has {c} outputs; expected [0, {c - 1}].")
    return t
