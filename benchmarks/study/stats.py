"""The study's statistics: per-arm descriptions and paired differences with 95 % t-intervals.

Which arms are compared with which is the arm kinds' answer: every arm with the baseline, every
Proxy Attention arm (``proxy_like``) with every ``control``, and each arm with its ``compare`` list.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List, Optional

from .arms import arm_kind


def describe(values: List[float]) -> Dict[str, float]:
    """Count, mean, sample standard deviation, min and max.

    Examples:
        >>> describe([1.0, 3.0])["std"] == 2 ** 0.5
        True
    """
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values), "std": statistics.stdev(values) if n > 1 else 0.0, "min": min(values), "max": max(values)}


def paired(a: List[float], b: List[float]) -> Dict[str, float]:
    """Mean of ``a[i] - b[i]`` with a two-sided 95 % t-interval (the seeds are the pairs), and
    ``sd``, the spread of the differences (what plans the seeds: the report's power table).

    Examples:
        >>> d = paired([0.9, 0.8, 0.85], [0.8, 0.8, 0.8])
        >>> round(d["mean"], 3), d["ci95_low"] < d["mean"] < d["ci95_high"], round(d["sd"], 3)
        (0.05, True, 0.05)
    """
    diffs = [x - y for x, y in zip(a, b)]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return {"n": n, "mean": mean, "ci95_low": float("nan"), "ci95_high": float("nan"), "sd": float("nan")}
    from scipy.stats import t

    sd = statistics.stdev(diffs)
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "sd": sd}


def verdict(d: Dict[str, float], above: str = "better", below: str = "worse") -> str:
    """``above`` / ``below`` (``better`` / ``worse``) when the 95 % interval lies above / below 0
    (three or more pairs), else ``no detectable difference``."""
    if d["n"] < 3 or math.isnan(d["ci95_low"]):
        return "too few seeds to tell"
    if d["ci95_low"] > 0:
        return above
    if d["ci95_high"] < 0:
        return below
    return "no detectable difference"


def _entry(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "kind": runs[0]["kind"], "test_acc": describe([r["test_acc"] for r in runs]),
        "val_acc": describe([r["val_acc"] for r in runs]), "wall_s": describe([r["wall_s"] for r in runs]),
        "masked_area": describe([r["masked_area_mean"] for r in runs]), "maps_final": describe([r["maps_final"] for r in runs]),
        "settings": runs[0]["settings"],
    }


def _group(rs: List[Dict[str, Any]], baseline: str, compare_with: Dict[str, List[str]]) -> Dict[str, Any]:
    arms = list(dict.fromkeys(r["arm"] for r in rs))
    by = {a: {r["seed"]: r for r in rs if r["arm"] == a} for a in arms}
    group: Dict[str, Any] = {"arms": {a: _entry([by[a][s] for s in sorted(by[a])]) for a in arms}, "comparisons": []}
    kinds = {a: arm_kind(group["arms"][a]["kind"]) for a in arms}

    done = set()

    def compare(a: str, b: str) -> None:  # each pair once, also when ``compare`` names a control
        seeds = sorted(set(by[a]) & set(by[b]))
        if seeds and (a, b) not in done:
            done.add((a, b))
            d = paired([by[a][s]["test_acc"] for s in seeds], [by[b][s]["test_acc"] for s in seeds])
            group["comparisons"].append({"arm": a, "versus": b, **d, "verdict": verdict(d)})

    if baseline in by:
        for a in arms:
            if a != baseline:
                compare(a, baseline)
    controls = [a for a in arms if kinds[a].control]
    for a in arms:
        if kinds[a].proxy_like:
            for c in controls:
                compare(a, c)
    for a in arms:
        for other in compare_with.get(a, []):
            if other in by:
                compare(a, other)
    return group


def summarize(records: List[Dict[str, Any]], baseline: str = "baseline", compare_with: Optional[Dict[str, List[str]]] = None) -> Dict[str, Any]:
    """Per (dataset, model): each arm's accuracy and its paired difference to ``baseline``, to
    the controls (for Proxy Attention arms) and to the arms in ``compare_with[arm]``."""
    groups: Dict[str, Any] = {}
    for dname, mname in dict.fromkeys((r["dataset"], r["model"]) for r in records):
        rs = [r for r in records if (r["dataset"], r["model"]) == (dname, mname)]
        groups[f"{dname} / {mname}"] = _group(rs, baseline, compare_with or {})
    return groups
