"""``thesis-protocol``: no proxy, but the train / validation split is re-drawn from the pool at
every round (every refresh point of the schedule), as the thesis' code did. Its validation
accuracy is what the thesis reported; its test accuracy is the honest one."""

from __future__ import annotations

from typing import Any, Dict

from torch import nn

from ...data import split_fingerprint, split_pool
from ..text import pct, pp
from .base import Arm, Round, register


@register
class ThesisProtocol(Arm):
    kind = "thesis-protocol"
    resplits = True

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return "no proxy; train/val re-drawn every round"

    @classmethod
    def verdict_line(cls, name: str, entry: Dict[str, Any], versus_baseline: Dict[str, Any], baseline: Dict[str, Any]) -> str:
        """How much re-splitting inflates validation accuracy, against the baseline's fixed split."""
        leak = entry["val_acc"]["mean"] - entry["test_acc"]["mean"]
        honest = baseline["val_acc"]["mean"] - baseline["test_acc"]["mean"]
        c = versus_baseline
        return (
            f"- {name} (no proxy, train/val re-drawn every round): its validation accuracy, the number the thesis reported, is "
            f"{pct(entry['val_acc']['mean'])} %: validation minus test {100 * leak:+.2f} pp, against {100 * honest:+.2f} pp for the "
            f"baseline's fixed split, so re-splitting inflates validation by {100 * (leak - honest):+.2f} pp. "
            f"On test, against the baseline: {c['verdict']}, {pp(c)}."
        )

    def round(self, model: nn.Module, *, epoch: int, number: int) -> Round:
        """Round 0 is the study's split; each later round draws a new one from the pool."""
        c = self.context
        train_idx, val_idx = split_pool(c.pool_labels, c.val_fraction, seed=1_000_003 * (c.seed + 1) + number)
        return Round(note=f" | re-split: new train/val split {split_fingerprint(train_idx)}", split=(train_idx, val_idx))
