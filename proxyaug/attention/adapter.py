"""Every other pytorch-grad-cam method (ScoreCAM, AblationCAM, FullGrad, ...) behind the same guarantees.

pytorch-grad-cam's classes put the model in eval mode for good, call ``model.zero_grad()``,
back-propagate into the parameters with ``retain_graph=True``, and its context manager swallows
``IndexError``. The adapter runs one on the unwrapped model inside `preserved`
(each module's training flag, every parameter's ``.grad`` and ``requires_grad`` restored), calls
it without the context manager so that every exception propagates, and releases its hooks and
graph in ``finally``.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import torch
from torch import nn

from ._state import preserved
from .layers import TargetLayer

__all__ = ["adapter_methods", "adapter_cams"]


def adapter_methods() -> Dict[str, type]:
    """pytorch-grad-cam's CAM classes by normalised name (``"scorecam"``, ``"ablationcam"``, ...).

    Examples:
        >>> adapter_methods()["ablationcam"].__name__
        'AblationCAM'
    """
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.base_cam import BaseCAM
    except ImportError:  # pragma: no cover - grad-cam is a dependency
        return {}
    found = {}
    for name, obj in vars(pytorch_grad_cam).items():
        if inspect.isclass(obj) and issubclass(obj, BaseCAM) and obj is not BaseCAM:
            found[name.lower().replace("_", "")] = obj
    return found


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Disable the tqdm bars pytorch-grad-cam creates inside the block (it calls ``tqdm.tqdm(...)``)."""
    if not enabled:
        yield
        return
    import tqdm

    original = tqdm.tqdm

    class Silent(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    tqdm.tqdm = Silent
    try:
        yield
    finally:
        tqdm.tqdm = original


def adapter_cams(
    model: nn.Module,
    x: torch.Tensor,
    layers: List[TargetLayer],
    cam_class: Type,
    *,
    targets: Optional[torch.Tensor] = None,
    size: Optional[Sequence[int]] = None,
    eigen_smooth: bool = False,
    progress: bool = True,
) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Maps of ``x`` by a pytorch-grad-cam class: float32 ``(B, H, W)`` on ``x``'s device.

    Returns the maps (at ``size``, default the input size) and the first layer's resolution.
    Gradients are enabled for the call (its gradient methods back-propagate, also when the
    caller is under ``no_grad``); ``progress=False`` silences the tqdm bars some methods
    (ScoreCAM, AblationCAM) print.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    image_size = tuple(x.shape[-2:])
    first = layers[0]

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return first.to_nchw(t, image_size)

    with preserved(model), torch.enable_grad(), _quiet(not progress):
        cam = cam_class(model=model, target_layers=[t.module for t in layers], reshape_transform=reshape)
        try:
            target_list = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets.tolist()]
            out = cam(x, targets=target_list, eigen_smooth=eigen_smooth)
            acts = cam.activations_and_grads.activations
            low = tuple(acts[0].shape[-2:]) if acts else image_size
        finally:
            cam.activations_and_grads.release()
            del cam
    maps = torch.as_tensor(out, dtype=torch.float32, device=x.device)
    if size is not None and tuple(size) != image_size:
        from ..functional import upsample_maps

        maps = upsample_maps(maps, size)[:, 0]
    return maps, (int(low[0]), int(low[1]))
