"""Pure, batched tensor operations of Proxy Attention.

Everything here works on plain tensors of shape ``(B, C, H, W)`` on whatever device they live on,
with no Python loop over the batch and no host round-trip. [`proxyaug.ProxyTransform`][proxyaug.ProxyTransform] is a
thin module around [`replace()`][proxyaug.functional.replace].

Map semantics (the order pytorch-grad-cam uses): a low-resolution map is upsampled bilinearly
(``align_corners=False``, as ``cv2.resize`` does) to the image size, clamped at zero and min-max
normalised per image; pixels where the result exceeds ``threshold`` are replaced.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import kornia
import torch
import torch.nn.functional as F

from ._checks import check_choice, check_images, check_unit_interval, describe
from ._device import to_device

__all__ = [
    "MODES", "DEFAULT_MODE", "DEFAULT_THRESHOLD", "DEFAULT_WEIGHT", "DEFAULT_P",
    "normalize_maps", "upsample_maps", "sample_params", "replace", "default_blur_sigma", "gaussian_blur",
]

# The thesis' settings, written once: ProxyTransform, replace() and the integrations default to them.
DEFAULT_MODE: str = "blend"
"""The default replacement mode: ``"blend"``, the thesis' choice."""
DEFAULT_THRESHOLD: float = 0.85
"""The default threshold ``tau``: map values strictly above it are replaced (thesis: 0.85)."""
DEFAULT_WEIGHT: float = 0.1
"""The default blend weight ``lambda`` (thesis: 0.1)."""
DEFAULT_P: float = 1.0
"""The default probability of transforming a sample that has a map."""

#: Added to the denominator of the min-max normalisation, as pytorch-grad-cam does.
EPS = 1e-7


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map to [0, 1] over its last two dimensions.

    ``(m - min) / (max - min + 1e-7)``, the formula of pytorch-grad-cam's ``scale_cam_image``; an
    all-constant map becomes all zeros.

    Args:
        maps: tensor of shape ``(..., h, w)``.

    Returns:
        Tensor of the same shape and dtype.

    Examples:
        >>> normalize_maps(torch.tensor([[[1.0, 3.0], [2.0, 5.0]]]))
        tensor([[[0.0000, 0.5000],
                 [0.2500, 1.0000]]])
    """
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    shifted = maps - lo
    return shifted / (shifted.amax(dim=(-2, -1), keepdim=True) + EPS)


def upsample_maps(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Upsample low-resolution maps to ``size`` and normalise them per image.

    Bilinear interpolation with ``align_corners=False`` (what ``cv2.resize`` does), then ReLU and
    per-image min-max: exactly what pytorch-grad-cam returns for a map of that low resolution.
    NaN and infinite values count as 0, so they never reach an image.

    Args:
        maps: tensor of shape ``(B, h, w)``.
        size: the output ``(H, W)``.

    Returns:
        Float32 tensor of shape ``(B, 1, H, W)`` with values in [0, 1].

    Examples:
        >>> m = torch.zeros(1, 2, 2); m[0, 0, 0] = 1.0
        >>> upsample_maps(m, (4, 4))[0, 0]
        tensor([[1.0000, 0.7500, 0.2500, 0.0000],
                [0.7500, 0.5625, 0.1875, 0.0000],
                [0.2500, 0.1875, 0.0625, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000]])
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (B, h, w); got shape {tuple(maps.shape)}.")
    size = (int(size[0]), int(size[1]))
    # a non-finite value would spread over the whole map through min-max; treat it as "no evidence"
    m = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0).unsqueeze(1)
    if tuple(m.shape[-2:]) != size:
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return normalize_maps(m.clamp_min(0))


def sample_params(
    batch_size: int,
    p: float = DEFAULT_P,
    *,
    device: Union[str, torch.device, None] = None,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """Draw the per-sample random choices of [`replace()`][proxyaug.functional.replace], so that they can be replayed.

    Args:
        batch_size: number of samples ``B``.
        p: probability that a sample is transformed.
        device: where to put the result (draws are made on the generator's device).
        generator: optional [`torch.Generator`][torch.Generator] for reproducible draws.

    Returns:
        ``{"apply": bool tensor of shape (B,)}``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_params(4, p=0.5, generator=g)
        {'apply': tensor([ True, False,  True,  True])}
    """
    p = check_unit_interval("p", p)
    if p >= 1.0:
        apply = torch.ones(batch_size, dtype=torch.bool, device=device)
    else:
        gen_device = generator.device if generator is not None else device
        apply = torch.rand(batch_size, generator=generator, device=gen_device) < p
        apply = to_device(apply, device) if device is not None else apply  # no host sync on CUDA
    return {"apply": apply}


def default_blur_sigma(size: Sequence[int]) -> float:
    """The Gaussian sigma used by ``mode="blur"`` when none is given: ``max(1, min(H, W) / 32)``.

    Examples:
        >>> default_blur_sigma((224, 224))
        7.0
    """
    return max(1.0, min(int(size[0]), int(size[1])) / 32.0)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(B, C, H, W)`` images with Kornia: radius ``ceil(3 * sigma)`` (capped to
    fit the image), reflect padding.

    Examples:
        >>> gaussian_blur(torch.ones(1, 1, 5, 5), 1.0).allclose(torch.ones(1, 1, 5, 5))
        True
    """
    radius = int(math.ceil(3.0 * sigma))
    # reflect padding needs the kernel to fit in the image
    radius = max(1, min(radius, x.shape[-2] - 1, x.shape[-1] - 1)) if min(x.shape[-2:]) > 1 else 0
    if radius == 0:
        return x
    k = 2 * radius + 1
    return kornia.filters.gaussian_blur2d(x, (k, k), (float(sigma), float(sigma)), border_type="reflect")


# -- replacement modes: one function each, looked up by name ----------------------------------
# A mode maps the float images (B, C, H, W) and their upsampled maps M (B, 1, H, W) to the values
# that replace the selected pixels (anything that broadcasts against the images). A new mode is one
# function here and one line in _FILLS (MODES and the mode check follow), plus a line in replace()'s docstring.
_Fill = Callable[..., torch.Tensor]


def _fill_blend(x: torch.Tensor, m: torch.Tensor, *, weight: float, blur_sigma: Optional[float]) -> torch.Tensor:
    return (1.0 - weight * m).to(x.dtype) * x


def _fill_black(x: torch.Tensor, m: torch.Tensor, *, weight: float, blur_sigma: Optional[float]) -> torch.Tensor:
    return x.new_zeros(())


def _fill_mean(x: torch.Tensor, m: torch.Tensor, *, weight: float, blur_sigma: Optional[float]) -> torch.Tensor:
    return x.mean(dim=(-2, -1), keepdim=True)


def _fill_blur(x: torch.Tensor, m: torch.Tensor, *, weight: float, blur_sigma: Optional[float]) -> torch.Tensor:
    return gaussian_blur(x, blur_sigma if blur_sigma is not None else default_blur_sigma(x.shape[-2:]))


_FILLS: Dict[str, _Fill] = {"blend": _fill_blend, "black": _fill_black, "mean": _fill_mean, "blur": _fill_blur}

MODES: Tuple[str, ...] = tuple(_FILLS)
"""The replacement modes [`replace()`][proxyaug.functional.replace] supports, in the order of the docs."""


def replace(
    x: torch.Tensor,
    maps: torch.Tensor,
    mode: str = DEFAULT_MODE,
    threshold: float = DEFAULT_THRESHOLD,
    weight: float = DEFAULT_WEIGHT,
    p: float = DEFAULT_P,
    *,
    present: Optional[torch.Tensor] = None,
    params: Optional[Dict[str, torch.Tensor]] = None,
    blur_sigma: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Replace the pixels of each image where its attention map exceeds ``threshold``.

    With `M` the map upsampled to the image (see [`upsample_maps()`][proxyaug.functional.upsample_maps]) and
    `S = M > τ` (``tau = threshold``):

    - ``blend``: `x' = (1 - λ M) x` on `S` (``lambda = weight``), else `x`;
    - ``black``: 0 on `S`;
    - ``mean``: the image's own per-channel mean over ``H, W`` on `S`;
    - ``blur``: a Gaussian-blurred copy of the image (Kornia, sigma ``blur_sigma``) on `S`.

    Each sample is transformed with probability ``p``; samples whose ``present`` flag is False
    are returned unchanged, as are all samples when ``p == 0``. A ``uint8`` batch (values in
    [0, 255]) is computed in float32 and rounded back to ``uint8``; pixels outside `S`
    keep their exact values.

    Args:
        x: images of shape ``(B, C, H, W)``, floating point (typically in [0, 1]) or ``uint8``.
        maps: low-resolution attention maps of shape ``(B, h, w)`` on ``x``'s device; any
            resolution, they are upsampled to ``(H, W)``.
        mode: one of ``"blend"``, ``"black"``, ``"mean"``, ``"blur"``.
        threshold: pixels whose normalised map value is strictly above it are replaced, in [0, 1].
        weight: the blend weight ``lambda`` in [0, 1] (only ``blend`` uses it).
        p: probability of transforming each sample, in [0, 1].
        present: optional bool tensor of shape ``(B,)``; False marks samples with no map.
        params: replayed output of [`sample_params()`][proxyaug.functional.sample_params]; overrides ``p`` when given.
        blur_sigma: sigma of the ``blur`` mode; default [`default_blur_sigma()`][proxyaug.functional.default_blur_sigma] of the image size.
        generator: optional [`torch.Generator`][torch.Generator] for the per-sample draws.

    Returns:
        Tensor of the shape, dtype and device of ``x``.

    Shape:
        - x: `(B, C, H, W)`
        - maps: `(B, h, w)`
        - output: `(B, C, H, W)`

    Examples:
        >>> x = torch.ones(1, 1, 2, 2)
        >>> maps = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])
        >>> replace(x, maps, mode="blend", threshold=0.4, weight=0.5)
        tensor([[[[0.5000, 1.0000],
                  [1.0000, 0.7500]]]])
        >>> replace(x, maps, mode="black", threshold=0.4)
        tensor([[[[0., 1.],
                  [1., 0.]]]])
    """
    check_images("x", x, allow_uint8=True)
    mode = check_choice("mode", mode, MODES)
    threshold = check_unit_interval("threshold", threshold)
    weight = check_unit_interval("weight", weight)
    p = check_unit_interval("p", p)
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3 or maps.shape[0] != x.shape[0]:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else describe(maps)
        raise ValueError(f"maps must have shape (B, h, w) with B={x.shape[0]} to match x; got {shape}.")
    if maps.device != x.device:
        raise RuntimeError(f"maps are on {maps.device} but x is on {x.device}; move them with maps.to(x.device).")
    if blur_sigma is not None and not blur_sigma > 0:
        raise ValueError(f"blur_sigma={blur_sigma!r} is not valid; expected a positive number or None.")

    if params is None:
        if p == 0.0:
            return x
        params = sample_params(x.shape[0], p, device=x.device, generator=generator) if p < 1.0 else {}
    apply = params.get("apply")
    if present is not None:
        apply = present if apply is None else apply & present
    m = upsample_maps(maps, x.shape[-2:])
    sel = m > threshold
    if apply is not None:
        sel = sel & apply.to(device=x.device, dtype=torch.bool).view(-1, 1, 1, 1)

    work = x if x.is_floating_point() else x.float()
    new = _FILLS[mode](work, m, weight=weight, blur_sigma=blur_sigma)
    out = torch.where(sel, new, work)
    return out if out.dtype == x.dtype else out.round_().clamp_(0, 255).to(x.dtype)
