"""ProxyTransform: the batched proxy replacement as an ``nn.Module`` over a [`MaskBank`][proxyaug.MaskBank]."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from . import functional as F
from ._checks import check_choice, check_images, check_index, check_unit_interval, check_unit_range
from .bank import MaskBank

__all__ = ["ProxyTransform"]


class ProxyTransform(nn.Module):
    r"""Apply Proxy Attention to a batch: replace the pixels each sample's stored map marks.

    For every sample ``i`` of the batch it looks up ``bank`` at row ``idx[i]``; samples with a map
    are transformed by [`proxyaug.functional.replace()`][proxyaug.functional.replace] with probability ``p``, samples with
    no map pass through untouched. It runs on the batch's device (the bank's) with torch and
    Kornia ops, so put it after the batch reaches the GPU and before random augmentation and
    normalisation: maps were computed in the dataset's canonical frame.

    The bank is a submodule, so ``transform.to(device)`` moves it too (and with it the bank
    that the [`ProxyDataset`][proxyaug.ProxyDataset] holds: it is the same object).

    Args:
        bank: the [`MaskBank`][proxyaug.MaskBank] to read maps from (usually ``ds.bank``).
        mode: ``"blend"`` (the thesis' choice), ``"black"``, ``"mean"`` or ``"blur"``.
        threshold: map values strictly above it are replaced, in [0, 1] (thesis: 0.85).
        weight: the blend weight in [0, 1] (thesis: 0.1).
        p: probability of transforming a sample that has a map, in [0, 1].
        blur_sigma: sigma of the ``blur`` mode; default scales with the image size.
        check_range: check, on the first float batch only (one host sync), that the images are in
            [0, 1] and not, say, normalised already or in 0..255; ``False`` skips it.

    Shape:
        - x: `(B, C, H, W)`, floating point or uint8, on the bank's device
        - idx: `(B,)` integer bank rows: the ``idx`` the dataset's items carry (on any device)
        - output: `(B, C, H, W)`

    Examples:
        >>> bank = MaskBank(4, resolution=(2, 2))
        >>> bank.put(torch.tensor([1]), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
        >>> proxy = ProxyTransform(bank, mode="black", threshold=0.5)
        >>> out = proxy(torch.ones(2, 3, 4, 4), torch.tensor([0, 1]))
        >>> bool(out[0].eq(1).all()), out[1, 0]
        (True, tensor([[0., 0., 1., 1.],
                [0., 0., 1., 1.],
                [1., 1., 1., 1.],
                [1., 1., 1., 1.]]))
    """

    def __init__(
        self,
        bank: MaskBank,
        mode: str = "blend",
        threshold: float = 0.85,
        weight: float = 0.1,
        p: float = 1.0,
        blur_sigma: Optional[float] = None,
        check_range: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(bank, MaskBank):
            raise TypeError(f"bank must be a proxyaug.MaskBank (for example ds.bank); got {type(bank).__name__}.")
        self.bank = bank
        self.mode = check_choice("mode", mode, F.MODES)
        self.threshold = check_unit_interval("threshold", threshold)
        self.weight = check_unit_interval("weight", weight)
        self.p = check_unit_interval("p", p)
        if blur_sigma is not None and not blur_sigma > 0:
            raise ValueError(f"blur_sigma={blur_sigma!r} is not valid; expected a positive number or None.")
        self.blur_sigma = blur_sigma
        self.check_range = bool(check_range)  # cleared once a float batch has passed

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, threshold={self.threshold}, weight={self.weight}, p={self.p}"

    def forward_parameters(self, batch_size: int, device: Any = None, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """Draw the per-sample choices (``{"apply": (B,) bool}``) that [`forward()`][proxyaug.ProxyTransform.forward] replays."""
        return F.sample_params(batch_size, self.p, device=device if device is not None else self.bank.device, generator=generator)

    def forward(self, x: torch.Tensor, idx: Any, params: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Transform ``x`` with the maps stored for ``idx``.

        Args:
            x: images ``(B, C, H, W)`` on the bank's device.
            idx: the bank rows of the samples, ``(B,)``: the ``idx`` that [`ProxyDataset`][proxyaug.ProxyDataset] items carry.
            params: replayed output of [`forward_parameters()`][proxyaug.ProxyTransform.forward_parameters]; drawn afresh when ``None``.

        Returns:
            The transformed batch, same shape, dtype and device as ``x``.
        """
        check_images("x", x, allow_uint8=True)
        if x.device != self.bank.device:
            raise RuntimeError(
                f"x is on {x.device} but the bank is on {self.bank.device}; call proxy.to({str(x.device)!r}) "
                "(or ds.bank.to(...)) once, or move the batch."
            )
        idx = check_index("idx", idx, size=len(self.bank), length=x.shape[0])
        if self.check_range and x.is_floating_point() and x.numel():
            lo, hi = x.aminmax()
            check_unit_range("x", float(lo), float(hi))
            self.check_range = False
        if (params is None and self.p == 0.0) or self.bank.resolution is None:
            return x  # nothing to apply, or a bank that has not received its first maps yet
        maps, present = self.bank._lookup(idx)  # idx validated above, once per batch
        return F.replace(
            x, maps, self.mode, self.threshold, self.weight, self.p,
            present=present, params=params, blur_sigma=self.blur_sigma,
        )

