"""RQ2's statistics (issue 25): does a CNN arm attend and fail like the ViT, and does Proxy
Attention move it there?

From the runs' measurements (``benchmarks.study.compare``), per dataset and CNN model, seed ``s``
of every CNN arm is paired with seed ``s`` of the ViT's baseline:

- **agreement** of the CNN's own maps (Grad-CAM++) with each of the ViT's (``spearman_<method>``,
  ``iou_<method>``: Spearman over the 7 x 7 grid, top-10 % IoU), mean over the map images;
- **error consistency** ``kappa`` (Cohen's kappa of the right / wrong flags on the test split);
- **robustness gaps** ``<area>_gap``: the CNN's area under the accuracy curve minus the ViT's, for
  random patch drop, salient-first drop by each model's own map and patch shuffle (clean
  accuracy, then each grid; ``proxyaug.metrics.auc``, points evenly spaced).

Brackets: **ceilings**, two seeds of one architecture (the CNN baseline's seed ``s`` against
``s + 1``, and the ViT's the same way: as close as a retrained model gets), and **floors** for the
maps (fixed-seed uniform noise, and one centred Gaussian blob, sigma a quarter of the grid, which
scores high where objects sit in the centre), each against the ViT's maps of seed ``s``.

*Toward the ViT* is a higher agreement or kappa, or a smaller absolute gap. Each arm's
per-seed closeness is compared with the CNN baseline's, and each Proxy Attention arm's with each
control's, by the paired difference and its 95 % t-interval (``stats.paired``). The verdict rule
of the issue: "Proxy Attention approximates ViT attention" only if a Proxy Attention arm moves
toward the ViT on every ``HEADLINE`` measure by more than seed spread (the interval against the
baseline above 0) and more than every control (the intervals against them above 0 too).

**Power** (``power``): per headline comparison, the smallest move toward the ViT its seeds detect,
against the way from the CNN baseline to the ViT's ceiling, and the seeds a move of a quarter of
that way (``MATTERS``) needs at the measured spread.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any, Dict, List, Optional, Tuple

import torch

from proxyaug import metrics as M

from .arms import arm_kind
from .compare import compare_path
from .config import Study
from .curves import detectable, seeds_for
from .stats import describe, paired, verdict

AREAS = ("occlusion_random_auc", "occlusion_salient_auc", "shuffle_auc")
#: the measures the verdict needs (map agreement with the ViT's attention, consistency, robustness)
HEADLINE = ("spearman_rollout", "spearman_legrad", "kappa", "occlusion_random_auc_gap", "shuffle_auc_gap")
FLOOR_SEED = 41_000  # the noise floor of seed s: uniform noise from a generator seeded 41_000 + s
TOP = 0.1  # top-10 % IoU
#: the move that matters, for planning seeds: this share of the way from the CNN baseline to the ViT's ceiling
MATTERS = 0.25
Art = Dict[str, Any]
Key = Tuple[str, str, str, int]  # dataset, model, arm, seed


def load_artifacts(study: Study, records: List[Dict[str, Any]]) -> Dict[Key, Art]:
    """The saved measurements of ``records`` measured with the study's settings, by (dataset, model, arm, seed)."""
    out: Dict[Key, Art] = {}
    for r in records:
        path = compare_path(study.out, r["key"])
        if r.get("compare_settings") == study.compare_settings() and os.path.exists(path):
            out[(r["dataset"], r["model"], r["arm"], r["seed"])] = torch.load(path, map_location="cpu", weights_only=True)
    return out


def run_measures(a: Art) -> Dict[str, Any]:
    """One run's own numbers: accuracy, the accuracy curves and their areas, its maps' concentration."""
    correct = a["correct"].float()
    random, salient = a["occlusion_random"].float().mean(0), a["occlusion_salient"].float().mean(0)
    shuffle = torch.cat([correct.mean().view(1), a["shuffle"].float().mean(0)])  # clean, then each grid
    out: Dict[str, Any] = {"acc": float(correct.mean())}
    for name, curve in (("occlusion_random", random), ("occlusion_salient", salient), ("shuffle", shuffle)):
        out[f"{name}_curve"], out[f"{name}_auc"] = curve.tolist(), float(M.auc(curve))
    for m in a["methods"]:
        out[f"entropy_{m}"], out[f"half_area_{m}"] = float(a["entropy"][m].mean()), float(a["half_area"][m].mean())
    return out


def agreement(maps: torch.Tensor, other: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Spearman and top-10 % IoU of ``maps`` ``(N, g, g)`` with each of ``other``'s maps, mean over images."""
    out = {}
    for m, theirs in other.items():
        out[f"spearman_{m}"] = float(M.map_spearman(maps, theirs).mean())
        out[f"iou_{m}"] = float(M.topk_iou(maps, theirs, fraction=TOP).mean())
    return out


def pair_measures(a: Art, v: Art, *, same_method: bool = False) -> Dict[str, float]:
    """``a`` against ``v``: agreement of ``a``'s own maps with each of ``v``'s (``same_method``:
    each of ``a``'s with ``v``'s of the same method, for two seeds of one model), kappa, and the gaps."""
    if same_method:
        out = {k: v_ for m in v["methods"] for k, v_ in agreement(a["maps"][m], {m: v["maps"][m]}).items()}
    else:
        out = agreement(a["maps"][a["methods"][0]], v["maps"])
    out["kappa"] = float(M.error_consistency(a["correct"], v["correct"]))
    ra, rv = run_measures(a), run_measures(v)
    out.update({f"{k}_gap": ra[k] - rv[k] for k in AREAS})
    return out


def closeness(measure: str, value: float) -> float:
    """Higher is nearer the ViT: agreement and kappa as they are, a gap by minus its size."""
    return -abs(value) if measure.endswith("_gap") else value


def floors(v: Art, seed: int) -> Dict[str, Dict[str, float]]:
    """The maps' floors against the ViT's maps ``v``: uniform noise (seeded) and a centred Gaussian blob."""
    n, g = len(v["index"]), v["grid"]
    noise = torch.rand(n, g, g, generator=torch.Generator().manual_seed(FLOOR_SEED + seed))
    r = torch.arange(g, dtype=torch.float32) - (g - 1) / 2
    blob = torch.exp(-(r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) / (2 * (g / 4) ** 2))
    return {"floor_noise": agreement(noise, v["maps"]), "floor_blob": agreement(blob.expand(n, g, g).contiguous(), v["maps"])}


def _described(per_seed: Dict[int, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    keys = next(iter(per_seed.values())).keys() if per_seed else []
    return {k: describe([d[k] for d in per_seed.values()]) for k in keys}


def _absolute(measures: Dict[str, float]) -> Dict[str, float]:
    """Gaps as distances: between two seeds of one model only their size says how close a retrained model gets."""
    return {k: abs(v) if k.endswith("_gap") else v for k, v in measures.items()}


def _brackets(base: Dict[int, Art], vit: Dict[int, Art]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Ceilings from consecutive seeds of each architecture, floors against the ViT's maps."""
    out: Dict[str, Dict[int, Dict[str, float]]] = {"ceiling_vit": {}, "ceiling_cnn": {}, "floor_noise": {}, "floor_blob": {}}
    for s in sorted(vit):
        if s + 1 in vit:
            out["ceiling_vit"][s] = _absolute(pair_measures(vit[s], vit[s + 1], same_method=True))
        if s in base and s + 1 in base:
            own = _absolute(pair_measures(base[s], base[s + 1], same_method=True))
            m = base[s]["methods"][0]  # the CNN's own method: its agreement goes in every ViT method's column
            out["ceiling_cnn"][s] = {**{f"{stat}_{vm}": own[f"{stat}_{m}"] for vm in vit[s]["methods"] for stat in ("spearman", "iou")},
                                     **{k: x for k, x in own.items() if not k.startswith(("spearman_", "iou_"))}}
        for name, vals in floors(vit[s], s).items():
            out[name][s] = vals
    return {k: _described(v) for k, v in out.items() if v}


def _compare(arm: str, versus: str, by: Dict[str, Dict[int, Dict[str, float]]]) -> List[Dict[str, Any]]:
    """Paired differences of closeness to the ViT, ``arm`` minus ``versus``, per measure."""
    seeds = sorted(set(by[arm]) & set(by[versus]))
    if not seeds:
        return []
    out = []
    for m in by[arm][seeds[0]]:
        d = paired([closeness(m, by[arm][s][m]) for s in seeds], [closeness(m, by[versus][s][m]) for s in seeds])
        out.append({"arm": arm, "versus": versus, "measure": m, **d, "direction": verdict(d, "toward", "away")})
    return out


def arm_verdict(arm: str, comparisons: List[Dict[str, Any]], baseline: str, controls: List[str]) -> Dict[str, Any]:
    """The issue's rule for one Proxy Attention arm: toward the ViT on every headline measure, against
    the baseline and against every control."""
    found = {(c["versus"], c["measure"]): c["direction"] for c in comparisons if c["arm"] == arm}
    headline = [m for m in HEADLINE if (baseline, m) in found]
    passed = [m for m in headline if found[(baseline, m)] == "toward" and controls and all(found.get((c, m)) == "toward" for c in controls)]
    if not headline or any(found[(baseline, m)] == "too few seeds to tell" for m in headline):
        text = "too few seeds to tell"
    elif not controls:
        text = "cannot tell: the study has no control arm to beat"
    elif len(passed) == len(headline):
        text = "Proxy Attention approximates ViT attention"
    else:
        text = "does not approximate ViT attention" + (f" (toward it on {', '.join(passed)} only)" if passed else "")
    return {"verdict": text, "passed": passed, "headline": headline, "controls": controls}


def power(comps: List[Dict[str, Any]], base: Dict[int, Dict[str, float]], ceiling: Dict[str, Dict[str, float]]) -> List[Dict[str, Any]]:
    """What the seeds can see on the ``HEADLINE`` measures, per comparison: the paired spread ``sd``,
    the smallest move toward the ViT its seeds detect (``detectable``: 80 % power, 95 % level, per
    interval), ``way``, how far the CNN baseline (``base``, its measures by seed) is from the ViT's
    ceiling (two ViT seeds: as close as a retrained model gets), in the measure's closeness, the
    detectable move as a ``share`` of it, and the seeds a move of ``MATTERS`` of the way needs
    (``seeds``); ``nan`` where the baseline is at or beyond the ceiling or no ceiling was measured."""
    rows = []
    for c in comps:
        m = c["measure"]
        if m not in HEADLINE or c["n"] < 2 or math.isnan(c["sd"]):
            continue
        start = statistics.fmean(closeness(m, d[m]) for d in base.values()) if base else math.nan
        way = closeness(m, ceiling[m]["mean"]) - start if m in ceiling else math.nan  # a ceiling's gaps are distances already
        found = detectable(c["sd"], c["n"])
        plan = seeds_for(c["sd"], MATTERS * way, most=1000) if way > 0 else math.nan
        rows.append({"arm": c["arm"], "versus": c["versus"], "measure": m, "n": c["n"], "sd": c["sd"], "detectable": found,
                     "way": way, "share": found / way if way > 0 else math.nan, "seeds": plan})
    return rows


def _own(rs: Dict[int, Art]) -> Dict[str, Dict[str, float]]:
    """Each run's own numbers (curves left out), described over its seeds."""
    return _described({s: {k: x for k, x in run_measures(r).items() if not k.endswith("_curve")} for s, r in rs.items()})


def _curves(rs: Dict[int, Art]) -> Dict[str, List[float]]:
    """The accuracy curves, mean over seeds."""
    return {c: torch.tensor([run_measures(r)[f"{c}_curve"] for r in rs.values()]).mean(0).tolist()
            for c in ("occlusion_random", "occlusion_salient", "shuffle")}


def _group(arts: Dict[Key, Art], dataset: str, cnn: str, vit_model: str, kinds: Dict[str, str]) -> Optional[Dict[str, Any]]:
    runs = lambda model, arm: {k[3]: a for k, a in arts.items() if k[:3] == (dataset, model, arm)}  # noqa: E731
    vit_base = next((a for a in kinds if kinds[a] == "none" and runs(vit_model, a)), None)
    base = next((a for a in kinds if kinds[a] == "none" and runs(cnn, a)), None)
    if vit_base is None or base is None:
        return None
    vit = runs(vit_model, vit_base)
    arms = [a for a in kinds if runs(cnn, a)]
    by = {a: {s: pair_measures(r, vit[s]) for s, r in runs(cnn, a).items() if s in vit} for a in arms}
    controls = [a for a in arms if arm_kind(kinds[a]).control]
    comps = [c for a in arms if a != base for c in _compare(a, base, by)]
    comps += [c for a in arms if arm_kind(kinds[a]).proxy_like for ctl in controls for c in _compare(a, ctl, by)]
    brackets = _brackets(runs(cnn, base), vit)
    return {
        "cnn": cnn, "vit": vit_model, "vit_arm": vit_base, "baseline": base, "seeds": sorted(vit),
        "methods": list(next(iter(vit.values()))["methods"]), "fractions": next(iter(vit.values()))["fractions"],
        "grids": next(iter(vit.values()))["grids"], "pairs": {a: _described(by[a]) for a in arms if by[a]},
        "runs": {a: _own(runs(cnn, a)) for a in arms}, "vit_runs": _own(vit),
        "curves": {a: _curves(runs(cnn, a)) for a in arms}, "vit_curves": _curves(vit),
        "brackets": brackets, "comparisons": comps,
        "verdicts": {a: arm_verdict(a, comps, base, controls) for a in arms if arm_kind(kinds[a]).proxy_like},
        "power": power(comps, by[base], brackets.get("ceiling_vit", {})),
    }


def summarize_compare(arts: Dict[Key, Art], records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per (dataset, CNN model) against the dataset's ViT (a model whose maps include rollout): the
    module docstring's numbers; empty when no ViT baseline and CNN baseline were measured."""
    kinds = {r["arm"]: r["kind"] for r in records}
    groups: Dict[str, Any] = {}
    for dataset in dict.fromkeys(k[0] for k in arts):
        models = list(dict.fromkeys(k[1] for k in arts if k[0] == dataset))
        vits = [m for m in models if any(k[:2] == (dataset, m) and "rollout" in a["methods"] for k, a in arts.items())]
        for cnn in (m for m in models if m not in vits):
            g = _group(arts, dataset, cnn, vits[0], kinds) if vits else None
            if g is not None:
                groups[f"{dataset} / {cnn}"] = g
    return groups
