"""Finding the layer(s) whose activations a CAM is computed from, and reading them as (B, C, h, w).

Detection, in order:

1. **Vision transformers** (a ``patch_embed`` and ``blocks``, as timm's ViT / DeiT / BEiT / EVA,
   or torchvision's ``VisionTransformer``): the first norm of the last block (``blocks[-1].norm1``,
   ``encoder.layers[-1].ln_1``), as pytorch-grad-cam recommends: after the last block only the
   class token reaches the head. Its tokens ``(B, N, C)`` are read as a ``(B, C, gh, gw)`` grid:
   the prefix tokens (class, distillation, registers: ``num_prefix_tokens``) are dropped and
   ``(gh, gw)`` is the input size divided by the model's patch size, so any input size works.
2. **Everything else**: the last module, in the order modules finish, whose output is a 4-D
   tensor with more than one spatial position and that is not a pooling layer: the last
   convolutional stage (``layer4`` of a ResNet, ``features`` of a VGG, ``norm`` of a Swin).
   Models whose features are channels-last (timm's ``output_fmt == "NHWC"``: Swin, and others)
   are read as ``(B, h, w, C)`` and permuted.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._warn import COARSE, warn_coarse
from ._state import eval_mode

__all__ = ["TargetLayer", "find_target_layer", "finer_layer", "resolve_layers", "warn_if_coarse"]

LayerSpec = Union[None, str, nn.Module, Sequence[Union[str, nn.Module]]]
Reshape = Callable[[torch.Tensor], torch.Tensor]

_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.LPPool2d)


@dataclasses.dataclass
class TargetLayer:
    """A layer to hook and how to read its output as ``(B, C, h, w)``.

    Examples:
        >>> vit_layer = TargetLayer("blocks.11.norm1", nn.LayerNorm(8), prefix_tokens=1, patch_size=(16, 16))
        >>> vit_layer.to_nchw(torch.rand(2, 1 + 3 * 4, 8), image_size=(48, 64)).shape
        torch.Size([2, 8, 3, 4])
    """

    name: str
    module: nn.Module
    reshape: Optional[Reshape] = None  # a user's reshape, applied as is
    nhwc: bool = False
    prefix_tokens: int = 0
    patch_size: Optional[Tuple[int, int]] = None

    def to_nchw(self, t: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
        """Read this layer's output ``t`` as ``(B, C, h, w)`` for inputs of ``image_size``."""
        if self.reshape is not None:
            t = self.reshape(t)
        elif t.ndim == 3 and self.patch_size is not None:
            gh, gw = int(image_size[0]) // self.patch_size[0], int(image_size[1]) // self.patch_size[1]
            tokens = t[:, self.prefix_tokens :]
            if tokens.shape[1] != gh * gw:
                raise ValueError(
                    f"the target layer {self.name!r} returned {t.shape[1]} tokens; expected {self.prefix_tokens} prefix "
                    f"tokens and a {gh}x{gw} grid of patches. Pass MapSpec(reshape=...) a function to (B, C, h, w)."
                )
            t = tokens.reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)
        elif t.ndim == 4 and self.nhwc:
            t = t.permute(0, 3, 1, 2)
        if t.ndim != 4:
            raise ValueError(
                f"the target layer {self.name!r} ({type(self.module).__name__}) returned {tuple(t.shape)}; expected a "
                "(B, C, h, w) tensor. Pass MapSpec(layer=...) a convolutional stage of the model, or MapSpec(reshape=...) a function that "
                "turns this output into (B, C, h, w)."
            )
        return t


def _pair(v: Any) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _vit_info(model: nn.Module) -> Optional[Tuple[int, Tuple[int, int], str]]:
    """``(prefix_tokens, patch_size, default_layer_name)`` for a vision transformer, else None."""
    patch_embed = getattr(model, "patch_embed", None)
    blocks = getattr(model, "blocks", None)
    if patch_embed is not None and isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        patch = getattr(patch_embed, "patch_size", None)
        last = len(blocks) - 1
        if patch is not None and hasattr(blocks[last], "norm1"):
            prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))
            return prefix, _pair(patch), f"blocks.{last}.norm1"
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if hasattr(model, "patch_size") and hasattr(model, "class_token") and isinstance(layers, nn.Sequential) and len(layers):
        last_name = list(layers.named_children())[-1][0]
        return 1, _pair(model.patch_size), f"encoder.layers.{last_name}.ln_1"
    return None


def _is_nhwc(model: nn.Module) -> bool:
    return str(getattr(model, "output_fmt", "NCHW")).upper() == "NHWC"


def _target(model: nn.Module, name: str, module: nn.Module, reshape: Optional[Reshape]) -> TargetLayer:
    vit = _vit_info(model)
    return TargetLayer(
        name, module, reshape=reshape, nhwc=_is_nhwc(model),
        prefix_tokens=vit[0] if vit else 0, patch_size=vit[1] if vit else None,
    )


def _outputs(model: nn.Module, x: torch.Tensor) -> List[Tuple[str, nn.Module, Any, Optional[Tuple[int, int]]]]:
    """Every submodule in the order it finished on ``x[:1]`` (eval mode, ``no_grad``, hooks removed after):
    ``(name, module, output shape or type, (h, w) of a spatial 4-D output that is not a pooling layer, else None)``."""
    finished: List[Tuple[str, nn.Module, Any, Optional[Tuple[int, int]]]] = []
    handles = []
    nhwc = _is_nhwc(model)

    def record(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            hw = None
            if isinstance(shape, tuple) and len(shape) == 4 and not isinstance(module, _POOLS):
                hw = (int(shape[1]), int(shape[2])) if nhwc else (int(shape[2]), int(shape[3]))
            finished.append((name, module, shape, hw))

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
    return finished


def finer_layer(model: nn.Module, x: torch.Tensor, than: Tuple[int, int]) -> Optional[Tuple[str, Tuple[int, int]]]:
    """The last module (in the order modules finish on ``x[:1]``) whose spatial output is finer than
    ``than``, with its ``(h, w)``: the stage to name when maps at ``than`` are too coarse. ``None``
    for a vision transformer (its grid is the patch grid) or when no module is finer.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=4, padding=1), nn.AdaptiveAvgPool2d(1))
        >>> finer_layer(net, torch.rand(1, 3, 8, 8), (2, 2))
        ('0', (8, 8))
    """
    if _vit_info(model) is not None:
        return None
    for name, _, _, hw in reversed(_outputs(model, x)):
        if hw is not None and hw[0] * hw[1] > than[0] * than[1]:
            return name, hw
    return None


def warn_if_coarse(where: str, maps: torch.Tensor, model: nn.Module, example: Optional[torch.Tensor], layer: str) -> bool:
    """Warn at the user's line when ``maps`` ``(K, h, w)`` are 2x2 or coarser, naming a finer layer of ``model``
    (one forward of ``example`` in eval mode, in that case only; ``None``: name none). ``True`` once checked
    (``maps`` held a map): what ``refresh``, ``MapCapture`` and ``attention_maps`` share."""
    h, w = int(maps.shape[-2]), int(maps.shape[-1])
    if maps.shape[0] and h * w <= COARSE:
        warn_coarse(where, (h, w), layer, finer_layer(model, example, (h, w)) if example is not None else None)
    return bool(maps.shape[0])


def find_target_layer(model: nn.Module, x: torch.Tensor) -> Tuple[str, nn.Module]:
    """Find the layer a CAM should be computed at (see this module's docstring for the rules).

    For a CNN it runs one forward pass of ``x[:1]`` in eval mode under ``no_grad`` with a
    temporary hook on every submodule (all removed afterwards, each module's training flag
    restored) and picks the last module with a spatial 4-D output that is not a pooling layer.

    Args:
        model: the classifier.
        x: an example input batch ``(B, C, H, W)`` on the model's device.

    Returns:
        ``(name, module)`` with ``name`` as in ``model.named_modules()``.

    Raises:
        ValueError: no submodule produces a spatial output; the message lists the last outputs
            seen and how to pass ``layer=``.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        >>> find_target_layer(net, torch.rand(1, 3, 16, 16))[0]
        '1'
    """
    vit = _vit_info(model)
    if vit is not None:
        return vit[2], model.get_submodule(vit[2])
    finished = _outputs(model, x)
    for name, module, _, hw in reversed(finished):
        if hw is not None and hw[0] * hw[1] > 1:
            return name, module
    seen = ", ".join(f"{n}: {s}" for n, _, s, _ in finished[-6:]) or "none"
    raise ValueError(
        f"could not find a target layer in {type(model).__name__}: no submodule produced a spatial "
        f"(B, C, h, w) output with h*w > 1 for an input of shape {tuple(x.shape)} (last outputs: {seen}). "
        "Pass MapSpec(layer=<module or its name in model.named_modules()>), e.g. MapSpec(layer='layer4'), and reshape= if its "
        "output is not (B, C, h, w)."
    )


def _one(model: nn.Module, spec: Union[str, nn.Module], modules: dict) -> Tuple[str, nn.Module]:
    if isinstance(spec, str):
        if spec not in modules:
            close = difflib.get_close_matches(spec, [n for n in modules if n], n=5, cutoff=0.6)
            top = [n for n, _ in model.named_children()]
            shown = top[:8] + (["..."] if len(top) > 8 else [])
            hint = f" Close names: {close}." if close else (f" Its top-level modules: {shown}." if top else "")
            raise ValueError(f"layer={spec!r} is not a module of {type(model).__name__}; expected a name from model.named_modules().{hint}")
        return spec, modules[spec]
    if isinstance(spec, nn.Module):
        for name, module in modules.items():
            if module is spec:
                return name, module
        raise ValueError(f"layer={type(spec).__name__} is not a submodule of {type(model).__name__}; expected one of its modules or its name.")
    raise TypeError(f"layer must be None, a module name, an nn.Module or a list of them; got {type(spec).__name__}.")


def resolve_layers(model: nn.Module, layer: LayerSpec, x: Optional[torch.Tensor], reshape: Optional[Reshape] = None) -> List[TargetLayer]:
    """Turn ``layer`` (``None``, a name, a module, or a list of them) into [`TargetLayer`][proxyaug.attention.TargetLayer] s.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> [t.name for t in resolve_layers(net, ["0", net[1]], None)]
        ['0', '1']
    """
    if reshape is not None and not callable(reshape):
        raise TypeError(f"reshape must be a callable turning the layer's output into (B, C, h, w); got {type(reshape).__name__}.")
    if layer is None:
        if x is None:
            raise ValueError("layer=None needs an example input to find the target layer.")
        return [_target(model, *find_target_layer(model, x), reshape)]
    specs = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not specs:
        raise ValueError("layer=[] is empty; expected at least one module or name.")
    modules = dict(model.named_modules())
    return [_target(model, *_one(model, spec, modules), reshape) for spec in specs]
