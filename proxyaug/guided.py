"""Map-guided augmentations fed by the bank: salient paste with area or map-mass labels, and keep-salient Cutout.

The published map-guided augmentations (SaliencyMix, Attentive CutMix, SnapMix, KeepAugment) pay
for their maps with an extra forward (and often backward) pass per step, or use a model-free
saliency. These read the maps a [`MaskBank`][proxyaug.MaskBank] already holds (written by
[`refresh()`][proxyaug.refresh] or, at no extra pass, by [`MapCapture`][proxyaug.MapCapture]), so the
augmentation itself costs a few batched tensor ops. The rules are the kernels of
[`proxyaug.mixing`][proxyaug.mixing].

**Frame.** As for [`ProxyTransform`][proxyaug.ProxyTransform], the maps describe the dataset's
canonical image: put these right after the batch reaches the device, before random geometry.

**No map yet.** A sample whose row of the bank holds no map gets the map-free version: a random
box (CutMix's) for [`SalientMix`][proxyaug.SalientMix], the first random hole (Cutout's) for
[`KeepCutout`][proxyaug.KeepCutout]; its labels by area.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import mixing as X
from ._checks import as_index, check_choice, check_images, check_index_bounds, check_positive_int, check_unit_interval, describe
from ._device import compiling
from .bank import MaskBank
from .functional import upsample_maps
from ._items import IDX_KEY, IMAGE_KEY, LABEL_KEY, with_image
from .transform import _batch_size, _rebuilt, _unpack

__all__ = ["SalientMix", "KeepCutout"]

BOXES = ("peak", "topk", "random")
LABELS = ("area", "mass")


def _shape(batch_shape: Union[torch.Size, Sequence[int]]) -> Tuple[int, int, int]:
    if not (isinstance(batch_shape, (tuple, list, torch.Size)) and len(batch_shape) == 4):
        raise ValueError(f"batch_shape={batch_shape!r} is not valid; expected the images' shape (B, C, H, W), such as x.shape.")
    return _batch_size(batch_shape), int(batch_shape[-2]), int(batch_shape[-1])


def _beta(alpha: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One draw of Beta(alpha, alpha), a 0-d CPU tensor; ``alpha = 1`` is a uniform draw (traceable by ``torch.compile``)."""
    if alpha == 1.0:
        return torch.rand((), generator=generator)
    seed = int(torch.randint(0, 2**62, (), generator=generator))  # the Beta sampler takes no generator: seed a forked RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample()


def _maps(bank: MaskBank, idx: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bank's maps of ``idx``: low resolution ``(B, h, w)``, at the image size ``(B, H, W)`` in [0, 1], and presence."""
    low, present = bank.lookup(idx)
    return low, upsample_maps(low, size)[:, 0], present


def _check_batch(bank: MaskBank, x: torch.Tensor, idx: Any, validate: bool) -> torch.Tensor:
    x = check_images("x", x, allow_uint8=True)
    idx = as_index("idx", idx, length=x.shape[0])
    if x.device != bank.device:
        raise RuntimeError(f"x is on {x.device} but the bank is on {bank.device}; call transform.to({str(x.device)!r}) once, or move the batch.")
    if validate and not compiling():
        check_index_bounds("idx", idx, size=len(bank))
    return idx


class SalientMix(nn.Module):
    r"""Paste a box (or cells) of another image of the batch where that image's map is salient; mix the labels.

    Each image ``i`` gets a region of image ``i - 1`` of the batch (the batch rolled by one, as
    ``torchvision.transforms.v2.CutMix`` pairs them) and soft labels ``w_own * y_i + w_src * y_{i-1}``.
    One ``lam ~ Beta(alpha, alpha)`` per batch sets the region's size, as in CutMix. The region:

    - ``box="peak"`` (SaliencyMix, Uddin et al. 2021): CutMix's box, ``floor(H sqrt(1 - lam))`` x
      ``floor(W sqrt(1 - lam))``, centred on the source's map peak, clipped to the image;
    - ``box="topk"`` (Attentive CutMix, Walawalkar et al. 2020): the ``round((1 - lam) h w)`` cells of
      the source's map grid ``(h, w)`` with the highest values;
    - ``box="random"``: CutMix's random box (the map-free version, also each sample's fallback).

    Labels: ``labels="area"`` (CutMix, SaliencyMix: the pasted share of the pixels; the weights sum
    to one) or ``labels="mass"`` (SnapMix, Huang et al. 2021: the image keeps the share of its own
    map's mass outside the region, the source gives the share of its map's mass inside it; they need
    not sum to one, and a sample without a map counts its area). SnapMix also resizes a box of
    another size from the source; here the region keeps its place, as SaliencyMix pastes it.

    Structure in, structure out: ``mix(x, y, idx)`` returns ``(x', y', idx)``; one tuple or list
    ``(x, y, idx)`` comes back as its type; a dict with ``"image"``, ``"label"`` (or ``"labels"``)
    and ``"idx"`` comes back with those replaced. Labels are class indices ``(B,)`` or soft / one-hot
    ``(B, num_classes)``; soft labels ``(B, num_classes)`` float32 come out.

    Args:
        bank: the [`MaskBank`][proxyaug.MaskBank] to read maps from (``ds.bank``).
        num_classes: the number of classes (of the soft labels).
        box: ``"peak"``, ``"topk"`` or ``"random"``.
        labels: ``"area"`` or ``"mass"``.
        alpha: the Beta distribution's parameter (1: ``lam`` uniform, as CutMix's default).
        validate_args: check ``idx`` and the labels' range on the host (skipped while compiling).

    Examples:
        >>> bank = MaskBank(2, resolution=(2, 2))
        >>> bank.put(torch.tensor([0, 1]), torch.tensor([[[0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]]))
        >>> mix = SalientMix(bank, num_classes=3, box="topk")
        >>> x = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
        >>> params = {"lam": torch.tensor(0.75), "centres": torch.zeros(2, 2, dtype=torch.long)}
        >>> out, y, idx = mix(x, torch.tensor([0, 2]), torch.tensor([0, 1]), params=params)
        >>> out[0, 0].int()  # image 0 gets image 1's most salient cell, its top left
        tensor([[1, 1, 0, 0],
                [1, 1, 0, 0],
                [0, 0, 0, 0],
                [0, 0, 0, 0]], dtype=torch.int32)
        >>> y  # by area: a quarter of each image comes from the other
        tensor([[0.7500, 0.0000, 0.2500],
                [0.2500, 0.0000, 0.7500]])
    """

    def __init__(self, bank: MaskBank, num_classes: int, *, box: str = "peak", labels: str = "area", alpha: float = 1.0,
                 validate_args: bool = True) -> None:
        super().__init__()
        if not isinstance(bank, MaskBank):
            raise TypeError(f"bank must be a proxyaug.MaskBank (for example ds.bank); got {describe(bank)}.")
        self.bank, self.num_classes = bank, check_positive_int("num_classes", num_classes)
        self.box, self.labels = check_choice("box", box, BOXES), check_choice("labels", labels, LABELS)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0 or not math.isfinite(alpha):
            raise ValueError(f"alpha={alpha!r} is not valid; expected a positive number (the Beta distribution's parameter).")
        self.alpha, self.validate_args = float(alpha), bool(validate_args)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, box={self.box!r}, labels={self.labels!r}, alpha={self.alpha}"

    def forward_parameters(self, batch_shape: Union[torch.Size, Sequence[int]], *, generator: Optional[torch.Generator] = None,
                           device: Any = None) -> Dict[str, torch.Tensor]:
        """Draw what a call replays: ``{"lam": 0-d tensor, "centres": (B, 2) random box centres}`` (the centres of
        ``box="random"`` and of every sample's fallback), drawn on the CPU and put on ``device`` (default the bank's).

        Examples:
            >>> mix = SalientMix(MaskBank(4), num_classes=2)
            >>> p = mix.forward_parameters((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))
            >>> p["lam"].shape, p["centres"].shape
            (torch.Size([]), torch.Size([4, 2]))
        """
        b, h, w = _shape(batch_shape)
        lam = _beta(self.alpha, generator)
        centres = torch.stack([torch.randint(0, h, (b,), generator=generator), torch.randint(0, w, (b,), generator=generator)], dim=1)
        device = device if device is not None else self.bank.device
        return {"lam": lam.to(device), "centres": centres.to(device)}

    def forward(self, *inputs: Any, params: Optional[Dict[str, torch.Tensor]] = None) -> Any:
        """Mix the batch; return the structure given (see the class docstring)."""
        x, y, idx, pack = _unpack_labelled(inputs)
        return pack(*self.mix(x, y, idx, params=params))

    def mix(self, x: torch.Tensor, y: torch.Tensor, idx: Any, *, params: Optional[Dict[str, torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The mixed images and soft labels ``(x', y')`` alone."""
        idx = _check_batch(self.bank, x, idx, self.validate_args)
        y = self._labels(y, x)
        if params is None:
            params = self.forward_parameters(x.shape)
        elif not isinstance(params, Mapping) or not {"lam", "centres"} <= set(params):
            raise TypeError(f"params must be the dict forward_parameters() returns; got {describe(params)}.")
        size = (x.shape[-2], x.shape[-1])
        lam = params["lam"].to(x.device)
        cut = X.cut_size(lam, *size)
        random = X.box_masks(X.boxes_at(params["centres"].to(x.device), cut, size), size)
        if self.bank.resolution is None or (self.box == "random" and self.labels == "area"):  # no map to read, or none read
            mask, own_maps, src_maps = random, None, None
        else:
            low, full, present = _maps(self.bank, idx, size)
            src_low, src_full, src_present = low.roll(1, 0), full.roll(1, 0), present.roll(1, 0)
            if self.box == "peak":
                guided = X.box_masks(X.boxes_at(X.peak_centres(src_full), cut, size), size)
            elif self.box == "topk":
                guided = X.topk_cells(src_low, ((1.0 - lam.double()) * src_low.shape[-2] * src_low.shape[-1] + 0.5).floor(), size)
            else:
                guided = random
            mask = torch.where(src_present.view(-1, 1, 1), guided, random)
            own_maps, src_maps = full * present.view(-1, 1, 1), src_full * src_present.view(-1, 1, 1)
        if self.labels == "mass" and own_maps is not None:
            w_own, w_src = X.mass_weights(own_maps, src_maps, mask)
        else:
            w_own, w_src = X.area_weights(mask)
        out = torch.where(mask.unsqueeze(1), x.roll(1, 0), x)
        return out, w_own.view(-1, 1) * y + w_src.view(-1, 1) * y.roll(1, 0)

    def _labels(self, y: Any, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1] or y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != self.num_classes):
            raise ValueError(f"y must hold class indices (B,) or soft labels (B, {self.num_classes}) for the {x.shape[0]} images; got {describe(y)}.")
        if y.ndim == 1 and (y.is_floating_point() or y.dtype == torch.bool):
            raise TypeError(f"y must hold integer class indices (B,) or float soft labels (B, num_classes); got dtype {y.dtype}.")
        if self.validate_args and not compiling() and y.ndim == 1 and y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"y holds classes in [{int(y.min())}, {int(y.max())}]; expected classes in [0, {self.num_classes - 1}] (num_classes={self.num_classes}).")
        return X.soft_labels(y.to(x.device), self.num_classes)


def _unpack_labelled(inputs: Tuple[Any, ...]) -> Tuple[Any, Any, Any, Callable[..., Any]]:
    """The images, labels, ``idx``, and a function that puts new images and labels back where they came from."""
    if len(inputs) == 3:
        return inputs[0], inputs[1], inputs[2], lambda image, label: (image, label, inputs[2])
    batch = inputs[0] if len(inputs) == 1 else None
    if isinstance(batch, Mapping):
        key = next((k for k in (LABEL_KEY, LABEL_KEY + "s") if k in batch), None)
        if key is None or IMAGE_KEY not in batch or IDX_KEY not in batch:
            raise KeyError(f"the batch dict needs the keys 'image', 'label' (or 'labels') and 'idx'; got the keys {list(batch)}.")

        def pack(image: Any, label: Any) -> Dict[str, Any]:
            out = with_image(batch, image)
            out[key] = label
            return out

        return batch[IMAGE_KEY], batch[key], batch[IDX_KEY], pack
    if isinstance(batch, (tuple, list)) and len(batch) == 3:
        return batch[0], batch[1], batch[2], lambda image, label: _rebuilt(batch, [image, label, batch[2]])
    got = f"{len(inputs)} arguments" if len(inputs) != 1 else describe(batch)
    raise TypeError(f"SalientMix needs the images, their labels and their idx; got {got}. Call mix(x, y, idx), or pass "
                    "one batch (x, y, idx) or a dict with the keys 'image', 'label' and 'idx'.")


class KeepCutout(nn.Module):
    r"""Cutout that keeps the evidence: each hole goes where the sample's map is low (KeepAugment's selective cut).

    For each image, ``tries`` random square holes of side ``size`` (in pixels, or a share of the
    shorter side when a float in (0, 1]) are drawn; the first whose share of the map's mass is
    below ``tau`` is filled with ``fill``, else the least salient of them (Gong et al. 2021, "KeepAugment:
    a simple information-preserving data augmentation approach"). ``tau=None`` is an average region's
    share, the hole's area over the image's: a hole less salient than a uniform map would put there.
    A sample without a map gets the first hole (plain Cutout). Each sample is cut with probability ``p``.

    Structure in, structure out, as [`ProxyTransform`][proxyaug.ProxyTransform]: ``cut(x, idx)`` returns
    ``(x', idx)``, ``cut(x, y, idx)`` returns ``(x', y, idx)``; ``cut.replace(x, idx)`` the images alone.

    Examples:
        >>> bank = MaskBank(1, resolution=(2, 2))
        >>> bank.put(torch.tensor([0]), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))  # the top half holds the evidence
        >>> cut = KeepCutout(bank, size=2, tries=8)
        >>> out = cut.replace(torch.ones(1, 1, 4, 4), torch.tensor([0]), params=cut.forward_parameters((1, 1, 4, 4), generator=torch.Generator().manual_seed(1)))
        >>> bool(out[0, 0, :2].eq(1).all()), int(out.eq(0).sum())  # the hole is in the bottom half
        (True, 4)
    """

    def __init__(self, bank: MaskBank, size: Union[int, float] = 0.5, *, tries: int = 10, tau: Optional[float] = None,
                 fill: float = 0.0, p: float = 1.0, validate_args: bool = True) -> None:
        super().__init__()
        if not isinstance(bank, MaskBank):
            raise TypeError(f"bank must be a proxyaug.MaskBank (for example ds.bank); got {describe(bank)}.")
        if isinstance(size, bool) or not isinstance(size, numbers.Real) or size <= 0 or (not isinstance(size, numbers.Integral) and size > 1):
            raise ValueError(f"size={size!r} is not valid; expected the hole's side in pixels (a positive int) or a share of the shorter side in (0, 1].")
        self.bank, self.size, self.tries = bank, size, check_positive_int("tries", tries)
        self.tau = None if tau is None else check_unit_interval("tau", tau, low_open=True)
        if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
            raise TypeError(f"fill must be a number (the hole's value); got {describe(fill)}.")
        self.fill, self.p, self.validate_args = float(fill), check_unit_interval("p", p), bool(validate_args)

    def extra_repr(self) -> str:
        return f"size={self.size}, tries={self.tries}, tau={self.tau}, fill={self.fill}, p={self.p}"

    def side(self, height: int, width: int) -> int:
        """The hole's side in pixels for images of ``height`` x ``width``."""
        side = int(self.size) if isinstance(self.size, numbers.Integral) else max(1, round(self.size * min(height, width)))
        return min(side, height, width)

    def forward_parameters(self, batch_shape: Union[torch.Size, Sequence[int]], *, generator: Optional[torch.Generator] = None,
                           device: Any = None) -> Dict[str, torch.Tensor]:
        """Draw what a call replays: ``{"candidates": (B, tries, 4) holes, "apply": (B,) bool}`` on ``device`` (default the bank's)."""
        b, h, w = _shape(batch_shape)
        s = self.side(h, w)
        ty = torch.randint(0, h - s + 1, (b, self.tries), generator=generator)
        tx = torch.randint(0, w - s + 1, (b, self.tries), generator=generator)
        apply = torch.rand(b, generator=generator) < self.p
        device = device if device is not None else self.bank.device
        return {"candidates": torch.stack([ty, tx, ty + s, tx + s], dim=-1).to(device), "apply": apply.to(device)}

    def forward(self, *inputs: Any, params: Optional[Dict[str, torch.Tensor]] = None) -> Any:
        """Cut the images; return the structure given (see the class docstring)."""
        x, idx, pack = _unpack(inputs)
        return pack(self.replace(x, idx, params=params))

    def replace(self, x: torch.Tensor, idx: Any, *, params: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """The cut images alone."""
        idx = _check_batch(self.bank, x, idx, self.validate_args)
        if params is None:
            params = self.forward_parameters(x.shape)
        elif not isinstance(params, Mapping) or not {"candidates", "apply"} <= set(params):
            raise TypeError(f"params must be the dict forward_parameters() returns; got {describe(params)}.")
        size = (x.shape[-2], x.shape[-1])
        candidates = params["candidates"].to(x.device)
        s = self.side(*size)
        tau = self.tau if self.tau is not None else s * s / (size[0] * size[1])
        if self.bank.resolution is None:
            boxes = candidates[:, 0]
        else:
            _, full, present = _maps(self.bank, idx, size)
            boxes = X.keep_boxes(full * present.view(-1, 1, 1), candidates, tau)
        holes = X.box_masks(boxes, size) & params["apply"].to(x.device).view(-1, 1, 1)
        return x.masked_fill(holes.unsqueeze(1), self.fill)
