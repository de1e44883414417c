"""How to compute a map: [`MapSpec`][proxyaug.attention.MapSpec], the method names, and the logits in a model's output.

One spec says everything a map depends on besides the model and the images: the method, the
target layer(s), how to read a layer's output as ``(B, C, h, w)``, how to pick the logits, and
smoothing. It is the only way to say it: [`attention_maps()`][proxyaug.attention_maps],
[`refresh()`][proxyaug.refresh], [`MapCapture`][proxyaug.MapCapture],
[`map_resolution()`][proxyaug.attention.map_resolution] and
[`ProxyDataset.enable_cpu_path()`][proxyaug.ProxyDataset.enable_cpu_path] take one as ``spec``
(``None``: ``MapSpec()``, Grad-CAM++ at the layer found); it is validated once, when it is made.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Tuple

import torch

from .adapter import adapter_methods
from .layers import LayerSpec, Reshape
from .methods import GRADIENT_FREE, NATIVE_METHODS
from .transformer import TRANSFORMER_METHODS

__all__ = ["MapSpec", "as_spec", "resolve_method", "default_logits", "extract_logits", "check_grad_mode"]

LogitsFn = Callable[[Any], torch.Tensor]

_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def resolve_method(method: Any) -> Tuple[str, Optional[type]]:
    """``(name, None)`` for a native method (a CAM or a transformer-native method), ``(name, class)`` for one run through pytorch-grad-cam.

    ``method`` is a name (case, ``_`` and ``-`` ignored: ``"GradCAM++"``, ``"score_cam"``) or a
    pytorch-grad-cam class. A class always runs through the adapter, so passing
    ``pytorch_grad_cam.GradCAM`` gives pytorch-grad-cam's own implementation.

    Examples:
        >>> resolve_method("Grad-CAM++")
        ('gradcam++', None)
        >>> resolve_method("score_cam")[1].__name__
        'ScoreCAM'
    """
    if isinstance(method, type):
        try:
            from pytorch_grad_cam.base_cam import BaseCAM
        except ImportError:  # then no class can be one
            BaseCAM = ()  # type: ignore[assignment,misc]
        if BaseCAM and issubclass(method, BaseCAM):
            return method.__name__, method
        raise TypeError(f"method={method.__name__} is not a pytorch-grad-cam CAM class; expected a name or a BaseCAM subclass.")
    if isinstance(method, str):
        key = _ALIASES.get(_key(method), _key(method))
        if key in NATIVE_METHODS or key in TRANSFORMER_METHODS:
            return key, None
        others = adapter_methods()
        if key in others:
            return key, others[key]
    others = sorted(set(adapter_methods()) - set(NATIVE_METHODS))
    native = ", ".join(map(repr, [*NATIVE_METHODS, *TRANSFORMER_METHODS]))
    if not others:  # pytorch-grad-cam is an optional dependency
        raise ValueError(
            f"method={method!r} is not supported; expected one of {native} (native). "
            "pytorch-grad-cam's other methods (scorecam, ablationcam, fullgrad, ...) need it installed: "
            "pip install 'proxyaug[gradcam]'."
        )
    raise ValueError(
        f"method={method!r} is not supported; expected one of {native} (native) "
        f"or a pytorch-grad-cam method: {', '.join(others)}."
    )


def default_logits(output: Any) -> torch.Tensor:
    """The logits in a model's output: a tensor, the first item of a tuple, ``["logits"]`` or ``.logits``.

    Examples:
        >>> default_logits({"logits": torch.zeros(2, 3), "aux": 1.0}).shape
        torch.Size([2, 3])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if isinstance(output, Mapping):
        raise TypeError(
            f"the model returned a {type(output).__name__} with keys {sorted(map(str, output))}; expected logits "
            "under the key 'logits'. Pass MapSpec(logits=...) a function that picks them, e.g. MapSpec(logits=lambda out: out['scores'])."
        )
    raise TypeError(
        f"the model returned a {type(output).__name__}; expected logits (B, num_classes) or a tuple, dict or object "
        "holding them. Pass MapSpec(logits=...) a function that picks them from the model's output."
    )


def extract_logits(output: Any, extract: Optional[LogitsFn] = None) -> torch.Tensor:
    """The ``(B, num_classes)`` logits in a model's ``output``, picked by ``extract`` (default [`default_logits()`][proxyaug.attention.default_logits]).

    Examples:
        >>> extract_logits((torch.zeros(2, 3), 'aux')).shape
        torch.Size([2, 3])
    """
    lg = (extract or default_logits)(output)
    if not isinstance(lg, torch.Tensor) or lg.ndim != 2:
        got = tuple(lg.shape) if isinstance(lg, torch.Tensor) else type(lg).__name__
        raise ValueError(f"the model returned {got}; expected logits of shape (B, num_classes) (pass MapSpec(logits=...) to pick them).")
    return lg




def check_grad_mode(what: str) -> None:
    """Gradient-based maps need autograd: refuse inference mode with a message that names it.

    Examples:
        >>> check_grad_mode("refresh")  # outside inference mode: nothing to say
        >>> with torch.inference_mode():
        ...     check_grad_mode("refresh")
        Traceback (most recent call last):
        ...
        RuntimeError: refresh needs gradients, which torch.inference_mode() disables for good; call it outside the inference_mode block (torch.no_grad() is fine: proxyaug enables what it needs).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{what} needs gradients, which torch.inference_mode() disables for good; call it outside the "
            "inference_mode block (torch.no_grad() is fine: proxyaug enables what it needs)."
        )


@dataclasses.dataclass(frozen=True)
class MapSpec:
    """How to compute an attention map: everything but the model and the images.

    The one way to say it: [`attention_maps()`][proxyaug.attention_maps],
    [`refresh()`][proxyaug.refresh], [`MapCapture`][proxyaug.MapCapture],
    [`map_resolution()`][proxyaug.attention.map_resolution] and
    [`ProxyDataset.enable_cpu_path()`][proxyaug.ProxyDataset.enable_cpu_path] each take one as
    ``spec`` and default to ``MapSpec()``, so that one spec gives the same maps everywhere.

    Native methods (torch only): ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"hirescam"``,
    ``"layercam"``, ``"gradcamelementwise"``, ``"eigencam"``, ``"eigengradcam"``; for vision
    transformers (timm's ``VisionTransformer`` family, torchvision's ``VisionTransformer``) also
    the transformer-native ``"rollout"`` (attention rollout, no gradient, no class) and
    ``"legrad"`` (LeGrad), whose ``layer`` chooses blocks (``None``: all; how-to "Vision
    transformers and other models"). Any other
    pytorch-grad-cam method (``"scorecam"``, ``"ablationcam"``, ``"fullgrad"``, ...) or class runs
    through an adapter with the same guarantees (not in [`MapCapture`][proxyaug.MapCapture], which
    has no pass of its own).

    Args:
        method: a method name (case, ``_`` and ``-`` ignored: ``"Grad-CAM++"``) or a
            pytorch-grad-cam class; ``"gradcam++"``, the thesis' choice, by default.
        layer: the target layer: a module, its name, or a list of them (maps averaged as
            pytorch-grad-cam does); ``None`` finds it (last spatial layer; for a ViT, the last
            block's first norm). For ``"rollout"`` and ``"legrad"``: the blocks used (``None``: all).
        reshape: turns the layer's output into ``(B, C, h, w)``; inferred for ViTs (tokens) and
            channels-last models (Swin), needed only for other layouts.
        logits: picks the logits from the model's output when it is not a tensor (default: first
            item of a tuple, ``["logits"]`` or ``.logits``).
        eigen_smooth: replace the channel sum by its first principal component (pytorch-grad-cam's
            ``eigen_smooth``).
        smooth_sigma: Gaussian smoothing of the low-resolution map, in map pixels (native methods).

    Raises:
        ValueError: an unknown method, a ``smooth_sigma`` that is not positive or is given to a
            pytorch-grad-cam method.
        TypeError: ``reshape`` or ``logits`` that is not callable, a class that is not a CAM.

    Examples:
        >>> spec = MapSpec("Grad-CAM", layer="features")
        >>> spec.name, spec.needs_grad, spec.native
        ('gradcam', True, True)
        >>> MapSpec("eigencam").needs_grad
        False
        >>> spec.replace(method="layercam").name
        'layercam'
        >>> MapSpec().name  # the default everywhere
        'gradcam++'
    """

    method: Any = "gradcam++"
    layer: LayerSpec = None
    reshape: Optional[Reshape] = None
    logits: Optional[LogitsFn] = None
    eigen_smooth: bool = False
    smooth_sigma: Optional[float] = None

    def __post_init__(self) -> None:
        name, cam_class = resolve_method(self.method)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "cam_class", cam_class)
        if self.smooth_sigma is not None and not self.smooth_sigma > 0:
            raise ValueError(f"smooth_sigma={self.smooth_sigma!r} is not valid; expected a positive number or None.")
        if self.smooth_sigma is not None and cam_class is not None:
            raise ValueError(f"smooth_sigma={self.smooth_sigma!r} is supported by the native methods only; got method={name!r}.")
        if self.reshape is not None and not callable(self.reshape):
            raise TypeError(f"reshape must be a callable turning the layer's output into (B, C, h, w); got {type(self.reshape).__name__}.")
        if self.logits is not None and not callable(self.logits):
            raise TypeError(f"logits must be a callable picking the logits from the model's output; got {type(self.logits).__name__}.")
        if name in TRANSFORMER_METHODS and (self.eigen_smooth or self.reshape is not None):
            which = "eigen_smooth=True" if self.eigen_smooth else "reshape"
            raise ValueError(f"{which} is not used by method={name!r}, which reads the blocks' attention, not a layer's channels; leave it unset.")

    name: str = dataclasses.field(init=False, repr=False, compare=False)
    """The normalised method name (``"gradcam++"``, ``"scorecam"``, or a class's name)."""
    cam_class: Optional[type] = dataclasses.field(init=False, repr=False, compare=False)
    """The pytorch-grad-cam class that computes it, or ``None`` for a native method."""

    @property
    def native(self) -> bool:
        """Whether proxyaug computes it itself (else pytorch-grad-cam does, through the adapter)."""
        return self.cam_class is None

    @property
    def transformer(self) -> bool:
        """Whether it is a transformer-native method (``"rollout"``, ``"legrad"``), which reads attention probabilities."""
        return self.name in TRANSFORMER_METHODS

    @property
    def needs_grad(self) -> bool:
        """Whether it needs gradients (every method but EigenCAM and rollout, and every adapter method)."""
        return not (self.native and self.name in (*GRADIENT_FREE, "rollout"))

    def replace(self, **changes: Any) -> "MapSpec":
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


def as_spec(spec: Any) -> MapSpec:
    """``spec`` checked, or the default ``MapSpec()`` for ``None``: the one way every caller takes how a map is computed.

    Examples:
        >>> as_spec(None).name
        'gradcam++'
        >>> as_spec("gradcam")
        Traceback (most recent call last):
        ...
        TypeError: spec='gradcam' is a method name; expected a proxyaug.MapSpec such as MapSpec('gradcam'), or None for MapSpec() (Grad-CAM++, the target layer found).
    """
    if spec is None:
        return MapSpec()
    if isinstance(spec, MapSpec):
        return spec
    if isinstance(spec, str):
        raise TypeError(
            f"spec={spec!r} is a method name; expected a proxyaug.MapSpec such as MapSpec({spec!r}), or None for "
            "MapSpec() (Grad-CAM++, the target layer found)."
        )
    raise TypeError(f"spec must be a proxyaug.MapSpec (or None for MapSpec()); got {type(spec).__name__}.")
