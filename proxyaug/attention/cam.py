"""Native batched class activation maps (Grad-CAM, Grad-CAM++) in torch.

How a map is computed, and why it costs about one forward pass:

1. A forward hook on the target layer replaces its output ``A`` by ``A.detach().requires_grad_()``
   and turns gradient recording on from there. Everything before the layer runs under
   ``no_grad`` (as plain inference), and only the part after it builds a graph.
2. ``torch.autograd.grad`` of the sum of the selected logits with respect to ``A`` alone: no
   gradient flows into any parameter, so ``.grad`` fields are never written and frozen
   backbones work unchanged.
3. Channel weights from the gradients, the weighted sum of activations, ReLU and per-image
   min-max, in float32, in the order pytorch-grad-cam uses (its outputs are matched to 1e-4).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._checks import check_images
from ..functional import normalize_maps, upsample_maps
from ._state import eval_mode
from .layers import resolve_layer

__all__ = ["METHODS", "attention_maps", "compute_cams"]

Target = Union[None, int, Sequence[int], torch.Tensor]


def _gradcam_weights(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads.mean(dim=(2, 3))


def _gradcampp_weights(act: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # Eq. 19 of Chattopadhay et al. (arXiv:1710.11063), as pytorch-grad-cam writes it.
    g2 = grads.pow(2)
    g3 = g2 * grads
    sum_act = act.sum(dim=(2, 3), keepdim=True)
    aij = g2 / (2 * g2 + sum_act * g3 + 1e-6)
    aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
    return (grads.clamp_min(0) * aij).sum(dim=(2, 3))


METHODS: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": _gradcam_weights,
    "gradcam++": _gradcampp_weights,
}
"""Native methods by name: each maps ``(activations, gradients)`` to channel weights ``(B, C)``."""

_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "grad-cam": "gradcam", "grad-cam++": "gradcam++"}


def method_name(method: Any) -> str:
    """Canonical name of a native method, or a ValueError listing the supported ones."""
    key = method.lower().replace("_", "") if isinstance(method, str) else method
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(f"method={method!r} is not supported; expected one of {', '.join(map(repr, METHODS))}.")
    return key


def _targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    batch, classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices; got dtype {t.dtype}.")
    t = t.long().expand(batch) if t.ndim == 0 else t.long()
    if t.shape != (batch,):
        raise ValueError(f"target must be None, an int or {batch} class indices; got shape {tuple(t.shape)}.")
    if t.device.type == "cpu" and (int(t.min()) < 0 or int(t.max()) >= classes):
        raise ValueError(f"target holds classes in [{int(t.min())}, {int(t.max())}] but the model has {classes} outputs.")
    return t


def compute_cams(
    model: nn.Module,
    x: torch.Tensor,
    layer: nn.Module,
    method: str = "gradcam",
    target: Target = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Low-resolution maps of ``x`` at ``layer`` and the model's logits, leaving the model untouched.

    The model runs in eval mode (each module's flag restored afterwards), the hook is removed in
    every case, no parameter gradient is written and no graph outlives the call.

    Returns:
        ``(maps, logits)``: float32 maps ``(B, h, w)`` in [0, 1] and detached logits ``(B, K)``.
    """
    weights_fn = METHODS[method_name(method)]
    store: Dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"the target layer {type(module).__name__} returned {shape}; expected a (B, C, h, w) tensor. "
                "Pass layer= a convolutional stage of the model."
            )
        torch.set_grad_enabled(True)  # record the graph from here on; restored when no_grad exits
        act = output.detach().requires_grad_(True)
        store["act"] = act
        # a clone, so that models applying in-place ops to this output (DenseNet's F.relu(...,
        # inplace=True)) modify the copy, not the leaf
        return act.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model returned {got}; expected logits of shape (B, num_classes).")
    act = store.pop("act", None)
    if act is None or not logits.requires_grad:
        raise ValueError(
            f"the target layer {type(layer).__name__} did not take part in computing the logits; "
            "pass layer= a module on the path from input to output."
        )
    t = _targets(target, logits)
    with torch.enable_grad():  # the caller may be under no_grad
        score = logits.gather(1, t.view(-1, 1)).sum()
    (grads,) = torch.autograd.grad(score, act)
    act32, grads32 = act.detach().float(), grads.float()
    weights = weights_fn(act32, grads32)
    cam = (weights[:, :, None, None] * act32).sum(dim=1)
    return normalize_maps(cam.clamp_min(0)), logits.detach()


def attention_maps(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    layer: Union[str, nn.Module, None] = None,
    target: Target = None,
    size: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Class activation maps of a batch, computed natively and batched on ``x``'s device.

    Args:
        model: a classifier returning logits ``(B, K)``; left exactly as found (per-module
            training flags, parameter ``.grad``, ``requires_grad``, no hooks, no graph).
        x: input batch ``(B, C, H, W)`` as the model expects it (normalised), on its device.
        method: ``"gradcam"`` or ``"gradcam++"``.
        layer: the target layer (module or name); ``None`` finds the last spatial layer.
        target: class per sample: ``None`` for the predicted class, an int, or ``(B,)`` indices.
        size: ``(H, W)`` to upsample to; ``None`` returns the layer's own resolution.

    Returns:
        Float32 maps ``(B, h, w)`` in [0, 1], or ``(B, H, W)`` with ``size``: then equal to what
        pytorch-grad-cam's ``GradCAM`` / ``GradCAMPlusPlus`` return for the same model, layer and
        targets (ReLU, min-max, bilinear resize, min-max).

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(8, 2))
        >>> maps = attention_maps(net, torch.rand(2, 3, 8, 8), method="gradcam++")
        >>> maps.shape, bool(maps.min() >= 0), bool(maps.max() <= 1)
        (torch.Size([2, 8, 8]), True, True)
        >>> attention_maps(net, torch.rand(2, 3, 8, 8), size=(32, 32)).shape
        torch.Size([2, 32, 32])
    """
    check_images("x", x)
    method_name(method)
    _, module = resolve_layer(model, layer, x)
    maps, _ = compute_cams(model, x, module, method, target)
    if size is not None:
        maps = upsample_maps(maps, size)[:, 0]
    return maps
