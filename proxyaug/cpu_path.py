"""The CPU path: maps applied to each item inside ``__getitem__`` (in DataLoader workers)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch

from .attention import MapSpec, map_resolution, model_device
from .bank import MaskBank
from .transform import ProxyTransform

__all__ = ["CpuPath", "measure_resolution"]


class CpuPath:
    """Replace one canonical image with its map, then run a CPU ``transform``: what a worker does per item.

    Made by [`ProxyDataset.enable_cpu_path()`][proxyaug.ProxyDataset.enable_cpu_path], which also
    moves the bank to shared memory so that running workers see every refresh.

    Args:
        bank: the (shared-memory) bank.
        transform: applied to each ``(C, H, W)`` image after the replacement.
        **proxy: [`ProxyTransform`][proxyaug.ProxyTransform] settings.

    Examples:
        >>> bank = MaskBank(2, resolution=(1, 1))
        >>> bank.put(torch.tensor([1]), torch.ones(1, 1, 1))
        >>> path = CpuPath(bank, mode="black", threshold=0.5)
        >>> path(torch.ones(3, 2, 2), 0).sum().item(), path(torch.ones(3, 2, 2), 1).sum().item()
        (12.0, 0.0)
    """

    def __init__(self, bank: MaskBank, transform: Optional[Callable[[torch.Tensor], Any]] = None, **proxy: Any) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable; got {type(transform).__name__}.")
        self.proxy = ProxyTransform(bank, **proxy)
        self.transform = transform

    def __call__(self, x: torch.Tensor, row: int) -> Any:
        x = self.proxy(x.unsqueeze(0), torch.tensor([row]))[0]
        return self.transform(x) if self.transform is not None else x


def measure_resolution(
    model: torch.nn.Module, image: torch.Tensor, spec: MapSpec, preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]]
) -> Tuple[int, int]:
    """The map resolution ``model`` gives on one canonical ``image`` ``(C, H, W)``, preprocessed as a refresh would.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> measure_resolution(net, torch.rand(1, 8, 8), MapSpec(), None)
        (4, 4)
    """
    x = image.unsqueeze(0).to(model_device(model))
    if preprocess is not None:
        x = preprocess(x)
    elif not x.is_floating_point():
        x = x.float() / 255  # the values do not matter for the shape, the dtype does
    return map_resolution(model, x, spec=spec)
