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

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_images, check_unit_interval, describe
from ._device import compiling, to_device

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


def gaussian_blur(x: torch.Tensor, sigma: float, *, exact: bool = False) -> torch.Tensor:
    r"""Gaussian blur of ``(B, C, H, W)`` images: Kornia's kernel, reflect padding, fast on a CPU.

    The kernel is Kornia's ``gaussian_blur2d``: radius ``ceil(3 * sigma)`` (capped to fit the
    image), samples of ``exp(-t^2 / (2 sigma^2))`` normalised to sum 1, ``"reflect"`` borders.

    - **Exact** (``exact=True``, and always where ``sigma < 6`` or a side is under 192 px):
      the same operator, computed as two matrix products with the ``(H, H)`` and ``(W, W)``
      matrices of the 1-D blur (padding folded in, cached per size, sigma, dtype and device). It
      equals Kornia's result up to float rounding (1e-6) and takes an eighth of its time on a
      CPU at 224 px. With the default sigma, images under 192 px (28, 32, 128 px) are blurred so.
    - **Half resolution** (the default from ``sigma >= 6`` on images of 192 px a side and more,
      so from 192 px with the default sigma): the reflect-padded image is averaged over 2 x 2
      blocks, blurred there with ``sqrt(sigma^2 - 1) / 2`` (the box, that blur and the bilinear
      upsampling back add up to sigma's variance) and upsampled bilinearly: three quarters of
      the exact path's time at 224 px, 60 % at 448 px. Against the exact blur at 224 px (sigma 7), on images in [0, 1]:
      at most 0.0010 (mean 0.0002) on smooth random images and on upscaled digits, 0.0032 on
      sharp stripes, edges and checkerboards, 0.0043 (mean 0.0007) on white noise; at 192 px
      (sigma 6), the closest case, 0.0044 and 0.0057 (``python -m benchmarks.blur_error``). A
      constant image stays constant.

    Args:
        x: images ``(B, C, H, W)``, floating point; ``float16`` / ``bfloat16`` are blurred in
            ``float32`` and returned in their dtype.
        sigma: the standard deviation in pixels, positive.
        exact: compute the exact blur at every sigma.

    Returns:
        The blurred images, of the shape, dtype and device of ``x``.

    Examples:
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1.0
        >>> gaussian_blur(x, 1.0)[0, 0, 2]
        tensor([0.0431, 0.0984, 0.1592, 0.0984, 0.0431])
        >>> gaussian_blur(torch.ones(1, 1, 5, 5), 1.0).allclose(torch.ones(1, 1, 5, 5))
        True
        >>> x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        >>> fast, slow = gaussian_blur(x, 7.0), gaussian_blur(x, 7.0, exact=True)
        >>> bool((fast - slow).abs().max() < 0.005)
        True
    """
    height, width = x.shape[-2:]
    radius = int(math.ceil(3.0 * sigma))
    # reflect padding needs the kernel to fit in the image
    radius = max(1, min(radius, height - 1, width - 1)) if min(height, width) > 1 else 0
    if radius == 0:
        return x
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()  # as Kornia: half in float32
    halve = not exact and sigma >= _HALVE_FROM_SIGMA and min(height, width) >= _HALVE_FROM_SIZE and radius == math.ceil(3.0 * sigma)
    out = _blur_halved(work, float(sigma)) if halve else None
    if out is None:
        rows = _blur_matrix(height, float(sigma), radius, work.dtype, work.device)
        cols = rows if width == height else _blur_matrix(width, float(sigma), radius, work.dtype, work.device)
        out = rows @ work @ cols.T
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)  # the layout of x, as a convolution keeps it
    return out.to(x.dtype)


# Kornia's gaussian_blur2d runs a depthwise convolution and builds its kernel on every call: 140-210 ms
# for a (32, 3, 224, 224) batch on a 2-core CPU, 6-9 % of a ResNet-18 training step. The same separable
# operator as two matrix products takes 27 ms, and cached matrices leave no per-call setup (0.3 ms
# of Kornia's 0.6 ms at 28 px). So the blur is ours; tests/test_functional.py checks it against Kornia.
_MATRICES: Dict[Tuple[int, float, int, torch.dtype, torch.device], torch.Tensor] = {}
_MATRICES_KEPT = 16
# Half resolution from sigma 6 (the error grows as (2 / sigma)^2: 0.011 on noise at sigma 4) and 192 px
# (under it the exact products cost no more on a 2-core CPU). A factor of 3 at sigma 9 tripled the error
# on stripes at the border (0.015: pooling aliases a 3-pixel period), so the factor stays 2.
_HALVE_FROM_SIGMA, _HALVE_FROM_SIZE = 6.0, 192


def _blur_matrix(n: int, sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The ``(n, n)`` matrix of Kornia's 1-D Gaussian blur with reflect padding: ``out = M @ signal``."""
    key = (n, sigma, radius, dtype, device)
    cached = None if compiling() else _MATRICES.get(key)  # one lookup: safe if another thread evicts it
    if cached is not None:
        return cached
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2.0 * sigma**2))
    rows = torch.arange(n).view(-1, 1).expand(n, 2 * radius + 1)
    cols = (rows + taps.long()).abs()  # reflect at 0 ...
    cols = torch.where(cols > n - 1, 2 * (n - 1) - cols, cols)  # ... and at n - 1 (radius < n: one fold)
    matrix = torch.zeros(n, n, dtype=torch.float64).index_put_((rows, cols), (kernel / kernel.sum()).expand_as(rows), accumulate=True)
    matrix = to_device(matrix.to(dtype), device)
    if not compiling():  # a traced call builds its matrices in the graph; eager calls share them
        _MATRICES[key] = matrix
        while len(_MATRICES) > _MATRICES_KEPT:  # the oldest first
            _MATRICES.pop(next(iter(_MATRICES)), None)
    return matrix


def _blur_halved(x: torch.Tensor, sigma: float) -> Optional[torch.Tensor]:
    """The blur at half resolution (see ``gaussian_blur``); None where the padding does not fit the image."""
    height, width = x.shape[-2:]
    low_sigma = math.sqrt(sigma**2 - 1.0) / 2.0  # the box (variance 1/3 px^2) and the tent (2/3) add 1 px^2 per axis
    low_radius = int(math.ceil(3.0 * low_sigma))
    pad = 2 * (low_radius + 1)  # the half-resolution blur never reaches the padded image's edge
    if pad + 1 > min(height, width) - 1:
        return None  # reflect padding must stay inside the image
    low = F.avg_pool2d(F.pad(x, (pad, pad + width % 2, pad, pad + height % 2), mode="reflect"), 2)
    # the half-resolution rows under the image, and one on either side for the bilinear upsampling
    first, keep_h, keep_w = low_radius, (height + 1) // 2 + 2, (width + 1) // 2 + 2
    rows = _blur_matrix(low.shape[-2], low_sigma, low_radius, x.dtype, x.device)[first : first + keep_h]
    cols = _blur_matrix(low.shape[-1], low_sigma, low_radius, x.dtype, x.device)[first : first + keep_w]
    up = F.interpolate(rows @ low @ cols.T, scale_factor=2, mode="bilinear", align_corners=False)
    return up[..., 2 : 2 + height, 2 : 2 + width]


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
    - ``blur``: a Gaussian-blurred copy of the image ([`gaussian_blur()`][proxyaug.functional.gaussian_blur],
      sigma ``blur_sigma``) on `S`: Kornia's reflect-padded blur, exact under 192 px a side or
      sigma 6; from there computed at half resolution, within 0.001 of the exact blur on smooth
      images in [0, 1] at 224 px, 0.0032 on sharp patterns and 0.0043 on white noise.

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
        >>> x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        >>> maps = torch.rand(1, 7, 7, generator=torch.Generator().manual_seed(1))
        >>> sel = upsample_maps(maps, (224, 224)) > 0.5
        >>> out = replace(x, maps, mode="blur", threshold=0.5)  # default sigma 7 at 224 px
        >>> torch.equal(out, torch.where(sel, gaussian_blur(x, 7.0), x))
        True
        >>> bool((out - torch.where(sel, gaussian_blur(x, 7.0, exact=True), x)).abs().max() < 0.01)
        True
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
