"""Finding the layer whose activations a CAM is computed from."""

from __future__ import annotations

import difflib
from typing import Any, List, Optional, Tuple, Union

import torch
from torch import nn

from ._state import eval_mode

__all__ = ["find_target_layer", "resolve_layer"]


def find_target_layer(model: nn.Module, x: torch.Tensor) -> Tuple[str, nn.Module]:
    """Find the last module whose output is a spatial feature map ``(B, C, h, w)`` with ``h*w > 1``.

    Runs one forward pass of ``x[:1]`` in eval mode under ``no_grad`` with a temporary hook on
    every submodule and picks, in the order modules finish, the last one whose output is such a
    4-D tensor: the final convolutional stage before global pooling (``layer4`` of a ResNet).

    Args:
        model: the classifier.
        x: an example input batch ``(B, C, H, W)`` on the model's device.

    Returns:
        ``(name, module)`` with ``name`` as in ``model.named_modules()``.

    Raises:
        ValueError: no submodule produces a spatial 4-D output.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        >>> find_target_layer(net, torch.rand(1, 3, 16, 16))[0]
        '1'
    """
    finished: List[Tuple[str, nn.Module, Any]] = []
    handles = []

    def record(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            finished.append((name, module, shape))

        return hook

    try:
        for name, module in model.named_modules():
            if module is not model:
                handles.append(module.register_forward_hook(record(name)))
        with eval_mode(model), torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    for name, module, shape in reversed(finished):
        if shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1:
            return name, module
    seen = ", ".join(f"{n or type(m).__name__}: {s}" for n, m, s in finished[-8:]) or "none"
    raise ValueError(
        f"could not find a target layer in {type(model).__name__}: no submodule produced a spatial "
        f"(B, C, h, w) output with h*w > 1 for an input of shape {tuple(x.shape)} (last outputs: {seen}). "
        "Pass layer=<module or its name in model.named_modules()>, e.g. layer='layer4'."
    )


def resolve_layer(model: nn.Module, layer: Union[str, nn.Module, None], x: Optional[torch.Tensor]) -> Tuple[str, nn.Module]:
    """Turn ``layer`` (``None``, a module name or a module) into ``(name, module)`` of ``model``."""
    if layer is None:
        return find_target_layer(model, x)
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in modules:
            close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.6)
            hint = f" Close names: {close}." if close else ""
            raise ValueError(f"layer={layer!r} is not a module of {type(model).__name__}; expected a name from model.named_modules().{hint}")
        return layer, modules[layer]
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                return name, module
        raise ValueError(f"layer={type(layer).__name__} is not a submodule of {type(model).__name__}; expected one of its modules or its name.")
    raise TypeError(f"layer must be None, a module name or an nn.Module; got {type(layer).__name__}.")
