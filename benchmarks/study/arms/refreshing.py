"""What every arm that runs a refresh shares: Proxy Attention's settings, the refresh itself, and
the mask statistics (share of training images with a map, masked area) the controls match."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

import proxyaug as pa
from proxyaug import functional as F

from .base import Arm, Round

# Proxy Attention's settings; the thesis' defaults. Every refreshing arm takes them (the controls
# match the masks of the refresh they run); ``proxies`` is the proxy arm's, ``tries`` keepaugment's.
# ``budget``: None or "thesis" (round(fraction * wrong)), a float share of the scanned images or an
# int count, as refresh(budget=) takes it (a config file cannot write None: "thesis" says it).
PROXY_DEFAULTS: Dict[str, Any] = {
    "method": "gradcam++", "mode": F.DEFAULT_MODE, "threshold": F.DEFAULT_THRESHOLD, "weight": F.DEFAULT_WEIGHT, "fraction": 0.2,
    "select": "wrong", "budget": None, "proxies": "replace", "layer": None, "observe": False, "tries": 10,
}


def budget_of(settings: Dict[str, Any]) -> Any:
    """The arm's ``budget`` as ``refresh(budget=)`` takes it (``"thesis"`` is ``None``), checked.

    Examples:
        >>> budget_of({"budget": "thesis"}), budget_of({"budget": 0.05}), budget_of({})
        (None, 0.05, None)
    """
    value = settings.get("budget")
    return None if value == "thesis" else pa.selection.check_budget(value)


def selection_text(settings: Dict[str, Any]) -> str:
    """Which images get a map, in words, for the report.

    Examples:
        >>> selection_text({"fraction": 0.2, "select": "wrong"}), selection_text({"select": "loss", "budget": 0.05})
        ('20% of wrong', 'top 5% of scanned by loss')
    """
    s, budget = settings, budget_of(settings)
    how = {"wrong": "wrong", "random": "random"}.get(s.get("select", "wrong"))
    if budget is None:
        return f"{s.get('fraction'):.0%} of wrong" + ("" if how == "wrong" else f", {how or 'top by ' + s['select']}")
    size = f"{budget:.0%} of scanned" if isinstance(budget, float) else f"{budget} images"
    return {"wrong": f"up to {size}, wrong only", "random": f"{size} at random"}.get(s.get("select"), f"top {size} by {s.get('select')}")


def proxy_defaults(*extra: str) -> Dict[str, Any]:
    """Proxy Attention's settings with ``extra`` of the kind-specific ones, in a fixed order."""
    return {k: v for k, v in PROXY_DEFAULTS.items() if k not in ("proxies", "tries") or k in extra}


def matched(settings: Dict[str, Any]) -> str:
    """How a control is matched to the proxy masks, for the report."""
    return f"area and share matched to {settings.get('method')} masks"


class RefreshingArm(Arm):
    """An arm that runs ``pa.refresh(model, ds)`` at every refresh point and measures the maps it made:
    ``p`` (share of training images with a map) and ``area`` (mean share of an image's pixels
    above the threshold). ``observe = true`` records each batch's mistakes for the next refresh."""

    defaults = proxy_defaults()
    refreshes = True

    def __init__(self, spec: Dict[str, Any], context: Any) -> None:
        super().__init__(spec, context)
        self.budget = budget_of(spec)  # checked now, not at the first refresh
        self.p, self.area = 0.0, 0.0
        self.observing = bool(spec.get("observe", False))

    def observe(self, idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        if self.observing:
            self.ds.observe(idx, logits, y)

    def full_size(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, h, w)`` upsampled and normalised to the image size ``(B, H, W)``."""
        return pa.functional.upsample_maps(maps.float(), self.image_size)[:, 0]

    def refresh(self, model: nn.Module) -> Dict[str, Any]:
        """Run the refresh, update what the arm applies, and return the round's record."""
        s = self.spec
        report = pa.refresh(
            model, self.ds, spec=pa.MapSpec(s["method"], layer=s["layer"]), fraction=s["fraction"], select=s["select"],
            budget=self.budget, preprocess=self.context.preprocess, progress=False,
        )
        return self.record(report, report.seconds)

    def record(self, report: pa.RefreshReport, seconds: float) -> Dict[str, Any]:
        """After the bank was written: measure its maps (``p``, ``area``), tell the arm, and return
        the round's record of ``report`` (``seconds``: what the round cost)."""
        rows = self.ds.bank.present.nonzero().flatten()
        threshold = self.spec.get("threshold", F.DEFAULT_THRESHOLD)  # the map-guided arms have none: the thesis' for this statistic
        area = float((self.full_size(self.ds.bank.get(rows)[0]) > threshold).float().mean()) if rows.numel() else 0.0
        self.p, self.area = rows.numel() / self.context.n_train, area
        self.refreshed()
        return {
            "scanned": report.scanned, "wrong": report.wrong, "chosen": report.chosen, "budget": report.budget,
            "written": report.written, "maps": int(rows.numel()),
            "masked_area": area, "p": self.p, "seconds": seconds, "layer": report.layer,
            "new_rows": self.ds.rows(report.indices).tolist(),
        }

    def refreshed(self) -> None:
        """After each refresh, once ``p`` and ``area`` are measured: match what the arm applies."""

    def round(self, model: nn.Module, *, epoch: int, number: int) -> Round:
        rec = self.refresh(model)
        rec["epoch"] = epoch
        note = f" | refresh: {rec['wrong']} wrong, {rec['chosen']} chosen, {rec['written']} maps, {rec['maps']} in bank, area {rec['masked_area']:.3f}, p {rec['p']:.3f}"
        return Round(record=rec, note=note)

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "p": self.p, "area": self.area}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.p, self.area = state["p"], state["area"]
        super().load_state_dict(state)
