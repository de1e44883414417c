"""The learning-curve study's statistics (RQ3): accuracy per size and budget, paired differences
corrected for the number of sizes, steps to target with censoring, the area under the
accuracy-vs-steps curve, the exchange rate (how much more data the baseline needs), the size x arm
interaction, per-class differences, and the power of the seeds run (the smallest detectable effect)
and the seeds a target effect needs.

Every comparison pairs the runs of one seed (same subset, initial weights and data order).
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .arms import arm_kind
from .stats import describe, paired

__all__ = ["steps_to_target", "area_under", "fit_curve", "exchange_rate", "detectable", "seeds_for", "paired_adjusted",
           "interaction", "curve_summary", "TARGETS"]

TARGETS = (0.95, 0.99)  # steps to these shares of the baseline's final accuracy at the same size and budget


def steps_to_target(steps: Sequence[int], accs: Sequence[float], target: float) -> Optional[int]:
    """The first evaluated step at which ``accs`` reaches ``target``; ``None`` (censored) when never.

    Examples:
        >>> steps_to_target([100, 200, 300], [0.5, 0.8, 0.9], 0.8), steps_to_target([100, 200], [0.5, 0.6], 0.8)
        (200, None)
    """
    return next((s for s, a in zip(steps, accs) if a >= target), None)


def area_under(steps: Sequence[int], accs: Sequence[float]) -> float:
    """The mean accuracy over training: the trapezoid area under accuracy vs steps, from the first
    to the last evaluation, divided by that span (one evaluation: its accuracy).

    Examples:
        >>> area_under([0, 10, 20], [0.0, 1.0, 1.0])
        0.75
    """
    if len(steps) == 1:
        return float(accs[0])
    area = sum((s1 - s0) * (a0 + a1) / 2 for s0, s1, a0, a1 in zip(steps, steps[1:], accs, accs[1:]))
    return area / (steps[-1] - steps[0])


def fit_curve(sizes: Sequence[int], accs: Sequence[float]) -> Tuple[float, float, float]:
    """``(a, b, c)`` of the power law ``error(n) = a * n ** -b + c`` fitted to accuracies ``accs``
    at ``sizes`` (least squares in error; ``a, b > 0``, ``0 <= c < min error``).

    Examples:
        >>> a, b, c = fit_curve([100, 1000, 10000, 100000], [1 - (2 * n ** -0.5 + 0.05) for n in (100, 1000, 10000, 100000)])
        >>> round(a, 2), round(b, 2), round(c, 3)
        (2.0, 0.5, 0.05)
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    n, err = [float(v) for v in sizes], [1.0 - float(v) for v in accs]
    if len(n) < 3:
        raise ValueError(f"fit_curve needs 3 or more sizes; got {len(n)}.")
    law = lambda x, a, b, c: a * x ** -b + c  # noqa: E731  (x: the array scipy passes)
    top = min(err) * (1 - 1e-9)
    with warnings.catch_warnings():  # an exact fit has no covariance estimate: the parameters are what is used
        warnings.simplefilter("ignore", OptimizeWarning)
        (a, b, c), _ = curve_fit(law, n, err, p0=(max(err) * min(n) ** 0.5, 0.5, top / 2),
                                 bounds=([1e-12, 1e-6, 0.0], [math.inf, 5.0, max(top, 1e-12)]), maxfev=20000)
    return float(a), float(b), float(c)


def exchange_rate(fit: Tuple[float, float, float], size: int, acc: float) -> float:
    """How many times ``size`` images the fitted baseline needs to reach ``acc``: ``n' / size`` with
    ``error(n') = 1 - acc``; ``inf`` when ``acc`` is beyond the fit's asymptote.

    Examples:
        >>> round(exchange_rate((2.0, 0.5, 0.05), 1000, 1 - (2 * 2000 ** -0.5 + 0.05)), 6)
        2.0
    """
    a, b, c = fit
    gap = (1.0 - acc) - c
    return math.inf if gap <= 0 else (a / gap) ** (1.0 / b) / size


def _t(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def detectable(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true paired difference that ``n`` seeds detect with ``power`` (two-sided
    ``alpha``), for a paired spread ``sd``: ``(t(1 - alpha/2) + t(power)) * sd / sqrt(n)``, df ``n - 1``.

    Examples:
        >>> round(detectable(0.01, 10), 4)
        0.0099
    """
    if n < 2:
        return math.inf
    return (_t(1 - alpha / 2, n - 1) + _t(power, n - 1)) * sd / math.sqrt(n)


def seeds_for(sd: float, delta: float, alpha: float = 0.05, power: float = 0.8, most: int = 10_000) -> int:
    """The fewest paired seeds that detect a true difference ``delta`` with ``power``, for a paired spread ``sd``.

    Examples:
        >>> seeds_for(0.01, 0.0099), seeds_for(0.0, 0.01)
        (11, 2)
    """
    return next((n for n in range(2, most + 1) if detectable(sd, n, alpha, power) <= delta), most)


def paired_adjusted(a: List[float], b: List[float], comparisons: int) -> Dict[str, float]:
    """:func:`~benchmarks.study.stats.paired` with the interval widened for ``comparisons``
    intervals (Bonferroni: each at ``1 - 0.05 / comparisons``), as ``adj_low`` / ``adj_high``."""
    d = paired(a, b)
    n = d["n"]
    if n < 2:
        return {**d, "adj_low": math.nan, "adj_high": math.nan, "sd": math.nan}
    sd = statistics.stdev(x - y for x, y in zip(a, b))
    half = _t(1 - 0.025 / comparisons, n - 1) * sd / math.sqrt(n)
    return {**d, "adj_low": d["mean"] - half, "adj_high": d["mean"] + half, "sd": sd}


def interaction(by_seed: Dict[int, Dict[int, float]]) -> Dict[str, float]:
    """Does the gap change with the size? Per seed, the least-squares slope of its paired
    differences on ``log2(size)`` (``by_seed[seed][size]``); the mean slope over seeds with a 95 %
    t-interval (pp per doubling of the data when differences are in accuracy). A negative slope:
    the gap grows as data shrink.

    Examples:
        >>> d = interaction({0: {100: 0.03, 200: 0.02, 400: 0.01}, 1: {100: 0.04, 200: 0.03, 400: 0.02}})
        >>> round(d["mean"], 3), d["n"]
        (-0.01, 2)
    """
    slopes = []
    for diffs in by_seed.values():
        if len(diffs) >= 2:
            x = [math.log2(s) for s in diffs]
            y = list(diffs.values())
            mx, my = statistics.fmean(x), statistics.fmean(y)
            slopes.append(sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x))
    n = len(slopes)
    if n < 2:
        return {"n": n, "mean": slopes[0] if slopes else math.nan, "ci95_low": math.nan, "ci95_high": math.nan}
    mean, half = statistics.fmean(slopes), _t(0.975, n - 1) * statistics.stdev(slopes) / math.sqrt(n)
    return {"n": n, "mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def _pairs(study: Any, arms: List[str], kinds: Dict[str, str]) -> List[Tuple[str, str]]:
    """Which arms are compared: each with the baseline, each Proxy Attention arm with each control,
    and the pairs the config names (an arm's ``compare``, e.g. a map-guided rule and its map-free version)."""
    out = [(a, "baseline") for a in arms if a != "baseline"]
    controls = [c for c in arms if arm_kind(kinds[c]).control]
    out += [(a, c) for a in arms if arm_kind(kinds[a]).proxy_like for c in controls]
    named = {a["name"]: a.get("compare") or [] for a in study.arms}
    out += [(a, c) for a in arms for c in named.get(a, []) if c in arms and c != a]
    return list(dict.fromkeys(out))


def _effect(size: int, small: int) -> float:
    """The effect that matters at ``size`` (issue 24): 1 pp up to ``small`` images, 0.5 pp above."""
    return 0.01 if size <= small else 0.005


def curve_summary(records: List[Dict[str, Any]], study: Any, small: int = 6000) -> Dict[str, Any]:
    """Per (dataset, model, budget): every size's arms and comparisons, steps to target, the
    exchange rates and the interaction. ``small``: up to this size the effect that matters is 1 pp."""
    out: Dict[str, Any] = {}
    groups = sorted({(r["dataset"], r["model"], r["steps"]) for r in records}, key=lambda g: (g[0], g[1], -g[2]))
    for d, m, budget in groups:
        rs = [r for r in records if (r["dataset"], r["model"], r["steps"]) == (d, m, budget)]
        out[f"{d} / {m} / {budget} steps"] = _group(rs, study, budget, small)
    return out


def _size_entry(by: Dict[Tuple[int, str, int], Dict[str, Any]], n: int, arms: List[str]) -> Dict[str, Any]:
    """One size's arms (accuracies, area under the curve, masked area) and steps to each target."""
    entry: Dict[str, Any] = {"arms": {}, "targets": {}}
    for a in arms:
        runs = [r for (n2, a2, _), r in sorted(by.items()) if (n2, a2) == (n, a)]
        if runs:
            entry["arms"][a] = {"test_acc": describe([r["test_acc"] for r in runs]), "val_acc": describe([r["val_acc"] for r in runs]),
                                "auc": describe([area_under(r["eval_steps"], r["test_acc_curve"]) for r in runs]),
                                "masked_area": describe([r["masked_area_mean"] for r in runs]), "train_size": runs[0]["train_size"],
                                "val_size": runs[0]["val_size"], "lr": runs[0]["lr"], "weight_decay": runs[0]["weight_decay"]}
    base = entry["arms"].get("baseline")
    if base:
        for q in TARGETS:
            target = q * base["test_acc"]["mean"]
            reached = {a: [steps_to_target(r["eval_steps"], r["test_acc_curve"], target)
                           for (n2, a2, _), r in sorted(by.items()) if (n2, a2) == (n, a)] for a in entry["arms"]}
            entry["targets"][str(q)] = {"target": target, "steps": reached}
    return entry


def _compare(by: Dict[Tuple[int, str, int], Dict[str, Any]], a: str, b: str, n: int, sizes: List[int], small: int) -> Optional[Dict[str, Any]]:
    """Arm ``a`` against arm ``b`` at size ``n``, paired by seed: accuracy (Bonferroni over the
    sizes), area under the curve, per-class differences, the detectable effect and the seeds needed."""
    common = sorted({s for (n2, a2, s) in by if (n2, a2) == (n, a)} & {s for (n2, a2, s) in by if (n2, a2) == (n, b)})
    if not common:
        return None
    ra, rb = [by[(n, a, s)] for s in common], [by[(n, b, s)] for s in common]
    acc = paired_adjusted([r["test_acc"] for r in ra], [r["test_acc"] for r in rb], len(sizes))
    auc = paired([area_under(r["eval_steps"], r["test_acc_curve"]) for r in ra], [area_under(r["eval_steps"], r["test_acc_curve"]) for r in rb])
    diffs = [[x - y for x, y in zip(p["test_per_class"], q["test_per_class"])] for p, q in zip(ra, rb) if p.get("test_per_class") and q.get("test_per_class")]
    per_class = [statistics.fmean(col) for col in zip(*diffs)] if len(diffs) == len(common) else []
    effect, alpha = _effect(n, small), 0.05 / len(sizes)
    return {"arm": a, "versus": b, "size": n, **acc, "verdict": _verdict(acc), "auc": auc, "per_class": per_class, "effect": effect,
            "detectable": detectable(acc["sd"], acc["n"], alpha) if acc["n"] >= 2 else math.inf,
            "seeds_needed": seeds_for(acc["sd"], effect, alpha) if acc["n"] >= 2 else None}


def _group(rs: List[Dict[str, Any]], study: Any, budget: int, small: int) -> Dict[str, Any]:
    sizes = sorted({r["subset_size"] for r in rs})
    arms = list(dict.fromkeys(r["arm"] for r in rs))
    kinds = {r["arm"]: r["kind"] for r in rs}
    by = {(r["subset_size"], r["arm"], r["seed"]): r for r in rs}
    g: Dict[str, Any] = {"steps": budget, "sizes": sizes, "arms": arms, "kinds": kinds, "comparisons": [], "interaction": [],
                         "per_size": {n: _size_entry(by, n, arms) for n in sizes}}
    for a, b in _pairs(study, arms, kinds):
        g["comparisons"] += [c for c in (_compare(by, a, b, n, sizes, small) for n in sizes) if c is not None]
        diffs = {s: {n: by[(n, a, s)]["test_acc"] - by[(n, b, s)]["test_acc"] for n in sizes if (n, a, s) in by and (n, b, s) in by}
                 for s in sorted({s for (_, _, s) in by})}
        g["interaction"].append({"arm": a, "versus": b, **interaction(diffs)})
    g["exchange"] = _exchange(g, sizes)
    return g


def _verdict(d: Dict[str, float]) -> str:
    if d["n"] < 3 or math.isnan(d["adj_low"]):
        return "too few seeds to tell"
    return "better" if d["adj_low"] > 0 else "worse" if d["adj_high"] < 0 else "no detectable difference"


def _exchange(g: Dict[str, Any], sizes: List[int]) -> Dict[str, Any]:
    """The baseline's fitted curve and, per arm and size, the exchange rate of its mean accuracy
    against the baseline's at the same size: ``n'(arm) / n'(baseline)``, both read off the fit, so
    the fit's residual at that size cancels (the baseline is 1 by construction)."""
    base = [(n, g["per_size"][n]["arms"]["baseline"]["test_acc"]["mean"]) for n in sizes if "baseline" in g["per_size"][n]["arms"]]
    if len(base) < 3:
        return {}
    try:
        fit = fit_curve([n for n, _ in base], [a for _, a in base])
    except (RuntimeError, ValueError) as e:  # no power law fits: say so instead of a number
        return {"error": str(e)}
    own = {n: exchange_rate(fit, n, acc) for n, acc in base}
    rates = {a: {n: exchange_rate(fit, n, g["per_size"][n]["arms"][a]["test_acc"]["mean"]) / own[n]
                 for n in sizes if a in g["per_size"][n]["arms"] and n in own} for a in g["arms"]}
    residual = max(abs((1 - acc) - (fit[0] * n ** -fit[1] + fit[2])) for n, acc in base)
    monotone = all(x[1] <= y[1] for x, y in zip(base, base[1:]))
    return {"fit": fit, "rates": rates, "residual": residual, "monotone": monotone}
