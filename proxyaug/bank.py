"""MaskBank: one low-resolution attention map per dataset sample, kept on a device."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ._checks import check_index, describe

__all__ = ["MaskBank"]

Device = Union[str, torch.device, None]


def _check_resolution(resolution: Any) -> Optional[Tuple[int, int]]:
    if resolution is None:
        return None
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    try:
        h, w = (int(r) for r in resolution)
    except (TypeError, ValueError):
        raise ValueError(f"resolution={resolution!r} is not valid; expected (h, w) of positive integers or None.") from None
    if h < 1 or w < 1:
        raise ValueError(f"resolution={resolution!r} is not valid; expected (h, w) of positive integers or None.")
    return h, w


class MaskBank(nn.Module):
    r"""A bank of ``N`` low-resolution attention maps with presence flags, on one device.

    The bank stores each map at the target layer's own resolution (7x7 for a 224 px ResNet),
    normalised per image to [0, 1], in ``float16``; [`ProxyTransform`][proxyaug.ProxyTransform] upsamples
    them per batch. Memory per image for a 7x7 map: 49 values x 2 bytes + 1 presence byte
    = 99 bytes, so an ImageNet-1k bank (1,281,167 images) takes about 127 MB; a 14x14 map
    takes 393 bytes per image. Pass ``dtype=torch.float32`` to store full precision (197 bytes).

    It is an [`torch.nn.Module`][torch.nn.Module] whose state is two buffers, ``maps`` ``(N, h, w)`` and
    ``present`` ``(N,)``, so ``to()``, ``state_dict()`` and ``load_state_dict()`` work as for
    any module, and a [`ProxyTransform`][proxyaug.ProxyTransform] that holds it moves it along.

    Args:
        num_samples: ``N``, the size of the dataset the bank covers.
        resolution: ``(h, w)`` of the stored maps, or ``None`` to take it from the first
            [`put()`][proxyaug.MaskBank.put].
        device: where the maps live.
        dtype: floating dtype of the stored maps.

    Examples:
        >>> bank = MaskBank(10, resolution=(7, 7))
        >>> bank.put(torch.tensor([2, 5]), torch.rand(2, 7, 7))
        >>> maps, present = bank.get(torch.tensor([1, 2, 5]))
        >>> maps.shape, present.tolist()
        (torch.Size([3, 7, 7]), [False, True, True])
        >>> len(bank), int(bank.present.sum()), bank.nbytes_per_sample
        (10, 2, 99)
    """

    maps: torch.Tensor
    present: torch.Tensor

    def __init__(
        self,
        num_samples: int,
        resolution: Union[Sequence[int], int, None] = (7, 7),
        device: Device = None,
        dtype: torch.dtype = torch.float16,
    ) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} is not valid; expected a positive integer (the dataset's length).")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype={dtype} is not valid; expected a floating dtype such as torch.float16.")
        res = _check_resolution(resolution)
        h, w = res if res is not None else (0, 0)
        self.register_buffer("maps", torch.zeros(num_samples, h, w, dtype=dtype, device=device))
        self.register_buffer("present", torch.zeros(num_samples, dtype=torch.bool, device=device))

    # -- read-only facts -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.present.shape[0]

    @property
    def resolution(self) -> Optional[Tuple[int, int]]:
        """``(h, w)`` of the stored maps, or ``None`` before the first [`put()`][proxyaug.MaskBank.put]."""
        h, w = self.maps.shape[-2:]
        return (h, w) if h and w else None

    @property
    def device(self) -> torch.device:
        """The device the maps live on."""
        return self.maps.device

    @property
    def nbytes_per_sample(self) -> int:
        """Bytes one sample costs: its map plus its presence flag."""
        h, w = self.resolution or (0, 0)
        return h * w * self.maps.element_size() + self.present.element_size()

    def extra_repr(self) -> str:
        return f"num_samples={len(self)}, resolution={self.resolution}, dtype={self.maps.dtype}, device={self.device}"

    # -- reading and writing ---------------------------------------------------------------
    def get(self, idx: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """Look up the maps of samples ``idx``.

        Args:
            idx: 1-D integer tensor of sample indices (on any device).

        Returns:
            ``(maps, present)``: float32 maps of shape ``(K, h, w)`` (zeros where absent) and a
            bool tensor of shape ``(K,)``, both on the bank's device.
        """
        return self._lookup(check_index("idx", idx, size=len(self)))

    def _lookup(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[`get()`][proxyaug.MaskBank.get] for indices already validated (the per-batch path)."""
        idx = idx.to(self.device, non_blocking=True)
        return self.maps.index_select(0, idx).float(), self.present.index_select(0, idx)

    def put(self, idx: Any, maps: torch.Tensor, *, clear_others: bool = False) -> None:
        """Store ``maps`` for samples ``idx`` (replacing any earlier map of those samples).

        Maps are validated before anything is written, so a failed ``put`` leaves the bank as it
        was. With ``clear_others`` every sample not in ``idx`` loses its map in the same step. A
        bank that holds no map (or is cleared by this call) adopts the resolution of ``maps``.

        Args:
            idx: 1-D integer tensor of ``K`` distinct sample indices.
            maps: tensor of shape ``(K, h, w)`` with finite values in [0, 1].
            clear_others: drop the maps of all other samples.
        """
        if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
            raise ValueError(f"maps must be a tensor of shape (K, h, w); got {describe(maps)}.")
        idx = check_index("idx", idx, length=maps.shape[0], size=len(self)).to(self.device)
        res = tuple(maps.shape[-2:])
        if self.resolution is not None and res != self.resolution and (self.present.any() and not clear_others):
            raise ValueError(
                f"maps have resolution {res} but the bank stores {self.resolution}; resize them, or call "
                "bank.clear() first to start over at the new resolution."
            )
        values = maps.detach().to(self.device, torch.float32)
        if values.numel() and not bool(torch.isfinite(values).all()):
            raise ValueError("maps contain NaN or inf; expected finite values in [0, 1].")
        if values.numel() and (bool(values.min() < 0) or bool(values.max() > 1)):
            raise ValueError(
                f"maps hold values in [{float(values.min()):.4g}, {float(values.max()):.4g}]; expected [0, 1] "
                "(normalise them with proxyaug.functional.normalize_maps)."
            )
        if idx.numel() != torch.unique(idx).numel():
            raise ValueError("idx contains repeated indices; expected each sample at most once.")
        if self.resolution != res:
            if self.maps.is_shared() and self.resolution is not None:
                raise ValueError(
                    f"maps have resolution {res} but this bank stores {self.resolution} in shared memory, which "
                    "DataLoader workers hold: it cannot be reallocated. Build the dataset with resolution= the "
                    "target layer's (h, w)."
                )
            self.maps = torch.zeros(len(self), *res, dtype=self.maps.dtype, device=self.device)
            self.present.zero_()
        elif clear_others:
            self.present.zero_()
            self.maps.zero_()
        self.maps[idx] = values.to(self.maps.dtype)
        self.present[idx] = True

    def clear(self) -> None:
        """Drop every map; the resolution is kept."""
        self.maps.zero_()
        self.present.zero_()

    # -- persistence -----------------------------------------------------------------------
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Load a state saved with ``state_dict()``, validating its size first.

        The bank adopts the saved resolution; a state of a different ``num_samples`` is refused.
        """
        missing = {"maps", "present"} - set(state_dict)
        if missing:
            raise KeyError(f"state_dict lacks {sorted(missing)}; expected the keys 'maps' and 'present' of MaskBank.state_dict().")
        maps, present = state_dict["maps"], state_dict["present"]
        if maps.ndim != 3 or present.ndim != 1 or maps.shape[0] != present.shape[0]:
            raise ValueError(f"state_dict holds maps {tuple(maps.shape)} and present {tuple(present.shape)}; expected (N, h, w) and (N,).")
        if present.shape[0] != len(self):
            raise ValueError(
                f"state_dict is of a bank of {present.shape[0]} samples but this bank has {len(self)}; "
                "expected the same dataset length."
            )
        if tuple(maps.shape) == tuple(self.maps.shape):  # in place: workers sharing the memory see it
            self.maps.copy_(maps)
            self.present.copy_(present)
        else:
            self.maps = maps.to(self.device, self.maps.dtype).clone()
            self.present = present.to(self.device, torch.bool).clone()
        return nn.modules.module._IncompatibleKeys([], [])

