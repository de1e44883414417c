"""Native CAM methods: from a layer's activations and gradients to one map per image.

All work on float32 tensors ``(B, C, h, w)`` on their own device, batched. Each method returns
the per-channel contributions whose sum over channels is its map (the "weighted activations"
of pytorch-grad-cam); the eigen methods, and any method with ``eigen_smooth``, take the first
principal component of those contributions instead of their sum.

Eigen sign rule: an SVD's singular vectors are defined up to sign, and pytorch-grad-cam's
EigenCAM inherits whatever sign its LAPACK returns. proxyaug flips each projection so that its
largest magnitude is positive (flip when ``|min| > |max|``), the rule of Seg-Eigen-CAM (Chung
and Ying, Appl. Sci. 2025, Eq. 13), which pytorch-grad-cam also ships as
``get_2d_projection_with_sign_correction``. Our EigenCAM equals pytorch-grad-cam's EigenCAM or
its sign-flipped twin.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch

__all__ = ["NATIVE_METHODS", "GRADIENT_FREE", "LINEAR", "contributions", "eigen_projection"]


def _gradcam(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads.mean(dim=(2, 3), keepdim=True) * act


def _gradcampp(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Eq. 19 of Chattopadhay et al. (arXiv:1710.11063), with pytorch-grad-cam's eps
    g2 = grads.pow(2)
    g3 = g2 * grads
    sum_act = act.sum(dim=(2, 3), keepdim=True)
    aij = g2 / (2 * g2 + sum_act * g3 + 1e-6)
    aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
    return (grads.clamp_min(0) * aij).sum(dim=(2, 3), keepdim=True) * act


def _xgradcam(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    sum_act = act.sum(dim=(2, 3), keepdim=True)
    return (grads * act / (sum_act + 1e-7)).sum(dim=(2, 3), keepdim=True) * act


def _hirescam(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads * act


def _layercam(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads.clamp_min(0) * act


def _elementwise(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return (grads * act).clamp_min(0)


def _eigencam(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return act


NATIVE_METHODS: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": _gradcam,
    "gradcam++": _gradcampp,
    "xgradcam": _xgradcam,
    "hirescam": _hirescam,
    "layercam": _layercam,
    "gradcamelementwise": _elementwise,
    "eigencam": _eigencam,
    "eigengradcam": _hirescam,
}
"""Native methods by name: each maps ``(activations, gradients)`` to channel contributions."""

GRADIENT_FREE: Tuple[str, ...] = ("eigencam",)
EIGEN: Tuple[str, ...] = ("eigencam", "eigengradcam")
LINEAR: Tuple[str, ...] = ("gradcam", "xgradcam", "hirescam", "layercam", "gradcamelementwise", "eigencam")
"""Methods whose channel contributions scale by ``s`` when the gradients do (``s > 0``), so that a map
divided by its maximum does not depend on the scale of the loss (EigenCAM reads no gradient)."""


def eigen_projection(a: torch.Tensor, *, flip: bool = False) -> torch.Tensor:
    """Project each ``(C, h, w)`` item on the first principal component of its ``h*w`` positions.

    As pytorch-grad-cam's ``get_2d_projection`` (NaN set to 0, positions centred over channels),
    batched: the leading eigenvector of the smaller Gram matrix, computed in float64, replaces a
    per-image SVD. The sign follows the rule in this module's docstring; ``flip=True`` returns the
    opposite sign (for comparisons with implementations whose sign is arbitrary).

    Args:
        a: tensor ``(B, C, h, w)``.

    Returns:
        Float32 tensor ``(B, h, w)``.

    Examples:
        >>> a = torch.zeros(1, 2, 2, 2); a[0, :, 0, 0] = 1.0  # one position stands out
        >>> p = eigen_projection(a)
        >>> p.shape, bool(p[0, 0, 0] == p.max())
        (torch.Size([1, 2, 2]), True)
    """
    b, c, h, w = a.shape
    m = torch.nan_to_num(a.double(), nan=0.0).flatten(2).transpose(1, 2)  # (B, hw, C)
    m = m - m.mean(dim=1, keepdim=True)
    if h * w <= c:
        vals, vecs = torch.linalg.eigh(m @ m.transpose(1, 2))  # (B, hw, hw): u, with m v = s u
        proj = vecs[..., -1] * vals[..., -1].clamp_min(0).sqrt().unsqueeze(-1)
    else:
        _, vecs = torch.linalg.eigh(m.transpose(1, 2) @ m)  # (B, C, C): v
        proj = (m @ vecs[..., -1:]).squeeze(-1)
    flip_now = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
    if flip:
        flip_now = ~flip_now
    proj = torch.where(flip_now.unsqueeze(-1), -proj, proj)
    return proj.view(b, h, w).float()


def contributions(method: str, act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """The channel contributions of ``method`` (a key of [`NATIVE_METHODS`][proxyaug.attention.NATIVE_METHODS])."""
    return NATIVE_METHODS[method](act, grads)
