"""The peers of the ``maps`` case: pytorch-grad-cam, torchcam 0.5 and captum 0.9, each called as its
own documentation shows, on the same model, batch, layer and classes as proxyaug; and how far
their maps are from proxyaug's.

Every peer returns full-size maps, as proxyaug is timed producing them: pytorch-grad-cam does so
itself (ReLU, min-max, bilinear resize, min-max, in numpy); torchcam returns min-max normalised
maps at the layer's resolution and captum raw layer attributions, so each is followed by the
bilinear resize its own docs suggest (``F.interpolate``; captum's ``LayerAttribution.interpolate``).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Dict, List, Optional
from unittest import mock

import torch
from torch import nn
from torch.nn import functional as F

PGC_CLASSES = {
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
    "layercam": "LayerCAM", "gradcamelementwise": "GradCAMElementWise", "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM",
}
TORCHCAM_CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMpp", "xgradcam": "XGradCAM", "layercam": "LayerCAM"}
CAPTUM_METHODS = ("gradcam",)  # captum has LayerGradCam only
# The peers, in the order of the JSON's rows and the table's columns: key, label, version's distribution.
PEERS = (("pytorch_grad_cam", "pytorch-grad-cam", "grad-cam"), ("torchcam", "torchcam", "torchcam"), ("captum", "captum", "captum"))
# What a row states about a peer whose maps differ by design (measured, in the JSON as `agreement`).
FORMULA_NOTES = {
    ("torchcam", "gradcam++"): "torchcam 0.5's Grad-CAM++ divides alpha through a boolean-indexed copy, so its alpha "
                               "stays the squared gradient: another weighting than the paper's (and proxyaug's)",
}


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1], as every library does before showing a map."""
    flat = maps.flatten(1).float()
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


MODULES = {"pytorch_grad_cam": "pytorch_grad_cam", "torchcam": "torchcam.methods", "captum": "captum.attr"}


@functools.lru_cache(maxsize=None)
def installed(peer: str) -> bool:
    """Whether ``peer`` imports here (a GPU image may lack one: its row then says n/a, and the JSON
    lists it under the row's ``missing_peers``)."""
    try:
        importlib.import_module(MODULES[peer])
    except ImportError:
        return False
    return True


def implements(peer: str, method: str, layer: Any) -> bool:
    """Whether ``peer`` has ``method`` for this target layer, installed or not."""
    if peer == "pytorch_grad_cam":
        return method in PGC_CLASSES
    if peer == "torchcam":
        return method in TORCHCAM_CLASSES
    plain = layer.reshape is None and not layer.nhwc and layer.patch_size is None
    return peer == "captum" and method in CAPTUM_METHODS and plain


def peer_maps(peer: str, method: str, model: nn.Module, x: torch.Tensor, layer: Any, classes: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A callable that makes ``peer``'s ``method`` maps of ``x`` for ``classes`` at full size, as a tensor
    (pytorch-grad-cam's numpy output is wrapped without a copy)."""
    size = tuple(x.shape[-2:])
    reshape = None if (layer.reshape is None and not layer.nhwc and layer.patch_size is None) else (lambda t: layer.to_nchw(t, size))
    idx = classes.tolist()
    if peer == "pytorch_grad_cam":
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls, targets = getattr(pgc, PGC_CLASSES[method]), [ClassifierOutputTarget(c) for c in idx]

        def run_pgc() -> torch.Tensor:  # as its README uses it: a `with` block per batch
            with cls(model, [layer.module], reshape_transform=lambda t: layer.to_nchw(t, size)) as cam:
                return torch.from_numpy(cam(x, targets))

        return run_pgc
    if peer == "torchcam":
        import torchcam.methods as tcm

        cls = getattr(tcm, TORCHCAM_CLASSES[method])

        def run_torchcam() -> torch.Tensor:  # as its README uses it: forward with the extractor's hooks, then call it
            with cls(model, layer.module, input_shape=tuple(x.shape[1:]), reshape_transform=reshape) as cam:
                scores = model(x)
                (maps,) = cam(class_idx=idx, scores=scores)
            return F.interpolate(maps.unsqueeze(1), size, mode="bilinear", align_corners=False).squeeze(1)

        return run_torchcam
    if peer == "captum":
        from captum.attr import LayerAttribution, LayerGradCam

        gc = LayerGradCam(model, layer.module)

        def run_captum() -> torch.Tensor:
            attr = gc.attribute(x, target=classes, relu_attributions=True)
            return LayerAttribution.interpolate(attr, size, interpolate_mode="bilinear").squeeze(1).detach()

        return run_captum
    raise ValueError(f"peer={peer!r} is not known; expected one of {[p for p, _, _ in PEERS]}")


def agreement(ours: torch.Tensor, theirs: torch.Tensor, flipped: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """How far a peer's maps are from proxyaug's, both ``(B, H, W)`` and min-max normalised per image:
    the largest and the mean absolute difference over all pixels and images. ``flipped``: proxyaug's
    maps with the opposite eigenvector sign, for the Eigen-CAMs, whose sign pytorch-grad-cam leaves
    to LAPACK (each image is compared with the closer of the two)."""
    d = (_normalise(ours.detach().cpu()) - _normalise(theirs.detach().cpu())).abs().flatten(1)
    if flipped is not None:
        f = (_normalise(flipped.detach().cpu()) - _normalise(theirs.detach().cpu())).abs().flatten(1)
        d = torch.where((f.amax(1) < d.amax(1)).unsqueeze(1), f, d)
    return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}


def flipped_maps(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """What ``fn`` (proxyaug's maps) returns with the opposite eigenvector sign."""
    import proxyaug.attention.cam as cam_module

    with mock.patch.object(cam_module, "eigen_projection", functools.partial(cam_module.eigen_projection, flip=True)):
        return fn()


def available(peer: str, method: str, layer: Any) -> bool:
    """Whether ``peer`` implements ``method`` on this target layer (captum's LayerGradCam needs a
    convolutional ``(B, C, h, w)`` output: it has no reshape for a ViT's tokens) and is installed."""
    return implements(peer, method, layer) and installed(peer)


def peers_for(methods: List[str], layer: Any) -> Dict[str, List[str]]:
    """Per method, the peers that implement it on this layer and are installed."""
    return {m: [p for p, _, _ in PEERS if available(p, m, layer)] for m in methods}


def missing_for(method: str, layer: Any) -> List[str]:
    """The peers that implement ``method`` on this layer but are not installed here."""
    return [p for p, _, _ in PEERS if implements(p, method, layer) and not installed(p)]
