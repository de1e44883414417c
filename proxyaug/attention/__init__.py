"""The attention engine: native batched CAMs and target-layer detection."""

from .cam import METHODS, attention_maps, compute_cams
from .layers import find_target_layer, resolve_layer

__all__ = ["METHODS", "attention_maps", "compute_cams", "find_target_layer", "resolve_layer"]
