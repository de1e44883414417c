"""Transformer-native maps: attention rollout and LeGrad, batched, from a ViT's attention probabilities.

Both read the post-softmax attention probabilities ``A^l`` ``(B, heads, N, N)`` of the model's
blocks during one forward pass (hooks removed and the model restored in every case):

- **Attention rollout** (Abnar & Zuidema 2020, "Quantifying attention flow in transformers"):
  per block the heads' mean with the residual added, ``Â^l = (mean_h A^l + I) / 2`` (rows sum to
  one), multiplied through the blocks, ``R = Â^L ... Â^1``; the map is the class token's row of
  ``R`` over the patch tokens (the mean of the rows for a model without prefix tokens). It reads no
  gradient and no class: one map per image, whatever ``target`` says.
- **LeGrad** (Bousselham et al. 2024, "LeGrad: an explainability method for vision transformers
  via feature formation sensitivity"): per block ``l`` the class score ``s^l`` the model's head
  gives to that block's tokens (``head(fc_norm(norm(mean of the tokens)))``: the mean over tokens,
  as the official code and torchcam's ``LeGrad`` pool them), its gradient with respect to that
  block's own attention ``∂s^l / ∂A^l``, ReLU, averaged over heads and query tokens; the patch
  columns, averaged over the blocks. Each block's input is detached during the pass, so one
  backward gives every ``∂s^l / ∂A^l`` at once (the forward's values are unchanged).

Supported models: timm's ``VisionTransformer`` family (``blocks[i].attn`` with ``attn_drop``;
fused attention is switched off for the pass and restored) and torchvision's
``VisionTransformer`` (``encoder.layers[i].self_attention``, an ``nn.MultiheadAttention`` asked for
per-head weights for the pass). Maps are ``(B, gh, gw)`` on the patch grid (the input size over
the patch size), min-max normalised as every map in proxyaug.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..functional import gaussian_blur, normalize_maps, upsample_maps
from ._state import eval_mode, unwrap

__all__ = ["TRANSFORMER_METHODS", "transformer_maps", "rollout", "legrad_relevance"]

TRANSFORMER_METHODS: Tuple[str, ...] = ("rollout", "legrad")
"""Transformer-native methods by name (``MapSpec("rollout")``, ``MapSpec("legrad")``)."""


@dataclasses.dataclass
class _Parts:
    """What the maps need to know about a vision transformer."""

    names: List[str]  # the blocks' names in model.named_modules()
    blocks: List[nn.Module]
    prefix: int  # class / distillation / register tokens before the patches
    patch: Tuple[int, int]
    project: Callable[[torch.Tensor], torch.Tensor]  # tokens (B, N, C) -> logits (B, K), LeGrad's score
    kind: str  # "timm" or "torchvision"


def _pair(v: Any) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def transformer_parts(model: nn.Module) -> _Parts:
    """The blocks, prefix tokens, patch size and head of a timm or torchvision vision transformer.

    Raises:
        ValueError: a model of another kind, naming it and what is supported.
    """
    blocks, patch_embed = getattr(model, "blocks", None), getattr(model, "patch_embed", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) and patch_embed is not None \
            and all(hasattr(getattr(b, "attn", None), "attn_drop") for b in blocks):
        prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))
        norm, fc_norm = getattr(model, "norm", nn.Identity()), getattr(model, "fc_norm", nn.Identity())
        head = model.head
        path = next(n for n, m in model.named_modules() if m is blocks)
        return _Parts([f"{path}.{i}" for i in range(len(blocks))], list(blocks), prefix, _pair(patch_embed.patch_size),
                      lambda t: head(fc_norm(norm(t.mean(dim=1)))), "timm")
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if isinstance(layers, nn.Sequential) and len(layers) and hasattr(model, "class_token") and hasattr(model, "heads") \
            and all(isinstance(getattr(b, "self_attention", None), nn.MultiheadAttention) for b in layers):
        ln, heads = model.encoder.ln, model.heads
        return _Parts([f"encoder.layers.{n}" for n, _ in layers.named_children()], list(layers), 1, _pair(model.patch_size),
                      lambda t: heads(ln(t.mean(dim=1))), "torchvision")
    raise ValueError(
        f"the transformer-native methods (rollout, legrad) need a vision transformer whose attention they can read: timm's "
        f"VisionTransformer family (blocks[i].attn) or torchvision's VisionTransformer; got {type(model).__name__}. "
        "Use a CAM method (MapSpec('gradcam++')) for other models."
    )


def _select(parts: _Parts, layer: Any) -> List[int]:
    """The indices of the blocks ``layer`` names (``None``: every block), in the model's order."""
    if layer is None:
        return list(range(len(parts.blocks)))
    wanted = layer if isinstance(layer, (list, tuple)) else [layer]
    out = []
    for w in wanted:
        hit = [i for i, (n, b) in enumerate(zip(parts.names, parts.blocks)) if w is b or w == n]
        if not hit:
            shown = ", ".join(parts.names[:3] + (["...", parts.names[-1]] if len(parts.names) > 3 else []))
            raise ValueError(f"layer={w!r} is not a block of the transformer; the transformer-native methods take blocks ({shown}), or None for all.")
        out += hit
    return sorted(set(out))


class _Tap:
    """Forward hooks that hand each chosen block's attention probabilities to ``record``.

    ``grad=True``: each block's input is detached and gradient recording switched off at the block's
    start, and back on from its attention probabilities (made leaves), so a backward of any block's
    score reaches that block's attention alone.
    """

    def __init__(self, parts: _Parts, chosen: List[int], grad: bool) -> None:
        self.parts, self.chosen, self.grad = parts, chosen, grad
        self.attn: Dict[int, torch.Tensor] = {}
        self.tokens: Dict[int, torch.Tensor] = {}
        self.asked: Dict[int, Tuple[bool, bool]] = {}
        self.handles: List[Any] = []
        self.fused: List[Tuple[nn.Module, Any]] = []

    def __enter__(self) -> "_Tap":
        try:
            for i in self.chosen:
                block = self.parts.blocks[i]
                if self.grad:
                    self.handles.append(block.register_forward_pre_hook(self._cut))
                    self.handles.append(block.register_forward_hook(self._keep_tokens(i)))
                if self.parts.kind == "timm":
                    attn = block.attn
                    if hasattr(attn, "fused_attn"):
                        self.fused.append((attn, attn.fused_attn))
                        attn.fused_attn = False
                    self.handles.append(attn.attn_drop.register_forward_hook(self._probabilities(i)))
                else:
                    mha = block.self_attention
                    self.handles.append(mha.register_forward_pre_hook(self._ask_weights(i), with_kwargs=True))
                    self.handles.append(mha.register_forward_hook(self._mha_output(i), with_kwargs=True))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        for attn, flag in self.fused:
            attn.fused_attn = flag
        self.handles, self.fused = [], []

    def _leaf(self, i: int, probs: torch.Tensor) -> torch.Tensor:
        if not self.grad:
            self.attn[i] = probs.detach()
            return probs
        torch.set_grad_enabled(True)  # restored when the caller's no_grad block exits
        leaf = probs.detach().requires_grad_(True)
        self.attn[i] = leaf
        return leaf

    @staticmethod
    def _cut(module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        torch.set_grad_enabled(False)
        return (args[0].detach(),) + tuple(args[1:])

    def _keep_tokens(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.tokens[i] = output

        return hook

    def _probabilities(self, i: int) -> Callable[..., torch.Tensor]:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return self._leaf(i, output)

        return hook

    def _ask_weights(self, i: int) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
            if len(args) > 4:  # need_weights given by position
                raise ValueError("the transformer-native methods need nn.MultiheadAttention's need_weights passed by keyword.")
            self.asked[i] = (bool(kwargs.get("need_weights", True)), bool(kwargs.get("average_attn_weights", True)))
            return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

        return hook

    def _mha_output(self, i: int) -> Callable[..., Any]:
        def hook(module: nn.MultiheadAttention, args: Tuple[Any, ...], kwargs: Dict[str, Any], output: Any) -> Any:
            probs = self._leaf(i, output[1])
            need, average = self.asked[i]
            if not self.grad:
                out = output[0]
            else:  # the output again from the leaf, so that gradients reach it: softmax(QK^T) V W_o
                value = args[2] if len(args) > 2 else kwargs["value"]
                b, n, e = value.shape
                h = module.num_heads
                bias = None if module.in_proj_bias is None else module.in_proj_bias[2 * e:]
                v = nn.functional.linear(value, module.in_proj_weight[2 * e:], bias).view(b, n, h, e // h).transpose(1, 2)
                out = module.out_proj((probs @ v).transpose(1, 2).reshape(b, probs.shape[-2], e))
            weights = None if not need else (probs.mean(dim=1) if average else probs)
            return out, weights

        return hook


def rollout(attentions: Sequence[torch.Tensor], prefix: int) -> torch.Tensor:
    """Attention rollout of a stack of attention probabilities: the patch relevances ``(B, P)``.

    Args:
        attentions: per block, probabilities ``(B, heads, N, N)`` (rows sum to one), first block first.
        prefix: the number of prefix tokens (class, distillation, registers) before the ``P`` patches.

    Returns:
        Float32 ``(B, N - prefix)``: the class token's row of ``R`` over the patches (the mean row
        without prefix tokens), unnormalised.

    Examples:
        >>> a = torch.full((1, 2, 3, 3), 1 / 3)  # uniform attention: every patch the same
        >>> rollout([a, a], prefix=1)
        tensor([[0.2500, 0.2500]])
    """
    r = None
    for a in attentions:
        a = a.float().mean(dim=1)
        a = (a + torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        r = a if r is None else a @ r
    if r is None:
        raise ValueError("rollout needs the attention of at least one block; got none.")
    row = r[:, 0] if prefix > 0 else r.mean(dim=1)
    return row[:, prefix:]


def legrad_relevance(gradients: Sequence[torch.Tensor], prefix: int) -> torch.Tensor:
    """LeGrad's patch relevances ``(B, P)`` from each block's ``∂s^l / ∂A^l`` ``(B, heads, N, N)``:
    ReLU, mean over heads and query tokens, the patch columns, mean over blocks.

    Examples:
        >>> g = torch.zeros(1, 1, 3, 3); g[..., 2] = 1.0; g[..., 1] = -1.0  # the second patch gains, the first loses
        >>> legrad_relevance([g], prefix=1)
        tensor([[0., 1.]])
    """
    if not gradients:
        raise ValueError("LeGrad needs the gradient of at least one block; got none.")
    return torch.stack([g.float().clamp_min(0).mean(dim=(1, 2))[:, prefix:] for g in gradients]).mean(dim=0)


def transformer_maps(
    model: nn.Module,
    x: torch.Tensor,
    spec: Any,
    target: Any = None,
    *,
    size: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Maps of ``x`` by a transformer-native method (``spec.name`` in ``TRANSFORMER_METHODS``).

    ``spec.layer`` chooses the blocks (modules or names; ``None``: every block). The model runs in
    eval mode (each module's flag restored), fused attention is restored and the hooks removed in
    every case, no parameter gradient is written and no graph outlives the call.

    Returns:
        Float32 maps in [0, 1], ``(B, gh, gw)`` on the patch grid, or ``(B, H, W)`` with ``size``.
    """
    from .cam import _targets  # the CAMs' rule for target classes
    from .spec import extract_logits

    model = unwrap(model)
    parts = transformer_parts(model)
    chosen = _select(parts, spec.layer)
    gh, gw = x.shape[-2] // parts.patch[0], x.shape[-1] // parts.patch[1]
    grad = spec.name == "legrad"
    with _Tap(parts, chosen, grad) as tap, eval_mode(model), torch.no_grad():
        out = model(x)
    missing = [parts.names[i] for i in chosen if i not in tap.attn]
    if missing:
        raise ValueError(f"the blocks {missing} computed no attention probabilities in the forward pass; expected every chosen block to run.")
    n = next(iter(tap.attn.values())).shape[-1]
    if n - parts.prefix != gh * gw:
        raise ValueError(f"the model has {n} tokens with {parts.prefix} prefix token(s), but a {tuple(x.shape[-2:])} input with "
                         f"{parts.patch} patches gives a {gh}x{gw} grid; expected {parts.prefix + gh * gw} tokens.")
    if not grad:
        relevance = rollout([tap.attn[i] for i in chosen], parts.prefix)
    else:
        cls = _targets(target, extract_logits(out, spec.logits).detach())
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            score = sum(parts.project(tap.tokens[i]).float().gather(1, cls.view(-1, 1)).sum() for i in chosen)
            grads = torch.autograd.grad(score, [tap.attn[i] for i in chosen], allow_unused=True)
        if any(g is None for g in grads):
            raise ValueError("a block's score does not depend on its attention; expected a standard ViT block (attention, then MLP).")
        relevance = legrad_relevance(grads, parts.prefix)
    maps = relevance.reshape(-1, gh, gw)
    if spec.smooth_sigma is not None:
        maps = gaussian_blur(maps[:, None], spec.smooth_sigma)[:, 0]
    maps = normalize_maps(maps)
    return maps if size is None else upsample_maps(maps, size)[:, 0]
