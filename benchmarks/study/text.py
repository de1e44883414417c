"""How numbers and names are written: percentages, paired differences, file names."""

from __future__ import annotations

import re
from typing import Dict


def pct(x: float) -> str:
    """A share as a percentage with two decimals: ``pct(0.5) == "50.00"``."""
    return f"{100 * x:.2f}"


def pp(d: Dict[str, float]) -> str:
    """A paired difference (``mean``, ``ci95_low``, ``ci95_high``) in percentage points.

    Examples:
        >>> pp({"mean": 0.01, "ci95_low": -0.005, "ci95_high": 0.025})
        '+1.00 pp [-0.50, +2.50]'
    """
    return f"{100 * d['mean']:+.2f} pp [{100 * d['ci95_low']:+.2f}, {100 * d['ci95_high']:+.2f}]"


def slug(name: str) -> str:
    """``name`` as a file name: characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``.

    Examples:
        >>> slug("digits-cnn-p-mode=blend,weight=0.1")
        'digits-cnn-p-mode_blend_weight_0.1'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
