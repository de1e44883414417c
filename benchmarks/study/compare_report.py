"""RQ2's section of the study's report, "Attention like a ViT's? (RQ2)", its ``compare.json`` and
its plots, from the runs' measurements (``benchmarks.study.compare``, statistics in
``benchmarks.study.compare_stats``). Called by ``report`` when ``Study.compare`` is set (also with
``--report-only``)."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List

from .compare import CNN_METHODS
from .compare_plots import agreement_plot, occlusion_plot
from .compare_stats import AREAS, HEADLINE, MATTERS, TOP, load_artifacts, summarize_compare
from .config import Study
from .plots import arm_colors
from .text import slug

AREA_NAMES = {"occlusion_random_auc": "random drop AUC", "occlusion_salient_auc": "salient drop AUC", "shuffle_auc": "shuffle AUC"}
BRACKET_ROWS = {
    "ceiling_vit": "*ceiling*: ViT seed s vs seed s+1 (same method)",
    "ceiling_cnn": "*ceiling*: CNN baseline seed s vs seed s+1 (its Grad-CAM++ maps; every column)",
    "floor_noise": "*floor*: uniform noise (seeded)",
    "floor_blob": "*floor*: a centred Gaussian blob",
}


def measure_name(m: str) -> str:
    """A measure's name in the tables.

    Examples:
        >>> measure_name("spearman_rollout"), measure_name("shuffle_auc_gap")
        ('Spearman with rollout', 'distance in shuffle AUC')
    """
    if m.endswith("_gap"):  # the absolute difference of the areas (no "|": the tables are markdown)
        return f"distance in {AREA_NAMES[m[:-4]]}"
    stat, _, method = m.partition("_")
    return {"spearman": f"Spearman with {method}", "iou": f"top-{TOP:.0%} IoU with {method}"}.get(stat, "error consistency (kappa)")


def _ms(d: Dict[str, float], pct: bool = False) -> str:
    s = 100 if pct else 1
    return f"{s * d['mean']:.{1 if pct else 3}f} ± {s * d['std']:.{1 if pct else 3}f}"


def _diff(c: Dict[str, Any]) -> str:
    gap = c["measure"].endswith("_gap")  # closeness of an area: minus the gap, in percentage points
    s, unit, digits = (100, " pp", 2) if gap else (1, "", 3)
    return f"{s * c['mean']:+.{digits}f}{unit} [{s * c['ci95_low']:+.{digits}f}, {s * c['ci95_high']:+.{digits}f}]"


def _num(measure: str, value: float) -> str:
    """A value of ``measure`` in its units: an area's distance in percentage points, else as it is."""
    if math.isnan(value):
        return "—"
    return f"{100 * value:.2f} pp" if measure.endswith("_gap") else f"{value:.3f}"


def _power_table(g: Dict[str, Any]) -> List[str]:
    """What the seeds can see on the headline measures (``compare_stats.power``)."""
    if not g.get("power"):
        return []
    lines = [f"What these seeds can see on the verdict's measures: *paired sd*, the spread of the per-seed differences; *detectable*, "
             "the smallest move toward the ViT that this many seeds detect with 80 % power at the 95 % level (per interval); "
             "*way to the ceiling*, how much nearer the ViT two ViT seeds are to each other than the CNN baseline is to the ViT "
             f"(the most a CNN could move); *seeds for {100 * MATTERS:.0f} %*: the paired seeds a move of {100 * MATTERS:.0f} % of that way needs "
             "at this spread (a pilot's estimate while the seeds are few).", "",
             "| arm | versus | measure | seeds | paired sd | detectable | way to the ceiling | detectable, share of the way | "
             f"seeds for {100 * MATTERS:.0f} % |", "|---|---|---|---|---|---|---|---|---|"]
    for r in g["power"]:
        m = r["measure"]
        share = "—" if math.isnan(r["share"]) else f"{r['share']:.0%}"
        seeds = "—" if math.isnan(r["seeds"]) else (f"> {r['seeds']}" if r["seeds"] >= 1000 else str(r["seeds"]))
        lines.append(f"| {r['arm']} | {r['versus']} | {measure_name(m)} | {r['n']} | {_num(m, r['sd'])} | {_num(m, r['detectable'])} | "
                     f"{_num(m, r['way'])} | {share} | {seeds} |")
    return lines + [""]


def _verdict_lines(groups: Dict[str, Any]) -> List[str]:
    lines = []
    for group, g in groups.items():
        for arm, v in g["verdicts"].items():
            found = {(c["versus"], c["measure"]): c for c in g["comparisons"] if c["arm"] == arm}
            parts = []
            for m in v["headline"]:
                against = [g["baseline"], *v["controls"]]
                parts.append(f"{measure_name(m)}: " + "; ".join(f"vs {b} {_diff(found[(b, m)])} {found[(b, m)]['direction']}"
                                                               for b in against if (b, m) in found))
            lines += [f"- **{group}, {arm}**: {v['verdict']}.", *(f"  - {p}" for p in parts)]
    return lines


def _agreement_table(g: Dict[str, Any]) -> List[str]:
    cols = [f"{k}_{m}" for k in ("spearman", "iou") for m in g["methods"]] + ["kappa"]
    lines = ["| arm | " + " | ".join(measure_name(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for a, p in g["pairs"].items():
        lines.append(f"| {a} | " + " | ".join(_ms(p[c]) for c in cols) + " |")
    for name, label in BRACKET_ROWS.items():
        b = g["brackets"].get(name)
        if b:
            lines.append(f"| {label} | " + " | ".join(_ms(b[c]) if c in b else "—" for c in cols) + " |")
    return lines


def _robustness_table(g: Dict[str, Any]) -> List[str]:
    own = {"cnn": CNN_METHODS[0], "vit": g["methods"][0]}
    grids = ", ".join(map(str, g["grids"]))
    lines = [f"| model / arm | test accuracy % | {' | '.join(AREA_NAMES[k] + ' %' for k in AREAS)} | own map's entropy | own map's half-mass area |",
             "|---|---|---|---|---|---|---|"]
    rows = [(f"{g['cnn']} / {a}", r, own["cnn"]) for a, r in g["runs"].items()] + [(f"{g['vit']} / {g['vit_arm']} (ViT)", g["vit_runs"], own["vit"])]
    for label, r, m in rows:
        lines.append(f"| {label} | {_ms(r['acc'], True)} | " + " | ".join(_ms(r[k], True) for k in AREAS)
                     + f" | {_ms(r[f'entropy_{m}'])} | {_ms(r[f'half_area_{m}'])} |")
    for name in ("ceiling_cnn", "ceiling_vit"):
        b = g["brackets"].get(name)
        if b:
            who = "CNN baseline" if name == "ceiling_cnn" else "ViT"
            lines.append(f"| {who}: seed s vs seed s+1, absolute difference | — | " + " | ".join(_ms(b[f"{k}_gap"], True) for k in AREAS) + " | | |")
    return lines + ["", f"Shuffle AUC: the accuracy curve over no shuffle, then grids {grids}; the areas are over evenly spaced points "
                        "(`proxyaug.metrics.auc`), so they are comparable between models, not absolute."]


def _group_lines(group: str, g: Dict[str, Any]) -> List[str]:
    name = slug(group.replace(" / ", "-"))
    lines = [f"### {group} against the ViT ({g['vit']}, arm {g['vit_arm']})", "",
             f"Seeds {g['seeds']}, each CNN seed paired with the ViT's seed of the same number. Agreement with the ViT's maps and "
             "error consistency (mean ± sd over seeds):", "", *_agreement_table(g), "",
             "Robustness (areas under the accuracy curves, mean ± sd over seeds) and the concentration of each model's own map:", "",
             *_robustness_table(g), "",
             "Toward the ViT, paired by seed (closeness of the arm minus that of *versus*; agreement and kappa as they are, "
             "an area by minus its distance to the ViT's, the absolute difference: positive is nearer the ViT):", "",
             "| arm | versus | measure | difference (95 % CI) | |", "|---|---|---|---|---|"]
    lines += [f"| {c['arm']} | {c['versus']} | {measure_name(c['measure'])} | {_diff(c)} | {c['direction']} |" for c in g["comparisons"]]
    return lines + ["", *_power_table(g), f"![{group}: accuracy under patch drop and shuffle](compare-occlusion-{name}.png)", "",
                    f"![{group}: agreement with the ViT's maps](compare-agreement-{name}.png)", ""]


def compare_section(groups: Dict[str, Any], study: Study, info: str) -> List[str]:
    """The report's RQ2 section (markdown lines)."""
    n = sum(len(g["comparisons"]) for g in groups.values())
    lines = [
        "## Attention like a ViT's? (RQ2)", "",
        f"Measured after training on every run (`benchmarks/study/compare.py`, `compare/<key>.pt`): {info}. Maps of the predicted "
        "class on a 7 x 7 grid: the CNN's Grad-CAM++ (the thesis' method) at its default layer; the ViT's attention rollout, LeGrad "
        f"and Grad-CAM++ at its default layer. *Agreement*: Spearman over the grid's cells and top-{TOP:.0%} IoU of the CNN's maps "
        "with each of the ViT's (mean over the images); *error consistency*: Cohen's kappa of the right / wrong flags on the whole "
        f"test split (Geirhos et al. 2020); *robustness*: accuracy as {study.compare_patch} x {study.compare_patch} patches are "
        "dropped (black; 0 to 90 %, Naseer et al. 2021) in a random order (the same for every run) or most salient first by the "
        f"model's own map (the CNN's Grad-CAM++, the ViT's rollout), and with the image's tiles shuffled (grids {study.compare_grids}). "
        "*Ceilings*: two seeds of one architecture; *floors*: maps with no knowledge of the image. "
        "The verdict follows issue 25: \"Proxy Attention approximates ViT attention\" only if a Proxy Attention arm moves toward the "
        f"ViT on every one of {', '.join(measure_name(m) for m in HEADLINE)} by more than seed spread (its 95 % interval against "
        "the CNN baseline above 0) and more than each control arm (the interval against it above 0 too). "
        f"This section holds {n} intervals (about 1 in 20 exclude 0 by chance).", "",
    ]
    verdicts = _verdict_lines(groups)
    if verdicts:
        lines += ["**Verdict**", "", *verdicts, ""]
    for group, g in groups.items():
        lines += _group_lines(group, g)
    return lines


def compare_report(study: Study, records: List[Dict[str, Any]]) -> List[str]:
    """Summarize the runs' measurements, write ``compare.json`` and the plots into ``study.out``,
    and return the report's section (empty when no CNN and ViT baselines were measured)."""
    arts = load_artifacts(study, records)
    groups = summarize_compare(arts, records)
    colors = arm_colors([*(a["name"] for a in study.arms), *(r["arm"] for r in records)])
    with open(os.path.join(study.out, "compare.json"), "w") as f:
        json.dump({"settings": study.compare_settings(), "headline": list(HEADLINE), "runs_measured": len(arts), "groups": groups}, f, indent=2)
    if not groups:
        return ["## Attention like a ViT's? (RQ2)", "", f"Not yet: {len(arts)} runs measured, and no dataset has both a CNN baseline and a "
                "ViT baseline among them.", ""]
    for group, g in groups.items():
        occlusion_plot(study.out, group, g, colors)
        agreement_plot(study.out, group, g, colors)
    info = next((r["compare_info"] for r in records if r.get("compare_info")), "")
    return compare_section(groups, study, info)
