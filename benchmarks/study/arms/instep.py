"""``in-step``: Proxy Attention with maps captured from the training steps themselves.

The same proxy transform as ``proxy``; its maps come from [`proxyaug.MapCapture`][proxyaug.MapCapture]
instead of a refresh: every training step's forward and backward also record the target layer's
activations and the loss gradient there, the maps of the step's samples are staged, and at each
point of the arm's schedule (``schedule = "p,p,...,1"``: after every epoch) the staged samples are
chosen among with the same policy (``fraction``, ``select``, ``budget``) and written in one step.
No scan, no extra forward or backward: ``seconds`` in a round is the capture's own cost.
``views`` is the capture's (``"canonical"``, proxyaug 0.2's default: a sample shown as its proxy
keeps the map of its canonical image; ``"all"``: 0.1's maps of whatever the step showed).
"""

from __future__ import annotations

from typing import Any, ContextManager, Dict

import torch
from torch import nn

import proxyaug as pa

from .base import register
from .proxy import Proxy
from .refreshing import proxy_defaults, selection_text


@register
class InStep(Proxy):
    kind = "in-step"
    defaults = {**proxy_defaults("proxies"), "method": "gradcam", "views": "canonical"}  # the formula: Grad-CAM of the loss

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        s = settings
        how = f"weight {s.get('weight')}" if s.get("mode") == "blend" else ""
        views = "" if s.get("views") == "canonical" else " (maps of what the step showed, as in 0.1)"
        return f"{s.get('mode')}{' ' + how if how else ''}, threshold {s.get('threshold')}; in-step {s.get('method')} of the loss{views} on {selection_text(s)}"

    def attach(self, ds: pa.ProxyDataset) -> None:
        super().attach(ds)
        s = self.spec
        self.capture = pa.MapCapture(
            ds, spec=pa.MapSpec(s["method"], layer=s["layer"]), fraction=s["fraction"], select=s["select"], budget=self.budget,
            views=s.get("views", "all"),  # "all" is not listed in the settings (config.arm_settings)
        )

    def step(self, model: nn.Module) -> ContextManager[Any]:
        return self.capture.step(model)

    def observe(self, idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.capture.observe(idx, logits, y)  # records the batch's mistakes in the dataset too

    def refresh(self, model: nn.Module) -> Dict[str, Any]:
        """Commit what the epoch's steps staged, and return the round's record."""
        report = self.capture.commit()
        return self.record(report, report.seconds + report.attention_seconds)
