"""Validation helpers used where user data enters the package.

Each raises with a message that names the argument, the value received and what was expected.
Most read only tensor metadata (shape, dtype, device), never values, so they cost no device sync
and keep a compiled caller in one graph; the few that read values on the host (index bounds, image
range) say so, and the per-batch path calls them only when ``validate_args`` allows it.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import torch


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {', '.join(map(repr, choices))}.")
    return value.lower()


def check_unit_interval(name: str, value: Any, *, low_open: bool = False) -> float:
    """``value`` must be a real number in [0, 1] (or (0, 1] when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in {'(0' if low_open else '[0'}, 1]; got {value!r} ({type(value).__name__}).")
    value = float(value)
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; expected a number in {'(0' if low_open else '[0'}, 1].")
    return value


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; expected a positive integer.")
    return int(value)


def describe(value: Any) -> str:
    """Short description of a value for error messages: shape and dtype for tensors."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__module__}.{type(value).__qualname__}" if type(value).__module__ != "builtins" else f"a {type(value).__name__}"


def check_images(name: str, x: Any, *, allow_uint8: bool = False) -> torch.Tensor:
    """``x`` must be a tensor of shape (B, C, H, W), floating point (or uint8 where allowed)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape (B, C, H, W); got {describe(x)}.")
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have shape (B, C, H, W); got shape {tuple(x.shape)} ({x.ndim} dims). "
            "Add a batch dimension with x.unsqueeze(0) for a single image."
        )
    if not x.is_floating_point() and not (allow_uint8 and x.dtype == torch.uint8):
        expected = "a floating-point tensor with values in [0, 1]" + (" or a uint8 tensor in [0, 255]" if allow_uint8 else "")
        raise TypeError(
            f"{name} must be {expected}; got dtype {x.dtype}. Convert it first, e.g. with "
            "torchvision.transforms.v2.functional.to_dtype(x, torch.float32, scale=True)."
        )
    return x


def as_index(name: str, idx: Any, *, length: Optional[int] = None) -> torch.Tensor:
    """``idx`` as a 1-D int64 tensor (of ``length`` entries if given), from its metadata alone.

    What ``check_index`` checks before the range: conversion, dtype, dimensions, length. It
    reads no value, so it costs no host sync and a compiled caller keeps one graph.
    """
    if not isinstance(idx, torch.Tensor):
        try:
            idx = torch.as_tensor(idx)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a 1-D tensor of sample indices; got {describe(idx)}.") from None
    if idx.dtype in (torch.bool,) or idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"{name} must hold integer sample indices; got dtype {idx.dtype}.")
    if idx.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one index per sample; got shape {tuple(idx.shape)}.")
    if length is not None and idx.numel() != length:
        raise ValueError(f"{name} has {idx.numel()} entries but the batch has {length} samples; expected one index per sample.")
    return idx.long()


def check_index_bounds(name: str, idx: torch.Tensor, *, size: int) -> None:
    """The indices of a host ``idx`` must lie in [0, size); one on an accelerator is left to the kernel.

    This is the part of ``check_index`` that reads values (``int(idx.min())``): call it only
    where a host round-trip is allowed, not under ``torch.compile``.
    """
    if idx.device.type == "cpu" and idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= size:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name} contains {bad}, out of range for a bank of {size} samples; expected indices in [0, {size - 1}].")


def check_index(name: str, idx: Any, *, size: int, length: Optional[int] = None) -> torch.Tensor:
    """``idx`` must be a 1-D integer tensor (or sequence of ints) in [0, size), of ``length`` entries if given.

    The range is checked on the host only when ``idx`` already lives there (as DataLoader batches
    do); an index tensor on an accelerator is bounds-checked by the indexing kernel itself, so that
    this check never forces a device sync. It is ``as_index`` followed by ``check_index_bounds``.
    """
    idx = as_index(name, idx, length=length)
    check_index_bounds(name, idx, size=size)
    return idx


#: How far outside [0, 1] a float image may reach before it is refused: bicubic and antialiased
#: resizing of float tensors overshoot a little (torchvision clamps only uint8), while images in
#: 0..255 or already normalised reach far beyond.
RANGE_SLACK = 0.25


def check_unit_range(name: str, lo: float, hi: float) -> None:
    """Float images must hold values in [0, 1] (up to ``RANGE_SLACK``); ``lo`` and ``hi`` are their extremes."""
    too_low, too_high = lo < -RANGE_SLACK, hi > 1 + RANGE_SLACK  # NaN is neither: non-finite maps are handled later
    if not (too_low or too_high):
        return
    if not too_low:
        why = "They look like 0..255 values: divide by 255, or convert uint8 with v2.ToDtype(torch.float32, scale=True)"
    else:
        why = (
            "They look normalised: normalise after proxyaug, not in the base dataset (apply it after "
            "ProxyTransform in the loop and pass it to refresh(preprocess=...))"
        )
    raise ValueError(f"the values of {name} lie in [{lo:.4g}, {hi:.4g}]; expected float images in [0, 1]. {why}.")


def check_labels(name: str, y: Any, length: Optional[int] = None) -> torch.Tensor:
    """``y`` must be integer class indices, one per image (``length`` of them when given); int64 out."""
    y = y if isinstance(y, torch.Tensor) else torch.as_tensor(y)
    n = y.shape[0] if y.ndim == 1 else None
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or (length is not None and n != length):
        count = f"{length} " if length is not None else ""
        raise ValueError(f"{name} must be {count}integer class indices, one per image; got {describe(y)}.")
    return y.long()
