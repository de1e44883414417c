"""``none``: plain training, the baseline every arm is compared with."""

from __future__ import annotations

from typing import Any, Dict

from .base import Arm, register


@register
class Baseline(Arm):
    kind = "none"

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return "no proxy"
