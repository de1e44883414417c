"""``proxy``: Proxy Attention.

On the schedule, ``refresh`` maps the wrongly predicted training images (``method``,
``fraction``, ``select``, ``budget``: a share of the scanned images or a count instead of the
thesis rule's share of the wrong ones, so that a ranking policy keeps mapping once the model
fits its training set) and ``ProxyTransform`` replaces their pixels (``mode``, ``threshold``,
``weight``). ``proxies = "append"`` adds the proxy images as extra samples instead
(``ProxyDataset(proxies="append")``); the sampler still draws the same number of images per
epoch. ``observe = true`` records the training batches' mistakes (``ProxyDataset.observe``) so
that each refresh scans only those.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn
from torch.utils.data import Subset

import proxyaug as pa

from .base import register
from .refreshing import RefreshingArm, proxy_defaults, selection_text


@register
class Proxy(RefreshingArm):
    kind = "proxy"
    defaults = proxy_defaults("proxies")
    proxy_like = True
    grid_titles = ("original", "map", "proxy")

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        s = settings
        extra = "; as extra samples" if s.get("proxies") == "append" else ""
        if s.get("mode") == "blend" and s.get("weight") == 0:
            return f"unchanged copies of the images {s.get('method')} maps would mark{extra}"
        how = f"weight {s.get('weight')}" if s.get("mode") == "blend" else ""
        return f"{s.get('mode')}{' ' + how if how else ''}, threshold {s.get('threshold')}; {s.get('method')} on {selection_text(s)}{extra}"

    def make_dataset(self, indices: torch.Tensor) -> pa.ProxyDataset:
        return pa.ProxyDataset(Subset(self.context.pool, indices.tolist()), device=self.context.device, proxies=self.spec["proxies"])

    def attach(self, ds: pa.ProxyDataset) -> None:
        super().attach(ds)
        s = self.spec
        self.transform = pa.ProxyTransform(ds.bank, mode=s["mode"], threshold=s["threshold"], weight=s["weight"])

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> torch.Tensor:
        return self.transform.replace(x, idx)

    def pictures(self, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = self.ds.bank.device
        x = self.originals(rows)[0].to(device)
        maps, _ = self.ds.bank.get(rows)
        out = self.transform.replace(x, rows, params={"apply": torch.ones(len(rows), dtype=torch.bool, device=device)})
        return x.cpu(), maps.float().cpu(), out.cpu()
