"""Warnings at the user's line: about maps too coarse to locate anything, and maps with nothing in them.

``warnings.warn(stacklevel=n)`` needs the depth of the user's frame, which differs per entry point
(``attention_maps``, ``refresh``, a ``capture.step`` block); these walk the stack to the first
frame outside proxyaug (and outside ``contextlib``, which runs a ``with`` block's exit) instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Optional, Tuple

import torch

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_CONTEXTLIB = os.path.abspath(contextlib.__file__)

COARSE = 4
"""Maps of at most this many cells (2x2, 1x2, 1x1) are too coarse: upsampled, they peak in a corner or along an edge."""


def why_coarse(h: int, w: int) -> str:
    """What upsampling a map of ``h`` x ``w`` cells does, in words."""
    return "a 1x1 map is one number: it marks no place" if h * w == 1 else f"upsampled, a {h}x{w} map peaks in a corner or along an edge"


def warn_at_caller(message: str, category: type = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first frame outside proxyaug."""
    frame, level = sys._getframe(1), 2
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE) or os.path.abspath(frame.f_code.co_filename) == _CONTEXTLIB):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def warn_coarse(where: str, resolution: Tuple[int, int], layer: str, finer: Optional[Tuple[str, Tuple[int, int]]]) -> None:
    """Warn that ``where``'s maps at ``layer`` are ``resolution``, at most 2x2, naming ``finer`` (a layer and its ``(h, w)``)."""
    h, w = resolution
    hint = (f" A finer layer exists: {finer[0]!r} gives {finer[1][0]}x{finer[1][1]} (MapSpec(layer={finer[0]!r}))."
            if finer else " Pick an earlier layer with MapSpec(layer=...), or feed larger images.")
    warn_at_caller(
        f"{where}: the maps at {layer!r} are {h}x{w}, too coarse to say where in the image the evidence is ({why_coarse(h, w)}).{hint}"
    )


def warn_empty(where: str, empty: int, total: int, method: str) -> None:
    """Warn that ``empty`` of ``total`` maps are all zero: the method found no positive evidence (its ReLU removed every value)."""
    warn_at_caller(
        f"{where}: {empty} of {total} {method} maps are all zero: no positive evidence for the class at the target layer "
        "(the method's ReLU removed every value), so they mark no region: Proxy Attention changes no pixel of those images."
    )


def count_empty(maps: Optional[torch.Tensor]) -> int:
    """How many of ``maps`` ``(K, h, w)`` are all zero (no positive evidence: the method's ReLU removed everything)."""
    return int((maps.flatten(1).amax(dim=1) <= 0).sum()) if maps is not None and maps.numel() else 0
