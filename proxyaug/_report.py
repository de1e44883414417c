"""RefreshReport: what one refresh did."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import torch

__all__ = ["RefreshReport", "agreed_layer"]


@dataclasses.dataclass(eq=False)
class RefreshReport:
    """What one [`refresh()`][proxyaug.refresh] did.

    Attributes:
        scanned: images whose predictions were checked.
        wrong: of those, predicted wrongly.
        chosen: images selected for a map by the ``select`` policy, at most ``budget``.
        written: maps written to the bank: ``chosen`` less ``skipped``.
        seconds: wall time of the whole refresh.
        scan_seconds: time of the scan (forward passes under ``no_grad``).
        attention_seconds: time spent computing maps.
        method: the CAM method used.
        layer: name(s) of the target layer(s) in ``model.named_modules()``, comma-separated; the
            same on every rank under ``torch.distributed``, also on a rank that computed no map.
        indices: sample indices (of the wrapped dataset) that received a map, sorted (CPU ``int64``).
        rows: the bank rows those maps went to (equal to ``indices`` unless ``proxies="append"``,
            see [`ProxyDataset.rows()`][proxyaug.ProxyDataset.rows]).
        resolution: ``(h, w)`` of the maps written, or ``None`` when none was.
        skipped: chosen images whose map was not finite (NaN or inf in the model's activations or
            gradients); they get no map, and a warning says so.
        source: ``"observed"`` when only indices recorded by ``observe`` were scanned, ``"indices"``
            when the caller gave them, ``"all"`` for a full scan.
        select: the selection policy.
        world_size: ranks that shared the work (1 without ``torch.distributed``).
        computed: maps this rank computed (its share of ``chosen``).
        budget: images the selection budget allowed: ``round(fraction * wrong)`` under the thesis
            rule (``budget=None``), else the share of ``scanned`` or the count given. ``chosen`` is
            below it when fewer images qualify (``select="wrong"`` maps wrong images only).
        budget_rule: the budget as given: ``"thesis"``, ``"share 0.05"`` or ``"count 256"``.
        dropped: maps that ``reset=True`` removed from the bank (samples that had one and got none).
        empty: maps written that are all zero: the method found no positive evidence for the class at
            the target layer (its ReLU removed every value), so they mark no pixel.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> import proxyaug as pa
        >>> _ = torch.manual_seed(0)
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
        >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(6, 1, 4, 4), torch.tensor([0, 1] * 3)))
        >>> report = pa.refresh(net, ds, fraction=1.0)
        >>> report.scanned, report.wrong == report.written, report.source
        (6, True, 'all')
    """

    scanned: int
    wrong: int
    chosen: int
    written: int
    seconds: float
    scan_seconds: float
    attention_seconds: float
    method: str
    layer: str
    indices: torch.Tensor
    source: str
    skipped: int = 0
    select: str = "wrong"
    world_size: int = 1
    computed: int = 0
    rows: Optional[torch.Tensor] = None
    resolution: Optional[Tuple[int, int]] = None
    budget: int = 0
    budget_rule: str = "thesis"
    dropped: int = 0
    empty: int = 0

    @property
    def images_per_s(self) -> float:
        """Scanned images per second over the whole refresh (a capture's report: over its commit alone, since its
        maps were computed in the training steps; its ``__str__`` says so instead)."""
        return self.scanned / self.seconds if self.seconds > 0 else float("inf")

    @property
    def maps_per_s(self) -> float:
        """Maps per second of the attention step."""
        return self.written / self.attention_seconds if self.attention_seconds > 0 else float("inf")

    def __str__(self) -> str:
        dropped = f"reset dropped {self.dropped} earlier map{'s' if self.dropped != 1 else ''}" if self.dropped else ""
        if self.wrong == 0 and self.chosen == 0:
            change = dropped or "the bank is unchanged"
            return f"refresh: no wrong predictions among {self.scanned} scanned images ({self.source}); {change} ({self.seconds:.2f} s)"
        size = f"{self.resolution[0]}x{self.resolution[1]} " if self.resolution else ""
        short = f" of a budget of {self.budget} ({self.budget_rule})" if self.chosen < self.budget else ""
        empty = f" ({self.empty} all zero: they mark nothing)" if self.empty else ""
        took = (f"committed in {self.seconds:.2f} s (the maps were computed in the steps: {self.attention_seconds:.2f} s)"
                if self.source == "capture" else f"in {self.seconds:.2f} s ({self.images_per_s:.0f} images/s)")
        return (
            f"refresh: scanned {self.scanned} ({self.source}), wrong {self.wrong}, chosen {self.chosen}{short}, "
            f"wrote {self.written} {size}{self.method} maps{empty} at {self.layer or '<root>'}{', ' + dropped if dropped else ''} {took}"
        )


def agreed_layer(shard: Any, name: str) -> str:
    """The target layer name(s) every rank reports: ``name``, or on a rank that resolved none (it computed
    no map, so ``name`` is empty) the name the other ranks resolved. A collective under a ``shard``
    (this rank's ``Shard`` of the process group); ``name`` itself without one.

    The ranks resolve the same layers of the same model, so the non-empty names agree; their bytes'
    element-wise maximum over the ranks is that name.

    Examples:
        >>> agreed_layer(None, "layer4")
        'layer4'
    """
    if shard is None:
        return name
    data = torch.tensor(list(name.encode()), dtype=torch.int32)
    size = int(shard.max(torch.tensor([data.numel()]))[0])
    padded = torch.zeros(size, dtype=torch.int32)
    padded[: data.numel()] = data
    return bytes(shard.max(padded).tolist()).decode()
