"""The attention engine: native batched CAMs, a pytorch-grad-cam adapter and target-layer detection."""

from ._state import eval_mode, preserved, unwrap
from .adapter import adapter_methods
from .cam import attention_maps, compute_cams, default_logits, map_resolution, resolve_method
from .layers import TargetLayer, find_target_layer, resolve_layers
from .methods import NATIVE_METHODS, eigen_projection

__all__ = [
    "NATIVE_METHODS", "attention_maps", "map_resolution", "compute_cams", "default_logits", "resolve_method",
    "adapter_methods", "TargetLayer", "find_target_layer", "resolve_layers", "eigen_projection",
    "eval_mode", "preserved", "unwrap",
]
