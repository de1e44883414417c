"""The attention engine: native batched CAMs, transformer-native maps (rollout, LeGrad), a pytorch-grad-cam adapter and target-layer detection."""

from ._state import eval_mode, model_device, preserved, unwrap
from .adapter import adapter_methods
from .cam import attention_maps, compute_cams, map_resolution
from .layers import TargetLayer, find_target_layer, resolve_layers
from .methods import NATIVE_METHODS, eigen_projection
from .spec import MapSpec, as_spec, check_grad_mode, default_logits, extract_logits, resolve_method
from .transformer import TRANSFORMER_METHODS, legrad_relevance, rollout

__all__ = [
    "NATIVE_METHODS", "attention_maps", "map_resolution", "compute_cams", "default_logits", "resolve_method",
    "adapter_methods", "TargetLayer", "find_target_layer", "resolve_layers", "eigen_projection",
    "eval_mode", "preserved", "unwrap", "model_device", "MapSpec", "as_spec", "extract_logits", "check_grad_mode",
    "TRANSFORMER_METHODS", "rollout", "legrad_relevance",
]
