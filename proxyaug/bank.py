"""MaskBank: one low-resolution attention map per dataset sample, kept on a device."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import functools

import torch
from torch import nn

from ._checks import check_index, describe
from ._device import to_device

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
    A parent's cast leaves the bank's dtype alone: ``nn.Sequential(proxy, model).half()`` (or
    ``.double()``, ``.to(torch.float64)``) converts the model, not the stored maps, and a bank in
    shared memory keeps its storage; a move (``.to("cuda")``) moves it, keeping its dtype. To
    change the storage dtype, call the cast on the bank itself (``bank.to(torch.float32)``); a bank
    in shared memory (the CPU path) refuses a cast or a move that would leave it: build the dataset
    with the ``dtype`` it should store.

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
        >>> nn.Sequential(bank).double()[0].maps.dtype  # a parent's cast leaves the maps alone
        torch.float16
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
        return self.lookup(check_index("idx", idx, size=len(self)))

    def lookup(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[`get()`][proxyaug.MaskBank.get] with no validation, for the per-batch path.

        ``idx`` must already be a 1-D int64 tensor of rows in range (the caller validated it, as
        [`ProxyTransform`][proxyaug.ProxyTransform] does once per batch); nothing here reads a value on
        the host, so it costs no sync and compiles into the caller's graph. A row out of range is
        caught only by the indexing kernel (an ``IndexError`` on the CPU, a device assert on CUDA).

        Examples:
            >>> bank = MaskBank(3, resolution=(1, 1))
            >>> bank.put(torch.tensor([2]), torch.ones(1, 1, 1))
            >>> bank.lookup(torch.tensor([2, 0]))
            (tensor([[[1.]],
            <BLANKLINE>
                    [[0.]]]), tensor([ True, False]))
        """
        idx = to_device(idx, self.device)  # a pageable CPU idx is pinned first: no stream sync on CUDA
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

    # -- casts and moves -------------------------------------------------------------------
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "MaskBank":
        # A parent's .double() / .half() / .to(dtype) reaches every submodule through _apply: the
        # bank's tensors keep their dtype (a cast would multiply memory and, on the CPU path, replace
        # the shared-memory storage DataLoader workers hold), as torchmetrics keeps its states'. Moves
        # still apply. fn is probed on a 0-d tensor like each buffer to tell a pure cast (skipped,
        # nothing allocated) from a move (applied, then cast back). A cast called on the bank itself
        # (bank.to(torch.float32), bank.half()) is the user's choice of storage and applies, except
        # on a bank in shared memory, which neither a cast nor a move may leave (see below).
        own = getattr(self, "_own_cast", None)  # the bank's own call running ("to(torch.float32)"), if any
        if self.maps.is_shared() or self.present.is_shared():
            self._stay_shared(fn, own)
        if own:  # the maps take the cast; the presence flags stay bool (Module.type would cast every buffer)
            return super()._apply(lambda t: fn(t) if t.is_floating_point() else _moved(fn, t), recurse)

        def keep_dtype(t: torch.Tensor) -> torch.Tensor:
            probe = fn(t.new_zeros(()))
            if probe.dtype == t.dtype:
                return fn(t)
            return t if probe.device == t.device else fn(t).to(t.dtype)

        return super()._apply(keep_dtype, recurse)

    def _stay_shared(self, fn: Callable[[torch.Tensor], torch.Tensor], own: Optional[str]) -> None:
        """Refuse a cast or a move that would give a shared bank new storage: DataLoader workers
        (the CPU path) keep the old one and would never see a later refresh."""
        probe = fn(self.maps.new_zeros(()))
        call = f"bank.{own}" if own else "moving the module that holds it"
        if own and probe.dtype != self.maps.dtype:
            raise ValueError(
                f"{call} would cast the maps to {probe.dtype}, but this bank stores {self.maps.dtype} in shared memory, "
                "which DataLoader workers hold: the cast would give it new storage that the workers never see, nor "
                f"any later refresh. Build the dataset with dtype={probe.dtype} instead."
            )
        if probe.device != self.maps.device:
            raise ValueError(
                f"{call} would move the maps to {probe.device}, but this bank lives in shared memory on the CPU, which "
                "DataLoader workers hold (the CPU path): they would keep the old maps and never see a later refresh. "
                "Keep it on the CPU: the CPU path applies the maps in the workers."
            )

    # -- persistence -----------------------------------------------------------------------
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Load a state saved with ``state_dict()``, as ``torch.nn.Module.load_state_dict`` does.

        The checks and the resize live in ``_load_from_state_dict``, so they hold as well when the
        bank is a submodule (``ProxyTransform(bank).load_state_dict(...)``). A state of the same
        shape is copied in place (DataLoader workers sharing the memory see it); one of another
        resolution is adopted (refused for a bank in shared memory, whose storage workers hold);
        one of another ``num_samples`` is refused. Unexpected keys are reported as by any module;
        with ``strict`` a missing key raises ``KeyError``.

        Examples:
            >>> saved = MaskBank(4, resolution=(3, 3))
            >>> saved.put(torch.tensor([2]), torch.rand(1, 3, 3))
            >>> bank = MaskBank(4, resolution=(7, 7))
            >>> bank.load_state_dict(saved.state_dict())
            <All keys matched successfully>
            >>> bank.resolution, bank.present.tolist()
            ((3, 3), [False, False, True, False])
        """
        if strict:
            missing = {"maps", "present"} - set(state_dict)
            if missing:
                raise KeyError(f"state_dict lacks {sorted(missing)}; expected the keys 'maps' and 'present' of MaskBank.state_dict().")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _load_from_state_dict(
        self,
        state_dict: Dict[str, Any],
        prefix: str,
        local_metadata: Dict[str, Any],
        strict: bool,
        missing_keys: List[str],
        unexpected_keys: List[str],
        error_msgs: List[str],
    ) -> None:
        # Validate, then give ``maps`` the saved shape so that nn.Module's copy (or assign) fits;
        # the key bookkeeping (missing, unexpected, strict) stays nn.Module's own.
        maps, present = state_dict.get(prefix + "maps"), state_dict.get(prefix + "present")
        maps = maps if isinstance(maps, torch.Tensor) else None
        present = present if isinstance(present, torch.Tensor) else None
        shape = lambda t: tuple(t.shape) if t is not None else "none"  # noqa: E731
        if (maps is not None and maps.ndim != 3) or (present is not None and present.ndim != 1) or (
            maps is not None and present is not None and maps.shape[0] != present.shape[0]
        ):
            raise ValueError(
                f"state_dict holds maps {shape(maps)} and present {shape(present)}; expected (N, h, w) and (N,)."
            )
        n = maps.shape[0] if maps is not None else present.shape[0] if present is not None else len(self)
        if n != len(self):
            raise ValueError(f"state_dict is of a bank of {n} samples but this bank has {len(self)}; expected the same dataset length.")
        assign = bool(local_metadata.get("assign_to_params_buffers", False))
        shared = self.maps.is_shared() or self.present.is_shared()
        if assign and shared and (maps is not None or present is not None):
            raise ValueError(
                "assign=True would replace the bank's tensors, but this bank is in shared memory, which DataLoader "
                "workers hold; load with assign=False (a copy in place)."
            )
        if assign and ((maps is not None and not maps.is_floating_point()) or (present is not None and present.dtype != torch.bool)):
            raise ValueError(
                f"assign=True keeps the saved tensors as they are; expected floating maps and bool present, got maps of "
                f"{None if maps is None else maps.dtype} and present of {None if present is None else present.dtype}."
            )
        if maps is not None and tuple(maps.shape) != tuple(self.maps.shape):
            res = tuple(maps.shape[-2:])
            if shared and self.resolution is not None:
                raise ValueError(
                    f"state_dict holds maps of resolution {res} but this bank stores {self.resolution} in shared memory, "
                    "which DataLoader workers hold: it cannot be reallocated. Build the dataset with resolution= the "
                    "saved (h, w)."
                )
            # adopt the saved resolution: the old flags describe maps that no longer exist
            self.maps = torch.zeros(maps.shape, dtype=self.maps.dtype, device=self.device)
            self.present.zero_()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


def _moved(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """``t`` where ``fn`` would put it, in its own dtype."""
    device = fn(t.new_zeros(())).device
    return t if device == t.device else t.to(device)


def _cast_by_the_bank_itself(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def cast(self: MaskBank, *args: Any, **kwargs: Any) -> Any:
        args_text = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
        self._own_cast = f"{method.__name__}({args_text})"  # for the message of a cast the bank refuses
        try:
            return method(self, *args, **kwargs)
        finally:
            self._own_cast = None

    return cast


# Called on the bank itself, these convert its maps as for any module; called on a parent, they
# reach the bank through _apply alone and leave its dtype as it is.
for _name in ("to", "type", "float", "double", "half", "bfloat16"):
    setattr(MaskBank, _name, _cast_by_the_bank_itself(getattr(nn.Module, _name)))
