"""The CPU path: maps applied to each item inside ``__getitem__`` (in DataLoader workers)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch

from .attention import MapSpec, map_resolution, model_device
from .bank import MaskBank
from .transform import ProxyTransform

__all__ = ["CpuPath", "measure_resolution", "fix_resolution"]


class CpuPath:
    """Replace one canonical image with its map: what a worker does per item on the CPU path.

    Made by [`ProxyDataset.enable_cpu_path()`][proxyaug.ProxyDataset.enable_cpu_path], which also
    moves the bank to shared memory so that running workers see every refresh.

    Args:
        bank: the (shared-memory) bank.
        **proxy: [`ProxyTransform`][proxyaug.ProxyTransform] settings.

    Examples:
        >>> bank = MaskBank(2, resolution=(2, 2))
        >>> bank.put(torch.tensor([1]), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
        >>> path = CpuPath(bank, mode="black", threshold=0.5)
        >>> path(torch.ones(3, 4, 4), 0).sum().item(), path(torch.ones(3, 4, 4), 1).sum().item()  # row 1 loses a corner
        (48.0, 36.0)
    """

    def __init__(self, bank: MaskBank, **proxy: Any) -> None:
        self.proxy = ProxyTransform(bank, **proxy)

    def __call__(self, x: torch.Tensor, row: int) -> torch.Tensor:
        return self.proxy.replace(x, row)  # one (C, H, W) image and its row: the image alone


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


def fix_resolution(bank: MaskBank, measured: Tuple[int, int]) -> None:
    """Give a bank with no resolution yet the ``measured`` one (before its memory is shared), or
    refuse a bank whose resolution differs.

    Examples:
        >>> bank = MaskBank(2, resolution=None)
        >>> fix_resolution(bank, (4, 4)); bank.resolution
        (4, 4)
    """
    if bank.resolution is None:
        h, w = measured
        empty = {"maps": torch.zeros(len(bank), h, w), "present": torch.zeros(len(bank), dtype=torch.bool)}
        bank.load_state_dict(empty)  # adopts the resolution, before the memory is shared
    elif bank.resolution != measured:
        raise ValueError(
            f"the bank stores maps at {bank.resolution} but the model's target layer gives {measured} on "
            f"item 0; build the dataset with resolution={measured} (or leave resolution=None and pass model=)."
        )
