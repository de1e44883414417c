"""Checks of what a base dataset's items hold: an image tensor in [0, 1] (or uint8) and a class index."""

from __future__ import annotations

import numbers
from typing import Any, Tuple

import torch

from ._checks import check_unit_range, describe

__all__ = ["check_item", "check_first_item"]


def check_item(item: Any, index: int) -> Tuple[torch.Tensor, Any]:
    """``(image, label)`` of a base dataset's item, or an error that says what was wrong and what to do.

    Examples:
        >>> x, y = check_item((torch.zeros(3, 2, 2), 1), 0)
        >>> check_item({"image": x}, 5)
        Traceback (most recent call last):
        ...
        TypeError: dataset[5] returned a dict with keys ['image']; expected (image tensor (C, H, W), label). Wrap the dataset so that it returns that pair.
    """
    where = f"dataset[{index}]"
    if isinstance(item, dict):
        raise TypeError(
            f"{where} returned a dict with keys {sorted(map(str, item))}; expected (image tensor (C, H, W), label). "
            "Wrap the dataset so that it returns that pair."
        )
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        got = f"a {type(item).__name__} of {len(item)} items" if isinstance(item, (tuple, list)) else describe(item)
        raise TypeError(f"{where} returned {got}; expected (image tensor (C, H, W), label).")
    x, y = item
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{where} returned an image that is {describe(x)}; expected a float tensor (C, H, W) in [0, 1]. "
            "Give the base dataset a transform such as torchvision.transforms.ToTensor() "
            "(or v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))."
        )
    if x.ndim != 3 or not (x.is_floating_point() or x.dtype == torch.uint8):
        raise TypeError(
            f"{where} returned an image of shape {tuple(x.shape)} and dtype {x.dtype}; expected a tensor "
            "(C, H, W), float in [0, 1] or uint8 in [0, 255] (convert with v2.ToDtype(torch.float32, scale=True))."
        )
    label_ok = isinstance(y, numbers.Integral) and not isinstance(y, bool)
    label_ok = label_ok or (isinstance(y, torch.Tensor) and y.ndim == 0 and not y.is_floating_point() and y.dtype != torch.bool)
    if not label_ok:
        raise TypeError(f"{where} returned a label that is {describe(y)}; expected an integer class index.")
    return x, y


def check_first_item(dataset: Any) -> None:
    """Item 0, checked when a [`ProxyDataset`][proxyaug.ProxyDataset] is built: its form, and float values in [0, 1].

    Examples:
        >>> check_first_item([(torch.full((3, 2, 2), 200.0), 0)])
        Traceback (most recent call last):
        ...
        ValueError: the values of dataset[0] lie in [200, 200]; expected float images in [0, 1]. They look like 0..255 values: divide by 255, or convert uint8 with v2.ToDtype(torch.float32, scale=True).
    """
    x, _ = check_item(dataset[0], 0)
    if x.is_floating_point():
        check_unit_range("dataset[0]", float(x.min()), float(x.max()))
