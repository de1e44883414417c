"""Checks of what a base dataset's items hold: an image tensor in [0, 1] (or uint8) and a class index,
as a pair ``(image, label)`` or a mapping with the keys ``"image"`` and ``"label"``."""

from __future__ import annotations

import numbers
import copy
from collections.abc import Mapping, MutableMapping
from typing import Any, Dict, Tuple

import torch

from ._checks import check_unit_range, describe

__all__ = ["IMAGE_KEY", "LABEL_KEY", "IDX_KEY", "check_item", "check_first_item", "with_image", "with_row"]

# The keys of a dict item or batch, everywhere in proxyaug: the image(s), the label(s), the bank row(s).
IMAGE_KEY, LABEL_KEY, IDX_KEY = "image", "label", "idx"


def check_item(item: Any, index: int) -> Tuple[torch.Tensor, Any]:
    """``(image, label)`` of a base dataset's item, or an error that says what was wrong and what to do.

    The item is a pair ``(image, label)`` or a mapping (a Hugging Face ``datasets`` row, for instance)
    with the keys ``"image"`` and ``"label"``; a mapping's other keys are the caller's to carry.

    Examples:
        >>> x, y = check_item((torch.zeros(3, 2, 2), 1), 0)
        >>> check_item({"image": x, "label": 1, "id": "a"}, 0)[1]
        1
        >>> check_item({"img": x, "label": 1}, 5)
        Traceback (most recent call last):
        ...
        TypeError: dataset[5] returned a mapping with the keys ['img', 'label']; expected the keys 'image' and 'label' (or a pair (image, label)). Rename the columns (hf_dataset.rename_column('img', 'image')), or return those keys from the dataset's transform.
    """
    where = f"dataset[{index}]"
    if isinstance(item, Mapping):
        if IMAGE_KEY not in item or LABEL_KEY not in item:
            keys = sorted(map(str, item))
            missing = [k for k in (IMAGE_KEY, LABEL_KEY) if k not in item]
            others = [k for k in keys if k not in (IMAGE_KEY, LABEL_KEY)]
            old = repr(others[0]) if len(missing) == 1 and len(others) == 1 else "old"  # the one candidate, when there is one
            hint = f" (hf_dataset.rename_column({old}, {missing[0]!r}))" if len(missing) == 1 else ""
            raise TypeError(
                f"{where} returned a mapping with the keys {keys}; expected the keys {IMAGE_KEY!r} and {LABEL_KEY!r} "
                f"(or a pair (image, label)). Rename the columns{hint}, or return those keys from the dataset's transform."
            )
        item = (item[IMAGE_KEY], item[LABEL_KEY])
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        got = f"a {type(item).__name__} of {len(item)} items" if isinstance(item, (tuple, list)) else describe(item)
        raise TypeError(f"{where} returned {got}; expected (image tensor (C, H, W), label) or a mapping with the keys "
                        f"{IMAGE_KEY!r} and {LABEL_KEY!r}.")
    x, y = item
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{where} returned an image that is {describe(x)}; expected a float tensor (C, H, W) in [0, 1]. "
            "Give the base dataset a transform such as torchvision.transforms.ToTensor() "
            "(or v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]); a Hugging Face dataset takes it "
            "through with_transform)."
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
    item = dataset[0]
    x, _ = check_item(item, 0)
    if isinstance(item, Mapping) and IDX_KEY in item:
        raise ValueError(
            f"dataset[0] has a key {IDX_KEY!r} already; ProxyDataset adds each item's bank row under {IDX_KEY!r}. "
            f"Remove or rename that column (hf_dataset.rename_column({IDX_KEY!r}, 'id'))."
        )
    if x.is_floating_point():
        check_unit_range("dataset[0]", float(x.min()), float(x.max()))


def with_row(item: Any, x: Any, y: Any, row: int) -> Any:
    """The item a [`ProxyDataset`][proxyaug.ProxyDataset] yields: ``(x, y, row)`` for a pair, and for a
    mapping a copy of it (``with_image``) with the image replaced by
    ``x`` and the bank row added under ``"idx"``.

    Examples:
        >>> with_row((0, 1), "x", 1, 7)
        ('x', 1, 7)
        >>> with_row({"image": 0, "label": 1, "id": "a"}, "x", 1, 7)
        {'image': 'x', 'label': 1, 'id': 'a', 'idx': 7}
    """
    if not isinstance(item, Mapping):
        return x, y, row
    out = with_image(item, x)
    out[IDX_KEY] = row
    return out


def with_image(batch: Mapping[str, Any], image: Any) -> Dict[str, Any]:
    """A copy of the mapping ``batch`` with ``image`` under ``"image"``: its own type where it is a
    mutable mapping (a ``defaultdict``, an ``OrderedDict``), a ``dict`` for a read-only one."""
    out = dict(batch) if type(batch) is dict or not isinstance(batch, MutableMapping) else copy.copy(batch)
    out[IMAGE_KEY] = image
    return out
