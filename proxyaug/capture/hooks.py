"""What the hooks of one captured step record, and what it means when they recorded nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from ..attention.layers import TargetLayer

__all__ = ["Step", "eager", "pre_hook", "layer_hook", "recorded"]


@dataclasses.dataclass
class Step:
    """What one step recorded; dropped when the step ends."""

    size: Optional[Tuple[int, int]] = None  # the model's input (H, W)
    acts: Dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    grads: Dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    handles: List[Any] = dataclasses.field(default_factory=list)
    rows: Optional[torch.Tensor] = None
    wrong: Optional[torch.Tensor] = None
    score: Optional[torch.Tensor] = None
    canonical: Optional[torch.Tensor] = None  # (B,) bool: the step's image was the canonical one
    resolving: bool = False
    discarded: bool = False
    without_grad: bool = False  # a target layer ran under no_grad / inference_mode
    example: Optional[torch.Tensor] = None  # the step's first image, for naming a finer layer (first step only)


@contextlib.contextmanager
def eager(model: nn.Module) -> Iterator[None]:
    """A context in which a compiled ``model`` (or the compiled module DDP / DataParallel wrap) runs
    eagerly, since its graph would skip hooks added after compiling: ``torch.compiler.set_stance("force_eager")``
    from torch 2.6; before it, the compiled module's ``forward`` points at the original module's for the
    step (restored afterwards, also on an error)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    if not hasattr(model, "_orig_mod"):
        yield
        return
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is not None:
        with set_stance("force_eager"):
            yield
        return
    had, saved = "forward" in model.__dict__, model.__dict__.get("forward")
    model.forward = model._orig_mod.__call__
    try:
        yield
    finally:
        if had:
            model.forward = saved
        else:
            del model.forward


def pre_hook(st: Step, resolve: Optional[Callable[[torch.Tensor], None]], keep_example: bool = False) -> Any:
    """The forward pre-hook on the model: the input's ``(H, W)``, with ``keep_example`` a copy of its first
    image, and with ``resolve`` (``layer=None``) the target layer found on the step's first input."""

    def hook(module: nn.Module, inputs: Any) -> None:
        if st.resolving or st.size is not None:
            return
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        st.size = tuple(x.shape[-2:]) if x is not None and x.ndim >= 2 else (0, 0)
        if keep_example and x is not None and x.ndim == 4:
            st.example = x[:1].detach().clone()
        if resolve is not None:
            if x is None:
                raise ValueError("MapSpec(layer=None) needs the model's first positional input to be the image batch; pass MapSpec(layer=...).")
            st.resolving = True  # the search's own forward is not the step's
            try:
                resolve(x.detach())
            finally:
                st.resolving = False

    return hook


def layer_hook(i: int, name: str, st: Step) -> Any:
    """The forward hook on target layer ``i``: a copy of its output ``A`` and a read-only hook for ``dL/dA``.

    Only the layer's first call in the step is read (a block the forward calls twice: the first
    call, as a refresh and pytorch-grad-cam read it); its gradient is the total ``dL/dA`` of that
    output, through the later calls too.
    """

    def on_grad(grad: torch.Tensor) -> None:
        st.grads[i] = grad  # read only: the gradient flows on unchanged

    def hook(module: nn.Module, inputs: Any, output: Any) -> Optional[torch.Tensor]:
        if st.resolving or i in st.acts:  # the first call of the layer in the step only
            return None
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"the target layer {name!r} ({type(module).__name__}) returned a {type(output).__name__}; expected a tensor.")
        replaced = None
        if not output.requires_grad:
            if not torch.is_grad_enabled():
                st.without_grad = True  # a forward under no_grad (an evaluation inside the step): nothing to read
                return None
            # the layer and everything before it are frozen: no gradient would stop here. A leaf that
            # requires it does (its clone goes on, so in-place ops downstream stay legal); the values,
            # and every parameter's gradient, are unchanged.
            output = output.detach().requires_grad_(True)
            replaced = output.clone()
        st.acts[i] = output.detach().clone()  # a copy: in-place ops after the layer must not change it
        st.handles.append(output.register_hook(on_grad))
        return replaced

    return hook


def recorded(st: Step, layers: List[TargetLayer]) -> bool:
    """Whether the step recorded what its maps need; a step that recorded nothing warns (and says why)
    when it observed a batch, and a step that recorded only part of it raises.
    """
    if not st.acts:
        if st.rows is not None and st.size is None and not layers:
            warnings.warn(
                "capture: MapSpec(layer=None) finds the target layer on the first call of the module given to "
                "capture.step(model), but its forward never ran in this step (a step that calls a submodule, as a "
                "LightningModule's training_step calling self.net(x) does); nothing was captured. Call the module "
                "itself in the step, pass the one you call (capture.step(self.net)), or name the layer: "
                "MapSpec(layer='net.features.3').",
                RuntimeWarning,
                stacklevel=5,
            )
        elif st.rows is not None and st.without_grad:
            warnings.warn(
                "capture: the model's forward ran under torch.no_grad() or torch.inference_mode() in this step, so the "
                "target layer's output had no gradient and nothing was captured. Run the training forward with "
                "gradients enabled inside capture.step() (an evaluation under no_grad there is fine: it is ignored).",
                RuntimeWarning,
                stacklevel=5,
            )
        elif st.rows is not None:
            warnings.warn(
                "capture: the target layer did not run under the capture's hook in this step (a graph compiled "
                "before the hooks existed skips them: a torch.compile'd function, which capture cannot run eagerly); "
                "nothing was captured. Compile the module (torch.compile(model)) and call that in the step, or "
                "capture without compiling.",
                RuntimeWarning,
                stacklevel=5,
            )
        return False
    if st.rows is None:
        raise RuntimeError("the step ran the model but never called capture.observe(idx, logits, labels); call it inside the step.")
    if len(st.acts) != len(layers):
        absent = [t.name for i, t in enumerate(layers) if i not in st.acts]
        raise ValueError(f"the target layer(s) {absent} were not called in the forward pass; pass MapSpec(layer=...) modules the model uses.")
    missing = [layers[i].name for i in st.acts if i not in st.grads]
    if missing:
        raise RuntimeError(
            f"no gradient reached the target layer(s) {missing} in this step; call loss.backward() inside the "
            "capture.step() block (the optimizer may step after it)."
        )
    return True

