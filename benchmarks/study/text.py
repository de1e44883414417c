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


def duration(seconds: float) -> str:
    """Seconds as a person reads them.

    Examples:
        >>> duration(42), duration(754), duration(7380)
        ('42 s', '13 min', '2 h 03 min')
    """
    if seconds < 60:
        return f"{seconds:.0f} s"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def progress(elapsed: float, times: "list[float]", left: int) -> str:
    """The log's progress note: time elapsed and, once this process finished a run, the time the
    ``left`` runs would take at its mean pace (processes side by side share them, so less).

    Examples:
        >>> progress(30, [], 4)
        '30 s elapsed'
        >>> progress(600, [300.0, 300.0], 3)
        '10 min elapsed, about 15 min left at this pace'
    """
    note = f"{duration(elapsed)} elapsed"
    if times and left:
        note += f", about {duration(sum(times) / len(times) * left)} left at this pace"
    return note
