"""ProxyTransform: the batched proxy replacement as an ``nn.Module`` over a [`MaskBank`][proxyaug.MaskBank]."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import functional as F
from ._checks import as_index, check_choice, check_images, check_index_bounds, check_unit_interval, check_unit_range, describe
from ._device import compiling
from ._items import IDX_KEY, IMAGE_KEY, with_image  # the keys of a dict input; every other key passes through
from .bank import MaskBank

__all__ = ["ProxyTransform"]

_USAGE = (
    "Call proxy(x, idx), which returns (x', idx), or proxy.replace(x, idx) for the images alone; or pass one batch: "
    "a tuple or list with the images first and idx last, such as (x, idx) or (x, y, idx), or a dict with the keys "
    "'image' and 'idx'"
)


class ProxyTransform(nn.Module):
    r"""Apply Proxy Attention to a batch: replace the pixels each sample's stored map marks.

    For every sample ``i`` of the batch it looks up ``bank`` at row ``idx[i]``; samples with a map
    are transformed by [`proxyaug.functional.replace()`][proxyaug.functional.replace] with probability ``p``, samples with
    no map pass through untouched. It runs on the batch's device (the bank's) with torch and
    Kornia ops, so put it after the batch reaches the GPU and before random augmentation and
    normalisation: maps were computed in the dataset's canonical frame.

    The bank is a submodule, so ``transform.to(device)`` moves it too (and with it the bank
    that the [`ProxyDataset`][proxyaug.ProxyDataset] holds: it is the same object). A cast of a parent
    (``nn.Sequential(proxy, model).half()``) leaves the bank's dtype alone.

    **Inputs.** Structure in, structure out, as torchvision v2 transforms: ``proxy(x, idx)``
    returns the tuple ``(x', idx)``, and whatever comes with the images passes through as the very
    same objects, so that the transform sits in ``nn.Sequential`` or
    ``torchvision.transforms.v2.Compose`` whole. For the images alone, call
    [`replace()`][proxyaug.ProxyTransform.replace]: ``proxy.replace(x, idx)``. The forms:

    - two or more arguments, images first and ``idx`` last, as ``v2.Compose`` passes them when
      called with several: ``proxy(x, idx)`` returns ``(x', idx)``, ``proxy(x, y, idx)`` returns
      ``(x', y, idx)``;
    - one tuple, list or namedtuple, images first and ``idx`` last: ``(x, idx)`` or ``(x, y, idx)``
      as a [`ProxyDataset`][proxyaug.ProxyDataset] batch is; the same type comes back;
    - one dict (any mapping) with the keys ``"image"`` and ``"idx"``; other keys pass through,
      and a mutable mapping comes back as a copy of its own type (``OrderedDict``,
      ``defaultdict``), a read-only one (``MappingProxyType``) as a ``dict``.

    The images are a batch ``(B, C, H, W)`` or one image ``(C, H, W)`` with a single index (a 0-d
    or one-element ``idx``, or an ``int``), returned as ``(C, H, W)``.

    **Checks.** Shapes, dtypes and devices are checked on every call: they read no values and cost
    nothing. Two checks read values on the host: that a CPU ``idx`` is in range (every call), and
    that the first float batch holds values in [0, 1] (``check_range``, once). They run only with
    ``validate_args`` on, and never while ``torch.compile`` traces the module, so that it compiles
    as one graph; an ``idx`` out of range is then caught by the indexing kernel alone.

    Args:
        bank: the [`MaskBank`][proxyaug.MaskBank] to read maps from (usually ``ds.bank``).
        mode: ``"blend"`` (the thesis' choice), ``"black"``, ``"mean"`` or ``"blur"``.
        threshold: map values strictly above it are replaced, in [0, 1] (thesis: 0.85).
        weight: the blend weight in [0, 1] (thesis: 0.1).
        p: probability of transforming a sample that has a map, in [0, 1].
        blur_sigma: sigma of the ``blur`` mode; default scales with the image size.
        check_range: check, on the first float batch only (one host sync), that the images are in
            [0, 1] and not, say, normalised already or in 0..255; ``False`` skips it.
        validate_args: run the checks that read values on the host (the ``idx`` range and
            ``check_range``); ``False`` skips them (torchmetrics' name).

    Shape:
        - x: `(B, C, H, W)` or `(C, H, W)`, floating point or uint8, on the bank's device
        - idx: `(B,)` integer bank rows: the ``idx`` the dataset's items carry (on any device)
        - output: ``replace()`` returns the shape of ``x``; a call, the structure it was given

    Examples:
        >>> bank = MaskBank(4, resolution=(2, 2))
        >>> bank.put(torch.tensor([1]), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))
        >>> proxy = ProxyTransform(bank, mode="black", threshold=0.5)
        >>> idx = torch.tensor([0, 1])
        >>> out = proxy.replace(torch.ones(2, 3, 4, 4), idx)  # the images alone
        >>> bool(out[0].eq(1).all()), out[1, 0]
        (True, tensor([[0., 0., 1., 1.],
                [0., 0., 1., 1.],
                [1., 1., 1., 1.],
                [1., 1., 1., 1.]]))
        >>> x, same = proxy(torch.ones(2, 3, 4, 4), idx)  # structure in, structure out
        >>> torch.equal(x, out), same is idx
        (True, True)
        >>> x, y, _ = proxy((torch.ones(2, 3, 4, 4), torch.tensor([7, 8]), idx))
        >>> torch.equal(x, out), y.tolist()
        (True, [7, 8])
        >>> batch = proxy({"image": torch.ones(3, 4, 4), "idx": 1, "label": 8})
        >>> batch["image"].shape, batch["label"]
        (torch.Size([3, 4, 4]), 8)
    """

    def __init__(
        self,
        bank: MaskBank,
        mode: str = F.DEFAULT_MODE,
        threshold: float = F.DEFAULT_THRESHOLD,
        weight: float = F.DEFAULT_WEIGHT,
        p: float = F.DEFAULT_P,
        blur_sigma: Optional[float] = None,
        *,
        check_range: bool = True,
        validate_args: bool = True,
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
        self.validate_args = bool(validate_args)

    def extra_repr(self) -> str:
        text = f"mode={self.mode!r}, threshold={self.threshold}, weight={self.weight}, p={self.p}, blur_sigma={self.blur_sigma}"
        return text if self.validate_args else text + ", validate_args=False"

    def forward_parameters(
        self,
        batch_shape: Union[torch.Size, Sequence[int], int],
        *,
        device: Any = None,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, torch.Tensor]:
        """Draw the per-sample choices that [`forward()`][proxyaug.ProxyTransform.forward] replays, as Kornia's method of that name.

        Args:
            batch_shape: the shape of the images, ``(B, C, H, W)`` (or ``(C, H, W)``: one image),
                as Kornia takes it; an ``int`` ``B`` is accepted too (the signature of 0.1).
            device: where to put the result; default the bank's device.
            generator: optional [`torch.Generator`][torch.Generator] for reproducible draws.

        Returns:
            ``{"apply": (B,) bool}``.

        Examples:
            >>> proxy = ProxyTransform(MaskBank(4), p=0.5)
            >>> proxy.forward_parameters((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))
            {'apply': tensor([ True, False,  True,  True])}
        """
        return F.sample_params(
            _batch_size(batch_shape), self.p, device=device if device is not None else self.bank.device, generator=generator
        )

    def forward(self, *inputs: Any, params: Optional[Dict[str, torch.Tensor]] = None) -> Any:
        """Transform the images with the maps stored for their ``idx``; return the structure given.

        Args:
            *inputs: ``x, idx`` or ``x, ..., idx``; or one batch (a tuple, list or namedtuple with
                the images first and ``idx`` last, or a dict with the keys ``"image"`` and
                ``"idx"``). The images and ``idx`` are what [`replace()`][proxyaug.ProxyTransform.replace] takes.
            params: replayed output of [`forward_parameters()`][proxyaug.ProxyTransform.forward_parameters]; drawn afresh when ``None``.

        Returns:
            The structure given, with the images replaced by what [`replace()`][proxyaug.ProxyTransform.replace]
            returns and everything else passed through as the same objects: a tuple for several
            arguments (``(x', idx)`` for ``proxy(x, idx)``), the same type for one tuple, list,
            namedtuple or dict.
        """
        x, idx, pack = _unpack(inputs)
        return pack(self.replace(x, idx, params=params))

    def replace(self, x: torch.Tensor, idx: Any, *, params: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Return the transformed images alone (Kornia's call form; ``forward`` returns the structure given).

        Named after [`proxyaug.functional.replace()`][proxyaug.functional.replace], which it calls with
        the maps stored for ``idx``.

        Args:
            x: images ``(B, C, H, W)`` or one image ``(C, H, W)``, floating point or ``uint8``, on
                the bank's device; a ``tv_tensors.Image`` stays one.
            idx: their bank rows, ``(B,)`` (a tensor on any device, or a list): the ``idx`` that
                [`ProxyDataset`][proxyaug.ProxyDataset] items carry; for one image an ``int`` or a
                one-element tensor.
            params: replayed output of [`forward_parameters()`][proxyaug.ProxyTransform.forward_parameters]; drawn afresh when ``None``.

        Returns:
            The images, of the shape, dtype, device and type of ``x``; ``x`` itself when nothing
            is applied.

        Examples:
            >>> bank = MaskBank(2, resolution=(1, 2))
            >>> bank.put(torch.tensor([1]), torch.tensor([[[1.0, 0.0]]]))
            >>> proxy = ProxyTransform(bank, mode="black", threshold=0.5)
            >>> proxy.replace(torch.ones(2, 1, 1, 2), torch.tensor([0, 1])).flatten().tolist()
            [1.0, 1.0, 0.0, 1.0]
            >>> proxy.replace(torch.ones(1, 2, 2), 1).shape  # one image (C, H, W)
            torch.Size([1, 2, 2])
        """
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be the dict forward_parameters() returns; got {describe(params)}. {_USAGE}.")
        single = isinstance(x, torch.Tensor) and x.ndim == 3
        batch = check_images("x", x.unsqueeze(0) if single else x, allow_uint8=True)
        idx = _single_index(x, idx) if single else as_index("idx", idx, length=batch.shape[0])
        out = self._transform(batch, idx, params)
        if out is batch:
            return x  # untouched: the very object given
        out = out[0] if single else out
        return out if type(x) is torch.Tensor else out.as_subclass(type(x))  # a tv_tensors.Image stays one

    def _transform(self, x: torch.Tensor, idx: torch.Tensor, params: Optional[Dict[str, torch.Tensor]]) -> torch.Tensor:
        if x.device != self.bank.device:
            raise RuntimeError(
                f"x is on {x.device} but the bank is on {self.bank.device}; call proxy.to({str(x.device)!r}) "
                "(or ds.bank.to(...)) once, or move the batch."
            )
        if self.validate_args and not compiling():  # the checks that read values on the host
            check_index_bounds("idx", idx, size=len(self.bank))
            if self.check_range and x.is_floating_point() and x.numel():
                lo, hi = x.aminmax()
                check_unit_range("x", float(lo), float(hi))
                self.check_range = False
        if (params is None and self.p == 0.0) or self.bank.resolution is None:
            return x  # nothing to apply, or a bank that has not received its first maps yet
        maps, present = self.bank.lookup(idx)  # idx checked above, once per batch
        return F.replace(
            x, maps, self.mode, self.threshold, self.weight, self.p,
            present=present, params=params, blur_sigma=self.blur_sigma,
        )


def _batch_size(batch_shape: Union[torch.Size, Sequence[int], int]) -> int:
    if isinstance(batch_shape, numbers.Integral) and not isinstance(batch_shape, bool) and batch_shape >= 0:
        return int(batch_shape)
    if isinstance(batch_shape, (tuple, list, torch.Size)) and len(batch_shape) in (3, 4):
        return 1 if len(batch_shape) == 3 else int(batch_shape[0])
    raise ValueError(
        f"batch_shape={batch_shape!r} is not valid; expected the images' shape (B, C, H, W) or (C, H, W), "
        "such as x.shape, or the batch size B."
    )


def _single_index(x: torch.Tensor, idx: Any) -> torch.Tensor:
    """The index of a single ``(C, H, W)`` image (an int, a 0-d or a one-element tensor) as ``(1,)``."""
    if isinstance(idx, torch.Tensor) and idx.numel() != 1:
        raise ValueError(
            f"x must have shape (B, C, H, W); got shape {tuple(x.shape)} and {idx.numel()} indices in idx, but a single "
            "image (C, H, W) takes one index. Give a batch its channel dimension, e.g. x.unsqueeze(1) for gray images."
        )
    if isinstance(idx, torch.Tensor):
        idx = idx.reshape(1)
    elif isinstance(idx, numbers.Integral) and not isinstance(idx, bool):
        idx = torch.tensor([int(idx)])
    return as_index("idx", idx, length=1)


def _unpack(inputs: Tuple[Any, ...]) -> Tuple[Any, Any, Callable[[Any], Any]]:
    """The images, ``idx``, and a function that puts new images back where the images came from."""
    if len(inputs) >= 2:  # (x, idx) as (x, y, idx): a tuple back, whatever the arity
        return inputs[0], inputs[-1], lambda image: (image, *inputs[1:])
    batch = inputs[0] if inputs else None
    if isinstance(batch, Mapping):
        missing = [k for k in (IMAGE_KEY, IDX_KEY) if k not in batch]
        if missing:
            raise KeyError(f"the batch dict lacks {missing}; got the keys {list(batch)}. Expected the keys 'image' and 'idx'.")
        return batch[IMAGE_KEY], batch[IDX_KEY], lambda image: with_image(batch, image)
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[-1], lambda image: _rebuilt(batch, [image, *batch[1:]])
    got = describe(batch) if inputs else "nothing"
    raise TypeError(f"ProxyTransform needs the images and their idx; got {got}. {_USAGE}.")


def _rebuilt(batch: Union[tuple, list], items: list) -> Union[tuple, list]:
    if type(batch) in (tuple, list):
        return type(batch)(items)
    return type(batch)(*items) if isinstance(batch, tuple) else type(batch)(items)  # a namedtuple takes fields
