"""Run an albumentations pipeline on proxyaug's (C, H, W) tensors (the CPU path)."""

from __future__ import annotations

from typing import Any

import torch

try:
    import numpy as np
except ImportError:  # pragma: no cover - albumentations brings numpy
    raise ImportError("proxyaug.integrations.albumentations needs albumentations: pip install 'proxyaug[albumentations]'.") from None

__all__ = ["Albumentations"]


class Albumentations:
    """Wrap an albumentations transform so that it takes and returns ``(C, H, W)`` float tensors.

    albumentations works on ``(H, W, C)`` numpy arrays; this converts a tensor image in [0, 1]
    to one, applies ``transform(image=...)`` and converts the result back (a result that already
    is a tensor, from ``ToTensorV2``, is returned as it is). Use it as the ``transform`` of
    [`ProxyDataset.enable_cpu_path()`][proxyaug.ProxyDataset.enable_cpu_path].

    Args:
        transform: an albumentations transform or ``Compose``.

    Examples:
        >>> import albumentations as A
        >>> flip = Albumentations(A.HorizontalFlip(p=1.0))
        >>> x = torch.arange(4.0).view(1, 1, 4) / 4
        >>> flip(x)
        tensor([[[0.7500, 0.5000, 0.2500, 0.0000]]])
    """

    def __init__(self, transform: Any) -> None:
        if not callable(transform):
            raise TypeError(f"transform must be an albumentations transform; got {type(transform).__name__}.")
        self.transform = transform

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = x.detach().permute(1, 2, 0).numpy()
        out = self.transform(image=image)["image"]
        if isinstance(out, torch.Tensor):
            return out
        out = np.ascontiguousarray(out)
        return torch.from_numpy(out if out.ndim == 3 else out[..., None]).permute(2, 0, 1)

    def __repr__(self) -> str:
        return f"Albumentations({self.transform!r})"
