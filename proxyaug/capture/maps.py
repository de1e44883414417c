"""The maps of one captured step: the CAM formula on the step's A and dL/dA, and the way back to the dataset's frame."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..attention import MapSpec, eigen_projection
from ..attention.layers import TargetLayer
from ..attention.methods import EIGEN, LINEAR, contributions
from ..functional import gaussian_blur, normalize_maps

__all__ = ["step_maps", "check_geometry", "to_canonical"]


def _no_autocast(device: torch.device) -> Any:
    """Autocast off for the map's arithmetic, entered only when autocast is on (it costs a little per step)."""
    try:
        on = torch.is_autocast_enabled(device.type)
    except TypeError:  # an older torch without the device argument
        on = True
    except RuntimeError:  # a device type autocast does not know ("meta"): nothing to turn off
        on = False
    return torch.autocast(device_type=device.type, enabled=False) if on else contextlib.nullcontext()


def step_maps(
    spec: MapSpec, layers: List[TargetLayer], acts: Dict[int, torch.Tensor], grads: Dict[int, torch.Tensor], size: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch's maps ``(B, h, w)`` in [0, 1] from its activations and loss gradients, and whether those were finite.

    The formula, order and float32 arithmetic of a refresh's native maps (the method's channel
    contributions, ReLU, per-image min-max, several layers averaged), with the loss gradient in
    place of the class score's. Every map is divided by its maximum before the min-max, so that a
    positive factor of the loss (the batch mean's ``1/B``, a GradScaler's scale,
    ``1/accumulation_steps``, a rank's share of the batch) cancels for the methods whose
    contributions are linear in the gradient (``proxyaug.attention.methods.LINEAR``:
    Grad-CAM, XGradCAM, HiResCAM, LayerCAM, element-wise Grad-CAM), and min-max's ``1e-7`` meets
    values of order one. For the others (Grad-CAM++, whose weights
    ``g^2 / (2 g^2 + sum(A) g^3 + 1e-6)`` are not homogeneous in the gradient, and at ``B = 64``
    would be ruled by the ``1e-6``; EigenGradCAM) each image's ``dL/dA`` is first divided by its
    largest magnitude (over channels and positions, per layer), so they too see the same input
    for any factor. Either way the maps are bit-identical for a power-of-two factor (when the
    scaled gradient neither underflows nor overflows its dtype, as a GradScaler keeps fp16
    gradients) and equal up to the backward's rounding for any other. (The linear methods skip
    the division only so that their maps stay bit-identical to proxyaug 0.1's.)

    Examples:
        >>> from proxyaug.attention import TargetLayer
        >>> _ = torch.manual_seed(0)
        >>> act, grad = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
        >>> maps, ok = step_maps(MapSpec("gradcam"), [TargetLayer("f", nn.Identity())], {0: act}, {0: grad}, (8, 8))
        >>> by_hand = (grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1).clamp_min(0)
        >>> bool(torch.allclose(maps, normalize_maps(by_hand / by_hand.amax(dim=(1, 2), keepdim=True)), atol=1e-6)), bool(ok)
        (True, True)
        >>> scaled, _ = step_maps(MapSpec("gradcam++"), [TargetLayer("f", nn.Identity())], {0: act}, {0: grad / 64}, (8, 8))
        >>> torch.equal(scaled, step_maps(MapSpec("gradcam++"), [TargetLayer("f", nn.Identity())], {0: act}, {0: grad}, (8, 8))[0])
        True
    """
    device = next(iter(acts.values())).device
    ok = torch.ones((), dtype=torch.bool, device=device)
    cams = []
    with _no_autocast(device):
        for i in sorted(acts):
            act = layers[i].to_nchw(acts[i], size).float()
            grad = layers[i].to_nchw(grads[i], size).float()
            # one float32 sum each: inf or NaN anywhere makes it non-finite (cheaper than isfinite().all())
            ok = ok & torch.isfinite(act.sum() + grad.sum())
            if spec.name not in LINEAR:
                # each image's gradient scaled to a largest magnitude of 1: a positive factor of the loss cancels
                # here, before the formula (Grad-CAM++'s weights are not homogeneous in the gradient)
                grad = grad / grad.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
            contrib = contributions(spec.name, act, grad)
            if spec.name in EIGEN or spec.eigen_smooth:
                cam = eigen_projection(contrib.nan_to_num(0.0, 0.0, 0.0))
            else:
                cam = contrib.sum(dim=1)
            # divided by its maximum first: a map of O(1) values is what a refresh's normalisation sees, whatever
            # the activations' magnitude (min-max's 1e-7 would otherwise weigh on small maps)
            cam = cam.clamp_min(0)
            cam = cam / cam.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(cam.dtype).tiny)
            if spec.smooth_sigma is not None:
                cam = gaussian_blur(cam[:, None], spec.smooth_sigma)[:, 0]
            cams.append(normalize_maps(cam))
    if len(cams) == 1:
        return cams[0], ok
    common = max((tuple(c.shape[-2:]) for c in cams), key=lambda s: s[0] * s[1])
    resized = [nn.functional.interpolate(c[:, None], size=common, mode="bilinear", align_corners=False)[:, 0] for c in cams]
    return normalize_maps(torch.stack(resized).clamp_min(0).mean(dim=0)), ok


def check_geometry(geometry: Any) -> Any:
    """``geometry`` if it is a kornia ``AugmentationSequential`` (or ``None``), else a ``TypeError``.

    Examples:
        >>> check_geometry(None) is None
        True
    """
    if geometry is None:
        return None
    try:
        from kornia.augmentation import AugmentationSequential
    except ImportError:  # pragma: no cover - kornia is a dependency
        AugmentationSequential = ()  # type: ignore[assignment,misc]
    if not AugmentationSequential or not isinstance(geometry, AugmentationSequential):
        raise TypeError(
            f"geometry must be a kornia.augmentation.AugmentationSequential (whose inverse brings maps back to the "
            f"dataset's frame); got {type(geometry).__name__}. Wrap your kornia augmentations in one, or apply random "
            "geometry before the proxy transform."
        )
    return geometry


def to_canonical(geometry: Any, maps: torch.Tensor, size: Optional[Tuple[int, int]], resolution: Optional[Tuple[int, int]]) -> torch.Tensor:
    """Maps ``(B, h, w)`` in the frame the model saw (input ``size``), brought back to the dataset's frame through
    ``geometry``'s inverse (the parameters of its last call), at ``resolution`` (default: ``(h, w)`` scaled
    as the images were), normalised again.

    Examples:
        >>> import kornia.augmentation as K
        >>> flip = K.AugmentationSequential(K.RandomHorizontalFlip(p=1.0))
        >>> _ = flip(torch.rand(1, 1, 4, 4))
        >>> to_canonical(flip, torch.tensor([[[0.0, 0.0, 0.0, 1.0]] * 4]), (4, 4), None)[0, 0].round(decimals=3)
        tensor([1., 0., 0., 0.])
    """
    if geometry.transform_matrix is None:
        ops = ", ".join(type(m).__name__ for m in geometry.children())
        raise ValueError(
            f"geometry=AugmentationSequential({ops}) cannot be inverted: one of its geometric augmentations has no "
            "transformation matrix (elastic, thin-plate spline, ...), so the maps cannot be brought back to the "
            "dataset's frame. Apply that augmentation before the proxy transform, or capture without it."
        )
    up = nn.functional.interpolate(maps[:, None], size=tuple(size or maps.shape[-2:]), mode="bilinear", align_corners=False)
    canon = geometry.inverse(up, data_keys=["input"])
    h, w = maps.shape[-2:]
    target = resolution or (max(1, round(h * canon.shape[-2] / up.shape[-2])), max(1, round(w * canon.shape[-1] / up.shape[-1])))
    low = nn.functional.adaptive_avg_pool2d(canon, target)[:, 0]
    return normalize_maps(low.clamp_min(0))
