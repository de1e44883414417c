"""Batched class activation maps in torch, native or through pytorch-grad-cam.

How a native map is computed, and why it costs about one forward pass:

1. A forward hook on the (first firing) target layer replaces its output ``A`` by
   ``A.detach().requires_grad_()`` and turns gradient recording on from there: everything before
   the layer runs under ``no_grad`` as plain inference, and only the part after it builds a graph.
   A target layer the forward calls more than once (a shared block) is read at its first call,
   whose gradient then flows through the later calls too.
2. ``torch.autograd.grad`` of the sum of the selected logits with respect to the target layers'
   outputs alone: no gradient flows into any parameter, so ``.grad`` fields are never written and
   frozen backbones work unchanged. EigenCAM needs no gradient and skips this step.
3. Channel contributions from activations and gradients (see [`.methods`][proxyaug.attention.methods]), their sum (or
   first principal component), ReLU and per-image min-max, in float32 with autocast off, in the
   order pytorch-grad-cam uses. Several layers: each map is normalised, upsampled to a common
   size, averaged and normalised again, as pytorch-grad-cam aggregates them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._checks import check_images
from ..functional import gaussian_blur, normalize_maps, upsample_maps
from ._state import eval_mode, unwrap
from .adapter import adapter_cams
from .._warn import count_empty, warn_empty
from .layers import TargetLayer, resolve_layers, warn_if_coarse
from .methods import EIGEN, contributions, eigen_projection
from .spec import LogitsFn, MapSpec, as_spec, check_grad_mode, extract_logits
from .transformer import transformer_maps

__all__ = ["attention_maps", "compute_cams", "map_resolution"]

Target = Union[None, int, Sequence[int], torch.Tensor]

class _WithLogits(nn.Module):
    """The model with its logits picked out, for code that expects a tensor output."""

    def __init__(self, model: nn.Module, extract: Optional[LogitsFn]) -> None:
        super().__init__()
        self.model, self.extract = model, extract

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return extract_logits(self.model(x), self.extract)


def _class_indices(target: Target, batch: int) -> Optional[torch.Tensor]:
    """``target`` as ``(B,)`` int64 class indices (``None`` stays ``None``)."""
    if target is None:
        return None
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices; got dtype {t.dtype}.")
    t = t.long().expand(batch) if t.ndim == 0 else t.long()
    if t.shape != (batch,):
        raise ValueError(f"target must be None, an int or {batch} class indices; got shape {tuple(t.shape)}.")
    return t


def _targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    batch, classes = logits.shape
    t = _class_indices(target, batch)
    if t is None:
        return logits.argmax(dim=1)
    if t.device.type == "cpu" and (int(t.min()) < 0 or int(t.max()) >= classes):
        raise ValueError(f"target holds classes in [{int(t.min())}, {int(t.max())}] but the model has {classes} outputs.")
    return t.to(logits.device)


def _record_layers(layers: List[TargetLayer], needs_grad: bool, records: Dict[int, torch.Tensor]):
    """Forward hooks that record each layer's output (see step 1 of the module docstring)."""
    state = {"graph_started": False}

    def make(i: int):
        def hook(module: nn.Module, inputs: Any, output: Any) -> Optional[torch.Tensor]:
            if not isinstance(output, torch.Tensor):
                raise ValueError(
                    f"the target layer {layers[i].name!r} ({type(module).__name__}) returned a {type(output).__name__}; "
                    "expected a tensor. Pass MapSpec(layer=...) a module that returns one."
                )
            if i in records:  # a block called twice: its first call, as capture and pytorch-grad-cam read it
                return None
            if not needs_grad:
                records[i] = output.detach().clone()
                return None
            if not state["graph_started"] or not output.requires_grad:
                torch.set_grad_enabled(True)  # restored when the caller's no_grad block exits
                state["graph_started"] = True
                act = output.detach().requires_grad_(True)
            else:
                act = output
            records[i] = act
            # a clone, so that in-place ops of the model on this output (DenseNet's
            # F.relu(..., inplace=True)) modify the copy, not the recorded tensor
            return act.clone()

        return hook

    return [t.module.register_forward_hook(make(i)) for i, t in enumerate(layers)]


def compute_cams(
    model: nn.Module,
    x: torch.Tensor,
    layers: List[TargetLayer],
    spec: MapSpec,
    target: Target = None,
    *,
    size: Optional[Sequence[int]] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Maps of ``x`` at ``layers`` (already resolved) as ``spec`` says, leaving the model untouched.

    The model runs in eval mode (each module's flag restored afterwards), the hooks are removed in
    every case, no parameter gradient is written and no graph outlives the call. ``progress=False``
    silences the progress bars of pytorch-grad-cam's methods.

    Returns:
        Float32 maps in [0, 1]: ``(B, h, w)`` at the layer's resolution (the finest one for
        several layers), or ``(B, H, W)`` with ``size``.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(2, 3, 8, 8)
        >>> layers = resolve_layers(net, None, x)
        >>> compute_cams(net, x, layers, MapSpec("layercam")).shape
        torch.Size([2, 8, 8])
    """
    model = unwrap(model)
    if spec.needs_grad and spec.native:
        check_grad_mode(f"MapSpec({spec.name!r})")
    if not spec.native:
        return _adapter(model, x, layers, spec, target, size=size, progress=progress)
    if spec.transformer:  # the blocks' attention, not ``layers``' activations
        return transformer_maps(model, x, spec, target, size=size)
    return _aggregate(_layer_cams(model, x, layers, spec, target), size)


def _layer_cams(model: nn.Module, x: torch.Tensor, layers: List[TargetLayer], spec: MapSpec, target: Target) -> List[torch.Tensor]:
    """Each layer's normalised map at its own resolution (steps 1-3 of the module docstring)."""
    records, grads = _activations_and_gradients(model, x, layers, spec, target)
    image_size = tuple(x.shape[-2:])
    cams = []
    with torch.autocast(device_type=x.device.type, enabled=False):
        for i, layer in enumerate(layers):
            act = layer.to_nchw(records[i].detach(), image_size).float()
            grad = layer.to_nchw(grads[i], image_size).float() if grads[i] is not None else None
            contrib = contributions(spec.name, act, grad)
            cam = eigen_projection(contrib) if (spec.name in EIGEN or spec.eigen_smooth) else contrib.sum(dim=1)
            cam = cam.clamp_min(0)
            if spec.smooth_sigma is not None:
                cam = gaussian_blur(cam[:, None], spec.smooth_sigma)[:, 0]
            cams.append(normalize_maps(cam))
    return cams


def _aggregate(cams: List[torch.Tensor], size: Optional[Sequence[int]]) -> torch.Tensor:
    """One layer's map (upsampled to ``size``), or several averaged as pytorch-grad-cam does (at ``size``, else the finest)."""
    if len(cams) == 1:
        return cams[0] if size is None else upsample_maps(cams[0], size)[:, 0]
    common = tuple(size) if size is not None else max((tuple(c.shape[-2:]) for c in cams), key=lambda s: s[0] * s[1])
    resized = [nn.functional.interpolate(c[:, None], size=common, mode="bilinear", align_corners=False)[:, 0] for c in cams]
    return normalize_maps(torch.stack(resized).clamp_min(0).mean(dim=0))


def _adapter(
    model: nn.Module, x: torch.Tensor, layers: List[TargetLayer], spec: MapSpec, target: Target, *, size: Any, progress: bool
) -> torch.Tensor:
    """A pytorch-grad-cam method's maps, at the first layer's resolution unless ``size``."""
    classes = _class_indices(target, x.shape[0])
    try:
        maps, low = adapter_cams(
            _WithLogits(model, spec.logits), x, layers, spec.cam_class,
            targets=classes, size=size, eigen_smooth=spec.eigen_smooth, progress=progress,
        )
    except RuntimeError:  # pytorch-grad-cam's gradient methods under inference mode
        if torch.is_inference_mode_enabled():
            check_grad_mode(f"MapSpec({spec.name!r})")
        raise
    if size is None:
        maps = normalize_maps(nn.functional.adaptive_avg_pool2d(maps[:, None], low)[:, 0])
    return maps


def _activations_and_gradients(
    model: nn.Module, x: torch.Tensor, layers: List[TargetLayer], spec: MapSpec, target: Target
) -> Tuple[Dict[int, torch.Tensor], List[Optional[torch.Tensor]]]:
    """Steps 1 and 2 of the module docstring: each layer's output, and the target score's gradient there."""
    records: Dict[int, torch.Tensor] = {}
    handles = _record_layers(layers, spec.needs_grad, records)
    try:
        with eval_mode(model), torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    lg = extract_logits(out, spec.logits)
    missing = [t.name for i, t in enumerate(layers) if i not in records]
    if missing:
        raise ValueError(f"the target layer(s) {missing} were not called in the forward pass; pass MapSpec(layer=...) modules the model uses.")
    order = sorted(records)
    grads: List[Optional[torch.Tensor]] = [None] * len(layers)
    if spec.needs_grad:
        cls = _targets(target, lg)
        with torch.enable_grad():  # the caller may be under no_grad
            score = lg.gather(1, cls.view(-1, 1)).sum()
        if not score.requires_grad:
            raise ValueError(f"the logits do not depend on the target layer(s) {[t.name for t in layers]}; pass MapSpec(layer=...) modules on the path to the output.")
        got = torch.autograd.grad(score, [records[i] for i in order], allow_unused=True)
        for i, g in zip(order, got):
            if g is None:
                raise ValueError(f"the logits do not depend on the target layer {layers[i].name!r}; pass MapSpec(layer=...) a module on the path to the output.")
            grads[i] = g
    return records, grads


def attention_maps(
    model: nn.Module,
    x: torch.Tensor,
    spec: Optional[MapSpec] = None,
    *,
    target: Target = None,
    size: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Class activation maps of a batch, batched on ``x``'s device.

    How the map is computed (method, target layer, reshape, logits, smoothing) is ``spec``, a
    [`MapSpec`][proxyaug.MapSpec]: Grad-CAM++ at the layer found by default, as everywhere in
    proxyaug.

    Args:
        model: a classifier; left exactly as found (per-module training flags, parameter ``.grad``,
            ``requires_grad``, no hooks, no graph). DistributedDataParallel, DataParallel and
            ``torch.compile`` wrappers are looked through.
        x: input batch ``(B, C, H, W)`` as the model expects it (normalised), on its device.
        spec: a [`MapSpec`][proxyaug.MapSpec]; ``None`` is ``MapSpec()``.
        target: class per sample: ``None`` for the predicted class, an int, or ``(B,)`` indices.
        size: ``(H, W)`` to upsample to; ``None`` returns the layer's own resolution.

    Returns:
        Float32 maps ``(B, h, w)`` in [0, 1], or ``(B, H, W)`` with ``size``: then equal to what
        pytorch-grad-cam returns for the same model, layer and targets (ReLU, min-max, bilinear
        resize, min-max), computed in float32 even under autocast.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(8, 2))
        >>> maps = attention_maps(net, torch.rand(2, 3, 8, 8))  # Grad-CAM++ at the layer found
        >>> maps.shape, bool(maps.min() >= 0), bool(maps.max() <= 1)
        (torch.Size([2, 8, 8]), True, True)
        >>> attention_maps(net, torch.rand(2, 3, 8, 8), MapSpec("eigencam", layer="0"), size=(32, 32)).shape
        torch.Size([2, 32, 32])
    """
    check_images("x", x)
    spec = as_spec(spec)
    model = unwrap(model)
    layers = resolve_layers(model, spec.layer, x, spec.reshape)
    if not spec.native or spec.transformer:
        maps = compute_cams(model, x, layers, spec, target, size=size)
        check_maps_made("attention_maps", maps if size is None else None, spec, model, x, layers)
        return maps
    if spec.needs_grad:
        check_grad_mode(f"MapSpec({spec.name!r})")
    cams = _layer_cams(model, x, layers, spec, target)
    check_maps_made("attention_maps", max(cams, key=lambda c: c.shape[-2] * c.shape[-1]), spec, model, x, layers)
    return _aggregate(cams, size)


def check_maps_made(where: str, maps: Optional[torch.Tensor], spec: MapSpec, model: nn.Module, x: torch.Tensor,
                    layers: Sequence[TargetLayer]) -> None:
    """Warn at the caller's line when ``maps`` (at the layers' resolution) are 2x2 or coarser, naming a finer
    layer of ``model`` (one more forward of ``x[:1]``, in that case only), or when some are all zero."""
    if maps is None or not maps.shape[0]:
        return
    warn_if_coarse(where, maps, model, x, ",".join(t.name for t in layers))
    empty = count_empty(maps)
    if empty:
        warn_empty(where, empty, maps.shape[0], spec.name)


def map_resolution(model: nn.Module, x: torch.Tensor, spec: Optional[MapSpec] = None) -> Tuple[int, int]:
    """The ``(h, w)`` of the maps ``spec`` gives for inputs like ``x``: what a bank must store.

    Computes the maps of one image (the first of ``x``) exactly as a refresh would, so the answer
    holds for several layers and for the adapter's methods too. Use it to size a
    [`MaskBank`][proxyaug.MaskBank] before training, e.g. for the CPU path, whose shared-memory bank
    cannot change its resolution later.

    Args:
        model: the classifier; left as found.
        x: an image ``(C, H, W)`` or a batch ``(B, C, H, W)``, as the model sees it (preprocessed),
            on the model's device.
        spec: a [`MapSpec`][proxyaug.MapSpec]; ``None`` is ``MapSpec()``.

    Returns:
        ``(h, w)``.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 2))
        >>> map_resolution(net, torch.rand(3, 32, 32))
        (8, 8)
    """
    if isinstance(x, torch.Tensor) and x.ndim == 3:
        x = x.unsqueeze(0)
    check_images("x", x)
    maps = attention_maps(model, x[:1], as_spec(spec))
    h, w = maps.shape[-2:]
    return int(h), int(w)
