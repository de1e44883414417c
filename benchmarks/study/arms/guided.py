"""The map-guided transforms of ``proxyaug.guided`` in the study, fed by maps captured in the training
steps (no scan, no extra pass), beside their map-free versions on the same batch path:

- ``cutmix``: ``pa.SalientMix(box="random")`` on an empty bank, i.e. CutMix (a random box from the
  batch rolled by one, labels by area); ``salient-mix``: the same with the box (or cells) where the
  other image's map is salient (``box = "peak"``: SaliencyMix, ``"topk"``: Attentive CutMix) and
  labels by area or by map mass (``labels = "mass"``: SnapMix's weights);
- ``cutout-batch``: ``pa.KeepCutout`` on an empty bank, i.e. Cutout (a square hole of side ``size``,
  black); ``keep-cutout``: the same holes placed where the map is low (KeepAugment's selective cut).

The guided arms capture Grad-CAM of the loss in every step (``MapCapture``, ``select = "loss"``,
``budget = 1.0``: every sample seen gets a map at each commit) and commit after every unit of the
schedule, as ``in-step`` does. Their steps show mixed or cut images, so the maps are of what the
step showed (``views = "all"``). Before the first commit, and for a sample without a map, the rule
falls back to its map-free version. Draws come from the arm's own generator, so the arms of a seed
share the data order and initial weights.
"""

from __future__ import annotations

from typing import Any, ContextManager, Dict, Tuple, Union

import torch
from torch import nn

import proxyaug as pa

from .base import Arm, register
from .refreshing import RefreshingArm

CAPTURE = {"method": "gradcam", "select": "loss", "budget": 1.0, "fraction": 1.0, "layer": None, "views": "all"}


def _classes(arm: Arm) -> int:
    return int(arm.context.pool_labels.max()) + 1


def _mixed(arm: Arm, mix: pa.SalientMix, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    params = mix.forward_parameters(x.shape, generator=arm.gen, device=x.device)
    return mix.mix(x, y, idx, params=params)


def _cut(arm: Arm, cut: pa.KeepCutout, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return cut.replace(x, idx, params=cut.forward_parameters(x.shape, generator=arm.gen, device=x.device))


@register
class CutMixArm(Arm):
    kind = "cutmix"
    defaults = {"alpha": 1.0}

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return f"CutMix (random box, labels by area), alpha {settings.get('alpha')}"

    def attach(self, ds: pa.ProxyDataset) -> None:
        super().attach(ds)
        self.mix = pa.SalientMix(pa.MaskBank(len(ds.bank), device=ds.bank.device), _classes(self), box="random", alpha=self.spec["alpha"])

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        return _mixed(self, self.mix, x, y, idx)


class _Captured(RefreshingArm):
    """A map-guided arm: maps captured in every step (``MapCapture``), committed at each point of its schedule."""

    proxy_like = False

    def attach(self, ds: pa.ProxyDataset) -> None:
        super().attach(ds)
        s = self.spec
        self.capture = pa.MapCapture(ds, spec=pa.MapSpec(s["method"], layer=s["layer"]), fraction=s["fraction"], select=s["select"],
                                     budget=self.budget, views=s.get("views", "all"))  # "all" is not listed in the settings

    def step(self, model: nn.Module) -> ContextManager[Any]:
        return self.capture.step(model)

    def observe(self, idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.capture.observe(idx, logits, y)

    def refresh(self, model: nn.Module) -> Dict[str, Any]:
        """Commit what the steps staged, and return the round's record."""
        report = self.capture.commit()
        return self.record(report, report.seconds + report.attention_seconds)


@register
class SalientMixArm(_Captured):
    kind = "salient-mix"
    defaults = {**CAPTURE, "box": "peak", "labels": "area", "alpha": 1.0}

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        s = settings
        rule = {"peak": "box around the other image's map peak (SaliencyMix)", "topk": "the other image's top cells (Attentive CutMix)",
                "random": "random box"}.get(s.get("box"), s.get("box"))
        labels = "labels by map mass (SnapMix)" if s.get("labels") == "mass" else "labels by area"
        return f"{rule}, {labels}; in-step {s.get('method')} maps, alpha {s.get('alpha')}"

    def attach(self, ds: pa.ProxyDataset) -> None:
        super().attach(ds)
        s = self.spec
        self.mix = pa.SalientMix(ds.bank, _classes(self), box=s["box"], labels=s["labels"], alpha=s["alpha"])

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        return _mixed(self, self.mix, x, y, idx)


@register
class CutoutBatch(Arm):
    kind = "cutout-batch"
    defaults = {"size": 0.5, "tries": 10}

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return f"Cutout on the batch, a black square of side {settings.get('size')}"

    def attach(self, ds: pa.ProxyDataset) -> None:
        super().attach(ds)
        self.cut = pa.KeepCutout(pa.MaskBank(len(ds.bank), device=ds.bank.device), size=self.spec["size"], tries=self.spec["tries"])

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> torch.Tensor:
        return _cut(self, self.cut, x, idx)


@register
class KeepCutoutArm(_Captured):
    kind = "keep-cutout"
    defaults = {**CAPTURE, "size": 0.5, "tries": 10}

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return f"Cutout off the salient region (KeepAugment's selective cut), side {settings.get('size')}; in-step {settings.get('method')} maps"

    def attach(self, ds: pa.ProxyDataset) -> None:
        super().attach(ds)
        self.cut = pa.KeepCutout(ds.bank, size=self.spec["size"], tries=self.spec["tries"])

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> torch.Tensor:
        return _cut(self, self.cut, x, idx)
